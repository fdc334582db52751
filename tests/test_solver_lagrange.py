"""The Lagrangian decomposition bound (planner.solver_lagrange) on small two-GPU instances of the solver's own models:
the bound lies between the LP relaxation's and the exact MILP optimum (HiGHS through scipy.optimize.milp on the
exported model, a test dependency only), the parts' point it reports as feasible meets every row of the model with
the objective it states, and a balanced-style speed solve that uses it claims no gap the exact optimum contradicts."""

from __future__ import annotations

import numpy as np
import pytest

from planner.solver import Group, Objective, Option, solve
from planner.solver_bounds import _rows, lagrangian_bound, var_bounds
from planner.solver_lagrange import components, device_bound


def _two_gpu_instance(seed: int, n_layers: int = 6):
    """Per layer two groups (its experts: gate_up and down) homed on CUDA0 (first half) or CUDA1 (second half), each
    with types on its home GPU or on the CPU, and a layer hand-off when away; capacities that fit about half the
    experts on each GPU."""
    rng = np.random.default_rng(seed)
    groups = []
    for layer in range(n_layers):
        home = "CUDA0" if layer < n_layers // 2 else "CUDA1"
        for role in ("gate_up", "down"):
            opts = []
            for t in range(3):
                nbytes = int(rng.integers(8, 40)) * 4096
                loss = float(rng.uniform(0.0, 1.0)) * (3 - t)
                opts.append(Option(f"t{t}", home, nbytes, loss, float(rng.uniform(1e-4, 3e-4))))
                opts.append(Option(f"t{t}", "CPU", nbytes, loss, float(rng.uniform(8e-4, 1.6e-3))))
            groups.append(Group(f"{role}.{layer}", role, layer, (f"blk.{layer}.{role}",), tuple(opts), home=home,
                                handoff_s=float(rng.uniform(1e-5, 5e-5))))
    half = sum(min(o.bytes for o in g.options) for g in groups) // 2
    capacity = {"CUDA0": int(half * 0.55), "CUDA1": int(half * 0.6), "CPU": half * 10}
    return groups, capacity


def _captured(groups, capacity, objective, hint=None):
    """The CP-SAT model and coupling rows planner.solver.solve hands to the tightened search."""
    import planner.solver_bounds as sb

    got = {}
    real = sb.tightened_search

    def capture(cp_model, m, obj, coupling=(), kept=()):
        if not got:                                  # the plan's model, not the decomposition's parts
            got["proto"] = m.clone().proto
            got["coupling"] = list(coupling)
            got["model"] = m.clone()
            got["kept"] = [list(f) for f in kept]
        return real(cp_model, m, obj, coupling, kept)

    sb.tightened_search = capture
    try:
        sol = solve(groups, capacity, objective, hint=hint)
    finally:
        sb.tightened_search = real
    return got, sol


