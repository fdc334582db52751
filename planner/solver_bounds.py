"""Reduced-cost tightening: exact bounds on the CP-SAT model's variables from its LP relaxation and a known solution.

For a minimisation ``min c.x`` over integer ``x`` in ``[lo, hi]`` with linear rows ``l_i <= a_i.x <= u_i``, any
multipliers ``y`` give (weak duality) ``c.x >= L(y) + sum_j d_j (x_j - m_j)`` for every feasible ``x``, where
``d = c - y A`` are the reduced costs, ``L(y) = sum_i y_i (l_i if y_i > 0 else u_i) + sum_j d_j m_j`` and ``m_j`` is
the bound of ``x_j`` at which ``d_j x_j`` is smallest.  So every solution no worse than a known one of objective
``U`` has ``|x_j - m_j| <= (U - L) / |d_j|``: the classic reduced-cost fixing of branch and bound (e.g. Nemhauser
and Wolsey, *Integer and Combinatorial Optimization*, 1988, II.4.2, Prop. 2.1), applied once before the search.
The multipliers are the LP duals from GLOP (bundled with OR-Tools); they only choose ``y``: ``L``, ``d`` and the
new bounds are computed here in exact rational arithmetic from the model's integer coefficients, so the bounds
are valid whatever the LP's tolerances.  Every optimal solution of the original model satisfies them, and the
solution that gave ``U`` does too, so the tightened model has the same optimum and CP-SAT's proof on it is a proof
for the original.

On the multiple-choice knapsacks the planner solves, the LP gap is a few hundredths of a percent, so most
(class, option) counts are fixed to 0 or to a narrow range: measured on DeepSeek-R1 on 2x RTX 3090 + 384 GiB,
quality step, 893 of 983 variables tightened from the solution CP-SAT finds in 0.1 work units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.solver import Objective

_INF = 2 ** 62


def _rows(proto: Any) -> list[tuple[list[tuple[int, int]], int | None, int | None]] | None:
    """The model's constraints as (terms, lower, upper) linear rows, or None when one is not a plain linear row
    (an enforcement literal, a negated literal, a domain with holes, another constraint kind)."""
    rows: list[tuple[list[tuple[int, int]], int | None, int | None]] = []
    for c in proto.constraints:
        if len(c.enforcement_literal):
            return None
        if c.has_linear():
            dom = list(c.linear.domain)
            if len(dom) != 2:
                return None
            terms = [(int(v), int(k)) for v, k in zip(c.linear.vars, c.linear.coeffs)]
            lo: int | None = None if dom[0] <= -_INF else int(dom[0])
            hi: int | None = None if dom[1] >= _INF else int(dom[1])
        elif c.has_exactly_one():
            lits = [int(v) for v in c.exactly_one.literals]
            if any(v < 0 for v in lits):
                return None
            terms, lo, hi = [(v, 1) for v in lits], 1, 1
        else:
            return None
        if any(v < 0 for v, _ in terms):
            return None
        rows.append((terms, lo, hi))
    return rows


def var_bounds(var: Any) -> tuple[int, int]:
    """Lowest and highest value of a CP-SAT proto variable.  ``var.domain[-1]`` is not the last element under
    ortools 9.15's pybind protos (it gave 0 for a domain [0, 7], so the probe's "LP solution rounded down" hint was
    every variable at its lower bound): the last element is indexed from the front (a third of the time of copying
    the domain to a list; ~20,000 calls in a two-GPU plan)."""
    dom = var.domain
    return int(dom[0]), int(dom[len(dom) - 1])


def _set_hints(m: Any, values: Iterable[tuple[int, int]]) -> None:
    """Replace the hint of CP-SAT model ``m`` by (variable index, value) pairs, written to the proto's fields
    directly: what ``clear_hints`` and one ``add_hint`` per variable write, in a twentieth of the time."""
    m.clear_hints()
    hint = m.proto.solution_hint
    for j, v in values:
        hint.vars.append(j)
        hint.values.append(v)


class GlopLP:
    """GLOP (deterministic) on the LP relaxation of ``min cost.x`` over ``rows`` and ``bounds``; rows can be added
    after a solve and the LP solved again (the cuts' rounds: only the new rows are passed to GLOP from Python).  A
    variable named twice in a row has its coefficients summed.  The one LP builder of the reduced-cost bounds here
    and of the cuts (planner.solver_cuts).  After :meth:`solve`, ``lp``, ``xs`` and ``cons`` are the solved
    solver's."""

    def __init__(self, bounds: Sequence[tuple[int, int]], rows: Sequence[tuple[list[tuple[int, int]], int | None,
                                                                                int | None]], cost: Sequence[int]):
        from ortools.linear_solver import pywraplp

        self._model = self.lp = pywraplp.Solver.CreateSolver("GLOP")
        self.xs: list[Any] = [self.lp.NumVar(float(lo), float(hi), "") for lo, hi in bounds]
        self.cons: list[Any] = []
        self._proto: Any = None                  # the model as a proto, once rows come after a solve
        self._solved = False
        self.add_rows(rows)
        obj = self.lp.Objective()
        for j, k in enumerate(cost):
            if k:
                obj.SetCoefficient(self.xs[j], float(k))
        obj.SetMinimization()

    def add_rows(self, rows: Sequence[tuple[Sequence[tuple[int, int]], int | None, int | None]]) -> None:
        if self._solved and self._proto is None:
            from ortools.linear_solver import linear_solver_pb2

            self._proto = linear_solver_pb2.MPModelProto()
            self._model.ExportModelToProto(self._proto)
        if self._proto is not None:
            # after a solve: straight into the model's proto, each row's terms in one call (R1's speed step: 77k
            # coefficients set one by one through the solver's API cost ~0.1 CPU s)
            for terms, lo, hi in rows:
                summed: dict[int, int] = {}
                for v, k in terms:
                    summed[v] = summed.get(v, 0) + k
                ct = self._proto.constraint.add()
                ct.lower_bound = -math.inf if lo is None else float(lo)
                ct.upper_bound = math.inf if hi is None else float(hi)
                ct.var_index.extend(summed.keys())
                ct.coefficient.extend(float(k) for k in summed.values())
            return
        model = self._model
        for terms, lo, hi in rows:
            ct = model.Constraint(-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))
            summed = {}
            for v, k in terms:
                summed[v] = summed.get(v, 0) + k
            for v, k in summed.items():
                ct.SetCoefficient(self.xs[v], float(k))
            self.cons.append(ct)

    def solve(self) -> bool:
        """Whether GLOP reached the optimum.  A solve after rows were added runs a fresh solver loaded from the
        model's proto (exported after the first solve, the new rows appended to it), from scratch: GLOP warm-started
        from the last basis ends at another optimal basis of these degenerate LPs, so other cuts, and CP-SAT's
        searches from them measured worse on the cases the cut rounds were measured on (bench_solver, December
        2026: DeepSeek-R1 on 2x RTX 3090 + 384 GiB 1.30 -> 1.84 work, Kimi-K2 there 1.67 -> 3.26)."""
        from ortools.linear_solver import pywraplp

        if self._proto is not None:
            self.lp = pywraplp.Solver.CreateSolver("GLOP")
            self.lp.LoadModelFromProto(self._proto)
            self.xs, self.cons = self.lp.variables(), self.lp.constraints()
        self._solved = True
        return bool(self.lp.Solve() == pywraplp.Solver.OPTIMAL)


