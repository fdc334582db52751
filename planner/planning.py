"""Orchestration: place a fixed mix, or plan types and devices together, then re-check and predict.

``place`` keeps each tensor's type and chooses devices; ``joint_plan`` chooses types and devices together.
Both build the same groups (:mod:`planner.groups`), try layer splits from all-GPU towards the CPU, hand them
to :func:`planner.solver.solve`, and re-check the result independently with
:func:`planner.memory.memory_report` before anyone sees it.  :mod:`planner.context_search` resolves or searches the context;
:mod:`planner.pareto` walks the quality/speed frontier.  Infeasible budgets are reported with the nearest feasible
changes (:mod:`planner.hints`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from planner import prompt_cache
from planner.devices import CPU
from planner.errors import InfeasibleBudgetError, SolverError
from planner.groups import Budget, build_groups, capacities, layer_split, smallest_weights
from planner.hints import with_options
from planner.loadmode import choose_load, engine_load
from planner.memory import MemoryReport, Placement, kv_bytes_by_layer, memory_report, mix_bytes
from planner.quantize import quantizable
from planner.quants import catalogue
from planner.regexes import compile_user_regex, search
from planner.request import PlanRequest
from planner.roles import tied_output
from planner.runconfig import UBATCH_CHOICES, RunConfig
from planner.solver import Group, LayerHomes, Objective, Solution, SolveStep, solve, weakest
from planner.device_speed import DeviceSpeed
from planner.speed import SpeedEstimate, estimate_speed
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from planner.hardware import Hardware
    from planner.quality import QualityEstimate, QualityModel


@dataclass(frozen=True, slots=True)
class SolverInfo:
    """How the solves that produced a plan ended: ``status`` and ``gap`` are the weakest over ``steps`` (a plan is
    only as proven as its least proven solve); problem size; wall time stays out of the JSON."""

    status: str
    gap: float
    wall_s: float = field(metadata={"json": False})   # timing varies run to run: kept out of the plan JSON
    objective: float
    objective_kind: str
    n_classes: int
    n_vars: int
    scaling_error_bound: float
    steps: tuple[SolveStep, ...] = ()   # each solve the plan rests on; status/gap above are the weakest of them


@dataclass(frozen=True, slots=True)
class Plan:
    """A verified assignment of a type and a device to every tensor, with its predictions."""

    model: str
    model_source: str
    engine: str
    run: RunConfig
    types: dict[str, str]
    devices: dict[str, str]
    layer_device: tuple[str, ...]
    budgets: dict[str, int]
    total_bytes: int
    n_elements: int
    bpw: float
    memory: MemoryReport
    speed: SpeedEstimate
    quality: QualityEstimate | None
    solver: SolverInfo | None
    notes: tuple[str, ...] = ()
    output_device: str | None = None    # a tied output's layer (its second token_embd, the logits); None: CPU

    @property
    def placement(self) -> Placement:
        """The plan's devices as a :class:`Placement` (GPUs in name order, the CPU last)."""
        devs = tuple(sorted({*self.devices.values(), *self.layer_device, *([self.output_device] if
                                                                          self.output_device else [])},
                            key=lambda d: (d == CPU, d)))
        if CPU not in devs:
            devs = devs + (CPU,)
        return Placement(self.devices, self.layer_device, devs, output_device=self.output_device)


PROOF_WORK = 0.5        # balanced, second step: deterministic work allowed for a proof of the fastest plan
SPEED_STEP_GAP = 1e-3   # balanced, second step: stop within 0.1 % of the fastest plan (0.01 tok/s at 10 tok/s)
# balanced, second step: the gap it aims at (planner.solver.Objective.aim_gap).  A long try whose solution at hand is
# outside it runs the Lagrangian decomposition first where the model falls apart by GPU (planner.solver_lagrange:
# Kimi-K2 on 2x RTX 3090 + 384 GiB 0.089 % -> 0.011 %, 4x RTX 3090 0.11 % -> 0.024 %, bench_solver December 2026);
# one that ends within SPEED_STEP_GAP otherwise, near its bound (planner.solver_bounds.AIM_NEAR), a target search for
# a solution within it (planner.solver_bounds._aim: DeepSeek-R1 there 0.0119 % -> 0.0086 % for 0.18 more work).  Its
# probe's solution is kept at once only within this aim (planner.solver_bounds.tightened_search).
SPEED_STEP_AIM = 1e-4
# balanced, first step: stop within 0.01 % of the least loss (a PPL ratio of 1.0233 moves by < 1e-5); measured
# here: Kimi-K2 on 2x RTX 3090 + 384 GiB goes from FEASIBLE after the whole work limit to proven within the gap
QUALITY_STEP_GAP = 1e-4


