"""A lower bound by Lagrangian decomposition: the rows that tie the devices together priced, the rest solved per device.

The planner's integer programs are multiple-choice knapsacks whose classes are tied to one GPU each (a layer's
tensors go to the layer's GPU or to the CPU), so once the few rows over all the classes (the CPU's bytes, the loss
bound of the balanced speed step, a --max-size or speed target) are taken out, what is left falls apart into one
small problem per GPU.  For multipliers ``y`` of those coupling rows of the right signs (``y <= 0`` on a ``<=`` row,
``y >= 0`` on a ``>=`` row), every solution ``x`` of the model has ``c.x >= c.x - sum_i y_i (a_i.x - s_i) >=
L(y) = sum_i y_i s_i + sum_k min_{x_k in X_k} (c - y A)_k . x_k``, where ``s_i`` is the row's finite side and
``X_k`` the integer points of the k-th part under its own rows (weak duality of the Lagrangian relaxation;
A. M. Geoffrion, "Lagrangean relaxation for integer programming", Math. Program. Study 2, 1974).  Each part's
minimum is CP-SAT's proven bound of that small model (planner.solver_bounds.tightened_search), so ``L(y)`` is a
bound whether or not the parts are solved to the end.  Unlike the LP relaxation, each part keeps its integrality:
the capacity left over on each GPU by whole layers, the gap the LP bound misses.

Exactness: the multipliers are floats (dyadic rationals); ``c - y A`` and ``sum y_i s_i`` are computed in integers
over their common power-of-two denominator (planner.solver_bounds.priced, as for the LP bound), and each part's coefficients are rounded down to a coarser power of two,
which lowers its minimum since every variable is non-negative (checked), so the result stays a bound.

Measured (HiGHS, scipy.optimize.milp, on the exported speed steps of bench_solver's cases, December 2026; the
distance of each bound below the proven optimum): DeepSeek-R1 on 2x RTX 3090 + 384 GiB: LP 0.109 %, the LP with five
rounds of Gomory cuts 0.0080 %, this bound at the LP's multipliers 0.0010 %; Kimi-K2 there 0.168 %, 0.0498 %,
0.0020 %; Qwen3-235B on 4x RTX 3090 0.161 %, 0.0653 %, 0.082 % at the LP's multipliers but 0.0176 % at 1.05 times
them: hence the short search along the multipliers' ray (:func:`device_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# Evaluations of L along the ray of the LP's multipliers (the first at the LP's own): 4x RTX 3090's best lies at
# 1.05 times them, DeepSeek-R1's and Kimi-K2's at 1.0 (module docstring).
STEPS = 3
# CP-SAT work per part per evaluation (planner.solver_bounds.tightened_search on the part); the decomposition's total
# is the caller's (planner.solver_bounds.DEVICE_WORK).
PART_WORK = 0.5
# Each part's optimisation run at most this work (planner.solver.Objective.search_work), the rest of PART_WORK to its
# RINS and target search, which prove the part's bound (the sum of the parts' bounds is the decomposition's): CP-SAT's
# optimisation run finds the part's good solutions early and then spends its work on a proof it rarely completes.
# Measured (bench_solver --heldout, December 2026; against the run taking all but the target search's 0.25): Kimi-K2
# on 2x RTX 3090 + 384 GiB 0.924 -> 0.788 work, the same 0.0075 %; DeepSeek-R1 there 0.378 -> 0.243, the same
# 0.0067 %; DeepSeek-R1 on 48+48 GiB 0.031 % -> 0.025 % for 1.73 -> 1.91 work; the other cases unchanged.  0.02:
# Kimi-K2 0.0092 %; 0.15: as 0.1 but for more work.
PART_SEARCH_WORK = 0.1
# Each part's search stops within this relative gap of its own objective (planner.solver_bounds.tightened_search):
# the parts' objectives are of the size of the model's, so the sum of their bounds lies within about this of the
# sum of their optima.  Kimi-K2 on 2x RTX 3090 + 384 GiB, speed step: one part proves nothing tighter than 0.13 % in
# 0.25 work but reaches 5e-5 (its target searches lift its bound) in 0.5 (the bound 0.0172 % -> 0.0062 % below the
# optimum); 1e-5: 0.0115 %.
PART_GAP = 5e-5
# The model must fall apart: no part may hold more than this share of its variables.  A single GPU's model keeps one
# part with everything but the output (--granularity band, Qwen3-235B at 24 + 96 GiB: 1612 of 1628 variables, three
# evaluations for 0.67 work and no gain); the multi-GPU models split about evenly (DeepSeek-R1 and Kimi-K2 on 2x
# RTX 3090: 515 of 983; 4x RTX 3090: 242 of 730).
MAX_PART_SHARE = 0.75
# Bits of the largest coefficient of a part's objective after rounding down (CP-SAT's sums stay far from 2**63).
_COEF_BITS = 40


def components(n: int, rows: Sequence[tuple[Sequence[tuple[int, int]], Any, Any]], skip: set[int]) -> list[list[int]]:
    """The variables in groups linked by the rows not in ``skip`` (union-find), each group in index order."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, (terms, _lo, _hi) in enumerate(rows):
        if i in skip or not terms:
            continue
        r = find(terms[0][0])
        for v, _ in terms[1:]:
            parent[find(v)] = r
    out: dict[int, list[int]] = {}
    for j in range(n):
        out.setdefault(find(j), []).append(j)
    return sorted(out.values())