def _milp(proto) -> float:
    """Exact optimum of a CP-SAT model of linear rows (scipy.optimize.milp, HiGHS)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    rows = _rows(proto)
    n = len(proto.variables)
    cost = np.zeros(n)
    for v, k in zip(proto.objective.vars, proto.objective.coeffs):
        cost[int(v)] += int(k)
    a = np.zeros((len(rows), n))
    lo, hi = [], []
    for r, (terms, lb, ub) in enumerate(rows):
        for v, k in terms:
            a[r, v] += k
        lo.append(-np.inf if lb is None else lb)
        hi.append(np.inf if ub is None else ub)
    bounds = [var_bounds(v) for v in proto.variables]
    res = milp(cost, constraints=LinearConstraint(a, lo, hi), integrality=np.ones(n),
               bounds=Bounds([b[0] for b in bounds], [b[1] for b in bounds]), options={"mip_rel_gap": 0})
    assert res.success, res.message
    return float(res.fun)


def test_components_follow_the_rows_left():
    rows = [([(0, 1), (1, 1)], 1, 1), ([(2, 1), (3, 2)], None, 5), ([(1, 1), (2, 1)], None, 9)]
    assert components(5, rows, skip={2}) == [[0, 1], [2, 3], [4]]
    assert components(5, rows, skip=set()) == [[0, 1, 2, 3], [4]]


@pytest.mark.parametrize("seed", range(6))
def test_device_bound_lies_between_the_lp_and_the_exact_optimum(seed):
    groups, capacity = _two_gpu_instance(seed)
    best = solve(groups, capacity, Objective("quality"))
    objective = Objective("speed", max_loss=best.loss * 1.05, tighten=True, relative_gap=1e-3, aim_gap=1e-4)
    got, _ = _captured(groups, capacity, objective)
    proto = got["proto"]
    assert len(got["coupling"]) == 2                       # the CPU's bytes and the loss bound
    exact = _milp(proto)
    lp = float(lagrangian_bound(proto)[0])
    upper = int(np.ceil(exact)) + 10 ** 6
    res = device_bound(_cp(), proto, got["coupling"], upper)
    assert res is not None
    assert lp - 1e-6 * abs(lp) <= float(res.bound) <= exact + 1e-9
    if res.feasible is not None:
        obj, values = res.feasible
        cost = [0] * len(proto.variables)
        for v, k in zip(proto.objective.vars, proto.objective.coeffs):
            cost[int(v)] += int(k)
        assert obj == sum(c * x for c, x in zip(cost, values)) >= exact - 1e-9
        for terms, lo, hi in _rows(proto):
            act = sum(k * values[v] for v, k in terms)
            assert (lo is None or act >= lo) and (hi is None or act <= hi)


@pytest.mark.parametrize("seed", range(6))
def test_search_after_the_decomposition_claims_a_true_gap(seed, monkeypatch):
    """The balanced plan's speed long try (gap 0.1 %, aim 0.01 %) from the best-quality solution, outside its aim:
    the decomposition runs first (planner.solver_bounds._by_device), and what the search returns is a point of the
    model with its own objective, a bound at most the exact optimum and the status its gap earns."""
    import planner.solver_bounds as sb

    start = _speed_long_try(*_two_gpu_instance(seed), aim=1e-4)
    if start is None:
        pytest.skip("the quality solution is within the aim already")
    ran = []
    real = sb._by_device
    monkeypatch.setattr(sb, "_by_device", lambda *a: ran.append(1) or real(*a))
    found, status = _run_long_try(start)
    assert ran
    _assert_true_claims(start, found, status)


def _speed_long_try(groups, capacity, aim):
    """What the balanced plan's speed long try (gap 0.1 %, aim ``aim``) starts from, with the best-quality solution
    as the solution at hand: a dict of the model and its parts, or None when that solution is within the aim of the
    LP bound with the cuts already."""
    import planner.solver_bounds as sb
    from planner.solver_cuts import model_cuts

    best = solve(groups, capacity, Objective("quality"))
    objective = Objective("speed", max_loss=best.loss * 1.05, tighten=True, relative_gap=1e-3, aim_gap=aim)
    got, _ = _captured(groups, capacity, objective, hint=best)
    proto = got["proto"]
    hinted = dict(zip(proto.solution_hint.vars, proto.solution_hint.values))
    values = [int(hinted[j]) for j in range(len(proto.variables))]
    upper = sb.objective_if_feasible(proto, values)
    assert upper is not None
    cuts = model_cuts(proto, sb.SPEED_CUT_ROUNDS)
    relax = sb.relaxation(proto, cuts)
    if upper - np.ceil(float(relax.bound)) <= aim * upper:
        return None
    return dict(got, objective=objective, values=values, upper=upper, cuts=cuts, relax=relax, exact=_milp(proto))


def _run_long_try(start):
    """planner.solver_bounds._tighten_and_run from ``start`` (:func:`_speed_long_try`) with 1.5 work."""
    import planner.solver_bounds as sb

    return sb._tighten_and_run(_cp(), start["model"], start["objective"], start["upper"], start["values"], 1.5,
                               start["relax"], start["cuts"], start["coupling"], kept=start["kept"])


def _assert_true_claims(start, found, status):
    """What a long try returned is a point of the model with its own objective, a bound at most the exact optimum,
    and OPTIMAL exactly when within the 0.1 % it may stop at."""
    import planner.solver_bounds as sb

    m, proto, exact = start["model"], start["proto"], start["exact"]
    point = [int(found.value(m.get_int_var_from_proto_index(j))) for j in range(len(proto.variables))]
    assert sb.objective_if_feasible(proto, point) == round(found.objective_value) >= exact - 1e-9
    assert found.best_objective_bound <= exact + 1e-9
    within = found.objective_value - found.best_objective_bound <= 1e-3 * found.objective_value
    assert (status == _cp().OPTIMAL) == within


def _cp():
    from planner.solver import _cp_model

    return _cp_model()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("factor", [1.0, 1.1])
def test_parts_evaluate_the_lagrangian_function_exactly(seed, factor):
    """``L(y)`` of planner.solver_lagrange at the LP's multipliers (and 1.1 times them) against an independent
    computation: the model without its coupling rows, priced by ``c - y A``, solved whole by HiGHS (the parts may stop
    within their PART_GAP of their own optimum, so L is at most that much lower, never higher)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    import planner.solver_bounds as sb
    from planner.solver_lagrange import PART_GAP, PART_WORK, _Parts

    groups, capacity = _two_gpu_instance(seed)
    best = solve(groups, capacity, Objective("quality"))
    objective = Objective("speed", max_loss=best.loss * 1.05, tighten=True, relative_gap=1e-3, aim_gap=1e-4)
    got, _ = _captured(groups, capacity, objective)
    proto, coupling = got["proto"], got["coupling"]
    rows = _rows(proto)
    parts = _Parts(_cp(), proto, rows, coupling, None)
    duals = sb._lp_solve(proto, rows, parts.cost)[0]
    y = [duals[i] * factor if (duals[i] < 0 and rows[i][2] is not None) or (duals[i] > 0 and rows[i][1] is not None)
         else 0.0 for i in coupling]                  # the signs device_bound keeps
    assert any(y)
    value, _activity, point = parts.evaluate(y, PART_WORK)
    cost = np.array(parts.cost, dtype=float)
    const = 0.0
    for i, yi in zip(coupling, y):
        if not yi:
            continue
        terms, lo, hi = rows[i]
        for v, k in terms:
            cost[v] -= yi * k
        const += yi * (hi if yi < 0 else lo)
    keep = [r for i, r in enumerate(rows) if i not in coupling]
    a = np.zeros((len(keep), len(cost)))
    for r, (terms, _lo, _hi) in enumerate(keep):
        for v, k in terms:
            a[r, v] += k
    bounds = [var_bounds(v) for v in proto.variables]
    res = milp(cost, constraints=LinearConstraint(a, [-np.inf if lo is None else lo for _, lo, _ in keep],
                                                  [np.inf if hi is None else hi for _, _, hi in keep]),
               integrality=np.ones(len(cost)), bounds=Bounds([b[0] for b in bounds], [b[1] for b in bounds]),
               options={"mip_rel_gap": 0})
    assert res.success, res.message
    exact = res.fun + const
    slack = PART_GAP * float(np.abs(cost) @ np.array([b[1] for b in bounds])) + 1e-6 * abs(exact)
    assert exact - slack <= float(value) <= exact + 1e-6 * abs(exact)
    # the parts' point meets every row of its own part
    for terms, lo, hi in keep:
        act = sum(k * point[v] for v, k in terms)
        assert (lo is None or act >= lo) and (hi is None or act <= hi)