def loss_slack(quality: QualityModel | None, request: PlanRequest) -> float:
    """Balanced objective: loss units equal to ``quality_slack_pct`` % of PPL ratio (ppl = exp(k * loss))."""
    k = (quality.ppl_scale or quality.k) if quality is not None else 1.0
    return math.log(1.0 + request.quality_slack_pct / 100.0) / k


VS_BEST = "quality against the best-quality plan:"


def _vs_best_note(q: QualityEstimate, best_ln_ratio: float) -> str:
    """Balanced plans: the chosen plan's predicted PPL ratio next to the best-quality plan's, and whether the
    difference is inside the chosen plan's band (then the model cannot tell the two plans apart)."""
    best = math.exp(best_ln_ratio)
    inside = q.ppl_ratio_low <= best <= q.ppl_ratio_high
    return (f"{VS_BEST} PPL ratio {q.ppl_ratio:.4f} against {best:.4f} ({(q.ppl_ratio / best - 1) * 100:+.2f} %), "
            + (f"inside the band {q.ppl_ratio_low:.4f}-{q.ppl_ratio_high:.4f}: the model cannot tell the two "
               "plans apart" if inside else
               f"outside the band {q.ppl_ratio_low:.4f}-{q.ppl_ratio_high:.4f}: a predicted quality cost"))


# the notes _finish itself writes
_FINISH_NOTES = ("load: ", "-ub ", "predicted TG ", "predicted PP ", "prompt cache: ", "context checkpoints: ")


def _finish(tmap: TensorMap, hw: Hardware, budget: Budget, request: PlanRequest, layer_device: tuple[str, ...],
            types: dict[str, str], devices: dict[str, str], sol: Solution | None, quality: QualityModel | None,
            notes: list[str], *,
            speed_of: Callable[[Mapping[str, str], Placement, RunConfig], SpeedEstimate] | None = None,
            output_device: str | None = None) -> Plan:
    cfg = request.run
    # a re-finish (recipe simplification) decides -ub, the load mode and the target checks again: its notes replace
    # the first finish's (their figures can differ), the others are kept
    notes = [n for n in notes if not n.startswith(_FINISH_NOTES)]
    placement = Placement(devices, layer_device, budget.devices, output_device=output_device)
    # the plan's speed under a run configuration: a cluster's estimate (network terms, remote devices) in place of
    # the one-box one, for -ub, the load mode and the speed printed alike
    def est(run: RunConfig) -> SpeedEstimate:
        if speed_of is not None:
            return speed_of(types, placement, run)
        return estimate_speed(tmap, types, placement, hw, run)

    if request.ub_auto:
        cfg = _ubatch(tmap, types, placement, budget, cfg, notes, est)
    if request.load_auto:
        # -rtr or --no-mmap copy the same bytes into RAM, so the placement stays valid; speed decides
        choice = choose_load(tmap, placement, cfg, est)
        cfg, spd = choice.run, choice.speed
        if choice.reason:
            notes.append(choice.reason)
    else:
        cfg, why = engine_load(tmap, placement, cfg)
        notes += [why] if why else []
        spd = est(cfg)
    mem = memory_report(tmap, types, placement, budget.bytes, cfg)
    if not mem.fits:
        raise InfeasibleBudgetError("internal re-check failed: " + "; ".join(mem.problems()),
                                    shortfall_bytes=mem.shortfall())
    host = next((d for d in mem.devices if d.device == CPU), None)
    if host is not None:        # the server's checkpoints and prompt cache fill the RAM the plan leaves, not more
        cfg, whys = prompt_cache.planned(cfg, host.free_bytes, tmap.params)
        notes += whys
    # the ILP's time terms are memory-bound and linear; the full estimate also checks compute: say so if it differs
    if request.min_tg and spd.tg_tps < request.min_tg:
        notes.append(f"predicted TG {spd.tg_tps:.2f} tok/s is below --min-tg {request.min_tg}: the CPU is "
                     "compute-bound here, which the ILP's bandwidth terms do not see")
    if request.min_pp and spd.pp_tps < request.min_pp * 0.999:
        notes.append(f"predicted PP {spd.pp_tps:.1f} tok/s is below --min-pp {request.min_pp}")
    sizes = mix_bytes(tmap, types)
    total = sum(sizes.values())
    q = quality.estimate(types) if quality is not None else None
    if q is not None and quality is not None and sol is not None and sol.best_loss is not None:
        notes = [n for n in notes if not n.startswith(VS_BEST)] + [_vs_best_note(q, quality.k * sol.best_loss)]
    info = None
    if sol is not None:
        worst = weakest(sol.steps)
        info = SolverInfo(worst.status, max(s.gap for s in sol.steps), sol.wall_s, sol.objective,
                          "placement" if request.objective == "placement" else request.objective,
                          sol.n_classes, sol.n_vars, sol.scaling_error_bound, sol.steps)
    return Plan(model=tmap.name, model_source=tmap.source, engine=cfg.engine,
                run=cfg, types=dict(types), devices=dict(devices), layer_device=layer_device,
                budgets=dict(budget.bytes), total_bytes=total, n_elements=tmap.n_elements,
                bpw=8.0 * total / tmap.n_elements, memory=mem, speed=spd, quality=q, solver=info,
                notes=tuple(dict.fromkeys(notes)),    # a re-finish (recipe simplification) repeats notes
                output_device=output_device)