class _Parts:
    """The model split at the coupling rows: per part, its rows; evaluates ``L(y)`` (module docstring)."""

    def __init__(self, cp_model: Any, proto: Any, rows: list, coupling: Sequence[int], values: Sequence[int] | None):
        from planner.solver_bounds import var_bounds

        self.cp_model = cp_model
        self.rows = rows
        self.coupling = list(coupling)
        self.bounds = [var_bounds(v) for v in proto.variables]
        self.cost = [0] * len(self.bounds)
        for v, k in zip(proto.objective.vars, proto.objective.coeffs):
            self.cost[int(v)] += int(k)
        self.parts = components(len(self.bounds), rows, set(self.coupling))
        part_of = {j: p for p, part in enumerate(self.parts) for j in part}
        self.part_rows: list[list[int]] = [[] for _ in self.parts]
        for i, (terms, _lo, _hi) in enumerate(rows):
            if i not in self.coupling and terms:
                self.part_rows[part_of[terms[0][0]]].append(i)
        self.values = values
        self.work = 0.0

    def evaluate(self, y: Sequence[float], work: float, budget: float = math.inf
                 ) -> tuple[Fraction, list[int], list[int]] | None:
        """``L(y)`` (exact), the coupling rows' activities ``a_i.x`` at the parts' solutions (the subgradient) and
        those solutions, or None when a part has no solution within its work (then no bound is claimed).  ``work``:
        each part's CP-SAT work at most; ``budget``: all the parts' together."""
        from planner.solver_bounds import priced

        num, top, den = priced(self.cost, [self.rows[i] for i in self.coupling], y)
        total = Fraction(top, den)
        point = [0] * len(self.bounds)
        start = self.work
        for part, prow in zip(self.parts, self.part_rows):
            got = self._solve_part(part, prow, num, den, max(min(work, budget - (self.work - start)), 1e-3))
            if got is None:
                return None
            bound, xs = got
            total += bound
            for j, x in zip(part, xs):
                point[j] = x
        activity = [sum(k * point[v] for v, k in self.rows[i][0]) for i in self.coupling]
        return total, activity, point

    def _solve_part(self, part: list[int], prow: list[int], num: list[int], den: int, work: float
                    ) -> tuple[Fraction, list[int]] | None:
        import planner.solver as solver_mod
        from planner.solver_bounds import _set_hints, tightened_search

        cp_model = self.cp_model
        if not prow:                          # a variable in no row: its best bound
            j = part[0]
            lo, hi = self.bounds[j]
            x = lo if num[j] >= 0 else hi
            return Fraction(num[j] * x, den), [x]
        big = max(abs(num[j]) for j in part)
        if not big and self.values is not None:       # nothing to price: the solution at hand meets its rows
            return Fraction(0), [self.values[j] for j in part]
        shift = max(big.bit_length() - _COEF_BITS, 0)  # coefficients num / 2**shift, rounded down
        coef = [num[j] >> shift for j in part]          # floor division: never above the true coefficient
        scale = Fraction(1 << shift, den)
        index = {j: t for t, j in enumerate(part)}
        m = cp_model.CpModel()
        xs = [m.new_int_var(*self.bounds[j], "") for j in part]
        for i in prow:
            terms, lo, hi = self.rows[i]
            expr = sum(k * xs[index[v]] for v, k in terms)
            if lo is not None and hi is not None and lo == hi:
                m.add(expr == lo)
            else:
                if lo is not None:
                    m.add(expr >= lo)
                if hi is not None:
                    m.add(expr <= hi)
        if not big:                                    # a point of the part's rows, any
            solver, status = solver_mod._run(cp_model, m, solver_mod.Objective("feasibility", work_limit=work), work)
            self.work += solver.deterministic_time
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                return None
            return Fraction(0), [int(solver.value(x)) for x in xs]
        m.minimize(sum(c * x for c, x in zip(coef, xs) if c))
        if self.values is not None:
            _set_hints(m, enumerate(self.values[j] for j in part))     # the part's variables are 0.. in part order
        found, status = tightened_search(cp_model, m, solver_mod.Objective("speed", tighten=True, work_limit=work,
                                                                           relative_gap=PART_GAP,
                                                                           search_work=PART_SEARCH_WORK))
        self.work += found.deterministic_time
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        return (Fraction(math.ceil(found.best_objective_bound)) * scale,
                [int(found.value(x)) for x in xs])


