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

Two paths give the same cuts, key for key in the same order.  The reference path (:func:`_gmi`, :func:`_coarsen`)
expands the combination term by term in Python integers.  The fast path (:func:`_combination`, :func:`_fast_cut`)
takes a round's candidates together in numpy: ``b`` and the ``f_k`` are only needed modulo ``D``, a divisor of 2**64,
so uint64 arithmetic (wrapping modulo 2**64) gives them; the cut's coefficients (up to ~2**140) are exact sums of
float64 limb products (every partial sum an integer below 2**52), and are only needed divided by ``S`` and rounded
up: a float estimate with a proven error bound decides the ceiling wherever no integer lies within that bound, and
Python integers decide the rest and the largest ``|w_j|``, which sets ``S``; the reference path's dict order (the
first time it meets each variable) comes from each variable's first position in each row.  A round or candidate
outside the sizes these arguments need goes through the reference path.  DeepSeek-R1's speed step (5 rounds of 40
candidates, rows 70 -> 153, 983 variables): the candidates' cuts ~0.28 -> ~0.08 CPU s.

Why (measured on the exported speed steps of the balanced plans, December 2026): the LP relaxation of these
multiple-choice knapsacks with two or three binding rows (the GPUs' bytes, the loss bound) lies 0.11-0.18 % below
the optimum and CP-SAT's own root cuts close 10-44 % of that; a few rounds of these cuts close 70-90 %
(DeepSeek-R1 on 2x RTX 3090 + 384 GiB: the LP gap 0.110 % -> 0.024 % in three rounds), so CP-SAT's proof, the
reduced-cost bounds (planner.solver_bounds) and the target search all start from a bound near the optimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

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
# The fast path's limbs of the multipliers (_combination) and a variable's position in a row that lacks it (_Dense).
_LIMB = 17
_NOWHERE = 1 << 21
# False: every candidate through the reference path (_gmi, _coarsen); the tests compare the two.
_FAST = True

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


class _Inexact(Exception):
    """The fast path cannot vouch for a candidate's cut (a size outside the bounds its exactness argument needs): the
    reference path (:func:`_gmi`, :func:`_coarsen`) computes it."""


class _Dense:
    """The rows as dense int64 coefficients (a variable named twice summed, as the combination sums it) and each
    variable's first position in a row's terms (where the reference path meets it, which orders the cut's dict),
    grown with the cuts: the term lists are read once, not once per round (the basis matrix) and per candidate."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.coef: list[np.ndarray] = []
        self.first: list[np.ndarray] = []
        self.lens: list[int] = []

    def add(self, terms: Sequence[tuple[int, int]]) -> bool:
        """Append a row; False when it does not fit (see :meth:`_append`)."""
        import numpy as np

        try:
            vs, ks = (np.array(col, np.int64) for col in zip(*terms)) if terms else (np.zeros(0, np.int64),) * 2
        except OverflowError:                             # a coefficient of 2**63 or more
            return False
        seen, at = np.unique(vs, return_index=True)      # at: each variable's first occurrence
        return self._append(vs, ks, seen, at)

    def add_cut(self, w: dict[int, int]) -> bool:
        """Append the row ``sorted(w.items())`` of a cut, read from its dict (each variable once): ~0.2 -> ~0.05 ms
        a row of ~760 terms."""
        import numpy as np

        try:
            vs = np.fromiter(w.keys(), np.int64, len(w))
            ks = np.fromiter(w.values(), np.int64, len(w))
        except OverflowError:
            return False
        return self._append(vs, ks, np.sort(vs), np.arange(len(w)))

    def _append(self, vs: np.ndarray, ks: np.ndarray, seen: np.ndarray, at: np.ndarray) -> bool:
        """Append the row of terms ``vs``, ``ks`` whose distinct variables ``seen`` first come at positions ``at``;
        False when it does not fit: an index out of range, 2**21 terms or more, or |coefficients| summing to 2**52
        or more (so every partial sum of a row is exact in float64 and int64)."""
        import numpy as np

        n = self.n
        if len(vs) >= _NOWHERE or (len(vs) and (int(vs.min()) < 0 or int(vs.max()) >= n
                                                 or float(np.abs(ks.astype(np.float64)).sum()) >= 2.0 ** 52)):
            return False
        row = np.zeros(n, np.int64)
        np.add.at(row, vs, ks)
        first = np.full(n, _NOWHERE, np.int64)
        first[seen] = at
        self.coef.append(row)
        self.first.append(first)
        self.lens.append(len(vs))
        return True


@dataclass(frozen=True, slots=True)
class _Shift:
    """One round's shift of every term (the variables, then the rows' activities) to a bound, as :func:`_gmi` makes
    it, in arrays."""

    side: np.ndarray          # int64: +1 shifted to the lower bound, -1 to the upper
    movable: np.ndarray       # int64: 0 for a fixed term (a constant in the combination), else 1
    bound_u: np.ndarray       # uint64: the bound modulo 2**64
    nz: np.ndarray            # the movable terms whose bound is not 0: the only ones in the right-hand side
    nz_bound: list[int]       # their bounds
    neg: list[tuple[int, int]]     # (variable, lower bound) of the variables whose lower bound is negative


def _shift(rows: Sequence[Row], bounds: Sequence[tuple[int, int]], at_lo: Sequence[bool]) -> _Shift | None:
    """The round's :class:`_Shift`, or None when a term to be shifted to its upper bound has none (a free row: the
    reference path then behaves as before)."""
    import numpy as np

    n = len(bounds)
    side, movable, bound, nz, nz_bound = [], [], [], [], []
    for k, low in enumerate(at_lo):
        lo, hi = bounds[k] if k < n else rows[k - n][1:]
        at = lo if low else hi
        if at is None:
            return None
        free = lo is None or lo != hi
        side.append(1 if low else -1)
        movable.append(int(free))
        bound.append(at % (1 << 64))
        if free and at:
            nz.append(k)
            nz_bound.append(at)
    return _Shift(np.array(side, np.int64), np.array(movable, np.int64), np.array(bound, np.uint64),
                  np.array(nz, np.int64), nz_bound, [(v, lo) for v, (lo, _hi) in enumerate(bounds) if lo < 0])


@dataclass(frozen=True, slots=True)
class _Combination:
    """The row combinations of one round's candidates (index t), as far as numpy computes them for all at once.

    ``f0[t]`` is ``b mod D``.  For the candidates with ``f0 != 0`` (``slot[t]``, else -1; ``fits``: the multipliers
    are below 2**62, else the reference path), per term k (the variables, then the rows' activities):
    ``sp[s, k] = side_k * p_k``, where the GMI coefficient of term k is ``g_k = p_k * Q`` with ``Q = D - f0`` where
    ``le[s, k]`` (``f_k <= f0``), ``Q = f0`` elsewhere, ``p_k = 0`` for no term.  ``parts[s, h, l]``: limb ``l`` of
    the rows' share of ``X_h = sum_k [k in half h] sp_k M[k, :]`` (``M``: the identity on the variables, the rows'
    coefficients on the activities), so the cut's exact coefficients are ``w = (D - f0) X_0 + f0 X_1``, ``X_h =
    sum_l parts[s, h, l] 2**(17 l)`` plus the variables' own ``sp``."""

    f0: np.ndarray
    fits: np.ndarray
    slot: np.ndarray
    sp: np.ndarray
    le: np.ndarray
    parts: np.ndarray
    lam_nz: np.ndarray        # bool: lam_i != 0, the rows the reference path reads