def solved_glop(bounds: Sequence[tuple[int, int]], rows: Sequence[tuple[list[tuple[int, int]], int | None, int | None]],
                cost: Sequence[int]) -> tuple[Any, list[Any], list[Any]] | None:
    """:class:`GlopLP`, solved: (solver, columns, rows), or None when it does not reach optimality."""
    got = GlopLP(bounds, rows, cost)
    if not got.solve():
        return None
    return got.lp, got.xs, got.cons


# The last LP solved here or by the cut rounds (planner.solver_cuts.cuts_of, whose last round solves the LP with all
# its cuts): (its rows, bounds and cost; duals, primal values).  A tightened search asks :func:`relaxation` for the
# LP the cut rounds ended with, and the target search asks again (DeepSeek-R1 on 2x RTX 3090: 3 LPs of ~80k
# nonzeros built and solved, ~0.3 CPU s, now none)
_LAST_LP: tuple[tuple, tuple[list[float], list[float]]] | None = None


def lp_key(rows: Sequence[tuple[Sequence[tuple[int, int]], int | None, int | None]],
           bounds: Sequence[tuple[int, int]], cost: Sequence[int]) -> tuple:
    """What the LP relaxation's solution depends on (GLOP is deterministic: the same LP, the same solution)."""
    return tuple((tuple(t), lo, hi) for t, lo, hi in rows), tuple(bounds), tuple(cost)


def remember_lp(key: tuple, duals: list[float], values: list[float]) -> None:
    """Record the solution of the LP ``key`` (:func:`lp_key`) for :func:`_lp_solve`."""
    global _LAST_LP
    _LAST_LP = (key, (duals, values))


def _lp_solve(proto: Any, rows: list[tuple[list[tuple[int, int]], int | None, int | None]],
              cost: list[int]) -> tuple[list[float], list[float]] | None:
    """Duals and primal values of the LP relaxation, or None when it does not solve to optimality."""
    bounds = [var_bounds(v) for v in proto.variables]
    key = lp_key(rows, bounds, cost)
    if _LAST_LP is not None and _LAST_LP[0] == key:
        return _LAST_LP[1]
    got = solved_glop(bounds, rows, cost)
    if got is None:
        return None
    _, xs, cons = got
    remember_lp(key, [ct.dual_value() for ct in cons], [x.solution_value() for x in xs])
    assert _LAST_LP is not None
    return _LAST_LP[1]


@dataclass(frozen=True, slots=True)
class Relaxation:
    """The LP relaxation of a CP-SAT model: its bound and reduced costs (exact, see the module docstring) and the
    LP's primal solution (floating point: only a starting point for a search, never a claim)."""

    bound: Fraction                 # every solution of the model has an objective at least this
    reduced: list[Fraction]         # reduced cost of each variable, in proto order
    values: list[float]             # the LP optimum's value of each variable


def relaxation(proto: Any, cuts: Sequence[tuple[Mapping[int, int], int]] = ()) -> Relaxation | None:
    """:class:`Relaxation` of the CP-SAT model ``proto`` (integer linear objective, minimised), with the rows
    ``sum w_j x_j >= rhs`` of ``cuts`` (valid inequalities: planner.solver_cuts) added to its LP.  None when the model
    is not a plain integer linear program or its LP does not solve."""
    rows = _rows(proto)
    if rows is None or proto.objective.scaling_factor not in (0, 1) or proto.objective.offset:
        return None
    rows += [(sorted(w.items()), rhs, None) for w, rhs in cuts]
    n = len(proto.variables)
    doms = [list(v.domain) for v in proto.variables]
    if any(len(dm) != 2 for dm in doms):
        return None
    cost = [0] * n
    for v, k in zip(proto.objective.vars, proto.objective.coeffs):
        cost[int(v)] += int(k)
    lp = _lp_solve(proto, rows, cost)
    if lp is None:
        return None
    duals, values = lp
    num, top, den = priced(cost, rows, duals)
    d = [Fraction(x, den) for x in num]
    bound = Fraction(top, den)
    bound += sum(dj * (doms[j][0] if dj > 0 else doms[j][1]) for j, dj in enumerate(d) if dj)
    return Relaxation(bound, d, values)


def priced(cost: Sequence[int], rows: Sequence[tuple[Sequence[tuple[int, int]], int | None, int | None]],
           multipliers: Sequence[float]) -> tuple[list[int], int, int]:
    """``(num, top, den)``: the costs ``c - y A`` and the constant ``sum_i y_i s_i`` of the multipliers ``y`` of the
    rows (``s_i`` the row's lower side for ``y_i > 0``, its upper side for ``y_i < 0``; a zero multiplier, or one on an
    infinite side, drops its row), exactly, in integers over their common denominator ``den = 2**e``: every float
    multiplier is a dyadic rational (the same values as Fraction arithmetic row by row, which cost DeepSeek-R1's
    steps ~0.2 CPU s over the dense cuts).  Shared by :func:`relaxation` and planner.solver_lagrange."""
    used = [(terms, lo if yf > 0 else hi, yf.as_integer_ratio()) for (terms, lo, hi), yf in zip(rows, multipliers)
            if (yf > 0 and lo is not None) or (yf < 0 and hi is not None)]
    e = max((d.bit_length() - 1 for _t, _s, (_n, d) in used), default=0)
    num = [k << e for k in cost]
    top = 0
    for terms, side, (yn, yd) in used:
        y = yn << (e - (yd.bit_length() - 1))
        assert side is not None
        top += y * side
        for v, k in terms:
            num[v] -= y * k
    return num, top, 1 << e


