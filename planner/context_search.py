"""The context a plan runs at: the one given, the model's default, or the largest that fits (``--ctx max``).

``with_ctx`` wraps an attempt (a place or a joint plan, :mod:`planner.planning`) and resolves or searches the
context for it; ``resolve_ctx`` is the default alone, for callers that plan at one context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from planner.errors import InfeasibleBudgetError
from planner.request import PlanRequest
from planner.runconfig import RunConfig
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from planner.planning import Plan


def with_ctx(tmap: TensorMap, request: PlanRequest, attempt: Callable[[PlanRequest], Plan],
             feasible: Callable[[PlanRequest], bool] | None = None) -> Plan:
    """Run ``attempt`` (a place or a joint plan) at the requested context: the given one, the default for the
    model when none is given, or the largest that fits (``request.ctx_max``).

    With ``feasible``, the largest context is searched with feasibility solves (no objective) and ``attempt``
    runs once, at the context found; without it, every step of the search is a full ``attempt``.
    """
    if request.ctx_max:
        if feasible is not None:
            ctx = _largest_ctx(tmap, request, feasible)
            return attempt(replace(request, run=replace(request.run, ctx=ctx)))
        return _largest_ctx_by_attempt(tmap, attempt, request)
    return attempt(replace(request, run=resolve_ctx(tmap, request.run)))


def _ctx_range(tmap: TensorMap) -> tuple[int, int]:
    """Context search range in units of 256 cells (the KV padding with flash attention), up to n_ctx_train."""
    return 1, max(256, tmap.params.n_ctx_train or 131072) // 256


def _largest_ctx(tmap: TensorMap, request: PlanRequest, feasible: Callable[[PlanRequest], bool]) -> int:
    """--ctx max: the largest context (multiple of 256, up to n_ctx_train) for which a plan exists; 256 when none
    does (the attempt there then raises with the shortfall)."""
    lo, hi = _ctx_range(tmap)
    if feasible(replace(request, run=replace(request.run, ctx=hi * 256))):
        return hi * 256         # the whole range fits (MoE models with a quantized cache, often): no search
    best, hi = 256, hi - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if feasible(replace(request, run=replace(request.run, ctx=mid * 256))):
            best, lo = mid * 256, mid + 1
        else:
            hi = mid - 1
    return best


def _largest_ctx_by_attempt(tmap: TensorMap, attempt: Callable[[PlanRequest], Plan], request: PlanRequest) -> Plan:
    """--ctx max without a feasibility test: binary search over full attempts."""
    lo, hi = _ctx_range(tmap)
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        try:
            best = attempt(replace(request, run=replace(request.run, ctx=mid * 256)))
            lo = mid + 1
        except InfeasibleBudgetError:
            hi = mid - 1
    if best is None:
        return attempt(replace(request, run=replace(request.run, ctx=256)))   # raises with the shortfall
    return best


DEFAULT_CTX = 32768


def resolve_ctx(tmap: TensorMap, run: RunConfig) -> RunConfig:
    """ctx 0 (not given): 32768, or the model's training context when that is shorter."""
    if run.ctx:
        return run
    return replace(run, ctx=min(DEFAULT_CTX, tmap.params.n_ctx_train or DEFAULT_CTX))