def _limbs(values: np.ndarray) -> np.ndarray:
    """int64 values below 2**50 in magnitude as three float64 limbs (a new axis before the last) of at most 2**17
    in magnitude: ``values = l0 + l1 2**17 + l2 2**34``."""
    import numpy as np

    low = (1 << _LIMB) - 1
    return np.stack([values & low, (values >> _LIMB) & low, values >> (2 * _LIMB)], axis=-2).astype(np.float64)


def _joined(parts: np.ndarray) -> np.ndarray:
    """``sum_l parts[..., l, :] 2**(17 l)`` modulo 2**64 (uint64) from exact float64 limb sums below 2**52."""
    import numpy as np

    u = parts.astype(np.int64).view(np.uint64)
    return u[..., 0, :] + u[..., 1, :] * np.uint64(1 << _LIMB) + u[..., 2, :] * np.uint64(1 << 2 * _LIMB)


def _combination(inv_rows: np.ndarray, coef: np.ndarray, coef_f: np.ndarray, shift: _Shift) -> _Combination:
    """:class:`_Combination` of the multipliers ``lam = round(inv_rows * 2**50)`` (exactly :func:`cuts_of`'s).

    Exact: ``b`` and the ``f_k`` are only needed modulo ``D = 2**50``, which divides 2**64, so they come from uint64
    arithmetic, which wraps modulo 2**64: ``b = -sum_i lam_i (A_i.bound - bound_(n+i))``; a row's ``sp_i`` is
    ``-lam_i`` (mod D) where ``le`` and ``lam_i`` elsewhere, so a variable's ``a_k = sum_i lam_i A_ik`` is ``X_1 -
    X_0`` plus the fixed rows' share (mod D).  ``|sp| < 2**50`` goes into the products as limbs of at most 2**17,
    and :func:`_candidates` only calls this when every column of ``coef`` has ``sum_i |A_ik| < 2**35``: every
    partial sum of the float64 products is an integer below 2**52, exact in any order.  np.einsum, not BLAS: a
    threaded BLAS product leaves OpenBLAS's threads spinning ~0.1 CPU s after it (measured, 2 cores)."""
    import numpy as np

    mask, scale = (1 << _SCALE_BITS) - 1, 1 << _SCALE_BITS
    m, n = coef.shape
    zero, mask_u = np.uint64(0), np.uint64(mask)
    lam_f = np.rint(inv_rows * float(scale))          # round() of a Python float and np.rint: both half to even
    fits = np.asarray((np.abs(lam_f) < 2.0 ** 62).all(axis=1))
    lam_u = np.where(fits[:, None], lam_f, 0.0).astype(np.int64).view(np.uint64)
    bound_u = shift.bound_u
    f0 = ((zero - lam_u @ (coef.view(np.uint64) @ bound_u[:n] - bound_u[n:])) & mask_u).astype(np.int64)
    live = np.flatnonzero(fits & (f0 != 0))
    slot = np.full(len(inv_rows), -1, np.int64)
    slot[live] = np.arange(len(live))
    f0l, lam_l = f0[live, None], lam_u[live]
    sp = np.zeros((len(live), n + m), np.int64)
    le = np.zeros((len(live), n + m), bool)
    # the rows' activities: a_(n+i) = -lam_i
    side, movable = shift.side[n:], shift.movable[n:]
    fk = (np.where(side > 0, zero - lam_l, lam_l) & mask_u).astype(np.int64)
    le[:, n:] = fk <= f0l
    sp[:, n:] = np.where(le[:, n:], fk, scale - fk) * movable * side
    mov, fixed = np.flatnonzero(movable), np.flatnonzero(movable == 0)
    rows_sp = sp[:, n + mov]
    halves = np.stack([np.where(le[:, n + mov], rows_sp, 0), np.where(le[:, n + mov], 0, rows_sp)], axis=1)
    limbs = _limbs(halves).reshape(6 * len(live), len(mov))
    parts = np.einsum("tk,kj->tj", limbs, coef_f[mov]).reshape(len(live), 2, 3, n)
    limbs = _limbs((lam_l[:, fixed] & mask_u).astype(np.int64)).reshape(3 * len(live), len(fixed))
    shares = np.einsum("tk,kj->tj", limbs, coef_f[fixed]).reshape(len(live), 3, n)
    a_u = _joined(parts[:, 1]) - _joined(parts[:, 0]) + _joined(shares)
    # the variables
    side, movable = shift.side[:n], shift.movable[:n]
    fk = (np.where(side > 0, a_u, zero - a_u) & mask_u).astype(np.int64)
    le[:, :n] = fk <= f0l
    sp[:, :n] = np.where(le[:, :n], fk, scale - fk) * movable * side
    return _Combination(f0, fits, slot, sp, le, parts, lam_f != 0)