def lagrangian_bound(proto: Any) -> tuple[Fraction, list[Fraction]] | None:
    """``(L, d)``: a lower bound on the objective of every solution of the CP-SAT model ``proto`` (integer linear
    objective, minimised) and the reduced costs it comes with, from the LP duals, in exact arithmetic.  None when
    the model is not a plain integer linear program or its LP does not solve."""
    r = relaxation(proto)
    return None if r is None else (r.bound, r.reduced)


def reduced_cost_bounds(proto: Any, upper: int, relax: Relaxation | None = None) -> dict[int, tuple[int, int]] | None:
    """New (lower, upper) bounds of the variables of a CP-SAT model ``proto`` (integer linear objective, minimised)
    that every solution of objective at most ``upper`` satisfies; only the changed ones.  ``relax``: the model's
    :func:`relaxation`, when already computed (on the same variable domains).  None when the model is not a plain
    integer linear program (then nothing is tightened)."""
    relax = relax if relax is not None else relaxation(proto)
    if relax is None:
        return None
    bound, d = relax.bound, relax.reduced
    slack = upper - bound
    if slack < 0:
        return None                       # no solution is that good: not for us to decide here
    new: dict[int, tuple[int, int]] = {}
    for j, dj in enumerate(d):
        lo, hi = (int(x) for x in proto.variables[j].domain)
        if dj > 0 and hi > lo:
            reach = math.floor(slack / dj)
            if lo + reach < hi:
                new[j] = (lo, lo + reach)
        elif dj < 0 and hi > lo:
            reach = math.floor(slack / -dj)
            if hi - reach > lo:
                new[j] = (hi - reach, hi)
    return new


def objective_if_feasible(proto: Any, values: list[int]) -> int | None:
    """The objective of ``values`` (one per variable of ``proto``) when they satisfy every domain and row of the
    model exactly (integer arithmetic), else None; None too for a model that is not a plain integer linear program."""
    rows = _rows(proto)
    if rows is None or len(values) != len(proto.variables):
        return None
    for v, x in zip(proto.variables, values):
        dom = list(v.domain)
        if not any(dom[i] <= x <= dom[i + 1] for i in range(0, len(dom), 2)):
            return None
    for terms, lo, hi in rows:
        s = sum(k * values[v] for v, k in terms)
        if (lo is not None and s < lo) or (hi is not None and s > hi):
            return None
    return sum(int(k) * values[int(v)] for v, k in zip(proto.objective.vars, proto.objective.coeffs))


# Work of the probe of a tightened solve, the run that finds the solution whose objective bounds the variables.  It
# searches the model restricted to what a solution within GUESS_GAP of the LP bound can use, starting from the LP's
# solution rounded down.  Measured on the quality steps (distance of the probe's solution to the optimum HiGHS
# proves, scipy.optimize.milp on the exported model): DeepSeek-R1 on 2x RTX 3090 + 384 GiB 0.17 % after the old
# 0.1-work probe of the whole model, 0.073 % after 0.02 work here; Kimi-K2 there 0.27 % -> 0.074 % (0.02 work),
# 0.0097 % (0.05 work).  The headline's quality step: 0.1 + 0.005 work to its proof before, 0.03 + 0.005 now.
TIGHTEN_PROBE_WORK = 0.03
# A guess of the LP gap (the optimum's distance to the LP bound, relative): the LP gaps of the instances measured
# here are 0.03-0.2 %.  Only the probe's model depends on it: a guess too small leaves it no solution (then the
# probe runs on the whole model), a guess too large makes it larger; a result is never wrong for it.
GUESS_GAP = 1e-3
# Rounds of Gomory cuts (planner.solver_cuts) in the LP of a tightened search: its bound, the reduced costs that cut
# the variables' ranges, the target search's.  Not rows of the CP-SAT model: measured (December 2026), with them in
# the model CP-SAT's search found far worse solutions on Kimi-K2 on 2x RTX 3090 (15.6 % from the bound after 0.5
# work) and 4x RTX 3090 (0.58 %).  3 rounds: the LP gap of DeepSeek-R1's speed step 0.110 % -> 0.017 % in 0.3 CPU s
# (5 rounds: 0.004 %, 1.1 s); Kimi-K2's 0.177 % -> 0.099 %, 4x RTX 3090's 0.165 % -> 0.084 %.
CUT_ROUNDS = 3
# Rounds for the balanced plan's speed step (objective kind "speed"), whose LP gap is the larger (see CUT_ROUNDS);
# the quality steps keep 3 (5 everywhere made DeepSeek-R1's quality step slower).  Measured against 3 (CP-SAT work,
# bench_solver's cases, December 2026): Kimi-K2 on 2x RTX 3090 + 384 GiB 3.263 -> 1.672 work, FEASIBLE 0.120 % ->
# proven within the step's 0.1 %; DeepSeek-R1 there the same 1.302 work, its gap 0.024 % -> 0.012 %; 4x RTX 3090
# the same 2.500 work, its search ending 0.29 % from the bound instead of 0.23 % (4 and 6 rounds: the same); the
# headline, --ctx max, --pareto 8, kimi-k2 24+384 and --granularity band unchanged (their speed step is proven by the
# plain short try, or its model has more than planner.solver_cuts.MAX_ROWS rows).
SPEED_CUT_ROUNDS = 5
# The bound with the cuts becomes CP-SAT's objective domain (it stops once its solution is within the allowed gap of
# it) when the solution at hand is within FLOOR_NEAR times that gap of it.  Farther, CP-SAT cannot stop early anyway
# and the domain only moved its search, measured to worse solutions: 4x RTX 3090's speed step (its solution at hand
# 0.43 %, 4.3 gaps, from the bound) ended 0.23 % from the bound without it, 0.33 % with it (twice), after the same
# work.  Near: DeepSeek-R1 on 2x RTX 3090 + 384 GiB, quality long try (2.9 gaps away) 1.7 -> 0.29 work, speed long
# try 0.16 -> 0.001.
FLOOR_NEAR = 3.0
# The probe on the whole model (the model is not a plain integer program, or the guessed one had no solution)
FULL_PROBE_WORK = 0.1


