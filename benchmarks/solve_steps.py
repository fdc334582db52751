"""Prints (no assertions) every CP-SAT search of one `gguf-planner plan` run and where its gap comes from.

    python3 benchmarks/solve_steps.py [PLAN ARGS ...]        (default: plan --vram 24 --ram 96)
    python3 benchmarks/solve_steps.py deepseek-r1 --profile 2xrtx3090-epyc9354-384g

Per search: the objective (quality / speed), its model (plain; the probe of a tightened solve; the model tightened
by reduced costs from the probe's solution: planner.solver_bounds.tightened_search; the target search for a solution
within the allowed gap, planner.solver_bounds._target_search), the gap it was allowed to stop at, CP-SAT's
work (deterministic time, load-independent), how it ended and its own gap, and two figures of its model's LP
relaxation (GLOP duals, bound in exact arithmetic: planner.solver_bounds):

- ``LP gap``: the solution's distance to the LP bound.  No search proves a gap smaller than the LP gap without
  closing it by branching, so this is what a proof costs.
- ``hand-off``: the share of the solution's objective that is the hand-off terms (the y variables: one
  GPU->CPU->GPU round trip per layer with any group away from home).  Measured with this script (December 2026):
  dropping those terms cut the speed step's LP gap from 0.197 % to 0.051 % on Qwen3-235B on 4x RTX 3090 and from
  0.176 % to 0.019 % on Kimi-K2 on 2x RTX 3090 (HiGHS, scipy.optimize.milp, on the exported models).  That is a
  different problem, not a weaker formulation: with a fixed layer split one class's constraints (its option counts
  summing to its layers, y >= its CPU count) form an interval matrix, totally unimodular, so no reformulation of
  the hand-off alone tightens the LP; without the hand-off cost a layer's up/gate and down experts move to the CPU
  one at a time, finer steps for the knapsack rows.  The gap is the coupling rows' integrality (whole expert
  tensors of 2.4-4.9 GB against 22 GB GPUs).  Measured on DeepSeek-R1's quality step (2x RTX 3090 + 384 GiB): LP
  gap 0.075 %, HiGHS proves the optimum in 3.3 CPU s; CP-SAT hinted with that optimum is still 0.038 % from a proof
  after 2.0 work units; single-row MIR cuts on the capacity rows left the LP bound where it was, and the rows
  rewritten over each class's smallest option did not shorten CP-SAT's proof.  What did pay (December 2026): the LP's branching order (planner.solver.lp_guided).

Measured in session 8 on the exported models of the 2x RTX 3090 + 384 GiB and 4x RTX 3090 plans (scipy.optimize.milp
with ``node_limit=1`` for HiGHS's root): the share of the LP gap closed at the root, speed steps: HiGHS 72 % (R1),
65 % (Kimi-K2), 67 % (Qwen3-235B 4x3090); CP-SAT with 20 root cut rounds (``max_cut_rounds_at_level_zero``, default
1) 32 %, 10 %, 44 %.  So the speed steps are bound-limited and HiGHS's root cuts (aggregated c-MIR with the hand-off
rows as variable bounds, lifted covers) are the lever left.  The quality step of R1 is not: 20 root cut rounds
lift CP-SAT's bound to 1 unit below the optimum in 0.2 work, but its search still ends 0.02 % above; the target
search (planner.solver_bounds._target_search) finds the optimum itself.  20 root cut rounds on every tightened run
measured worse overall (bench_solver work: R1 3.66 -> 5.00, --ctx max 0.68 -> 2.47, band 2.29 -> 2.54; better on
Kimi-K2 24+384 and 4x3090), so the default stays.

Session 9: three rounds of our own Gomory cuts (planner.solver_cuts, exact) in the tightened search's LP close the
speed steps' LP gap to 0.017 % (R1), 0.099 % (Kimi-K2), 0.084 % (4x3090) of the HiGHS optimum (exported models;
five rounds: 0.004 %, 0.089 %, 0.058 %).  The ``LP gap`` column here is still the plain LP's.  What is left: Kimi-K2
and 4x3090 need a bound ~0.1 % higher than the cuts give, and CP-SAT's search on the 4x3090 speed step ends
0.1-0.25 % above the optimum (HiGHS: 67,063,979) after 2.0 work: a primal problem too.

Later in session 9 (CP-SAT work of the whole plan, bench_solver's cases): five rounds for the speed step only
(planner.solver_bounds.SPEED_CUT_ROUNDS) took Kimi-K2 2x3090 from 3.263 work FEASIBLE 0.120 % to 1.672 work
proven within 0.1 %, R1 from gap 0.024 % to 0.012 % (same work), 4x3090 from 0.23 % to 0.29 % (same work).
Tried and rejected: the speed step's short exact try tightened (with cuts) instead of plain (the headline loses
its proof: 0.070 -> 0.520 work, gap 0 -> 0.021 %, --ctx max 0.417 -> 0.597 work; Kimi-K2 2x3090 3.263 work,
0.121 %; 4x3090 0.150 % instead of 0.29 %, the same work); that try skipped (headline,
--ctx max and kimi-k2 24+384 lose their proofs, Kimi-K2 2x3090 ends 0.50 % from the bound: its long try needs the
short try's solution; R1 0.83 work but 0.041 %); R1's speed step at a 0.01 % gap (plain try, then 2.0 work of
tightened and target search with five rounds: still 0.0119 %, the bound being ~0.004 % under the optimum, so the
search does not find a solution within 0.01 %: a primal problem).

Session 11 (HiGHS, scipy.optimize.milp, on the speed steps exported at the tightened search's entry): the optima
are R1 173,843,813 (0.0080 % above the LP bound with five rounds of cuts), Kimi-K2 2x3090 100,363,297 (0.0498 %
above it), 4x3090 67,061,484 (0.0653 %); more rounds barely move the last two (Kimi-K2 0.0450 % after 12 rounds of
20, 0.0447 % after 20 of 40; 4x3090 0.0523 %), and CP-SAT on the model tightened by the optimum, 1.0 work, lifts
its bound by at most 0.008 % (default, LB-tree search, the cuts as rows, the floor).  So Kimi-K2's 0.01 % and
4x3090's 0.05 % need branching that HiGHS itself takes 4.8 and 12 wall s for, while R1 needs only a better
solution: the target search for 0.01 % finds one 0.0006 % above the optimum in 0.18 work
(planner.planning.SPEED_STEP_AIM).  The cuts' LP bound as the objective's floor in the speed step's short try
(planner.solver_bounds.floored_search) made CP-SAT's search find better solutions on the multi-GPU cases (R1
0.0080 % from the bound in the short try, Kimi-K2 0.089 % in 0.52 work instead of 0.099 % in 1.11) but slowed the
single-GPU proofs (--ctx max 0.417 -> 0.597 work and its last step unproven, --granularity band 0.741 -> 0.975),
so it is used with several GPUs only; the same floor with a 0.01 % stopping gap in the short try ended the
multi-GPU golden plan's step at a worse solution (0.004 %) it had proven optimal before: not used.  CP-SAT cannot
lift the bound of Kimi-K2's step itself (on the model tightened by the optimum, 1.0 work: +0.008 % at most with
LB-tree search and the cuts as rows), but a Lagrangian decomposition can (planner.solver_lagrange): the loss and
CPU rows priced at their LP duals, the rest solved per GPU, gives bounds 0.0010 % (R1), 0.0020 % (Kimi-K2) and
0.082 % (4x3090; 0.0176 % at 1.05 times the duals) below the optima.  Its parts' solutions at the best multipliers,
as the guide of a RINS-like neighbourhood, found 4x3090's near-optimum (0.0037 % above it) in 0.07 work where
CP-SAT's 1.67-work long try ended 0.33 % above the bound.  Tried: skipping the speed short try on several GPUs once
the decomposition follows (Kimi-K2 3.5 s, 0.0092 %; but the multi-GPU golden plan's step, proven in the short try
before, stopped 0.07 % from its bound; 4x3090 0.074 %), the short try at 0.3 work with and without the floor (the
golden plan unproven, or Kimi-K2 0.017 % / 4x3090 0.04-0.06 %), the parts' gap 1e-5 / 2e-5 / 3e-5 / 1e-4 (Kimi-K2
0.011-0.015 %, no trend: its one hard part's target searches decide).

Session 12 (bench_solver, best of 3): the balanced plan's quality step spent R1's 0.80 work (a 0.5-work proof
attempt ending 0.052 % from its bound, then 0.29 to 0.0065 %), Kimi-K2 24+384's 2.4.  Its LP bound with three
rounds of cuts lies near the optimum (R1: the target search for 0.01 % of it finds a solution in 0.02 work), so the
quality step may now stop within its 0.01 % from the short try on (its probe still seeks a proof: CP-SAT's gap 0
there, so the headline and the multi-GPU golden plan are the same, proven), and its tightened search tries one
target first (planner.solver_bounds.TARGET_FIRST_WORK): R1 1.310 -> 0.631 work, 4.86x -> 3.77x the headline;
Kimi-K2 24+384 2.580 -> 0.410 (5.72x -> 1.95x); Kimi-K2 2x3090 1.808 -> 1.439 (6.06x -> 5.15x, 0.0112 %).  The
probe's bound now counts for the whole model up to its guess (a better solution lies in the cut: any solution
below the guess is one of the probe's model).  More targets first (a loop lifting the bound 0.01 % per target) cost
--granularity band 0.5 CPU s, whose quality LP bound lies 0.24 % below the optimum.  The multi-GPU speed short try
at 0.15 / 0.3 work (R1 3.2 s, Kimi-K2 4.0 s but 0.0168 %, 4x3090 0.047 %, the golden plan unproven): not used.

Session 14 (this script and bench_solver --heldout): the multi-GPU speed step's short try (0.5 work, floored at the
cuts' LP bound) found all its solutions before 0.03 work and spent the rest on a proof only the multi-GPU golden plan
completed (at 0.388).  Without it the long try starts from the quality solution and its decomposition takes over;
what it lost came back with two changes: the decomposition runs again after a gain much larger than the gap left
(its ray of multipliers is sized by the solution at hand: 4x3090 from the probe's solution 0.88 % above the bound
ended at 0.072 %, with the second run 0.018 %), and the parts' optimisation runs stop at 0.1 work, the rest going to
the target search that proves their bounds.  CPU s / gap, before -> after: golden 1.98 / proven -> 1.44 / 0.0070 %
(its solution 0.0029 % above that optimum), R1 2x3090 3.50 / 0.0071 % -> 2.09 / 0.0067 %, Kimi-K2 2x3090 5.16 /
0.0060 % -> 3.32 / 0.0075 %, 4x3090 3.28 / 0.024 % -> 2.81 / 0.018 %; held out Qwen3-30B 8+8 2.70 / 0.062 % ->
2.03 / 0.070 %, GLM-4.5-Air 24+24 2.81 -> 2.16 (0.042 %), Qwen3-235B 24+16+12 3.92 -> 3.28 (0.019 -> 0.020 %),
R1 8x3090 4.04 / 0.017 % -> 3.37 / 0.0027 %, R1 48+48 7.11 / 0.026 % -> 5.60 / 0.025 %.  Without the second
decomposition: 4x3090 0.072 % (over its 0.05 % target), Qwen3-30B 0.096 % for 1.31 work.  Off these cases,
DeepSeek-R1 on 3x 24 GiB under mainline ended 0.045 % from its bound with a plan 0.040 % slower than the short try's:
the decomposition's neighbourhoods stalled and the long search stopped within its 0.1 % at once; a 0.1-work search
aiming at 0.01 % with LP-guided branching after the decomposition (planner.solver_bounds.AIMED_WORK) finds that
plan in 0.024 work (0.0054 %), and brings Qwen3-30B 8+8 to 0.058 %.  Not adopted: the decomposition in the quality
long try of several GPUs (aiming at its 0.01 %): Kimi-K2 on 4x RTX 3090 + 512 GiB's quality step 0.26 % -> 0.0076 %
above HiGHS's optimum (6,703,774, 79 s), but Kimi-K2 on 3x 24 GiB 0.026 % -> 0.084 % and DeepSeek-R1 on 4x 24 GiB
proven within 0.01 % -> FEASIBLE 0.029 % for 1.7 more work.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any

import planner.solver as solver_mod
import planner.solver_bounds as bounds_mod
from planner.solver_bounds import lagrangian_bound


def _lp_gap(m: Any, objective: float) -> str:
    lb = lagrangian_bound(m.proto)
    if lb is None or not objective:
        return "-"
    return f"{float((objective - lb[0]) / objective):.4%}"


def _handoff_share(m: Any, solver: Any, objective: float) -> str:
    proto = m.proto
    total = 0
    for v, k in zip(proto.objective.vars, proto.objective.coeffs):
        if proto.variables[v].name.startswith("y"):
            total += k * solver.value(m.get_int_var_from_proto_index(v))
    return f"{total / objective:.3%}" if objective else "-"


def main(argv: list[str]) -> None:
    args = ["plan", *(argv or ["--vram", "24", "--ram", "96"])]
    rows: list[str] = []
    run = solver_mod._run

    def traced(cp_model: Any, m: Any, objective: Any, work: float) -> tuple[Any, int]:
        solver, status = run(cp_model, m, objective, work)
        name = solver.status_name(status)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            obj, bound = solver.objective_value, solver.best_objective_bound
            gap = f"{abs(obj - bound) / max(abs(obj), 1e-30):.4%}"
            lp, share = _lp_gap(m, obj), _handoff_share(m, solver, obj)
        else:
            gap = lp = share = "-"
        model = ("plain" if not objective.tighten else
                 "target" if not m.proto.has_objective() else
                 "probe" if work in (min(bounds_mod.TIGHTEN_PROBE_WORK, objective.work_limit),
                                            min(bounds_mod.FULL_PROBE_WORK, objective.work_limit)) else "tight")
        rows.append(f"{objective.kind:8} {model:>5} "
                    f"{objective.relative_gap:9.0e} {solver.deterministic_time:7.3f} {name:9} {gap:>9} {lp:>9} "
                    f"{share:>9} {len(m.proto.variables):6}")
        return solver, status

    solver_mod._run = traced
    from planner.cli import main as cli_main

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli_main(args)
    except SystemExit as exc:
        if exc.code:
            raise
    finally:
        solver_mod._run = run
    print(f"{'step':8} {'model':>5} {'gap limit':>9} {'work':>7} {'status':9} {'gap':>9} {'LP gap':>9} "
          f"{'hand-off':>9} {'vars':>6}")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
