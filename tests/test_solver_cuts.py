"""Gomory cuts (planner.solver_cuts) are valid: checked against every integer point of small models in the solver's
count form (an independent source: brute-force enumeration), and against the exact optimum of HiGHS
(scipy.optimize.milp, a test dependency only) on models the planner's own solver builds; their LP bound lies between
the plain LP bound and the optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.solver import Group, Objective, Option, _cp_model, solve
from planner.solver_bounds import _rows, relaxation, var_bounds
import planner.solver_cuts as solver_cuts
from planner.solver_cuts import cuts_of, gomory_cuts, model_cuts


def _compositions(total: int, parts: int):
    for cut in itertools.combinations(range(total + parts - 1), parts - 1):
        prev, out = -1, []
        for c in cut:
            out.append(c - prev - 1)
            prev = c
        out.append(total + parts - 1 - prev - 1)
        yield tuple(out)


def _model(seed: int):
    """3 classes of 2-3 interchangeable groups, 3-4 options each on one of two devices, a loss row, and a hand-off
    count y >= each class's options away from its home (the solver's shape); returns (model, classes, y pairs)."""
    cp_model = _cp_model()
    rng = np.random.default_rng(seed)
    m = cp_model.CpModel()
    classes, cost, dev, size, loss = [], {}, {}, {}, {}
    for c in range(3):
        k, n = int(rng.integers(3, 5)), int(rng.integers(2, 4))
        vs = [m.new_int_var(0, n, f"n{c}_{o}") for o in range(k)]
        m.add(sum(vs) == n)
        classes.append((vs, n))
        for v in vs:
            dev[v.index] = int(rng.integers(0, 2))
            size[v.index] = int(rng.integers(1, 30))
            loss[v.index] = int(rng.integers(0, 50))
            cost[v.index] = size[v.index] * (1 if dev[v.index] == 0 else 4) + int(rng.integers(0, 5))
    allv = [v for vs, _ in classes for v in vs]
    for d in range(2):
        terms = [v for v in allv if dev[v.index] == d]
        m.add(sum(size[v.index] * v for v in terms) <= int(sum(size[v.index] for v in terms) * 0.45))
    m.add(sum(loss[v.index] * v for v in allv) <= int(sum(loss.values()) * 0.6))
    y = m.new_int_var(0, 3, "y")
    for vs, _ in classes[:2]:
        away = [v for v in vs if dev[v.index] == 1]
        if away:
            m.add(y >= sum(away))
    m.minimize(sum(cost[v.index] * v for v in allv) + 7 * y)
    return m, classes, y


def _points(m, classes, y):
    rows = _rows(m.proto)
    n = len(m.proto.variables)
    for combo in itertools.product(*[_compositions(size, len(vs)) for vs, size in classes]):
        for yv in range(4):
            x = [0] * n
            for (vs, _), counts in zip(classes, combo):
                for v, c in zip(vs, counts):
                    x[v.index] = c
            x[y.index] = yv
            if all((lo is None or sum(k * x[v] for v, k in t) >= lo) and (hi is None or sum(k * x[v] for v, k in t)
                                                                            <= hi) for t, lo, hi in rows):
                yield x


def _objective(m, x):
    return sum(int(k) * x[int(v)] for v, k in zip(m.proto.objective.vars, m.proto.objective.coeffs))


def test_cuts_keep_every_integer_point():
    """Over 40 random models: every cut holds at every feasible integer point (not only the optimum), and the LP bound
    with the cuts lies between the plain LP bound and the optimum; the cuts do lift it on some models (the test
    would not notice cuts that are never made)."""
    made = lifted = 0
    for seed in range(40):
        m, classes, y = _model(seed)
        points = list(_points(m, classes, y))
        if not points:
            continue
        cuts, _ = gomory_cuts(m.proto, rounds=4, per_round=50)
        made += len(cuts)
        for x in points:
            for w, rhs in cuts:
                assert sum(c * x[v] for v, c in w.items()) >= rhs, (seed, w, rhs, x)
        best = min(_objective(m, x) for x in points)
        plain, cut = relaxation(m.proto), relaxation(m.proto, cuts)
        assert plain is not None and cut is not None
        assert plain.bound <= cut.bound + 1e-9 * abs(best) and cut.bound <= best, seed
        lifted += cut.bound > plain.bound
    assert made > 20 and lifted >= 5, (made, lifted)


def _instance(seed: int, n_groups: int, twins: int, handoff: float):
    rng = np.random.default_rng(seed)
    groups = []
    for g in range(n_groups):
        opts = []
        for dev in ("CUDA0", "CUDA1", "CPU"):
            for t in range(5):
                nbytes = int(rng.integers(1, 60)) * 4096
                opts.append(Option(f"t{t}", dev, nbytes, float(rng.uniform(0.0, 1.0)) / (1 + t),
                                   nbytes * 1e-9 * (4 if dev == "CPU" else 1)))
        for k in range(twins):
            groups.append(Group(f"g{g}.{k}", f"role{g}", k, (f"g{g}.{k}",), tuple(opts), home="CUDA0",
                                handoff_s=handoff))
    total_min = sum(min(o.bytes for o in grp.options) for grp in groups)
    return groups, {"CUDA0": int(total_min * 0.5), "CUDA1": int(total_min * 0.4), "CPU": int(total_min * 3)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cuts_keep_the_exact_optimum_of_solver_models(seed, monkeypatch):
    """The models planner.solver builds for a balanced plan's speed step (a loss row, two GPUs, hand-offs): the
    HiGHS optimum (scipy.optimize.milp on the same rows) satisfies every cut and the LP bound with the cuts does not
    exceed it; the tightened solve, which uses that bound, reaches the same optimum."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    import planner.solver_bounds as bounds_mod

    groups, capacity = _instance(seed, 14, 3, 2e-4)
    best = solve(groups, capacity, Objective("quality"))
    obj = Objective("speed", max_loss=best.loss * 1.02, tighten=True)
    seen, found = [], []
    real = bounds_mod.tightened_search

    def capture(cp_model, m, objective, coupling=(), kept=()):
        seen.append(m.clone())
        result = real(cp_model, m, objective, coupling, kept)
        found.append(round(result[0].objective_value))
        return result

    monkeypatch.setattr(bounds_mod, "tightened_search", capture)
    sol = solve(groups, capacity, obj)
    proto = seen[0].proto
    rows = _rows(proto)
    n = len(proto.variables)
    a = np.zeros((len(rows), n))
    lo, hi = np.full(len(rows), -np.inf), np.full(len(rows), np.inf)
    for i, (terms, rl, rh) in enumerate(rows):
        for v, k in terms:
            a[i, v] += k
        lo[i] = -np.inf if rl is None else rl
        hi[i] = np.inf if rh is None else rh
    c = np.zeros(n)
    for v, k in zip(proto.objective.vars, proto.objective.coeffs):
        c[int(v)] += int(k)
    vb = np.array([var_bounds(v) for v in proto.variables], dtype=float)
    res = milp(c, constraints=LinearConstraint(a, lo, hi), integrality=np.ones(n), bounds=Bounds(vb[:, 0], vb[:, 1]),
               options={"mip_rel_gap": 0})
    assert res.success
    x = [int(round(v)) for v in res.x]
    optimum = _objective(seen[0], x)
    cuts = model_cuts(proto, bounds_mod.SPEED_CUT_ROUNDS)   # a speed step: the rounds its search uses
    assert cuts
    for w, rhs in cuts:
        assert sum(k * x[v] for v, k in w.items()) >= rhs
    relax = relaxation(proto, cuts)
    assert relax is not None and relax.bound <= optimum
    assert sol.status == "OPTIMAL" and found == [optimum]