def tightened_search(cp_model: Any, m: Any, objective: Objective, coupling: Sequence[int] = (),
                     kept: Sequence[Sequence[int]] = ()) -> tuple[Any, int]:
    """Search in two runs: a short probe for a good solution, then, with every variable's range cut to what a
    solution at least as good can use (:func:`reduced_cost_bounds`, exact), the rest of the
    work from it.  The optimum is the same and a proof on the tightened model is one for the original.

    The probe runs on the model cut the same way for an objective GUESS_GAP above the LP bound, hinted with the LP's
    solution rounded down: any solution it finds is one of the original model, and when it proves an optimum no
    higher than the guess, that optimum is the original's (every better solution lies within the cut).  Its bound
    is one of the original up to the guess: every solution of objective at most the guess is one of the cut model,
    every other is above the guess, so the original's optimum is at least the lower of the probe's bound and the
    guess + 1 (its optimum is sought: CP-SAT's gap limit 0 in the probe, whatever the search's).  A complete
    feasible hint the caller gave (the long try after a short one, the speed step after the quality step) within
    the guess is used instead of a probe; a hint above the guess (the balanced speed step's hint, the quality
    solution, is often several percent slow) still gets the probe, and the better of the two is kept.

    The LP is the model's with CUT_ROUNDS (a speed step: SPEED_CUT_ROUNDS) rounds of Gomory cuts (planner.solver_cuts,
    exact and valid for every integer solution), so its bound is a bound of the original: every result reports the
    higher of it and CP-SAT's, and when the solution at hand is near it (FLOOR_NEAR) it is CP-SAT's starting bound
    (the objective's domain), so the search stops as soon as its solution is within the allowed gap of it.
    ``coupling`` and ``kept`` go to the decomposition (:func:`_by_device`): the rows over every part, and the families
    of variables whose sums its last neighbourhood search holds."""
    import planner.solver as solver
    from planner.solver_cuts import model_cuts

    proto = m.proto
    rounds = SPEED_CUT_ROUNDS if objective.kind == "speed" else CUT_ROUNDS
    cuts = model_cuts(proto, rounds) if rounds else []
    relax = relaxation(proto, cuts)
    if relax is None:
        return _probe_then_tighten(cp_model, m, objective)
    n = len(proto.variables)
    domains = [list(v.domain) for v in proto.variables]
    hinted = dict(zip(proto.solution_hint.vars, proto.solution_hint.values))
    best: tuple[int, list[int]] | None = None
    if len(hinted) == n:
        given = [int(hinted[j]) for j in range(n)]
        upper = objective_if_feasible(proto, given)
        if upper is not None:
            best = (upper, given)
    guess = math.floor(relax.bound + GUESS_GAP * abs(relax.bound))
    used = 0.0
    bound = math.ceil(relax.bound)
    if best is None or best[0] > guess:
        probe = min(TIGHTEN_PROBE_WORK, objective.work_limit)
        _restrict(proto, reduced_cost_bounds(proto, guess, relax) or {})
        _set_hints(m, ((j, min(max(math.floor(x + 1e-9), lo), hi))
                       for j, (x, (lo, hi)) in enumerate(zip(relax.values, map(var_bounds, proto.variables)))))
        first, status = solver._run(cp_model, m, replace(objective, relative_gap=0.0), probe)
        used = first.deterministic_time
        if status == cp_model.OPTIMAL and first.objective_value <= guess:
            return first, status                 # the original's optimum: every better solution is in the cut
        # a bound of the original: a solution of objective <= guess is one of the cut model, so at least the
        # probe's bound; any other is above the guess (an infeasible cut model: every solution is)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            bound = max(bound, min(math.floor(first.best_objective_bound), guess + 1))
        elif status == cp_model.INFEASIBLE:
            bound = max(bound, guess + 1)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            obj = round(first.objective_value)
            lifted = min(bound, obj)
            if obj - lifted <= min(objective.aim_gap or objective.relative_gap, objective.relative_gap) * max(1, abs(obj)):
                return _Found(first, [int(first.value(m.get_int_var_from_proto_index(j))) for j in range(n)], obj,
                              lifted, first.deterministic_time), cp_model.OPTIMAL
        for j, dom in enumerate(domains):
            _set_domain(proto, j, dom)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            found = round(first.objective_value)
            if best is None or found < best[0]:
                best = (found, [int(first.value(m.get_int_var_from_proto_index(j))) for j in range(n)])
        elif best is None:                       # the guess was too low: probe the whole model
            _set_hints(m, hinted.items())
            return _probe_then_tighten(cp_model, m, replace(objective, work_limit=objective.work_limit - used))
    assert best is not None
    upper, values = best
    return _tighten_and_run(cp_model, m, objective, upper, values, max(objective.work_limit - used, 0.0), relax,
                            cuts, coupling, bound, kept)


def _probe_then_tighten(cp_model: Any, m: Any, objective: Objective) -> tuple[Any, int]:
    """:func:`tightened_search` without a guess: a probe on the whole model, then the model tightened by its
    solution."""
    import planner.solver as solver

    probe = min(FULL_PROBE_WORK, objective.work_limit)
    first, status = solver._run(cp_model, m, objective, probe)
    if status == cp_model.OPTIMAL or status == cp_model.INFEASIBLE:
        return first, status
    rest = max(objective.work_limit - first.deterministic_time, 0.0)
    if status != cp_model.FEASIBLE:         # nothing found yet: the rest of the work on the model as it is
        return solver._run(cp_model, m, objective, rest)
    values = [int(first.value(m.get_int_var_from_proto_index(j))) for j in range(len(m.proto.variables))]
    return _tighten_and_run(cp_model, m, objective, round(first.objective_value), values, rest)