def test_a_part_without_cost_still_gives_a_point_of_its_rows():
    """A part whose priced costs are all zero (no objective terms, in no priced row) is solved for any point of its
    own rows when there is no solution at hand, so a point reported as feasible meets every row; the bound is the
    brute-force optimum's or below."""
    import itertools

    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x = [m.new_int_var(0, 2, f"x{i}") for i in range(6)]
    m.add(x[0] + x[1] == 2)                      # part A
    m.add(x[2] + x[3] == 2)                      # part B: no cost, not in the coupling row
    m.add(x[4] + x[5] == 2)                      # part C
    m.add(x[0] + x[4] <= 1)                      # the coupling row (index 3)
    cost = [1, 10, 0, 0, 2, 7]
    m.minimize(sum(c * v for c, v in zip(cost, x)))
    points = [p for p in itertools.product(range(3), repeat=6)
              if p[0] + p[1] == 2 and p[2] + p[3] == 2 and p[4] + p[5] == 2 and p[0] + p[4] <= 1]
    optimum = min(sum(c * v for c, v in zip(cost, p)) for p in points)
    res = device_bound(cp_model, m.proto, [3], optimum + 100)
    assert res is not None and res.bound <= optimum
    for found in (res.feasible[1] if res.feasible else None, res.point):
        if found is not None:
            assert (found[0] + found[1], found[2] + found[3], found[4] + found[5]) == (2, 2, 2)
    if res.feasible is not None:
        assert tuple(res.feasible[1]) in points


