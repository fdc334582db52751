"""Infeasible budgets: the shortfall per device and the nearest single changes that make a plan feasible.

Each suggested change (--ram, --vram, --ctx, --kv, dropping a speed target) is checked with the solver
before it is printed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from planner.devices import CPU
from planner.errors import InfeasibleBudgetError
from planner.groups import Budget, smallest_weights
from planner.memory import compute_buffer_bytes, kv_bytes_by_layer
from planner.request import PlanRequest
from planner.tensors import TensorMap
from planner.units import GIB


def with_options(exc: InfeasibleBudgetError, tmap: TensorMap, types: Mapping[str, str] | None, budget: Budget,
                 request: PlanRequest, feasible: Callable[[Budget, PlanRequest], bool] | None = None
                 ) -> InfeasibleBudgetError:
    """Name the nearest changes that make a plan feasible; each one is checked with the solver."""
    cfg = request.run
    weights = smallest_weights(tmap, types, request)
    kv = sum(kv_bytes_by_layer(tmap.params, cfg))
    gpu_usable = sum(max(0, budget.bytes[g] - cfg.gpu_margin_bytes) for g in budget.gpus)
    need_total = weights + kv + cfg.os_reserve_bytes + compute_buffer_bytes(
        tmap, cfg, holds_layers=True, holds_output=True, is_gpu=False)
    have = budget.bytes[CPU]
    short = dict(exc.shortfall_bytes or {})
    if need_total > have + gpu_usable and not short:
        short = {"RAM+VRAM": need_total - have - gpu_usable}
    options: list[str] = []
    if feasible is not None:
        ok = feasible
        if request.min_tg or request.min_pp:
            if ok(budget, replace(request, min_tg=None, min_pp=None)):
                options.append("drop --min-tg/--min-pp (the memory fits; the speed target does not)")
        start = max(have // GIB + 1, math.ceil((need_total - gpu_usable) / GIB))
        for ram_gib in range(start, start + 8):
            b = Budget(budget.devices, {**budget.bytes, CPU: ram_gib * GIB}, budget.labels)
            if ok(b, request):
                options.append(f"--ram {ram_gib}")
                break
        if len(budget.gpus) == 1:
            g = budget.gpus[0]
            start = max(budget.bytes[g] // GIB + 1,
                        math.ceil((need_total - have + cfg.gpu_margin_bytes) / GIB))
            for vram_gib in range(start, start + 8):
                b = Budget(budget.devices, {**budget.bytes, g: vram_gib * GIB}, budget.labels)
                if ok(b, request):
                    options.append(f"--vram {vram_gib}")
                    break
        ctx = cfg.ctx // 2 // 256 * 256
        while ctx >= 2048:
            if ok(budget, replace(request, run=replace(cfg, ctx=ctx))):
                options.append(f"--ctx {ctx}")
                break
            ctx = ctx // 2 // 256 * 256
        if cfg.type_k != "q4_0" and ok(budget, replace(request, run=replace(cfg, type_k="q4_0", type_v="q4_0"))):
            options.append("--kv q4_0")
    what = "the smallest allowed mix" if types is None else "this mix"
    sizes = " + ".join(f"{round(budget.bytes[d] / GIB, 2):g} GiB {d}" for d in budget.devices)
    return InfeasibleBudgetError(f"{tmap.name}: {what} does not fit {sizes}", shortfall_bytes=short,
                                 options=options or ["none found by changing one of --ram, --vram, --ctx, --kv"])