@dataclass(frozen=True, slots=True)
class DeviceBound:
    """What :func:`device_bound` found."""

    bound: Fraction                                  # every solution of the model has an objective at least this
    work: float                                      # CP-SAT's work spent on the parts
    feasible: tuple[int, list[int]] | None           # (objective, values): the parts' best point meeting every row
    point: list[int] | None                          # the parts' solutions at the multipliers of the bound


def device_bound(cp_model: Any, proto: Any, coupling: Sequence[int], upper: int, values: Sequence[int] | None = None,
                 work: float = 1.0) -> DeviceBound | None:
    """The best ``L(y)`` over up to STEPS multipliers along the ray of the LP relaxation's duals of
    the ``coupling`` rows (the indices of rows of ``proto`` that tie its parts together), for a CP-SAT model whose
    objective ``upper`` is reached by the solution ``values``; None when the model is not a plain integer program
    of non-negative variables, does not fall apart into two or more parts with an objective and none of more than
    MAX_PART_SHARE of the variables, or a part finds no solution.  Its ``feasible`` is the best point the parts'
    solutions make together that meets the coupling rows too (then a solution of the model: the Lagrangian
    heuristic); ``point`` the parts' solutions at the best multipliers.

    The ray: ``L(r y0)`` is concave in ``r``; its slope at ``r`` is ``-sum_i y0_i (a_i.x_r - s_i)`` for the parts'
    solutions ``x_r``.  From ``r = 1`` the next ``r`` is where that tangent reaches ``upper`` (no ``L`` can pass it),
    then where the last two tangents cross (Kelley's cutting planes in one dimension)."""
    import planner.solver_bounds as sb
    import planner.solver_cuts as sc

    rows = sb._rows(proto)
    if rows is None or not coupling or proto.objective.scaling_factor not in (0, 1) or proto.objective.offset:
        return None
    bounds = [sb.var_bounds(v) for v in proto.variables]
    if any(lo < 0 for lo, _ in bounds):
        return None
    saved_lp, saved_cuts = sb._LAST_LP, list(sc._CACHE)     # the parts' searches use the one-entry memos too
    try:
        parts = _Parts(cp_model, proto, rows, coupling, values)
        with_cost = [p for p in parts.parts if any(parts.cost[j] for j in p)]
        if len(with_cost) < 2 or max(len(p) for p in parts.parts) > MAX_PART_SHARE * len(bounds):
            return None
        lp = sb._lp_solve(proto, rows, parts.cost)
        if lp is None:
            return None
        y0 = []
        for i in coupling:
            _terms, lo, hi = rows[i]
            yi = lp[0][i]
            y0.append(yi if (yi < 0 and hi is not None) or (yi > 0 and lo is not None) else 0.0)
        if not any(y0):
            return None
        sides = []                                               # each priced row's finite side (0: unpriced)
        for i, yi in zip(coupling, y0):
            side = rows[i][2] if yi < 0 else rows[i][1]
            sides.append(int(side) if yi and side is not None else 0)
        best: Fraction | None = None
        best_point: list[int] | None = None
        found: tuple[int, list[int]] | None = None               # the best parts' point that meets every row
        seen: list[tuple[float, Fraction, float]] = []          # (r, L(r y0), slope)
        r = 1.0
        for _ in range(STEPS):
            if parts.work >= work:
                break
            got = parts.evaluate([r * yi for yi in y0], PART_WORK, work - parts.work)
            if got is None:
                break
            value, act, point = got
            obj = sb.objective_if_feasible(proto, point)          # every row and domain, exactly
            if obj is not None and (found is None or obj < found[0]):
                found = (obj, point)
            slope = -sum(yi * (a - s) for yi, a, s in zip(y0, act, sides) if yi)
            seen.append((r, value, slope))
            if best is None or value > best:
                best, best_point = value, point
            if slope == 0:
                break
            if len(seen) == 1:
                nxt = r + float(upper - value) / slope
            else:
                (r1, v1, s1), (r2, v2, s2) = seen[-2], seen[-1]
                if s1 == s2:
                    break
                nxt = (float(v2 - v1) + s1 * r1 - s2 * r2) / (s1 - s2)
            if not nxt > 0 or abs(nxt - r) < 1e-4:
                break
            r = nxt
        return DeviceBound(best, parts.work, found, best_point) if best is not None else None
    finally:
        sb._LAST_LP = saved_lp
        sc._CACHE[:] = saved_cuts