def _ubatch(tmap: TensorMap, types: Mapping[str, str], placement: Placement, budget: Budget, cfg: RunConfig,
            notes: list[str], speed: Callable[[RunConfig], SpeedEstimate]) -> RunConfig:
    """-ub as a decision: of UBATCH_CHOICES from the given -ub up whose compute buffers still fit beside the plan on
    every device (types and placement unchanged, so TG and quality are too), the one ``speed`` predicts the fastest
    prompt processing for (the largest on a tie).  Larger micro-batches amortise the per-ubatch copy of CPU-resident
    weights; over a cluster's link a larger one may be slower (the tiny two-host model of tests/test_layer_homes.py,
    ik: PP 1.5x faster at -ub 512 than at 4096).  -b follows as max(-b, -ub)."""
    fits = [cfg]
    for ub in UBATCH_CHOICES:
        if ub <= cfg.ubatch:
            continue
        trial = replace(cfg, ubatch=ub, batch=max(cfg.batch, ub))
        if not memory_report(tmap, types, placement, budget.bytes, trial).fits:
            break
        fits.append(trial)
    if len(fits) == 1:
        return cfg
    pp = [speed(c).pp_tps for c in fits]
    best = max(range(len(fits)), key=lambda i: (pp[i], i))
    if best == len(fits) - 1:
        notes.append(f"-ub {fits[best].ubatch}: the largest micro-batch whose compute buffers fit beside the plan "
                     f"(faster prompt processing; types and placement unchanged)")
    elif best:
        notes.append(f"-ub {fits[best].ubatch}: the fastest predicted prompt processing of the micro-batches whose "
                     f"compute buffers fit beside the plan (PP {pp[best]:.0f} tok/s; -ub {fits[-1].ubatch}: "
                     f"{pp[-1]:.0f})")
    else:
        notes.append(f"-ub {cfg.ubatch} kept: larger micro-batches fit but are predicted slower (PP {pp[0]:.0f} "
                     f"tok/s; -ub {fits[-1].ubatch}: {pp[-1]:.0f})")
    return fits[best]