@pytest.mark.parametrize("seed", range(6))
def test_solve_keeps_each_class_on_each_device_as_one_family(seed):
    """The families the solver hands to the tightened search (planner.solver.solve: the kept neighbourhood of
    planner.solver_bounds) are, per class, its count variables of one device: together they hold every count variable
    once, each family's options share one device and no family spans two classes."""
    groups, capacity = _two_gpu_instance(seed)
    got, _ = _captured(groups, capacity, Objective("speed", tighten=True))
    proto, kept = got["proto"], got["kept"]
    names = [v.name for v in proto.variables]
    counts = [j for j, name in enumerate(names) if name.startswith("n")]
    assert sorted(j for family in kept for j in family) == counts
    device_row = {}                                  # each count variable's device: the byte row it appears in
    for i, (terms, _lo, hi) in enumerate(_rows(proto)):
        if hi is not None and len(terms) > 2 and all(k > 0 for _, k in terms) and any(k > 1 for _, k in terms):
            for v, _k in terms:
                device_row.setdefault(v, i)
    assert set(counts) <= set(device_row)
    for family in kept:
        assert len({names[j].split("_")[0] for j in family}) == 1
        assert len({device_row.get(j) for j in family}) == 1


@pytest.mark.parametrize("seed", range(6))
def test_kept_neighbourhood_finds_the_best_types_for_the_placement_at_hand(seed):
    """From the best-quality solution, the kept neighbourhood (each class's count per device held) of the speed step
    returns a point of the model with the same count per family and, proven within its work, the exact optimum of the
    model with those counts fixed (HiGHS on that model, an independent solver)."""
    import planner.solver_bounds as sb

    groups, capacity = _two_gpu_instance(seed)
    best = solve(groups, capacity, Objective("quality"))
    objective = Objective("speed", max_loss=best.loss * 1.05, tighten=True, relative_gap=1e-3, aim_gap=1e-4)
    got, _ = _captured(groups, capacity, objective, hint=best)
    m, proto, kept = got["model"], got["proto"], got["kept"]
    hinted = dict(zip(proto.solution_hint.vars, proto.solution_hint.values))
    values = [int(hinted[j]) for j in range(len(proto.variables))]
    upper = sb.objective_if_feasible(proto, values)
    assert upper is not None
    cp_model = _cp()
    point, obj, _work = sb._neighbourhood(cp_model, m, objective, values, None, 2.0, kept)
    assert obj is not None and obj <= upper
    assert sb.objective_if_feasible(proto, point) == obj
    for family in kept:
        assert sum(point[j] for j in family) == sum(values[j] for j in family)
    fixed = m.clone()
    for family in kept:
        fixed.add(sum(fixed.get_int_var_from_proto_index(j) for j in family) == sum(values[j] for j in family))
    assert obj == round(_milp(fixed.proto))


