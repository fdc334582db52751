"""Solver input when every layer's device is a decision too (:class:`planner.solver.LayerHomes`): each layer's
groups with an option per candidate home, the layout-dependent terms of :mod:`planner.groups` split per layer and
home, and the capacities left once the fixed terms are charged.  Used by ``planning.solve_layered`` (clusters and
layouts the ``-ngl``/``-ts`` search does not cover).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from planner.constants import constants
from planner.device_speed import DeviceSpeed, device_speeds
from planner.devices import CPU, is_gpu, is_remote
from planner.groups import Budget, build_groups, solver_copies
from planner.memory import compute_buffer_bytes, kv_bytes_by_layer, output_alone, output_extra
from planner.quants import catalogue
from planner.request import PlanRequest
from planner.roles import active_fraction, tied_output
from planner.runconfig import RunConfig
from planner.solver import Group, LayerHomes, Option
from planner.speed import linear_pp_fixed, linear_tg_costs
from planner.tensors import TensorInfo, TensorMap

if TYPE_CHECKING:
    from planner.hardware import Hardware
    from planner.quality import QualityModel


def build_layered_groups(tmap: TensorMap, order: Sequence[str], budget: Budget, hw: Hardware, cfg: RunConfig, *,
                         request: PlanRequest, quality: QualityModel | None,
                         speeds: Mapping[str, DeviceSpeed] | None = None,
                         hold_s: Mapping[str, float] | None = None, hold_pp_s: Mapping[str, float] | None = None,
                         shared: Sequence[tuple[tuple[str, ...], float, float]] = ()
                         ) -> tuple[list[Group], dict[str, int], dict[str, float], LayerHomes]:
    """The joint problem with every layer's device a decision too (:class:`planner.solver.LayerHomes`).

    A layer's groups get the options of :func:`build_groups` for each home in ``order`` (tagged with it); what
    :func:`build_groups` fixes by the layout (KV, fixed tensors, launch/sync, attention and matmul time per
    ubatch) is split into per-layer, per-home terms, the rest stays fixed.  ``hold_s``/``hold_pp_s`` are paid
    once by a device holding a layer (a remote device's link crossings), ``shared`` corrects them per host.
    Returns the groups, the fixed bytes per device (compute buffers not included), the fixed times and the
    homes; ``base + sum of a layout's per-layer terms`` equals :func:`build_groups` on that layout.
    """
    from planner.role_compute import layer_leaf_allowance

    n = tmap.params.n_layer
    speeds = dict(speeds) if speeds is not None else device_speeds(hw, cfg)
    built = {h: build_groups(tmap, (h,) * n, budget, hw, cfg, types=None, request=request, quality=quality,
                             speeds=speeds, layer_homes=True) for h in order}
    first = order[0]
    # a tied output's second token_embd goes with the output layer, which the engines put on the last layer's
    # device (launch.engine_output_device): its group follows layer n-1's home like that layer's own groups.
    # ik offloads the output only with every layer offloaded, which an order with CPU layers does not promise.
    tied = tmap.derived(tied_output)
    tied_cpu_only = cfg.engine != "mainline" and CPU in order
    merged: dict[str, Group] = {}
    for h in order:
        for g in built[h][0]:
            is_tied = tied is not None and g.tensors == (tied.name,)
            if g.layer is None and not is_tied:
                merged.setdefault(g.key, g)
                continue
            opts = tuple(replace_option(o, h) for o in g.options
                         if not (is_tied and tied_cpu_only and o.device != CPU))
            if g.key not in merged:
                merged[g.key] = Group(g.key, g.role, n - 1 if is_tied else g.layer, g.tensors, opts, home="",
                                      handoff_s=g.handoff_s, type_key=g.type_key)
            else:
                m = merged[g.key]
                merged[g.key] = Group(m.key, m.role, m.layer, m.tensors, m.options + opts, home="",
                                      handoff_s=max(m.handoff_s, g.handoff_s), type_key=m.type_key)
    in_groups = {name for g in merged.values() for name in g.tensors}
    cat = catalogue()
    p = tmap.params
    consts = constants()["speed"]
    local_gpus = [g for g in budget.gpus if not is_remote(g)]
    ub = min(cfg.ubatch, cfg.batch)
    offload = bool(local_gpus) and ub >= consts["offload_min_batch"]
    h2d = speeds[local_gpus[0]].h2d_gbs if local_gpus else 0.0
    local_rate = sum(speeds[g].flops for g in local_gpus) if offload else speeds[CPU].flops
    kv = kv_bytes_by_layer(p, cfg)
    tg0, pp0 = linear_tg_costs(tmap, hw, cfg, [])[0], linear_pp_fixed(tmap, hw, cfg, [], speeds)
    per_tg = {h: linear_tg_costs(tmap, hw, cfg, [h])[0] - tg0 for h in order}
    per_pp = {h: linear_pp_fixed(tmap, hw, cfg, [h], speeds) - pp0 for h in order}
    layer_bytes: list[dict[str, int]] = []
    layer_s: list[dict[str, float]] = []
    layer_pp: list[dict[str, float]] = []
    by_layer: dict[int, list[TensorInfo]] = {}
    for t in tmap.tensors:
        if t.layer is not None:
            by_layer.setdefault(t.layer, []).append(t)
    for il in range(n):
        ts = by_layer.get(il, [])
        fixed = [(t, cat.get(t.dtype).tensor_bytes(t.shape)) for t in ts if tmap.is_loaded(t) and t.name not in in_groups]
        flops = sum(2.0 * t.n_elements * active_fraction(t, p.n_expert_used) for t in ts if t.n_dims >= 2)
        loaded = il < p.n_loaded_layers
        b: dict[str, int] = {}
        s: dict[str, float] = {}
        pp: dict[str, float] = {}
        for h in order:
            b[h] = kv[il] + sum(nb for _, nb in fixed)
            s[h] = (per_tg[h] if loaded else 0.0) + sum(nb * active_fraction(t, p.n_expert_used) / speeds[h].mem_bw_gbs
                                                        for t, nb in fixed)
            pp[h] = ((per_pp[h] if loaded else 0.0) + ub * flops / (speeds[h].flops if is_remote(h) else local_rate)
                     + (sum(nb for t, nb in fixed) / h2d if (offload and h == CPU) else 0.0))
        layer_bytes.append(b)
        layer_s.append(s)
        layer_pp.append(pp)
    # what stays fixed: build_groups' fixed terms on the uniform layout, less that layout's per-layer terms
    _, fixed_bytes0, fixed_time0 = built[first]
    fixed_bytes = dict(fixed_bytes0)
    fixed_bytes[first] -= sum(lb[first] - kv[il] for il, lb in enumerate(layer_bytes))
    fixed_time = {"tg_s": fixed_time0["tg_s"] - sum(x[first] for x in layer_s),
                  "pp_s": fixed_time0["pp_s"] - sum(x[first] for x in layer_pp)}
    copies = solver_copies(tmap, budget, cfg)
    # a device's compute buffer depends on how the graph enters it (compute_buffers.entry_of), which the layer
    # homes decide: reserve the largest of the entries its position in ``order`` allows ("cpu" only after the CPU)
    # (for no layer's leafs: a graph whose layers create leafs grows by them per layer held, charged per layer
    # below; role_compute.layer_leaf_allowance)
    hold_bytes = {d: max(compute_buffer_bytes(tmap, cfg, holds_layers=True, holds_output=False, is_gpu=is_gpu(d),
                                              copies=copies, entry=e, n_layers=0)
                         for e in ("", "input", *(("cpu",) if CPU in order[:i] else ())))
                  for i, d in enumerate(order) if d != CPU}
    leaf = layer_leaf_allowance(tmap, cfg)
    if leaf:
        for il in range(min(n, p.n_loaded_layers)):
            for h in order:
                if h != CPU:            # the CPU's buffer is reserved for every layer (layered_capacities)
                    layer_bytes[il][h] += leaf
    # a GPU given the output but no layer computes the head alone: its buffer less the output group's share
    alone = {d: max(0, output_alone(tmap, cfg, copies) - output_extra(tmap, cfg, d, copies)) for d in order if is_gpu(d)}
    homes = LayerHomes(tuple(order), tuple(layer_bytes), tuple(layer_s), tuple(layer_pp), hold_bytes=hold_bytes,
                       alone_bytes=alone,
                       hold_s=dict(hold_s or {}), hold_pp_s=dict(hold_pp_s or {}), shared=tuple(shared))
    return sorted(merged.values(), key=lambda g: g.key), fixed_bytes, fixed_time, homes


def replace_option(o: Option, home: str) -> Option:
    """``o`` as the option of a layer living on ``home``."""
    return dataclasses.replace(o, home=home)


def layered_capacities(tmap: TensorMap, budget: Budget, cfg: RunConfig, fixed_bytes: Mapping[str, int]) -> dict[str, int]:
    """Bytes left per device before the layer homes' terms: budget less margin or reserve, the fixed tensors and
    (the main host's CPU, which always computes) its compute buffer; KV and the other compute buffers follow the
    layers (:class:`planner.solver.LayerHomes`)."""
    cap = {}
    for d in budget.devices:
        gpu = is_gpu(d)
        c = budget.bytes[d] - (cfg.gpu_margin_bytes if gpu else cfg.os_reserve_bytes) - fixed_bytes.get(d, 0)
        if d == CPU:
            c -= compute_buffer_bytes(tmap, cfg, holds_layers=True, holds_output=False, is_gpu=False,
                                      copies=solver_copies(tmap, budget, cfg))
        cap[d] = c
    return cap