def _solve_with_layers(tmap: TensorMap, hw: Hardware, budget: Budget, request: PlanRequest, *,
                       types: Mapping[str, str] | None, quality: QualityModel | None,
                       layout: Callable[[int], tuple[str, ...]] | None = None,
                       speeds: Mapping[str, DeviceSpeed] | None = None,
                       extra_time: Mapping[str, float] | None = None, hint: Solution | None = None
                       ) -> tuple[tuple[str, ...], Solution, list[Group]]:
    """Try all layers on the GPUs first; if attention + KV do not fit, move the first layers to CPU.

    ``layout(n_cpu)`` replaces the one-box layer split (a cluster puts its remote layers first) and
    ``speeds`` and ``extra_time`` go to :func:`build_groups` (a cluster's device speeds and network time);
    ``hint``: a solution to start from (its choices count where its group keys match)."""
    cfg = request.run
    need = (smallest_weights(tmap, types, request, budget) + sum(kv_bytes_by_layer(tmap.params, cfg))
            + cfg.os_reserve_bytes + cfg.gpu_margin_bytes * len(budget.gpus))
    if need > sum(budget.bytes.values()):      # necessary condition: no split of layers can help
        raise InfeasibleBudgetError("even the smallest types do not fit in RAM + VRAM together",
                                    shortfall_bytes={"all devices": need - sum(budget.bytes.values())})
    n = tmap.params.n_layer
    last_err: InfeasibleBudgetError | None = None
    tried = [0] if not budget.gpus else sorted({0, *range(max(1, n // 16), n + 1, max(1, n // 16)), n})
    for n_cpu in tried:
        layer_device = layout(n_cpu) if layout is not None else layer_split(n, budget, n_cpu)
        groups, fixed, fixed_time = _groups(tmap, layer_device, budget, hw, request, types=types, quality=quality,
                                            speeds=speeds, extra_time=extra_time)
        cap = capacities(tmap, layer_device, budget, request.run, fixed)
        if any(c < 0 for c in cap.values()):
            last_err = InfeasibleBudgetError("fixed terms alone exceed a device budget",
                                             shortfall_bytes={d: -c for d, c in cap.items() if c < 0})
            continue
        over = {d: b - cap.get(d, 0) for d, b in _pinned_bytes(groups).items() if b > cap.get(d, 0)}
        if over:
            # the layers' own tensors (attention, norms) at their smallest types overfill a device: more layers
            # on the CPU free it (gemma-3-27b, 8 + 32 GiB, 32k q8_0 cache: fits at a later split)
            last_err = InfeasibleBudgetError("the layers' own tensors alone exceed a device budget",
                                             shortfall_bytes=over)
            continue
        obj = _objective(request, quality, types is not None, fixed_time)
        # capacities are all non-negative here: moving more attention to the CPU moves the same bytes
        # and only slows generation, so an infeasible answer now is final
        try:
            return layer_device, _solve_objective(groups, cap, obj, fixed_time, quality, request, hint=hint), groups
        except InfeasibleBudgetError as exc:
            last_err = exc
            break
    assert last_err is not None
    raise last_err


def _pinned_bytes(groups: Sequence[Group]) -> dict[str, int]:
    """Bytes each device must take whatever the solver chooses: for every group whose options all charge the
    same device, its smallest option there."""
    out: dict[str, int] = {}
    for g in groups:
        devs = {o.device for o in g.options}
        if len(devs) == 1:
            d = next(iter(devs))
            out[d] = out.get(d, 0) + min(o.bytes for o in g.options)
    return out


def _solve_objective(groups: list[Group], cap: Mapping[str, int], obj: Objective, fixed_time: Mapping[str, float],
                     quality: QualityModel | None, request: PlanRequest, homes: LayerHomes | None = None,
                     hint: Solution | None = None) -> Solution:
    """One solve of ``obj``; balanced is the epsilon-constraint: the best quality first, then the fastest plan
    within the slack of it (each step proven if quick, else within its reported gap)."""
    fixed_s = fixed_time["tg_s"]
    if obj.kind == "quality" and obj.max_seconds is None and obj.max_pp_seconds is None:
        # the balanced quality step's model (--objective quality, the best --pareto point); not with a time row
        return _proven_or_within(groups, cap, obj, obj.relative_gap, fixed_s, homes, hint)
    if obj.kind != "balanced":
        return solve(groups, cap, obj, fixed_seconds=fixed_s, homes=homes, hint=hint)
    t0 = time.perf_counter()
    best = _proven_or_within(groups, cap, replace(obj, kind="quality"), QUALITY_STEP_GAP, fixed_s, homes, hint)
    step2 = replace(obj, kind="speed", max_loss=best.loss + loss_slack(quality, request))
    sol = _proven_or_within(groups, cap, step2, SPEED_STEP_GAP, fixed_s, homes, best)
    # the plan rests on the best-quality solve (it sets the loss bound) and on the final speed solve
    return replace(sol, wall_s=time.perf_counter() - t0, steps=best.steps + sol.steps, best_loss=best.loss)


def _proven_or_within(groups: list[Group], cap: Mapping[str, int], obj: Objective, gap: float, fixed_s: float,
                      homes: LayerHomes | None, hint: Solution | None) -> Solution:
    """A proof within PROOF_WORK work units, else the full work limit stopping within ``gap`` (from the short
    try's solution; with none found there, from ``hint``: layer homes make the model larger).  Reduced-cost
    bounds (``Objective.tighten``) in the long try, and in the quality step's short try (its LP gap is ten times
    smaller than the speed step's: measured, the headline's quality step is then proven in the short try).  The
    quality step's short try may already stop within ``gap`` (its probe still looks for a proof, and the target
    search comes first: planner.solver_bounds.TARGET_FIRST_WORK): DeepSeek-R1 on 2x RTX 3090 + 384 GiB, quality
    step 0.80 -> 0.05 work, Kimi-K2 on 24 + 384 GiB 2.4 -> 0.04 (bench_solver, December 2026).  The long try
    of a speed step aims at SPEED_STEP_AIM.  A speed step on several GPUs with its layers' devices fixed (no
    ``homes``) has no short try: its long try, whose Lagrangian decomposition (planner.solver_bounds._by_device)
    finds a solution and a bound per GPU, starts from the quality step's solution.  (The joint layer-home model of
    a cluster does not fall apart by GPU and keeps it: without it the two-box Kimi-K2 plan of docs/rpc.md ended
    1.50 % from its bound instead of 0.50 %.)  The short try was a proof attempt of PROOF_WORK that only the
    multi-GPU golden plan's step completed (at 0.388 work; now 0.0070 % from its bound, the same plan); elsewhere
    every solution it found came before 0.03 work and the decomposition replaced it.  Measured (bench_solver
    --repeat 3 and --heldout, December 2026; CPU s, times the headline, gap), with the decomposition run again after
    a large gain (planner.solver_bounds.AGAIN_GAIN), its parts' shorter optimisation runs
    (planner.solver_lagrange.PART_SEARCH_WORK) and a short aimed search after it (planner.solver_bounds.AIMED_WORK):
    DeepSeek-R1 on 2x RTX 3090 + 384 GiB 3.47 s 3.64x 0.0071 % -> 2.12 s 2.37x 0.0067 %, Kimi-K2 there 4.91 s 5.15x
    0.0060 % -> 3.31 s 3.70x 0.0075 %, Qwen3-235B on 4x RTX 3090 3.22 s 0.024 % -> 3.05 s 0.018 %; held out (work):
    Qwen3-30B on 8+8 GiB 0.62 -> 0.41 (0.062 % -> 0.058 %), GLM-4.5-Air on 24+24 GiB 0.58 -> 0.42 (0.042 %),
    Qwen3-235B on 24+16+12 GiB 1.01 -> 0.83 (0.019 % -> 0.020 %), DeepSeek-R1 on 8x RTX 3090 0.63 -> 0.18 (0.017 % ->
    0.0027 %), on 48+48 GiB 2.33 -> 1.91 (0.026 % -> 0.024 %)."""
    aim = SPEED_STEP_AIM if obj.kind == "speed" else 0.0
    sol: Solution | None = None
    if not (obj.kind == "speed" and homes is None and sum(d != CPU for d in cap) > 1):
        short_gap = gap if obj.kind == "quality" else obj.relative_gap
        try:
            sol = solve(groups, cap, replace(obj, work_limit=min(PROOF_WORK, obj.work_limit), relative_gap=short_gap,
                                             tighten=obj.kind == "quality"),
                        fixed_seconds=fixed_s, homes=homes, hint=hint)
        except SolverError:
            sol = None
        if sol is not None and (sol.status == "OPTIMAL" or (short_gap and sol.status == "OPTIMAL_WITHIN_GAP")):
            return sol
    return solve(groups, cap, replace(obj, relative_gap=gap, tighten=True, aim_gap=aim), hint=sol or hint,
                 fixed_seconds=fixed_s, homes=homes)


def solve_layered(tmap: TensorMap, hw: Hardware, budget: Budget, request: PlanRequest, quality: QualityModel | None,
                  order: tuple[str, ...], *, speeds: Mapping[str, DeviceSpeed] | None = None,
                  hold_s: Mapping[str, float] | None = None, hold_pp_s: Mapping[str, float] | None = None,
                  shared: tuple[tuple[tuple[str, ...], float, float], ...] = (),
                  start: Sequence[tuple[str, ...]] = ()) -> tuple[tuple[str, ...], Solution, list[Group]]:
    """Types, devices and every layer's device in one model (:func:`planner.layered_groups.build_layered_groups`): the
    layers in contiguous ranges over ``order``, any range possibly empty.

    ``start``: layouts to warm-start from, first feasible wins (the fixed-layout model of :func:`build_groups`
    solved briefly for quality; its assignment is the hint).  Only the search's starting point: the solution is
    the layered model's.

    Raises:
        InfeasibleBudgetError: nothing fits (the shortfall per device).
    """
    from planner.layered_groups import build_layered_groups, layered_capacities

    cfg = request.run
    need = (smallest_weights(tmap, None, request, budget) + sum(kv_bytes_by_layer(tmap.params, cfg))
            + cfg.os_reserve_bytes + cfg.gpu_margin_bytes * len(budget.gpus))
    if need > sum(budget.bytes.values()):
        raise InfeasibleBudgetError("even the smallest types do not fit in RAM + VRAM together",
                                    shortfall_bytes={"all devices": need - sum(budget.bytes.values())})
    groups, fixed, fixed_time, homes = build_layered_groups(tmap, order, budget, hw, cfg, request=request,
                                                            quality=quality, speeds=speeds, hold_s=hold_s,
                                                            hold_pp_s=hold_pp_s, shared=shared)
    cap = layered_capacities(tmap, budget, cfg, fixed)
    if any(c < 0 for c in cap.values()):
        raise InfeasibleBudgetError("fixed terms alone exceed a device budget",
                                    shortfall_bytes={d: -c for d, c in cap.items() if c < 0})
    obj = _objective(request, quality, False, fixed_time)
    hint = _warm_start(tmap, hw, budget, request, quality, start, speeds)
    sol = _solve_objective(groups, cap, obj, fixed_time, quality, request, homes, hint=hint)
    return sol.layer_device, sol, groups


def _warm_start(tmap: TensorMap, hw: Hardware, budget: Budget, request: PlanRequest, quality: QualityModel | None,
                layouts: Sequence[tuple[str, ...]], speeds: Mapping[str, DeviceSpeed] | None) -> Solution | None:
    """A feasible assignment for the layered model from the first layout whose fixed-layout model solves (its
    options re-tagged with their layer's home), or None."""
    from planner.layered_groups import replace_option

    for layout in layouts:
        groups, fixed, fixed_time = build_groups(tmap, layout, budget, hw, request.run, types=None, request=request,
                                                 quality=quality, speeds=speeds)
        cap = capacities(tmap, layout, budget, request.run, fixed)
        if any(c < 0 for c in cap.values()):
            continue
        obj = replace(_objective(request, quality, False, fixed_time), kind="quality" if quality else "speed",
                      work_limit=min(PROOF_WORK, request.work_limit), relative_gap=QUALITY_STEP_GAP)
        try:
            sol = solve(groups, cap, obj, fixed_seconds=fixed_time["tg_s"])
        except (InfeasibleBudgetError, SolverError):
            continue
        by_key = {g.key: g for g in groups}
        choice = {k: (replace_option(o, layout[by_key[k].layer]) if by_key[k].layer is not None else o)  # type: ignore[index]
                  for k, o in sol.choice.items()}
        return replace(sol, choice=choice, layer_device=tuple(layout))
    return None


# build_groups' answers while :func:`planner.pareto.pareto_plans` runs (None otherwise): --pareto asks for the same groups once per
# point (only the objective and --min-tg differ), about 0.35 CPU s each on the headline model.  Keyed on the objects
# themselves (held, so their ids stay theirs) and on every request field build_groups reads.
_GROUPS_CACHE: dict[tuple, tuple[tuple[object, ...], tuple[list[Group], dict[str, int], dict[str, float]]]] | None = None


def _groups(tmap: TensorMap, layer_device: tuple[str, ...], budget: Budget, hw: Hardware, request: PlanRequest, *,
            types: Mapping[str, str] | None, quality: QualityModel | None,
            speeds: Mapping[str, DeviceSpeed] | None, extra_time: Mapping[str, float] | None
            ) -> tuple[list[Group], dict[str, int], dict[str, float]]:
    """:func:`build_groups`, remembered across the points of one :func:`pareto_plans` (placement of a fixed mix and
    cluster plans, whose inputs are mappings, are built afresh)."""
    cache = _GROUPS_CACHE
    if cache is None or types is not None or speeds is not None or extra_time is not None:
        return build_groups(tmap, layer_device, budget, hw, request.run, types=types, request=request,
                            quality=quality, speeds=speeds, extra_time=extra_time)
    key = (id(tmap), id(hw), id(quality), layer_device, budget.devices, tuple(sorted(budget.bytes.items())),
           request.run, request.fixed, request.allow, request.deny, request.has_imatrix,
           request.ignore_imatrix_rules, request.floors, request.max_size_bytes, request.granularity)
    hit = cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], (tmap, hw, quality))):
        groups, fixed, fixed_time = hit[1]
    else:
        groups, fixed, fixed_time = build_groups(tmap, layer_device, budget, hw, request.run, types=None,
                                                 request=request, quality=quality)
        cache[key] = ((tmap, hw, quality), (groups, fixed, fixed_time))
    return list(groups), dict(fixed), dict(fixed_time)


def _objective(request: PlanRequest, quality: QualityModel | None, placement_only: bool, fixed_time: Mapping[str, float]) -> Objective:
    max_s = 1.0 / request.min_tg if request.min_tg else None
    max_pp = None
    if request.min_pp:
        max_pp = min(request.run.ubatch, request.run.batch) / request.min_pp - fixed_time["pp_s"]
    cpu_first = request.run.engine == "mainline"
    if placement_only:
        return Objective("feasibility" if request.objective == "feasibility" else "speed", max_seconds=max_s, max_pp_seconds=max_pp, work_limit=request.work_limit,
                         cpu_first=cpu_first)
    return Objective(request.objective, max_seconds=max_s, max_pp_seconds=max_pp,
                     max_total_bytes=request.max_size_bytes, work_limit=request.work_limit, cpu_first=cpu_first,
                     relative_gap=request.relative_gap)


def _expand(sol: Solution, groups_tensors: Mapping[str, tuple[str, ...]]) -> tuple[dict[str, str], dict[str, str]]:
    types: dict[str, str] = {}
    devices: dict[str, str] = {}
    for key, opt in sol.choice.items():
        names = groups_tensors[key]
        tnames = opt.type_name.split("+")
        for i, n in enumerate(names):
            types[n] = tnames[i] if len(tnames) > 1 else tnames[0]
            devices[n] = opt.device
    return types, devices


def place(tmap: TensorMap, types: Mapping[str, str], hw: Hardware, request: PlanRequest) -> Plan:
    """Choose a device for every tensor of a fixed mix, maximising predicted TG within every budget.

    Raises:
        InfeasibleBudgetError: with the shortfall per device and the nearest feasible options.
    """
    budget = Budget.from_hardware(hw)
    cfg = request.run
    need = sum(mix_bytes(tmap, types).values()) + cfg.os_reserve_bytes + cfg.gpu_margin_bytes * len(budget.gpus)
    have = sum(budget.bytes.values())
    if need > have:   # no placement can help: skip the solver
        raise with_options(InfeasibleBudgetError("weights alone exceed RAM + VRAM",
                                                 shortfall_bytes={"RAM+VRAM": need - have}),
                           tmap, types, budget, request, _feasibility(tmap, hw, types))
    try:
        layer_device, sol, groups = _solve_with_layers(tmap, hw, budget, replace(request, objective="placement"),
                                                       types=types, quality=None)
    except InfeasibleBudgetError as exc:
        raise with_options(exc, tmap, types, budget, request, _feasibility(tmap, hw, types)) from None
    return _assemble(tmap, hw, budget, replace(request, objective="placement"), layer_device, sol, groups,
                     fixed_types=types, quality=None)


def _assemble(tmap: TensorMap, hw: Hardware, budget: Budget, request: PlanRequest, layer_device: tuple[str, ...],
              sol: Solution, groups: list[Group], *, fixed_types: Mapping[str, str] | None,
              quality: QualityModel | None,
              speed_of: Callable[[Mapping[str, str], Placement, RunConfig], SpeedEstimate] | None = None) -> Plan:
    gmap = {g.key: g.tensors for g in groups}
    types, devices = _expand(sol, gmap)
    output_device = None
    if tmap.derived(tied_output) is not None and devices.get("token_embd.weight", CPU) != CPU:
        # a tied output's option names the output layer's device; token_embd itself is the input layer (CPU)
        output_device, devices["token_embd.weight"] = devices["token_embd.weight"], CPU
    cat = catalogue()
    for t in tmap.tensors:
        twin = tmap.nextn_twin(t) if t.name not in types and fixed_types is None else None
        if twin in types and quantizable(t, request.run.qengine):    # a NextN/MTP block is not loaded
            types[t.name] = cat.row_fallback(cat.get(types[twin], engine=request.run.qengine), t.ne0,
                                             request.run.qengine)[0].name
        if t.name not in types:
            types[t.name] = fixed_types.get(t.name, t.dtype) if fixed_types else t.dtype
        if t.name not in devices:
            devices[t.name] = (CPU if t.role == "token_embd" else
                               layer_device[t.layer] if t.layer is not None else
                               (budget.gpus[-1] if budget.gpus else CPU))
    notes: list[str] = []
    n_cpu = sum(1 for d in layer_device if d == CPU)
    if budget.gpus and n_cpu:
        notes.append(f"attention and KV of the first {n_cpu} layers stay on the CPU (-ngl {len(layer_device) - n_cpu})")
    return _finish(tmap, hw, budget, request, layer_device, types, devices, sol, quality, notes, speed_of=speed_of,
                   output_device=output_device)


def joint_plan(tmap: TensorMap, hw: Hardware, request: PlanRequest, quality: QualityModel) -> Plan:
    """Choose quant types and devices together (one integer program over (type, device) options per group)."""
    return joint_plan_and_solution(tmap, hw, request, quality)[0]


def joint_plan_and_solution(tmap: TensorMap, hw: Hardware, request: PlanRequest, quality: QualityModel,
                            hint: Solution | None = None) -> tuple[Plan, Solution]:
    """:func:`joint_plan` and the solve it rests on (``hint``: a solution to start from, e.g. a neighbouring
    --pareto point's)."""
    budget = Budget.from_hardware(hw)
    try:
        layer_device, sol, groups = _solve_with_layers(tmap, hw, budget, request, types=None, quality=quality,
                                                       hint=hint)
    except InfeasibleBudgetError as exc:
        raise with_options(exc, tmap, None, budget, request, _feasibility(tmap, hw, None)) from None
    plan = _assemble(tmap, hw, budget, request, layer_device, sol, groups, fixed_types=None, quality=quality)
    if (request.min_tg or request.min_pp) and request.max_rules is None:
        return plan, sol     # the speed targets were solved exactly; merging groups could undo them
    return _simplify(tmap, hw, budget, request, plan, sol, quality), sol


def _simplify(tmap: TensorMap, hw: Hardware, budget: Budget, request: PlanRequest, plan: Plan, sol: Solution,
              quality: QualityModel) -> Plan:
    """Merge one-off type groups that buy no measurable quality (planner.simplify), or down to --max-rules;
    the merged plan is re-checked like any other."""
    from planner.groups import candidate_types, plan_floor
    from planner.recipe import rule_count
    from planner.simplify import simplify_mix, simplify_note

    cat = catalogue()
    by = tmap.by_name()
    floor = plan_floor(tmap, budget, request)
    engine = request.run.qengine
    pinned = [compile_user_regex(rx, "--fixed") for rx, _ in request.fixed]

    def allowed(name: str, ty: str) -> bool:
        if any(search(rx, name) for rx in pinned):
            return False
        t = by[name]
        return ty in candidate_types(t, engine, allow=request.allow or None, deny=request.deny,
                                     has_imatrix=request.has_imatrix, on_gpu=plan.devices[name] != CPU,
                                     floor=floor, ignore_imatrix_rules=request.ignore_imatrix_rules)

    s = simplify_mix(tmap, plan.types, ln_ratio_of=lambda n, ty: quality.k * quality.tensor_loss(n, ty),
                     bytes_of=lambda n, ty: cat.get(ty).tensor_bytes(by[n].shape),
                     device_of=lambda n: plan.devices[n],
                     free_bytes={d.device: max(0, d.free_bytes) for d in plan.memory.devices},
                     allowed=allowed, max_rules=request.max_rules,
                     count_rules=(lambda ty: rule_count(tmap, ty, engine)) if request.max_rules is not None else None)
    if not s.merges:
        return plan
    last = tmap.params.n_loaded_layers - 1
    types = dict(s.types)
    for t in tmap.tensors:          # NextN/MTP blocks follow the last loaded layer, as before the merge
        if not tmap.is_loaded(t) and t.name in types:
            twin = f"blk.{last}." + t.name.split(".", 2)[2]
            if twin in types:
                types[t.name] = types[twin]
    note = simplify_note(s, request.max_rules)
    return _finish(tmap, hw, budget, request, plan.layer_device, types, dict(plan.devices), sol, quality,
                   [*plan.notes, note], output_device=plan.output_device)


def _feasible(tmap: TensorMap, hw: Hardware, budget: Budget, request: PlanRequest,
              types: Mapping[str, str] | None) -> bool:
    """Whether any plan exists under these budgets (no objective: the first assignment that meets every
    constraint answers).  No quality model: no constraint of the question reads a loss, and groups without
    losses are cheaper to build (about half of build_groups) and prune to a smaller model."""
    probe_req = replace(request, objective="feasibility", work_limit=1.0)
    try:
        _solve_with_layers(tmap, hw, budget, probe_req, types=types, quality=None)
        return True
    except InfeasibleBudgetError:
        return False


def _feasibility(tmap: TensorMap, hw: Hardware, types: Mapping[str, str] | None
                 ) -> Callable[[Budget, PlanRequest], bool]:
    return lambda budget, request: _feasible(tmap, hw, budget, request, types)


def feasible_for(tmap: TensorMap, hw: Hardware, types: Mapping[str, str] | None) -> Callable[[PlanRequest], bool]:
    """``request -> whether any plan exists`` on ``hw`` (a fixed mix when ``types`` is given)."""
    budget = Budget.from_hardware(hw)
    return lambda request: _feasible(tmap, hw, budget, request, types)
