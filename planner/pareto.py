"""--pareto: plans across the quality/speed frontier by the epsilon-constraint method.

The best-quality plan and the fastest plan bound the frontier; the points between them are the best quality at
evenly spaced generation times (``--min-tg``).  Every point is a joint plan (:mod:`planner.planning`) over the
same groups (built once and reused, ``planning._GROUPS_CACHE``), so each solve starts from its neighbour's
solution: the points are solved from the fastest to the slowest, and a plan that meets a tighter time limit also
meets every looser one, so each hint is a complete feasible solution.  The inner points stop within the
balanced quality step's gap (0.01 %), as a proof of the last digits is what costs: replayed on the headline
instance (Qwen3-235B, 24 GiB + 96 GiB, 8 points), the six inner points' CP-SAT solves took 43 CPU s within the
gap without hints and 29 s with them (the whole --pareto 8 run: 49 -> 45 CPU s, on a loaded machine).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import planner.planning as planning
from planner.errors import InfeasibleBudgetError, UsageError
from planner.context_search import resolve_ctx
from planner.planning import QUALITY_STEP_GAP, Plan, joint_plan_and_solution

if TYPE_CHECKING:
    from planner.hardware import Hardware
    from planner.quality import QualityModel
    from planner.request import PlanRequest
    from planner.solver import Solution
    from planner.tensors import TensorMap


def pareto_plans(tmap: TensorMap, hw: Hardware, request: PlanRequest, quality: QualityModel,
                 n: int) -> list[Plan]:
    """N plans across speeds: the best-quality plan, the fastest plan, and the best quality at evenly spaced
    generation times between them (each labelled with its own solves' status and gap); duplicates dropped."""
    if n < 2:
        raise UsageError("--pareto needs at least 2 plans")
    request = replace(request, run=resolve_ctx(tmap, request.run))
    planning._GROUPS_CACHE = {}
    try:
        return _pareto(tmap, hw, request, quality, n)
    finally:
        planning._GROUPS_CACHE = None


def _pareto(tmap: TensorMap, hw: Hardware, request: PlanRequest, quality: QualityModel, n: int) -> list[Plan]:
    best, _ = joint_plan_and_solution(tmap, hw, replace(request, objective="quality", min_tg=None), quality)
    fast, hint = joint_plan_and_solution(tmap, hw, replace(request, objective="speed", min_tg=None), quality)
    t_best, t_fast = 1.0 / best.speed.tg_tps, 1.0 / fast.speed.tg_tps
    inner: dict[int, Plan] = {}
    sol: Solution | None = hint
    for i in reversed(range(1, n - 1)):          # fastest first: each solution is feasible for the next point
        target = t_best - i * (t_best - t_fast) / (n - 1)
        try:
            point = replace(request, objective="quality", min_tg=1.0 / target, relative_gap=QUALITY_STEP_GAP)
            inner[i], sol = joint_plan_and_solution(tmap, hw, point, quality, hint=sol)
        except InfeasibleBudgetError:
            continue
    plans = [best, *(inner[i] for i in sorted(inner)), fast]
    unique: list[Plan] = []
    for p in plans:
        if all(p.types != q.types or p.devices != q.devices for q in unique):
            unique.append(p)
    return unique