@pytest.mark.parametrize("seed", range(6))
def test_decomposition_run_again_from_a_better_solution_keeps_a_true_bound(seed, monkeypatch):
    """From the best-quality solution, the decomposition run again after its neighbourhoods improved the solution
    (planner.solver_bounds.AGAIN_GAIN, here 0 so that any gain repeats it, with an aim of 0): every run starts from
    the best solution so far with what its predecessors left of DEVICE_WORK, and the result is a point of the model
    with its stated objective, no worse than one run's, with a bound at least one run's and at most the exact
    optimum (HiGHS on the exported model)."""
    import planner.solver_bounds as sb
    import planner.solver_lagrange as sl

    groups, capacity = _two_gpu_instance(seed)
    best = solve(groups, capacity, Objective("quality"))
    objective = Objective("speed", max_loss=best.loss * 1.05, tighten=True, relative_gap=1e-3, aim_gap=0.0)
    got, _ = _captured(groups, capacity, objective, hint=best)
    m, proto, coupling, kept = got["model"], got["proto"], got["coupling"], got["kept"]
    exact = _milp(proto)
    hinted = dict(zip(proto.solution_hint.vars, proto.solution_hint.values))
    values = [int(hinted[j]) for j in range(len(proto.variables))]
    upper = sb.objective_if_feasible(proto, values)
    assert upper is not None
    relax = sb.relaxation(proto, [])
    calls: list[tuple[int, float, float]] = []          # (upper, work allowed, work used) of each decomposition
    real = sl.device_bound

    def counted(cp_model, p, rows, up, vals=None, work=1.0):
        res = real(cp_model, p, rows, up, vals, work)
        calls.append((up, work, res.work if res is not None else 0.0))
        return res

    monkeypatch.setattr(sl, "device_bound", counted)
    monkeypatch.setattr(sb, "AGAIN_WORK", float("inf"))
    once = sb._by_device(_cp(), m.clone(), objective, upper, list(values), coupling, relax, kept)
    assert len(calls) == 1
    once_spent = calls[0][2]
    calls.clear()
    monkeypatch.setattr(sb, "AGAIN_GAIN", 0.0)
    monkeypatch.setattr(sb, "AGAIN_WORK", 0.0)
    again = sb._by_device(_cp(), m.clone(), objective, upper, list(values), coupling, relax, kept)
    for res in (once, again):
        obj, point, lifted, _used = res
        assert sb.objective_if_feasible(proto, point) == obj >= exact - 1e-9
        assert lifted <= exact + 1e-9
    assert again[0] <= once[0] and again[2] >= once[2]
    if upper > once[0] > once[2] and once_spent < sb.DEVICE_WORK:    # it gained, left a gap and work: again
        assert len(calls) >= 2
    assert calls[0][:2] == (upper, sb.DEVICE_WORK)
    for (_u0, allowed, spent), (u1, next_allowed, _s) in zip(calls, calls[1:]):
        assert u1 < _u0 and next_allowed == pytest.approx(allowed - spent)


@pytest.mark.parametrize("gpus", [1, 2])
def test_speed_step_on_several_gpus_has_no_short_try(gpus, monkeypatch):
    """The balanced plan's speed step (planner.planning._proven_or_within): on one GPU a short try of PROOF_WORK
    comes first; on several the long try alone (tightened, stopping within SPEED_STEP_GAP and aiming at
    SPEED_STEP_AIM), started from the quality solution, its decomposition doing what the short try's solution did.
    (Its claims against the exact optimum: test_search_after_the_decomposition_claims_a_true_gap.)"""
    import planner.planning as planning

    groups, capacity = _two_gpu_instance(3)
    if gpus == 1:
        groups = [_moved(g, "CUDA1", "CUDA0") for g in groups]
        capacity = {"CUDA0": capacity["CUDA0"] + capacity["CUDA1"], "CPU": capacity["CPU"]}
    best = solve(groups, capacity, Objective("quality"))
    step = Objective("speed", max_loss=best.loss * 1.05)
    calls: list[tuple[Objective, object]] = []
    real = planning.solve

    def recorded(grps, cap, objective, **kw):
        calls.append((objective, kw.get("hint")))
        return real(grps, cap, objective, **kw)

    monkeypatch.setattr(planning, "solve", recorded)
    sol = planning._proven_or_within(groups, capacity, step, planning.SPEED_STEP_GAP, 0.0, None, best)
    first, hint = calls[0]
    if gpus == 2:
        assert len(calls) == 1 and first.tighten and hint is best
        assert (first.relative_gap, first.aim_gap) == (planning.SPEED_STEP_GAP, planning.SPEED_STEP_AIM)
    else:
        assert first.work_limit == min(planning.PROOF_WORK, step.work_limit) and not first.tighten
    assert sol.status in ("OPTIMAL", "OPTIMAL_WITHIN_GAP")


def _moved(group, old, new):
    """``group`` with its home and its options on ``old`` moved to ``new``."""
    from dataclasses import replace

    return replace(group, home=new if group.home == old else group.home,
                   options=tuple(replace(o, device=new) if o.device == old else o for o in group.options))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gpus", [1, 2])