def _tighten_and_run(cp_model: Any, m: Any, objective: Objective, upper: int, values: Sequence[int], work: float,
                     relax: Relaxation | None = None, cuts: Sequence[tuple[Mapping[int, int], int]] = (),
                     coupling: Sequence[int] = (), bound: int | None = None, kept: Sequence[Sequence[int]] = ()
                     ) -> tuple[Any, int]:
    """Cut every variable's range to what a solution of objective ``upper`` or better can use
    (:func:`reduced_cost_bounds`), hint the known solution ``values`` and search for ``work`` units; when the search
    may stop within a gap (``objective.relative_gap``) and ends outside it, the last TARGET_WORK of them go to
    :func:`_target_search` (a quality objective's: its first target before the search, TARGET_FIRST_WORK).
    ``bound``: a bound of the model known besides its LP's (:func:`tightened_search`'s probe).  With ``coupling``
    rows (planner.solver.solve: the rows over every class) and an aimed gap the solution at hand is outside of, the
    Lagrangian decomposition at those rows comes first (:func:`_by_device`, within ``work``): its bound becomes the
    search's floor, its solution the one at hand; when that is still outside the aimed gap, the search aims at it
    for at most AIMED_WORK (LP-guided), and its result counts as within the allowed gap when it is.  The search's
    own run is at most ``objective.search_work`` when that is set (the decomposition's parts); after a run so
    capped, RINS and the target search share all the work left instead of TARGET_WORK."""
    import planner.solver as solver

    proto = m.proto
    _tighten_to(proto, upper, relax, values)
    floor = max(math.ceil(relax.bound), bound if bound is not None else -_INF) if relax is not None else None
    by_device = bool(coupling and relax is not None and floor is not None and objective.aim_gap
                     and upper - floor > objective.aim_gap * max(1, abs(upper)))
    decomposed = False                           # the decomposition ran (the model fell apart) and gave a bound
    if by_device:
        assert relax is not None and floor is not None
        better, values, lifted, used = _by_device(cp_model, m, objective, upper, list(values), coupling, relax, kept,
                                                  work)
        decomposed = lifted > -_INF
        work = max(work - used, 0.0)
        floor = max(floor, min(lifted, better))
        if better < upper:
            upper = better
            _tighten_to(proto, upper, relax, values)
    _set_hints(m, enumerate(values))
    reserve = min(TARGET_WORK, work / 2) if objective.relative_gap > 0 else 0.0
    if reserve and objective.kind == "quality" and floor is not None and (
            upper - floor > objective.relative_gap * max(1, abs(upper))):
        # one target of the search for a solution within the gap before the search for the optimum (TARGET_FIRST_WORK)
        got, status = _target_search(cp_model, m, objective, _Found(None, list(values), upper, floor, 0.0),
                                     cp_model.FEASIBLE, min(reserve, TARGET_FIRST_WORK), cuts, tries=1)
        if status == cp_model.OPTIMAL:
            return got, status
        work = max(work - got.deterministic_time, 0.0)
        reserve = min(reserve, work / 2)
        floor = max(floor, math.floor(got.best_objective_bound))     # lifted when its target had no solution
    if cuts and floor is not None and upper - floor <= FLOOR_NEAR * objective.relative_gap * abs(upper):
        _floor_objective(proto, floor)
    run = work - reserve if objective.search_work is None else min(objective.search_work, work - reserve)
    searched = objective
    aimed = decomposed and floor is not None and upper - floor > objective.aim_gap * max(1, abs(upper))
    if aimed:
        # the decomposition left its solution outside the aimed gap: a short search for it, branching the way the LP
        # points (planner.solver.lp_guided, which a model tightened by reduced costs does not take by default)
        searched = replace(objective, relative_gap=objective.aim_gap, tighten=False)
        run = min(run, AIMED_WORK)
    found, status = solver._run(cp_model, m, searched, run)
    if aimed and status == cp_model.FEASIBLE and (
            round(found.objective_value) - math.floor(found.best_objective_bound)
            <= objective.relative_gap * max(1, abs(round(found.objective_value)))):
        status = cp_model.OPTIMAL                  # within the gap the search may stop at, if not the one it aimed at
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE):
        # no solution within the work (seen with the cut rows, a hint CP-SAT did not complete): the one at hand
        found = _Found(found, list(values), upper, floor if floor is not None else 0, found.deterministic_time)
        found.best_objective_bound = min(found.best_objective_bound, float(upper))
        status = cp_model.FEASIBLE
    found, status = _with_bound(cp_model, m, found, status, relax, objective.relative_gap, floor)
    left = work - found.deterministic_time
    if status == cp_model.FEASIBLE and relax is not None and objective.relative_gap > 0 and left > 0:
        found, status = _rins(cp_model, m, objective, found, relax, min(RINS_WORK, left))
    # after the decomposition its neighbourhood searches have had their turn: the target search for the aimed gap found
    # nothing more there (Kimi-K2 on 2x RTX 3090, 4x RTX 3090: 0.3 work each, ~0.4 CPU s, no solution)
    if status == cp_model.OPTIMAL and relax is not None and not by_device:
        found, status = _aim(cp_model, m, objective, found, status, work - found.deterministic_time, cuts)
    if status != cp_model.FEASIBLE or not reserve:
        return found, status
    return _target_search(cp_model, m, objective, found, status, work - found.deterministic_time, cuts)


def _tighten_to(proto: Any, upper: int, relax: Relaxation | None, values: Sequence[int]) -> None:
    """Every variable's range of ``proto`` cut to what a solution of objective ``upper`` or better can use
    (:func:`reduced_cost_bounds`: within the range it has), never cutting off the solution ``values``."""
    new = reduced_cost_bounds(proto, upper, relax) or {}
    if any(not lo <= values[j] <= hi for j, (lo, hi) in new.items()):
        return                                  # cannot happen in exact arithmetic; never cut off the solution at hand
    _restrict(proto, new)


