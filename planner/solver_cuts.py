"""Gomory mixed-integer cuts of our own for the planner's integer programs, derived in exact integer arithmetic.

Every row of the CP-SAT models the planner builds is linear with integer coefficients over integer variables
(planner.solver_bounds._rows), so each row's activity ``r_i = a_i.x`` is an integer variable too, with the row's
bounds.  Any combination ``sum_i L_i (a_i.x - r_i) = 0`` of the rows is an equation over integers; after shifting
every variable to a bound (``z = lb + z'`` or ``z = ub - z'``, ``z' >= 0``) it reads ``sum_k c_k z'_k = b`` and,
with ``D`` dividing nothing in particular, ``sum_k (c_k / D) z'_k = b / D``.  When ``f0 = frac(b / D) > 0`` the
Gomory mixed-integer inequality ``sum_k min(f_k / f0, (1 - f_k) / (1 - f0)) z'_k >= 1`` (``f_k = frac(c_k / D)``;
R. E. Gomory, "An algorithm for integer solutions to linear programs", 1960; in the mixed-integer rounding form of
G. Cornuejols, "Valid inequalities for mixed integer linear programs", Math. Program. 112, 2008, section 4.1) holds
for every integer point of the model, whatever the multipliers ``L`` are.  Multiplied by ``F0 (D - F0)`` (``F0 = b
mod D``) its coefficients are integers, computed here exactly; rounding them up to a coarser scale keeps it valid
(``x >= lb``).  The multipliers come from the LP relaxation's simplex tableau (GLOP's basis, numpy's inverse): the
row of a basic variable whose LP value is fractional, scaled by ``D = 2**50`` and rounded to integers.  Floating
point only chooses the multipliers: a poor choice gives a weak cut, never an invalid one.

Why (measured on the exported speed steps of the balanced plans, December 2026): the LP relaxation of these
multiple-choice knapsacks with two or three binding rows (the GPUs' bytes, the loss bound) lies 0.11-0.18 % below
the optimum and CP-SAT's own root cuts close 10-44 % of that; a few rounds of these cuts close 70-90 %
(DeepSeek-R1 on 2x RTX 3090 + 384 GiB: the LP gap 0.110 % -> 0.024 % in three rounds), so CP-SAT's proof, the
reduced-cost bounds (planner.solver_bounds) and the target search all start from a bound near the optimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# The multipliers' scale: large enough that rounding them leaves the other basic variables' coefficients within
# ~1e-7 of an integer (coefficients up to ~1e8 after the capacity rows' gcd division).
_SCALE_BITS = 50
# A cut's integer coefficients are rounded up to this many bits of the largest (exact: see the module docstring).
_COEF_BITS = 24
# Models with more rows get no cuts: the tableau's inverse and the dense cut rows cost more than they return (measured:
# --granularity band's layered model, 856 rows, 2 CPU s of cuts per solve for a bound it did not need).
MAX_ROWS = 200
# Cuts tried per round: the basic variables whose LP values are nearest to half-integral.
_TRIED = 40
# Fractionality below which a basic variable's LP value counts as integral (no cut from its row).
_MIN_FRAC = 1e-3

Row = tuple[list[tuple[int, int]], "int | None", "int | None"]


def _lp(lp: Any) -> tuple[float, list[float], list[int], list[int]] | None:
    """The optimum of ``lp`` (planner.solver_bounds.GlopLP) solved again: objective, primal values, and the basis
    status of every variable and row."""
    if not lp.solve():
        return None
    return (lp.lp.Objective().Value(), [x.solution_value() for x in lp.xs], [x.basis_status() for x in lp.xs],
            [c.basis_status() for c in lp.cons])


def _gmi(lam: Sequence[int], rows: Sequence[Row], bounds: Sequence[tuple[int, int]], at_lo: Sequence[bool]
         ) -> tuple[dict[int, int], int] | None:
    """The exact GMI cut ``sum w_j x_j >= rhs`` (integers) of the row combination with integer multipliers ``lam``
    (scaled by 2**_SCALE_BITS), or None when its right-hand side is integral.  ``at_lo``: per variable, then per
    row activity (index n + i), whether it is shifted to its lower bound (else its upper; the one that is finite)."""
    n = len(bounds)
    scale = 1 << _SCALE_BITS
    coef: dict[int, int] = {}                    # combination's coefficient per variable (rows as n + i)
    for i, li in enumerate(lam):
        if not li:
            continue
        for v, k in rows[i][0]:
            coef[v] = coef.get(v, 0) + li * k
        coef[n + i] = -li
    # shift every term to a bound: z = lb + z' (side +1) or z = ub - z' (side -1)
    shifted: list[tuple[int, int, int, int]] = []      # (index, c'_k, side, bound)
    b = 0
    for k, a in coef.items():
        if not a:
            continue
        lo, hi = bounds[k] if k < n else rows[k - n][1:]
        if lo is not None and lo == hi:
            b -= a * lo                              # fixed: a constant
        elif at_lo[k]:
            assert lo is not None
            b -= a * lo
            shifted.append((k, a, 1, lo))
        else:
            assert hi is not None
            b -= a * hi
            shifted.append((k, -a, -1, hi))
    f0 = b % scale
    if not f0:
        return None
    # GMI times F0 (D - F0): G_k = F_k (D - F0) if F_k <= F0 else (D - F_k) F0, rhs F0 (D - F0)
    w: dict[int, int] = {}
    rhs = f0 * (scale - f0)
    for k, c, side, bound in shifted:
        fk = c % scale
        g = fk * (scale - f0) if fk <= f0 else (scale - fk) * f0
        if not g:
            continue
        # g z'_k with z' = side * (z_k - bound)
        rhs += side * g * bound
        if k < n:
            w[k] = w.get(k, 0) + side * g
        else:
            for v, kk in rows[k - n][0]:
                w[v] = w.get(v, 0) + side * g * kk
    return {v: c for v, c in w.items() if c}, rhs


def _coarsen(w: dict[int, int], rhs: int, bounds: Sequence[tuple[int, int]]) -> tuple[dict[int, int], int]:
    """``sum w_j x_j >= rhs`` with coefficients of at most _COEF_BITS bits: each ``w_j / S`` rounded up, so the
    left side only grows by ``sum e_j x_j`` with ``0 <= e_j < 1``, at least ``sum min(0, lb_j)``; exact."""
    top = max(abs(c) for c in w.values())
    s = top >> _COEF_BITS
    if s <= 1:
        return w, rhs
    out = {v: -((-c) // s) for v, c in w.items()}
    low = sum(min(0, bounds[v][0]) for v, c in out.items() if c * s != w[v])
    return {v: c for v, c in out.items() if c}, -((-rhs) // s) + low


def gomory_cuts(proto: Any, rounds: int = 3, per_round: int = 20) -> tuple[list[Cut], float]:
    """Up to ``rounds`` rounds of GMI cuts ``sum w_j x_j >= rhs`` (exact integers, valid for every integer solution
    of the CP-SAT model ``proto``: see the module docstring) and the LP bound with them (floating point, a guide
    only).  Empty when the model is not a plain integer linear program."""
    from planner.solver_bounds import _rows, var_bounds

    rows0 = _rows(proto)
    if rows0 is None or len(rows0) > MAX_ROWS:
        return [], math.nan
    n = len(proto.variables)
    cost = [0] * n
    for v, k in zip(proto.objective.vars, proto.objective.coeffs):
        cost[int(v)] += int(k)
    return cuts_of(rows0, [var_bounds(v) for v in proto.variables], cost, rounds, per_round)


def cuts_of(rows0: Sequence[Row], bounds: Sequence[tuple[int, int]], cost: Sequence[int], rounds: int,
            per_round: int) -> tuple[list[Cut], float]:
    """:func:`gomory_cuts` of the integer program ``min cost.x`` over ``rows0`` and ``bounds``."""
    import numpy as np
    from ortools.linear_solver import pywraplp

    from planner.solver_bounds import GlopLP, lp_key, remember_lp

    n = len(bounds)
    rows: list[Row] = list(rows0)
    cuts: list[Cut] = []
    value = math.nan
    glop = GlopLP(bounds, rows, cost)
    solved = -1                                  # rows in the LP solved last
    for _ in range(rounds + 1):
        res = _lp(glop)
        if res is None:
            solved = -1
            break
        solved = len(rows)
        value, x, vstat, cstat = res
        if len(cuts) >= rounds * per_round or _ == rounds:
            break
        m = len(rows)
        status = list(vstat) + list(cstat)
        basic = [k for k, s in enumerate(status) if s == pywraplp.Solver.BASIC]
        if len(basic) != m:
            break
        activity = [sum(k * x[v] for v, k in terms) for terms, _lo, _hi in rows]
        at_lo = []
        for k, st in enumerate(status):
            lo, hi = bounds[k] if k < n else rows[k - n][1:]
            val = x[k] if k < n else activity[k - n]
            if lo is None or hi is None:
                at_lo.append(lo is not None)
            elif st == pywraplp.Solver.BASIC:
                at_lo.append(val - lo <= hi - val)
            else:
                at_lo.append(st != pywraplp.Solver.AT_UPPER_BOUND)
        mat = np.zeros((m, n + m))
        for i, (terms, _lo, _hi) in enumerate(rows):
            for v, k in terms:
                mat[i, v] += k
            mat[i, n + i] = -1.0
        try:
            inv = np.linalg.inv(mat[:, basic])
        except np.linalg.LinAlgError:
            break
        xa = np.asarray(x)
        found: list[tuple[float, dict[int, int], int]] = []
        tried: list[tuple[float, int]] = []
        for bi, j in enumerate(basic):
            f = x[j] - math.floor(x[j]) if j < n else 0.0
            if _MIN_FRAC <= f <= 1 - _MIN_FRAC:
                tried.append((abs(f - 0.5), bi))
        for _f, bi in sorted(tried)[:_TRIED]:
            lam = [int(round(v * (1 << _SCALE_BITS))) for v in inv[bi]]
            got = _gmi(lam, rows, bounds, at_lo)
            if got is None:
                continue
            w, rhs = _coarsen(*got, bounds)
            if not w:
                continue
            idx = np.fromiter(w.keys(), dtype=np.int64)
            cf = np.fromiter(w.values(), dtype=np.float64)
            viol = float(rhs) - float(cf @ xa[idx])
            norm = float(np.linalg.norm(cf))
            if norm and viol / norm > 1e-9:
                found.append((viol / norm, w, rhs))
        if not found:
            break
        found.sort(key=lambda t: -t[0])
        new: list[Row] = []
        for _v, w, rhs in found[:per_round]:
            cuts.append((w, rhs))
            new.append((sorted(w.items()), rhs, None))
        rows.extend(new)
        glop.add_rows(new)
    if solved == len(rows):
        # the LP with every cut: the one planner.solver_bounds.relaxation asks for next
        remember_lp(lp_key(rows, bounds, cost), [c.dual_value() for c in glop.cons],
                    [v.solution_value() for v in glop.xs])
    return cuts, value



Cut = tuple[dict[int, int], int]
_CACHE: list[tuple[tuple, int, list[Cut]]] = []


def model_cuts(proto: Any, rounds: int, per_round: int = 20) -> list[Cut]:
    """:func:`gomory_cuts` of ``proto``, remembered for the last model: a plan solves the same model twice (the
    short try and the long one of planner.planning._proven_or_within differ only in their hint and gap)."""
    from planner.solver_bounds import _rows, var_bounds

    rows = _rows(proto)
    if rows is None:
        return []
    key = (tuple((tuple(t), lo, hi) for t, lo, hi in rows), tuple(var_bounds(v) for v in proto.variables),
           tuple(zip(proto.objective.vars, proto.objective.coeffs)))
    for k, r, cuts in _CACHE:
        if k == key and r == rounds:
            return cuts
    cuts = gomory_cuts(proto, rounds, per_round)[0]
    _CACHE[:] = [(key, rounds, cuts)]
    return cuts