def _knapsack(seed: int):
    """A balanced plan's speed step in miniature (groups choosing options on two GPUs and the CPU, byte-sized capacity
    rows, a loss row) with what the fast path must reproduce: variables shifted below zero (x = y + 1), fixed
    variables, a variable named twice in a row, terms out of order."""
    rng = np.random.default_rng(seed)
    rows, bounds, cost, caps, loss = [], [], [], [[], [], []], []
    for _g in range(int(rng.integers(20, 40))):
        count, vs = int(rng.choice([1, 1, 2, 3])), []
        for d in range(3):
            for t in range(4):
                v, size = len(bounds), int(rng.integers(1, 60)) << 18
                vs.append(v)
                bounds.append((0, count) if rng.random() > 0.03 else (0, 0))
                caps[d].append((v, size))
                loss.append((v, int(rng.integers(0, 1000)) // (1 + t)))
                cost.append((size >> 12) * (4 if d == 2 else 1) + int(rng.integers(0, 50)))
        rows.append(([(v, 1) for v in vs], count, count))
    for d, share in enumerate((0.5 / 12, 0.4 / 12, 0.25)):
        rows.append((caps[d], None, int(sum(k for _, k in caps[d]) * share)))
    rows.append((loss, None, int(sum(k for _, k in loss) * 0.25)))
    v, k = rows[-2][0][0]
    rows[-2][0][0:1] = [(v, k - 1), (v, 1)]
    rng.shuffle(rows[-3][0])
    for v in rng.choice(len(bounds), len(bounds) // 8, replace=False).tolist():
        bounds[v] = (bounds[v][0] - 1, bounds[v][1] - 1)
        for i, (terms, lo, hi) in enumerate(rows):
            s = sum(k for u, k in terms if u == v)
            if s:
                rows[i] = (terms, None if lo is None else lo - s, hi - s)
    return rows, bounds, cost


def test_fast_path_gives_the_reference_cuts(monkeypatch):
    """The numpy path (exact limb sums, float-screened ceilings) returns the reference path's cuts, each dict in the
    same key order, and the same LP bound; with some candidates sent back to the reference path too (a round mixes
    them).  The test would notice a fast path that never runs."""
    seen, sent_back = [0], [0]
    real = solver_cuts._fast_cut

    def counted(*args):
        seen[0] += 1
        if seen[0] % 4 == 0:
            sent_back[0] += 1
            raise solver_cuts._Inexact
        return real(*args)

    made = 0
    for seed in range(8):
        rows, bounds, cost = _knapsack(seed)
        monkeypatch.setattr(solver_cuts, "_FAST", False)
        ref = cuts_of(rows, bounds, cost, 3, 20)
        for fast_cut in (real, counted):
            monkeypatch.setattr(solver_cuts, "_FAST", True)
            monkeypatch.setattr(solver_cuts, "_fast_cut", fast_cut)
            got = cuts_of(rows, bounds, cost, 3, 20)
            assert got == ref, seed
            assert [list(w.items()) for w, _ in got[0]] == [list(w.items()) for w, _ in ref[0]], seed
        made += len(ref[0])
    assert made > 60 and seen[0] > 50 and sent_back[0] > 10, (made, seen, sent_back)


def test_the_planner_runs_one_blas_thread_whatever_the_environment_says():
    """The cuts' basis inverse must not depend on the core count (planner/__init__.py): the CLI's process gets one
    BLAS thread even when the environment asks for more."""
    import os
    import subprocess
    import sys

    code = "import planner, numpy, os; print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="8", MKL_NUM_THREADS="8")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]