def test_search_after_the_decomposition_aims_when_outside_the_aim(seed, gpus, monkeypatch):
    """With an aim the decomposition cannot reach (1e-9), the search after it aims at that gap with LP-guided
    branching for at most AIMED_WORK, and what the long try returns still claims only what the exact optimum allows:
    a point of the model with its objective, a bound at most the optimum, OPTIMAL exactly when within the gap it may
    stop at (0.1 %).  On one GPU the model does not fall apart (no decomposition) and no search aims."""
    import planner.solver as solver_mod
    import planner.solver_bounds as sb

    groups, capacity = _two_gpu_instance(seed)
    if gpus == 1:
        groups = [_moved(g, "CUDA1", "CUDA0") for g in groups]
        capacity = {"CUDA0": capacity["CUDA0"] + capacity["CUDA1"], "CPU": capacity["CPU"]}
    start = _speed_long_try(groups, capacity, aim=1e-9)
    if start is None:
        pytest.skip("the quality solution is the LP bound's")
    m = start["model"]
    runs = []
    real = solver_mod._run
    monkeypatch.setattr(solver_mod, "_run", lambda cp, mm, obj, w: runs.append((mm is m, obj, w)) or real(cp, mm, obj, w))
    found, status = _run_long_try(start)
    aimed = [(obj, w) for same, obj, w in runs if same and obj.kind == "speed" and obj.relative_gap == 1e-9]
    assert len(aimed) == (1 if gpus == 2 else 0)
    for obj, w in aimed:
        assert w <= sb.AIMED_WORK and solver_mod.lp_guided(obj)
    _assert_true_claims(start, found, status)


@pytest.mark.parametrize("seed", range(6))
def test_aimed_search_cut_short_counts_within_the_allowed_gap(seed, monkeypatch):
    """The aimed search cut short (stopped at its first solution, the hinted one: no proof of the aim) reports the
    status its result earns against the exact optimum: OPTIMAL exactly when within the 0.1 % the long try may stop
    at, never beyond it (planner.solver_bounds._tighten_and_run relabels only such a result), and a result within
    that gap ends the long try (no RINS or target search after it)."""
    import planner.solver as solver_mod

    start = _speed_long_try(*_two_gpu_instance(seed), aim=1e-9)
    if start is None:
        pytest.skip("the quality solution is the LP bound's")
    m = start["model"]
    ended = []
    real = solver_mod._run

    def run(cp, mm, obj, w):
        if mm is m and obj.relative_gap == 1e-9:
            cp_model = _cp()
            real_solve = cp_model.CpSolver.solve

            def first(self, model, *a, **k):
                self.parameters.stop_after_first_solution = True
                return real_solve(self, model, *a, **k)

            monkeypatch.setattr(cp_model.CpSolver, "solve", first)
            try:
                solver, status = real(cp, mm, obj, w)
            finally:
                monkeypatch.setattr(cp_model.CpSolver, "solve", real_solve)
            ended.append((status, solver.objective_value, solver.best_objective_bound))
            return solver, status
        if ended:
            ended.append(None)                         # a run after the aimed one
        return real(cp, mm, obj, w)

    monkeypatch.setattr(solver_mod, "_run", run)
    found, status = _run_long_try(start)
    aimed_status, obj, bound = ended[0]
    if aimed_status == _cp().FEASIBLE and obj - bound <= 1e-3 * obj:
        assert len(ended) == 1 and status == _cp().OPTIMAL
    _assert_true_claims(start, found, status)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("work", [0.0, 0.002])
def test_decomposition_keeps_to_the_long_trys_work(seed, work, monkeypatch):
    """planner.solver_bounds._tighten_and_run given little work: the decomposition gets at most that much (none at
    all when there is none), not DEVICE_WORK, and what the long try returns still claims only what the exact optimum
    allows."""
    import planner.solver_bounds as sb
    import planner.solver_lagrange as sl

    start = _speed_long_try(*_two_gpu_instance(seed), aim=1e-9)
    if start is None:
        pytest.skip("the quality solution is the LP bound's")
    allowed = []
    real = sl.device_bound

    def counted(cp_model, p, rows, up, vals=None, w=1.0):
        allowed.append(w)
        return real(cp_model, p, rows, up, vals, w)

    monkeypatch.setattr(sl, "device_bound", counted)
    found, status = sb._tighten_and_run(_cp(), start["model"], start["objective"], start["upper"], start["values"],
                                        work, start["relax"], start["cuts"], start["coupling"], kept=start["kept"])
    assert all(0 < w <= work for w in allowed) and (allowed or work == 0.0)
    point = [int(found.value(start["model"].get_int_var_from_proto_index(j)))
             for j in range(len(start["proto"].variables))]
    assert sb.objective_if_feasible(start["proto"], point) == round(found.objective_value)
    assert found.best_objective_bound <= start["exact"] + 1e-9
    if status == _cp().OPTIMAL:
        assert found.objective_value - found.best_objective_bound <= 1e-3 * found.objective_value
