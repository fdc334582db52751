"""Honest solver status, and optimality cross-checked against an exact MILP solve (HiGHS through
scipy.optimize.milp, a test dependency only) on small instances."""

from __future__ import annotations

import numpy as np
import pytest

from planner.solver import Group, Objective, Option, SolveStep, solve, weakest


def _instance(seed: int, n_groups: int, twins: int = 1):
    """Random multiple-choice knapsack over two devices; each group appears ``twins`` times (a class)."""
    rng = np.random.default_rng(seed)
    groups = []
    for g in range(n_groups):
        opts = []
        for dev in ("CUDA0", "CPU"):
            for t in range(4):
                nbytes = int(rng.integers(1, 40)) * 4096
                opts.append(Option(f"t{t}", dev, nbytes, float(rng.uniform(0.0, 1.0)), float(rng.uniform(0, 1e-3))))
        for k in range(twins):
            groups.append(Group(f"g{g}.{k}", f"role{g}", None, (f"g{g}.{k}",), tuple(opts)))
    total_min = sum(min(o.bytes for o in grp.options) for grp in groups)
    capacity = {"CUDA0": int(total_min * 0.6), "CPU": int(total_min * 0.9)}
    return groups, capacity


def _milp_best_loss(groups, capacity) -> float:
    from scipy.optimize import Bounds, LinearConstraint, milp

    cols = [(gi, o) for gi, g in enumerate(groups) for o in g.options]
    c = np.array([o.loss for _, o in cols])
    rows, lb, ub = [], [], []
    for gi in range(len(groups)):                                   # exactly one option per group
        rows.append([1.0 if g == gi else 0.0 for g, _ in cols])
        lb.append(1.0)
        ub.append(1.0)
    for dev, cap in capacity.items():                              # bytes per device
        rows.append([float(o.bytes) if o.device == dev else 0.0 for _, o in cols])
        lb.append(-np.inf)
        ub.append(float(cap))
    res = milp(c, constraints=LinearConstraint(np.array(rows), lb, ub), integrality=np.ones(len(cols)),
               bounds=Bounds(0, 1))
    assert res.success, res.message
    return float(res.fun)


@pytest.mark.parametrize("seed, n_groups, twins", [
    (0, 6, 1),      # every group its own class
    (1, 8, 1),
    (2, 4, 3),      # classes of three interchangeable groups (the aggregation the solver relies on)
    (3, 5, 2),
])
def test_quality_optimum_matches_exact_milp(seed, n_groups, twins):
    groups, capacity = _instance(seed, n_groups, twins)
    sol = solve(groups, capacity, Objective("quality"))
    exact = _milp_best_loss(groups, capacity)
    got = sum(o.loss for o in sol.choice.values())
    assert sol.status == "OPTIMAL"
    assert got == pytest.approx(exact, rel=1e-6, abs=1e-9)
    for dev, cap in capacity.items():
        assert sum(o.bytes for o in sol.choice.values() if o.device == dev) <= cap


def test_feasibility_objective_returns_an_assignment_within_capacity():
    groups, capacity = _instance(4, 6)
    sol = solve(groups, capacity, Objective("feasibility"))
    assert len(sol.choice) == len(groups)
    for dev, cap in capacity.items():
        assert sum(o.bytes for o in sol.choice.values() if o.device == dev) <= cap


def test_weakest_step_is_the_least_proven():
    steps = [SolveStep("quality", "FEASIBLE", 2e-4), SolveStep("speed", "OPTIMAL", 0.0)]
    assert weakest(steps).status == "FEASIBLE"
    steps = [SolveStep("quality", "OPTIMAL", 0.0), SolveStep("speed", "OPTIMAL_WITHIN_GAP", 9e-4, 1e-3)]
    assert weakest(steps).status == "OPTIMAL_WITHIN_GAP"


def test_plan_status_is_the_weakest_of_its_solves(monkeypatch):
    """A balanced plan whose best-quality solve stopped unproven must not print OPTIMAL (issue seen on
    Kimi-K2: the last step was OPTIMAL, the first was not)."""
    import dataclasses

    from planner import planning
    from planner.hardware import resolve_hardware
    from planner.quality import QualityModel
    from planner.request import PlanRequest
    from planner.runconfig import RunConfig
    from planner.source import load_model

    real_solve = planning.solve

    def quality_step_unproven(groups, cap, objective, **kw):
        sol = real_solve(groups, cap, objective, **kw)
        if objective.kind == "quality":      # as if CP-SAT had stopped at its work limit without a proof
            step = SolveStep("quality", "FEASIBLE", 3e-4)
            return dataclasses.replace(sol, status="FEASIBLE", gap=3e-4, steps=(step,))
        return sol

    monkeypatch.setattr(planning, "solve", quality_step_unproven)
    tmap = load_model("qwen3-30b-a3b")
    hw = resolve_hardware(vram=[8.0], ram=32.0)
    p = planning.joint_plan(tmap, hw, PlanRequest(run=RunConfig(threads=16, ctx=4096)), QualityModel.build(tmap))
    assert p.solver is not None
    assert p.solver.status == "FEASIBLE" and p.solver.gap >= 3e-4
    assert [s.objective for s in p.solver.steps] == ["quality", "speed"]
    assert p.solver.steps[1].status in ("OPTIMAL", "OPTIMAL_WITHIN_GAP")


def _record_solves(monkeypatch):
    from planner import planning

    real_solve = planning.solve
    calls = []

    def recording(groups, cap, objective, **kw):
        sol = real_solve(groups, cap, objective, **kw)
        calls.append((objective, kw.get("hint"), sol))
        return sol

    monkeypatch.setattr(planning, "solve", recording)
    return calls


def test_pareto_points_start_from_a_feasible_neighbour(monkeypatch):
    """--pareto solves its inner points from the fastest to the slowest, each hinted with the previous
    solution, which meets the tighter TG limit and so every looser one: a complete feasible start."""
    from planner.hardware import resolve_hardware
    from planner.pareto import pareto_plans
    from planner.quality import QualityModel
    from planner.request import PlanRequest
    from planner.runconfig import RunConfig
    from planner.source import load_model

    calls = _record_solves(monkeypatch)
    tmap = load_model("qwen3-30b-a3b")
    hw = resolve_hardware(vram=[8.0], ram=32.0)
    plans = pareto_plans(tmap, hw, PlanRequest(run=RunConfig(threads=16, ctx=4096)), QualityModel.build(tmap), 5)
    assert len(plans) >= 3
    from planner.planning import QUALITY_STEP_GAP

    inner = [(o, h, s) for o, h, s in calls if o.kind == "quality" and o.max_seconds is not None]
    limits = [o.max_seconds for o, _, _ in inner]
    assert limits == sorted(limits) and len(set(limits)) >= 2       # fastest (tightest) first
    for objective, hint, _ in inner:
        assert hint is not None and objective.relative_gap == QUALITY_STEP_GAP
        # the hint's own TG time (placement-dependent part) is within this point's limit
        assert hint.seconds <= objective.max_seconds + 1e-12
    # the two ends are plain quality / speed plans: a proof is their goal, as before
    ends = [o for o, _, _ in calls if o.max_seconds is None]
    assert {o.kind for o in ends} == {"quality", "speed"} and all(o.relative_gap == 0.0 for o in ends)
    # each point's label is the status of its own solve, within the gap it was allowed
    for p in plans:
        assert p.solver is not None and all(s.gap <= s.gap_limit or s.status == "FEASIBLE" for s in p.solver.steps)