def _aim(cp_model: Any, m: Any, objective: Objective, found: Any, status: int, work: float,
         cuts: Sequence[tuple[Mapping[int, int], int]]) -> tuple[Any, int]:
    """A search that ended within its allowed gap (``objective.relative_gap``) but outside ``objective.aim_gap``,
    with its solution within AIM_NEAR aimed gaps of its bound: the target search (:func:`_target_search`) for a
    solution within the aimed gap, for at most TARGET_WORK units; the result at hand when it finds none."""
    aim = objective.aim_gap
    if not 0 < aim < objective.relative_gap or work <= 0:
        return found, status
    obj = round(found.objective_value)
    bound = math.floor(found.best_objective_bound)
    if obj - bound <= aim * max(1, abs(obj)) or obj - bound > AIM_NEAR * aim * max(1, abs(obj)):
        return found, status
    got, st = _target_search(cp_model, m, replace(objective, relative_gap=aim), found, cp_model.FEASIBLE,
                             min(TARGET_WORK, work), cuts)
    if st == cp_model.OPTIMAL and round(got.objective_value) < obj:
        return got, st
    return _Found(found, [int(found.value(m.get_int_var_from_proto_index(j))) for j in range(len(m.proto.variables))],
                  obj, max(bound, min(math.floor(got.best_objective_bound), obj)), got.deterministic_time), status


def _neighbourhood(cp_model: Any, m: Any, objective: Objective, at_hand: Sequence[int], guide: Sequence[float] | None,
                   work: float, kept: Sequence[Sequence[int]] = ()) -> tuple[list[int], int | None, float]:
    """Every variable whose value in the solution ``at_hand`` equals its value in ``guide`` fixed there, and the sum
    of each family of variables in ``kept`` held at its value in ``at_hand``, the rest searched for ``work`` units:
    (the solution found, its objective, the work), or (``at_hand``, None, the work) when none is found.  A solution
    of that model is one of ``m`` (it only adds fixings and rows)."""
    import planner.solver as solver

    n = len(m.proto.variables)
    sub = m.clone()
    for j, (x, v) in enumerate(zip(guide or (), at_hand)):
        if abs(x - v) < 1e-6:
            _set_domain(sub.proto, j, [v, v])
    for family in kept:
        sub.add(sum(sub.get_int_var_from_proto_index(j) for j in family) == sum(at_hand[j] for j in family))
    _set_hints(sub, enumerate(at_hand))
    res, st = solver._run(cp_model, sub, replace(objective, relative_gap=0.0), work)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return list(at_hand), None, res.deterministic_time
    return ([int(res.value(sub.get_int_var_from_proto_index(j))) for j in range(n)], round(res.objective_value),
            res.deterministic_time)


def _by_device(cp_model: Any, m: Any, objective: Objective, upper: int, values: list[int], coupling: Sequence[int],
               relax: Relaxation, kept: Sequence[Sequence[int]] = (), work: float = math.inf
               ) -> tuple[int, list[int], int, float]:
    """The Lagrangian decomposition at the ``coupling`` rows (planner.solver_lagrange.device_bound) for a tightened
    search whose solution at hand (objective ``upper``, ``values``) lies outside its aimed gap: (the best objective
    and solution now, the decomposition's bound rounded up, the work).  The solution is the better of the one at hand,
    the parts' own when they meet the coupling rows, and the neighbourhood searches (:func:`_neighbourhood`) of the
    one at hand guided by the parts' solutions at the best multipliers (the Lagrangian heuristic in RINS's form:
    Qwen3-235B on 4x RTX 3090 + 384 GiB, speed step, 0.048 % -> 0.0037 % above the optimum in 0.07 work), then by
    the LP optimum with the cuts (RINS: Kimi-K2 on 2x RTX 3090, 0.033 % -> 0.0048 %), then the kept neighbourhood
    (``kept``: families of variables whose sums are held, planner.solver.solve's count of each class on each device,
    so the placement stays and the types are chosen again: KEPT_WORK), each while it is still outside the aimed
    gap.  The decomposition runs again from the solution they found while that one is better than the one it
    started from by more than AGAIN_GAIN times the gap left (its multipliers' first step is sized by the solution at
    hand) and its parts have more than AGAIN_WORK of DEVICE_WORK left; the bound is the best of the runs'.  All of
    it within ``work`` (the parts at most DEVICE_WORK of it)."""
    from planner.solver_lagrange import device_bound

    used = 0.0
    parts_work = 0.0
    lifted = -_INF
    while True:
        start = upper
        allowed = min(DEVICE_WORK - parts_work, work - used)
        got = device_bound(cp_model, m.proto, coupling, upper, values, allowed) if allowed > 0 else None
        if got is None:
            break
        used += got.work
        parts_work += got.work
        if got.feasible is not None and got.feasible[0] < upper:
            upper, values = got.feasible
        lifted = max(lifted, math.ceil(got.bound))
        for guide in ([float(x) for x in got.point] if got.point is not None else None, relax.values):
            if guide is None or upper - lifted <= objective.aim_gap * max(1, abs(upper)):
                continue
            if work - used <= 0:
                break
            found, obj, w = _neighbourhood(cp_model, m, objective, values, guide, min(RINS_WORK, work - used))
            used += w
            if obj is not None and obj < upper:
                upper, values = obj, found
        if kept and upper - lifted > objective.aim_gap * max(1, abs(upper)) and work - used > 0:
            found, obj, w = _neighbourhood(cp_model, m, objective, values, None, min(KEPT_WORK, work - used), kept)
            used += w
            if obj is not None and obj < upper:
                upper, values = obj, found
        if (upper - lifted <= objective.aim_gap * max(1, abs(upper)) or start - upper <= AGAIN_GAIN * (upper - lifted)
                or min(DEVICE_WORK - parts_work, work - used) <= AGAIN_WORK):
            break
    return upper, values, lifted, used


def _rins(cp_model: Any, m: Any, objective: Objective, found: Any, relax: Relaxation, work: float
          ) -> tuple[Any, int]:
    """Relaxation induced neighbourhood search (E. Danna, E. Rothberg, C. Le Pape, "Exploring relaxation induced
    neighborhoods to improve MIP solutions", Math. Program. 102, 2005): every variable whose value in the solution
    at hand equals its value in the LP optimum with the cuts is fixed there, and the few others are searched for
    ``work`` units.  A solution of that model is one of the original (it only adds fixings); the bound stays the
    search's own or the LP's, whichever is higher.  One CP-SAT worker runs none of its own large-neighbourhood
    searches (they are separate workers), so this is the one a plan gets.  The same result, with the work it took
    added, when nothing better turns up."""
    n = len(m.proto.variables)
    at_hand = [int(found.value(m.get_int_var_from_proto_index(j))) for j in range(n)]
    got, obj, w = _neighbourhood(cp_model, m, objective, at_hand, relax.values, work)
    upper = round(found.objective_value)
    used = found.deterministic_time + w
    bound = max(math.floor(found.best_objective_bound), math.ceil(relax.bound))
    if obj is not None and obj < upper:
        upper, at_hand = obj, got
    bound = min(bound, upper)
    within = upper - bound <= objective.relative_gap * max(1, abs(upper))
    return _Found(found, at_hand, upper, bound, used), cp_model.OPTIMAL if within else cp_model.FEASIBLE