def _order(lam_nz: np.ndarray, sp: np.ndarray, first: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Per variable, a key that sorts the cut's variables as the reference path's dict has them (int64; huge for a
    variable it does not name).  That dict meets them term by term over the combination's terms in their order,
    each movable term with ``g_k != 0`` giving its own variable or its row's terms; the combination's terms are
    ordered by first appearance over the rows with ``lam_i != 0``, each row's terms then its activity."""
    import numpy as np

    m, n = first.shape
    cols = np.arange(n)
    member = first < _NOWHERE
    never = np.iinfo(np.int64).max
    key = np.full(n, never, np.int64)
    direct = sp[:n] != 0
    if direct.any():
        read = np.flatnonzero(lam_nz)
        r = read[member[read].argmax(axis=0)]              # each variable's first row read
        key = np.where(direct, (r * _NOWHERE + first[r, cols]) * _NOWHERE, never)
    src = np.flatnonzero(sp[n:] != 0)
    if src.size:
        inside = member[src]
        j = inside.argmax(axis=0)
        r = src[j]                                         # the first such row naming the variable
        by_row = ((r * _NOWHERE + lens[r]) * _NOWHERE + first[r, cols])
        key = np.minimum(key, np.where(inside[j, cols], by_row, never))
    return key


def _fast_cut(comb: _Combination, t: int, shift: _Shift, first: np.ndarray, lens: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Candidate t's coarsened cut as :func:`_gmi` then :func:`_coarsen` give it: its variables in their dict order,
    their coefficients, and its right-hand side; None where they give none.  Raises :class:`_Inexact` where it
    cannot tell.

    The coefficients ``w_j`` (up to ~2**140) are only needed as ``ceil(w_j / S)`` (``S = max |w| >> 24``) and
    whether ``S`` divides them.  The float estimate ``wf`` of each rounds five times from exact float64 inputs (the
    limb sums, the variables' own terms, ``D - f0`` and ``f0``, all integers below 2**53), so it is off by at most
    ~5 * 2**-53 of the sum of its terms' magnitudes; ``err`` allows 2**-45 of it.  ``w_j / S`` then lies within
    ``tol`` of ``q = wf / S`` (``err / S``, the division's rounding, and 2**-20 for ``q +- tol`` themselves, as
    ``|q| < 2**26``); where no integer lies within ``tol`` of ``q``, ``ceil(w_j / S)`` is ``floor(q - tol) + 1`` and
    ``S`` does not divide ``w_j``.  Elsewhere (~2 % of them on DeepSeek-R1: mostly exact multiples of ``S`` and
    zeros), and for the largest ``|w|`` (those whose estimate is within its error of the largest), ``w_j`` is
    computed in Python integers from the exact limb sums."""
    import numpy as np

    if not comb.fits[t]:
        raise _Inexact
    f0 = int(comb.f0[t])
    if not f0:
        return None
    lam_nz, at = comb.lam_nz[t], int(comb.slot[t])
    scale = 1 << _SCALE_BITS
    q0, q1 = scale - f0, f0
    n = first.shape[1]
    own = comb.sp[at, :n]
    own0 = np.where(comb.le[at, :n], own, 0)
    own1 = own - own0
    parts = comb.parts[at]
    step, step2 = float(1 << _LIMB), float(1 << 2 * _LIMB)
    x0 = parts[0, 0] + parts[0, 1] * step + parts[0, 2] * step2 + own0
    x1 = parts[1, 0] + parts[1, 1] * step + parts[1, 2] * step2 + own1
    size0 = np.abs(parts[0, 0]) + np.abs(parts[0, 1]) * step + np.abs(parts[0, 2]) * step2 + np.abs(own0)
    size1 = np.abs(parts[1, 0]) + np.abs(parts[1, 1]) * step + np.abs(parts[1, 2]) * step2 + np.abs(own1)
    wf = float(q0) * x0 + float(q1) * x1
    err = (float(q0) * size0 + float(q1) * size1) * 2.0 ** -45

    def exact(j: int) -> int:
        h0 = int(parts[0, 0, j]) + (int(parts[0, 1, j]) << _LIMB) + (int(parts[0, 2, j]) << 2 * _LIMB) + int(own0[j])
        h1 = int(parts[1, 0, j]) + (int(parts[1, 1, j]) << _LIMB) + (int(parts[1, 2, j]) << 2 * _LIMB) + int(own1[j])
        return q0 * h0 + q1 * h1

    live = err > 0                                       # err == 0: every part is 0, w_j == 0
    if not live.any():
        raise _Inexact
    size = np.abs(wf)
    margin = err + size * 2.0 ** -50
    biggest = float((size - margin)[live].max())
    top = max(abs(exact(int(j))) for j in np.flatnonzero(live & (size + margin >= biggest)))
    s = top >> _COEF_BITS
    if s <= 1 or top.bit_length() > 1000:
        raise _Inexact
    q = wf / float(s)
    tol = err / float(s) * 1.001 + np.abs(q) * 2.0 ** -48 + 2.0 ** -20
    lo = q - tol
    floor = np.floor(lo)
    sure = live & (np.floor(q + tol) == floor) & (lo > floor)
    if float(np.abs(q[live]).max()) >= 2.0 ** 26:
        raise _Inexact
    out = np.where(sure, floor + 1, 0).astype(np.int64)
    named = sure.copy()
    divides: set[int] = set()
    for j in np.flatnonzero(live & ~sure).tolist():
        c = exact(j)
        if c:
            named[j] = True
            out[j] = o = -((-c) // s)
            if o * s == c:
                divides.add(j)
    low = sum(lb for v, lb in shift.neg if named[v] and v not in divides)
    rhs = -((-_rhs(comb, at, shift, q0, q1)) // s) + low
    key = _order(lam_nz, comb.sp[at], first, lens)
    keep = np.flatnonzero(named & (out != 0))
    if keep.size and int(key[keep].max()) == np.iinfo(np.int64).max:
        raise _Inexact                                   # a coefficient from no term: cannot happen
    idx = keep[np.argsort(key[keep], kind="stable")]
    return idx, out[idx], rhs


def _rhs(comb: _Combination, at: int, shift: _Shift, q0: int, q1: int) -> int:
    """The GMI right-hand side before coarsening, ``F0 (D - F0) + sum_k side_k g_k bound_k``, in Python
    integers over the terms with a bound other than 0."""
    import numpy as np

    sp = comb.sp[at, shift.nz]
    le = comb.le[at, shift.nz]
    half0 = np.where(le, sp, 0)
    return (q1 * q0 + q0 * sum(map(mul, half0.tolist(), shift.nz_bound))
            + q1 * sum(map(mul, (sp - half0).tolist(), shift.nz_bound)))


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


def _at_lo(status: Sequence[int], x: Sequence[float], rows: Sequence[Row], bounds: Sequence[tuple[int, int]],
           basic: int, at_upper: int) -> list[bool]:
    """Per variable, then per row activity, whether :func:`_gmi` shifts it to its lower bound: the finite one, else
    the nearer for a basic term, else the one it sits at.  A row's activity is summed only where it is asked for
    (a basic row with two finite bounds: the cuts have none, and summing their ~760 terms each round cost ~0.03 s
    of DeepSeek-R1's speed step)."""
    n = len(bounds)
    at_lo = []
    for k, st in enumerate(status):
        lo, hi = bounds[k] if k < n else rows[k - n][1:]
        if lo is None or hi is None:
            at_lo.append(lo is not None)
        elif st == basic:
            val = x[k] if k < n else sum(c * x[v] for v, c in rows[k - n][0])
            at_lo.append(val - lo <= hi - val)
        else:
            at_lo.append(st != at_upper)
    return at_lo


def _matrix(rows: Sequence[Row], n: int, coef: np.ndarray | None) -> np.ndarray:
    """The rows' float64 matrix ``[A | -I]`` over the variables and the activities.  From ``coef`` (the dense
    rows, whose partial sums are exact in float64: :class:`_Dense`) where there is one: the same numbers."""
    import numpy as np

    m = len(rows)
    mat = np.zeros((m, n + m))
    if coef is not None:
        mat[:, :n] = coef
    else:
        for i, (terms, _lo, _hi) in enumerate(rows):
            for v, k in terms:
                mat[i, v] += k
    mat[np.arange(m), n + np.arange(m)] = -1.0
    return mat


def _candidates(inv: np.ndarray, picked: Sequence[int], rows: Sequence[Row], bounds: Sequence[tuple[int, int]],
                at_lo: Sequence[bool], xa: np.ndarray, dense: _Dense | None, coef: np.ndarray | None
                ) -> list[tuple[float, dict[int, int], int]]:
    """The coarsened cuts of the basis rows ``picked`` of ``inv`` that the LP point violates, in that order, with
    their violation over their norm.  The fast path (:func:`_combination`, :func:`_fast_cut`) where the round fits
    its arguments, else, or where it cannot tell, the reference path: the same cuts."""
    import numpy as np

    fast: tuple[_Combination, _Shift, np.ndarray, np.ndarray] | None = None
    if dense is not None and coef is not None and picked:
        shift = _shift(rows, bounds, at_lo)
        coef_f = coef.astype(np.float64)
        if shift is not None and float(np.abs(coef_f).sum(axis=0).max()) < 2.0 ** 35:
            fast = (_combination(inv[list(picked)], coef, coef_f, shift), shift, np.array(dense.first),
                    np.array(dense.lens, np.int64))
    found: list[tuple[float, dict[int, int], int]] = []
    for t, bi in enumerate(picked):
        try:
            if fast is None:
                raise _Inexact
            got = _fast_cut(fast[0], t, *fast[1:])
            if got is None:
                continue
            idx, coefs, rhs = got
            w = dict(zip(idx.tolist(), coefs.tolist()))
            cf = coefs.astype(np.float64)
        except _Inexact:
            lam = [int(round(v * (1 << _SCALE_BITS))) for v in inv[bi]]
            exact = _gmi(lam, rows, bounds, at_lo)
            if exact is None:
                continue
            w, rhs = _coarsen(*exact, bounds)
            idx = np.fromiter(w.keys(), dtype=np.int64)
            cf = np.fromiter(w.values(), dtype=np.float64)
        if not w:
            continue
        viol = float(rhs) - float(cf @ xa[idx])
        norm = float(np.linalg.norm(cf))
        if norm and viol / norm > 1e-9:
            found.append((viol / norm, w, rhs))
    return found


def cuts_of(rows0: Sequence[Row], bounds: Sequence[tuple[int, int]], cost: Sequence[int], rounds: int,
            per_round: int) -> tuple[list[Cut], float]:
    """:func:`gomory_cuts` of the integer program ``min cost.x`` over ``rows0`` and ``bounds``."""
    import numpy as np
    from ortools.linear_solver import pywraplp

    from planner.solver_bounds import GlopLP, lp_key, remember_lp

    n = len(bounds)
    rows: list[Row] = list(rows0)
    dense: _Dense | None = _Dense(n) if _FAST else None
    if dense is not None and not all(dense.add(terms) for terms, _lo, _hi in rows):
        dense = None
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
        at_lo = _at_lo(status, x, rows, bounds, pywraplp.Solver.BASIC, pywraplp.Solver.AT_UPPER_BOUND)
        coef = np.array(dense.coef) if dense is not None else None
        try:
            inv = np.linalg.inv(_matrix(rows, n, coef)[:, basic])
        except np.linalg.LinAlgError:
            break
        tried: list[tuple[float, int]] = []
        for bi, j in enumerate(basic):
            f = x[j] - math.floor(x[j]) if j < n else 0.0
            if _MIN_FRAC <= f <= 1 - _MIN_FRAC:
                tried.append((abs(f - 0.5), bi))
        picked = [bi for _f, bi in sorted(tried)[:_TRIED]]
        found = _candidates(inv, picked, rows, bounds, at_lo, np.asarray(x), dense, coef)
        if not found:
            break
        found.sort(key=lambda t: -t[0])
        new: list[Row] = []
        for _v, w, rhs in found[:per_round]:
            cuts.append((w, rhs))
            new.append(([(v, w[v]) for v in sorted(w)], rhs, None))     # sorted(w.items()) in half the time
            if dense is not None and not dense.add_cut(w):
                dense = None
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
    """:func:`gomory_cuts` of ``proto``, remembered for the last model: a plan may solve the same model twice (the
    short try and the long one of planner.planning._proven_or_within differ only in their hint and gap; a speed step
    on several GPUs has no short try)."""
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