def _floor_objective(proto: Any, bound: int) -> None:
    """Give CP-SAT the bound ``bound`` (valid for every solution) as the objective's domain, so that its search stops
    as soon as a solution lies within the allowed gap of it instead of when its own bound gets there."""
    top = sum(abs(int(k)) * max(abs(x) for x in var_bounds(proto.variables[int(v)]))
              for v, k in zip(proto.objective.vars, proto.objective.coeffs))
    if bound <= -top:
        return
    proto.objective.domain.clear()
    proto.objective.domain.extend([bound, max(top, bound)])


def _with_bound(cp_model: Any, m: Any, found: Any, status: int, relax: Relaxation | None, gap: float,
                floor: int | None = None) -> tuple[Any, int]:
    """A search's result with the bound of ``relax`` (the LP with the cuts, on the original model's domains: a
    bound of the original) where that is higher than the search's own; OPTIMAL when the solution is then within
    ``gap`` (CP-SAT's rule: objective - bound <= gap * max(1, |objective|))."""
    if relax is None or status != cp_model.FEASIBLE:
        return found, status
    obj = round(found.objective_value)
    bound = min(max(math.ceil(relax.bound), floor if floor is not None else -_INF), obj)   # integer: rounds up
    if bound <= found.best_objective_bound:
        return found, status
    within = obj - bound <= gap * max(1, abs(obj))
    values = [int(found.value(m.get_int_var_from_proto_index(j))) for j in range(len(m.proto.variables))]
    return (_Found(found, values, obj, bound, found.deterministic_time),
            cp_model.OPTIMAL if within else cp_model.FEASIBLE)


def _set_domain(proto: Any, j: int, dom: Sequence[int]) -> None:
    d = proto.variables[j].domain
    d.clear()
    d.extend(dom)


def _restrict(proto: Any, new: Mapping[int, tuple[int, int]]) -> None:
    for j, (lo, hi) in new.items():
        _set_domain(proto, j, [lo, hi])


# Work of the relaxation induced neighbourhood search (:func:`_rins`) after a tightened search that may stop within a
# gap and ended outside it, taken from the target search's (below).  Measured (bench_solver, December 2026): Qwen3-235B
# on 4x RTX 3090 + 384 GiB, speed step: its search ends 0.29 % from the bound, RINS (687 of 730 variables fixed)
# finds a solution 0.13 % from it (0.1 work: 0.19 %, 0.3: 0.13 %); Kimi-K2 on 24 + 384 GiB 0.0085 % -> 0.0038 %;
# DeepSeek-R1 and Kimi-K2 on 2x RTX 3090, the headline, --ctx max, --pareto 8 and --granularity band unchanged (their
# long tries end within the gap).  Run in the short tries too (the quality step's, gap 0) it changed the hint of the
# long try and made DeepSeek-R1's quality step 0.29 -> 1.70 work.
RINS_WORK = 0.2
# Work of the target search (below), taken from the end of a tightened search that may stop within a gap.  Measured
# on the quality step of DeepSeek-R1 on 2x RTX 3090 + 384 GiB (the balanced plan's first step, gap limit 0.01 %):
# its tightened search ends at 2.0 work 0.023 % above its bound with a solution 0.021 % above the optimum (HiGHS,
# scipy.optimize.milp, on the exported model), while the feasibility search for a solution within 0.01 % of that
# bound finds one 0.0002 % above the optimum in 0.034 work.
TARGET_WORK = 0.3
# Work of one target of the target search (below) run first, before the search for the optimum, in a quality
# objective's tightened search that may stop within a gap (the balanced plan's first step): the quality objective's
# LP bound with the cuts lies near its optimum, so a solution within 0.01 % of it is often found at once.  Measured
# (bench_solver, December 2026): DeepSeek-R1 on 2x RTX 3090 + 384 GiB, the first target found in 0.02 work where
# the search, RINS and the target search after it took 0.46 (0.80 with the proof attempt before); Kimi-K2 there
# found none in 0.05 (0.235 tried: none either).  One target only: where the LP bound is far from the optimum
# (--granularity band: 0.24 % below it) each target lifts the bound by 0.01 %, and 25 of them cost 0.5 CPU s.
TARGET_FIRST_WORK = 0.05
# Work of the kept neighbourhood (:func:`_by_device`: each class's count per device held, the types free), last of the
# decomposition's neighbourhood searches.  Measured (bench_solver, December 2026): Kimi-K2 on 2x RTX 3090 + 384 GiB,
# speed step: 0.0053 % above the proven optimum (HiGHS on the exported model: one role takes the next smaller type on
# every layer of both GPUs, another the next larger on 38 of 46, the experts' devices unchanged) -> the optimum in
# 0.026 work, proven within the neighbourhood, where the search, RINS and the decomposition's point found none; the
# step's gap 0.0112 % -> 0.0060 %.  Where it does not end in 0.05 it found nothing better in 0.2 either (the held-out
# Qwen3-30B on 8+8 GiB, DeepSeek-R1 on 8x RTX 3090: +0.2 work each at 0.2, +0.05 at 0.05).
KEPT_WORK = 0.05
# Work of the Lagrangian decomposition (:func:`_by_device`, all its parts' searches together, over its runs): Kimi-K2
# on 2x RTX 3090 + 384 GiB takes 0.28, 4x RTX 3090 0.05 + 0.07 (two runs); a cap for models of more or harder parts
# (DeepSeek-R1 on 48+48 GiB 0.97, Kimi-K2 on 3x 24 GiB + 512 GiB 0.96; December 2026).
DEVICE_WORK = 1.0
# :func:`_by_device` runs the decomposition again when its neighbourhood searches made the solution at hand better by
# more than AGAIN_GAIN times the gap left to its bound and more than AGAIN_WORK of DEVICE_WORK is left: the ray of
# multipliers (planner.solver_lagrange.device_bound) takes its first step to where the bound's tangent reaches the
# solution at hand, so from a solution far above the optimum it overshoots.  Measured (bench_solver --heldout,
# December 2026, the multi-GPU speed step started from its probe's solution, planner.planning._proven_or_within):
# Qwen3-235B on 4x RTX 3090 + 384 GiB from 0.88 % above the bound: 0.072 % -> 0.018 % for 0.17 more work;
# Qwen3-30B on 8+8 GiB 0.096 % -> 0.070 % and 1.31 -> 0.31 work (the long search after it no longer needed);
# DeepSeek-R1 on 8x RTX 3090 0.017 % -> 0.0027 %.  DeepSeek-R1 on 48+48 GiB, whose parts take the whole DEVICE_WORK,
# runs it once (a second run with a fresh DEVICE_WORK: the same gap for 2.8 instead of 1.7 work).  AGAIN_WORK: with
# 0 it runs again on the 0.03 its first run left, and with the neighbourhoods after it spends 0.12 more work (0.6 CPU
# s) for the same plan and gap (0.0244 %); no case measured here runs a second time with less than 0.1 left.
AGAIN_GAIN = 2.0
AGAIN_WORK = 0.1
# Work of the search after the decomposition (:func:`_tighten_and_run`) when its solution is still outside the aimed
# gap: it aims at that gap (stops once within it of its bound, the decomposition's as its floor) with LP-guided
# branching.  Measured (bench_solver --heldout and other multi-GPU plans, December 2026): DeepSeek-R1 on 3x 24 GiB +
# 384 GiB, mainline, 0.045 % -> 0.0054 % (a solution 0.040 % faster, found in 0.024 work; the default branching of
# the tightened model found none in 0.5), Qwen3-30B on 8+8 GiB 0.070 % -> 0.058 %, DeepSeek-R1 on 48+48 GiB 0.0247 %
# -> 0.0244 %, the others unchanged for 0.1 more work; 0.3 found no more anywhere.
AIMED_WORK = 0.1
# :func:`_aim` runs when the solution at hand is within this many aimed gaps of the bound (farther, the target search
# measured no solution in its work: Kimi-K2 on 2x RTX 3090 + 384 GiB, speed step, 0.055 % from the bound with the cuts
# after RINS while the optimum itself, HiGHS on the exported model, lies 0.050 % above that bound).
AIM_NEAR = 3.0


class _Found:
    """A solution found by :func:`_target_search`, read the way :mod:`planner.solver` reads a ``CpSolver``; ``first``
    the search it follows (None: none ran yet, a solution at hand)."""

    def __init__(self, first: Any | None, values: list[int], objective: int, bound: int, work: float) -> None:
        self._first = first
        self._values = values
        self.objective_value = float(objective)
        self.best_objective_bound = float(bound)
        self.deterministic_time = work
        self.wall_time = first.wall_time if first is not None else 0.0

    def value(self, var: Any) -> int:
        return self._values[var.index]

    def status_name(self, status: int) -> str:
        if self._first is None:
            from ortools.sat import cp_model_pb2

            return str(cp_model_pb2.CpSolverStatus.Name(status))
        return str(self._first.status_name(status))


def _target_search(cp_model: Any, m: Any, objective: Objective, first: Any, status: int, work: float,
                   cuts: Sequence[tuple[Mapping[int, int], int]] = (), tries: int = 1 << 30) -> tuple[Any, int]:
    """After a search that stopped with a solution outside its allowed gap: look for one inside it (at most
    ``tries`` targets).

    With ``B`` the search's proven bound and ``g`` the allowed relative gap, any solution of objective at most
    ``T = floor(B / (1 - g))`` is within the gap.  The model is cut to what such a solution can use (reduced costs
    for the upper bound ``T``, exact), given the row ``objective <= T`` and searched without an objective (CP-SAT's
    feasibility search, far quicker here than its optimisation at finding such a solution: see TARGET_WORK).  A
    solution found is returned with the bound ``B``; a proof that there is none lifts the bound to ``T + 1`` and the
    search repeats with the new target while work is left; otherwise the first search stands.  Every step is exact
    (integer objective, the same cuts as :func:`reduced_cost_bounds`), so the bound stays a bound of the original
    model and the solution is one of its solutions."""
    import planner.solver as solver

    proto = m.proto
    gap = objective.relative_gap
    if proto.objective.scaling_factor not in (0, 1) or proto.objective.offset:
        return first, status
    terms = [(int(v), int(k)) for v, k in zip(proto.objective.vars, proto.objective.coeffs)]
    upper = round(first.objective_value)
    relax = relaxation(proto, cuts)
    bound = max(math.floor(first.best_objective_bound), math.ceil(relax.bound) if relax is not None else 0)
    used = first.deterministic_time
    while work > 1e-6 and bound > 0 and tries > 0:
        tries -= 1
        target = math.floor(bound / (1 - gap))
        if target >= upper:
            break
        trial = m.clone()
        cut = reduced_cost_bounds(trial.proto, target, relax) if relax is not None else {}
        _restrict(trial.proto, cut or {})
        trial.add(sum(k * trial.get_int_var_from_proto_index(v) for v, k in terms) <= target)
        trial.clear_objective()
        trial.clear_hints()
        found, st = solver._run(cp_model, trial, objective, work)
        used += found.deterministic_time
        work -= found.deterministic_time
        if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            values = [int(found.value(trial.get_int_var_from_proto_index(j))) for j in range(len(proto.variables))]
            value = sum(k * values[v] for v, k in terms)
            return _Found(first, values, value, bound, used), cp_model.OPTIMAL
        if st != cp_model.INFEASIBLE:
            break
        bound = target + 1                    # no solution of objective <= target: a proof, so a bound
    # the first search's solution, within the gap when the target (with a lifted bound) reaches it
    within = bound > 0 and upper <= math.floor(bound / (1 - gap))
    if bound <= first.best_objective_bound:
        return first, cp_model.OPTIMAL if within else status
    return (_Found(first, [int(first.value(m.get_int_var_from_proto_index(j))) for j in range(len(proto.variables))],
                   upper, min(bound, upper), used), cp_model.OPTIMAL if within or bound >= upper else cp_model.FEASIBLE)
