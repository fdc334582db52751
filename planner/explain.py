"""Why, not only what: the reasons behind a plan, each number from the plan's own models.

* the binding constraint: each device's free memory after the plan, and whether one more routed-expert unit
  (a layer's gate+up pair or its down tensor, the solver's groups) would still fit there;
* why these layers' experts are on each GPU: the predicted TG time (:func:`planner.speed.estimate_speed`) the GPU
  experts save, per GiB, and what one more unit of each kind of layer would save there; whether the position of
  the layers matters (the speed model has no position term; the measured evidence is cited, not modelled);
* why these types: per large tensor group, what the next larger candidate type would cost in bytes and buy in
  predicted PPL (:meth:`planner.quality.QualityModel.tensor_loss`), and the objective's own bound;
* what the next GiB would buy: +1 GiB on each GPU (the next CPU expert units moved into it, types kept) and
  +1 GiB of RAM (the best predicted PPL per byte upgrades of CPU-resident groups, placement kept), each checked
  with :func:`planner.memory.memory_report` and predicted with the same speed and quality models. These are
  bounded what-ifs on the plan, not re-solves (a re-solve could also trade types against placement, so the gains
  are lower bounds); they cost a few speed evaluations, no solver call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.devices import CPU
from planner.memory import Placement, memory_report, tensor_bytes
from planner.roles import TIED_ROLES
from planner.speed import estimate_speed
from planner.tensors import TensorMap
from planner.units import GIB

if TYPE_CHECKING:
    from planner.hardware import Hardware
    from planner.planning import Plan
    from planner.quality import QualityModel
    from planner.request import PlanRequest

# ik_llama.cpp PR 2262 (merged 2026-08-06, commit da2293ded "Better placement of MoE tensors with -ncmoe and 1 GPU"):
# Qwen3.6-35B-A3B Q8_0 on one RTX 3090 with -ncmoe 22, the last 22 layers' experts on the CPU instead of the first:
# about 10 % faster PP at the same VRAM, TG "more or less the same, perhaps 1-2 % better" (the PR's description).
POSITION_EVIDENCE = ("ik_llama.cpp PR 2262 (da2293ded) measured CPU experts in the last layers against the first "
                     "(-ncmoe 22, Qwen3.6-35B-A3B Q8_0, one RTX 3090): about 10 % faster PP, TG within 1-2 %")
MAX_TYPE_GROUPS = 4     # the largest tensor groups explained (the rest are a small share of the bytes)


@dataclass(frozen=True, slots=True)
class DeviceRoom:
    """One device after the plan: free bytes, and whether the smallest routed-expert unit would still fit."""

    device: str
    budget_bytes: int
    free_bytes: int
    full: bool                # free < the smallest expert unit of the plan: nothing more moves here


@dataclass(frozen=True, slots=True)
class ExpertPlacement:
    """The routed experts one GPU holds and what the speed model says they are worth there."""

    device: str
    layers: str                       # layer ranges, e.g. "12-25"
    n_layers: int
    bytes: int
    tg_ms_saved: float                # predicted TG ms/token saved against the same experts on the CPU
    ms_per_gib: float
    next_unit: dict[str, float]       # kind of CPU layer (its expert types) -> ms/token per GiB if on this GPU


@dataclass(frozen=True, slots=True)
class TypeChoice:
    """A large tensor group's type and the price of the next larger candidate."""

    group: str                        # role family and device, e.g. "ffn_gate_up_exps on CPU"
    type_name: str
    n_tensors: int
    bytes: int
    next_type: str                    # "" when no larger candidate exists
    extra_bytes: int
    ppl_gain_pct: float               # predicted PPL ratio improvement with the next type, in % of PPL
    pct_per_gib: float
    upgrade_fits: bool = False        # the next type fits on the device as the plan stands (memory_report)
    upgrade_tg_delta: float = 0.0     # predicted TG change (tok/s) with the next type, placement kept
    kept: bool = False                # the source's own quantized tensors, which llama-quantize copies


@dataclass(frozen=True, slots=True)
class WhatIf:
    """What one more GiB of a device buys, by a bounded what-if on the plan (not a re-solve)."""

    resource: str                     # "+1 GiB CUDA0" / "+1 GiB RAM"
    method: str
    tg_tps: float
    tg_delta: float
    ppl_ratio: float | None
    ppl_delta_pct: float | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why the plan is what it is (``plan`` text section "why" and the JSON ``explanation``)."""

    binding: str                      # the binding constraint, in words with the model's numbers
    devices: tuple[DeviceRoom, ...]
    experts: tuple[ExpertPlacement, ...]
    position: str
    objective: str
    types: tuple[TypeChoice, ...]
    next_gib: tuple[WhatIf, ...]


def _family(role: str) -> str:
    return TIED_ROLES.get(role, role)


def _ranges(layers: Sequence[int]) -> str:
    out: list[str] = []
    xs = sorted(layers)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(out)


def _units(tmap: TensorMap, plan: Plan) -> dict[tuple[int, str], list[str]]:
    """Routed-expert units as the solver groups them: per layer, gate+up together, down alone."""
    units: dict[tuple[int, str], list[str]] = {}
    for t in tmap.tensors:
        if t.is_expert and t.layer is not None and tmap.is_loaded(t):
            units.setdefault((t.layer, _family(t.role)), []).append(t.name)
    return units


def _tg_ms(tmap: TensorMap, types: Mapping[str, str], devices: Mapping[str, str], plan: Plan, hw: Hardware) -> float:
    placement = Placement(devices, plan.layer_device, plan.placement.devices, output_device=plan.output_device)
    return 1e3 / estimate_speed(tmap, types, placement, hw, plan.run, depths=(0,)).tg_tps


def explain(tmap: TensorMap, plan: Plan, hw: Hardware, request: PlanRequest,
            quality: QualityModel | None) -> Explanation:
    """The reasons behind ``plan`` (see the module docstring); a few speed evaluations, no solve."""
    units = _units(tmap, plan)
    sizes = {t.name: tensor_bytes(t, plan.types.get(t.name, t.dtype)) for t in tmap.tensors}
    unit_bytes = {k: sum(sizes[n] for n in v) for k, v in units.items()}
    unit_dev = {k: plan.devices[v[0]] for k, v in units.items()}
    # the smallest thing the solver could still move: a routed-expert unit, else (a dense model) a layer's weights
    per_layer: dict[int, int] = {}
    for t in tmap.tensors:
        if t.layer is not None and tmap.is_loaded(t):
            per_layer[t.layer] = per_layer.get(t.layer, 0) + sizes[t.name]
    smallest = min(unit_bytes.values(), default=min(per_layer.values(), default=0))
    what = "routed-expert unit" if unit_bytes else "layer"
    gpus = [d.device for d in plan.memory.devices if d.device != CPU]
    rooms = tuple(DeviceRoom(d.device, d.budget_bytes, d.free_bytes, d.free_bytes < smallest)
                  for d in plan.memory.devices)
    base_ms = _tg_ms(tmap, plan.types, plan.devices, plan, hw)

    experts: list[ExpertPlacement] = []
    cpu_units = sorted(k for k in units if unit_dev[k] == CPU)
    for g in gpus:
        mine = [k for k in units if unit_dev[k] == g]
        if not mine:
            continue
        moved = dict(plan.devices)
        for k in mine:
            for n in units[k]:
                moved[n] = CPU
        nbytes = sum(unit_bytes[k] for k in mine)
        saved = _tg_ms(tmap, plan.types, moved, plan, hw) - base_ms
        # one CPU layer of each kind (its expert types) brought onto this GPU: ms saved per GiB
        kinds: dict[str, int] = {}
        homed = sorted({k[0] for k in cpu_units if plan.layer_device[k[0]] == g})   # attention on g: no hand-off
        for layer in homed or sorted({k[0] for k in cpu_units}):
            kind = " + ".join(f"{k[1].removeprefix('ffn_').removesuffix('_exps')} {plan.types[units[k][0]]}"
                              for k in sorted(units) if k[0] == layer)
            kinds.setdefault(kind, layer)
        nxt: dict[str, float] = {}
        for kind, layer in list(kinds.items())[:3]:
            ks = [k for k in cpu_units if k[0] == layer]
            trial = dict(plan.devices)
            for k in ks:
                for n in units[k]:
                    trial[n] = g
            gain = base_ms - _tg_ms(tmap, plan.types, trial, plan, hw)
            nxt[kind] = round(gain / (sum(unit_bytes[k] for k in ks) / GIB), 4)
        experts.append(ExpertPlacement(g, _ranges(sorted({k[0] for k in mine})), len({k[0] for k in mine}), nbytes,
                                       round(saved, 4), round(saved / (nbytes / GIB), 4) if nbytes else 0.0, nxt))

    full = [r for r in rooms if r.full]
    if full:
        binding = "; ".join(f"{r.device} is full: {r.free_bytes / GIB:.2f} GiB free of {r.budget_bytes / GIB:.2f}, "
                            f"less than the smallest {what} ({smallest / GIB:.2f} GiB)" for r in full)
    else:
        binding = f"no device is full (each has room for at least one more {what})"
    rest = [r for r in rooms if not r.full]
    if rest and full:
        binding += "; room left: " + ", ".join(f"{r.device} {r.free_bytes / GIB:.2f} GiB" for r in rest)

    position = ("the speed model has no position term: TG and PP depend on the bytes each device reads and on "
                "the GPU<->CPU hand-offs, not on which layers; among layers of the same types the solver fills the "
                "GPU from the lowest layer up, so what stays on the CPU is the later layers of each kind. "
                + POSITION_EVIDENCE + "; not modelled, so it is not a reason here")
    objective = _objective_text(request)
    prices = _Prices(tmap, plan, request, quality) if quality is not None else None
    types = _type_choices(tmap, plan, hw, prices, base_ms) if prices is not None else ()
    next_gib = _next_gib(tmap, plan, hw, prices, units, unit_bytes, unit_dev, base_ms)
    return Explanation(binding, rooms, tuple(experts), position, objective, types, next_gib)


def _objective_text(request: PlanRequest) -> str:
    kind = request.objective
    if kind == "balanced":
        return (f"balanced: the best predicted quality first, then the fastest plan whose predicted PPL ratio is "
                f"within {request.quality_slack_pct:g} % of it (--quality-slack): that bound and the full "
                "device(s) are the binding constraints of the final solve")
    if kind == "quality":
        return "quality: the least predicted loss that fits; memory is the only binding constraint"
    if kind == "speed":
        return "speed: the fastest predicted generation that fits; memory is the only binding constraint"
    return f"{kind}: devices for a given mix (placement only)"


class _Prices:
    """The next larger candidate type of a tensor group that the quality model predicts better: its bytes and loss."""

    def __init__(self, tmap: TensorMap, plan: Plan, request: PlanRequest, quality: QualityModel) -> None:
        from planner.groups import Budget, plan_floor
        from planner.quants import catalogue

        self.cat = catalogue()
        self.by = tmap.by_name()
        self.plan, self.request, self.quality = plan, request, quality
        self.floor = plan_floor(tmap, Budget(plan.placement.devices, dict(plan.budgets)), request)
        self._cands: dict[tuple[str, str, tuple[int, ...], str], list[str]] = {}
        self.kept = tmap.prequantized if tmap.converter_types else frozenset()

    def next_type(self, names: Sequence[str], ty: str, dev: str) -> tuple[str, int, float] | None:
        """(type, extra bytes, loss saved) of the cheapest larger candidate predicted better, or None: none for
        tensors llama-quantize keeps as stored (a source's own quantized tensors, gpt-oss's MXFP4 experts:
        quantize.keep_prequantized_items)."""
        from planner.groups import candidate_types

        if self.kept & set(names):
            return None
        t0 = self.by[names[0]]
        key = (t0.role, dev, t0.shape, t0.dtype)
        if key not in self._cands:
            r = self.request
            self._cands[key] = candidate_types(t0, r.run.qengine, allow=r.allow or None, deny=r.deny,
                                               has_imatrix=r.has_imatrix, on_gpu=dev != CPU, floor=self.floor,
                                               ignore_imatrix_rules=r.ignore_imatrix_rules)
        shapes: dict[tuple[int, ...], int] = {}
        for n in names:
            shapes[self.by[n].shape] = shapes.get(self.by[n].shape, 0) + 1
        cur = sum(self.cat.get(ty).tensor_bytes(sh) * m for sh, m in shapes.items())
        now = sum(self.quality.tensor_loss(n, ty) for n in names)
        for b, c in sorted((sum(self.cat.get(c).tensor_bytes(sh) * m for sh, m in shapes.items()), c)
                           for c in self._cands[key] if c != ty):
            if b > cur:
                saved = now - sum(self.quality.tensor_loss(n, c) for n in names)
                if saved > 0:          # a larger type the model rates no better is never a reason
                    return c, b - cur, saved
        return None


def _type_choices(tmap: TensorMap, plan: Plan, hw: Hardware, prices: _Prices, base_ms: float
                  ) -> tuple[TypeChoice, ...]:
    """The largest (role family, device, type) groups and the price of their next larger candidate type."""
    cat = prices.cat
    by_key: dict[tuple[str, str, str], list[str]] = {}
    for t in tmap.tensors:
        if t.n_dims < 2 or not tmap.is_loaded(t):
            continue
        ty = plan.types[t.name]
        if not cat.get(ty).is_quantized:
            continue
        by_key.setdefault((_family(t.role), plan.devices[t.name], ty), []).append(t.name)
    by = prices.by
    scale = prices.quality.ppl_scale
    size = {k: sum(tensor_bytes(by[n], k[2]) for n in v) for k, v in by_key.items()}
    out: list[TypeChoice] = []
    for key in sorted(by_key, key=lambda k: -size[k])[:MAX_TYPE_GROUPS]:
        fam, dev, ty = key
        names = by_key[key]
        nxt, extra, gain, fits, dtg = "", 0, 0.0, False, 0.0
        found = prices.next_type(names, ty, dev)
        if found is not None:
            nxt, extra, dloss = found
            gain = (1.0 - math.exp(-scale * dloss)) * 100.0
            up = {**plan.types, **dict.fromkeys(names, nxt)}
            fits = memory_report(tmap, up, plan.placement, plan.budgets, plan.run).fits
            if fits:
                dtg = 1e3 / _tg_ms(tmap, up, plan.devices, plan, hw) - 1e3 / base_ms
        out.append(TypeChoice(f"{fam} on {dev}", ty, len(names), size[key], nxt, extra, round(gain, 4),
                              round(gain / (extra / GIB), 4) if extra else 0.0, fits, round(dtg, 4),
                              kept=bool(prices.kept & set(names))))
    return tuple(out)


def _upgrades(tmap: TensorMap, plan: Plan, hw: Hardware, prices: _Prices, device: str, base_ms: float,
              base_ppl: float) -> WhatIf:
    """+1 GiB on ``device`` spent on type upgrades of the groups it holds (per layer and role family), the best
    predicted PPL per byte first, placement kept; re-checked by memory_report."""
    groups: dict[tuple[int, str], list[str]] = {}
    for t in tmap.tensors:
        if (t.layer is None or t.n_dims < 2 or not tmap.is_loaded(t) or plan.devices[t.name] != device
                or not prices.cat.get(plan.types[t.name]).is_quantized):
            continue
        groups.setdefault((t.layer, _family(t.role)), []).append(t.name)
    steps: list[tuple[float, int, tuple[int, str], str]] = []
    for k, names in groups.items():
        found = prices.next_type(names, plan.types[names[0]], device)
        if found is not None:
            up, extra, saved = found
            steps.append((-saved / extra, extra, k, up))
    room = plan.memory.device(device).free_bytes + GIB
    types = dict(plan.types)
    n_up = 0
    for _, extra, k, up in sorted(steps):
        if extra <= room:
            room -= extra
            n_up += 1
            types.update(dict.fromkeys(groups[k], up))
    name = "RAM" if device == CPU else device
    budgets = {**plan.budgets, device: plan.budgets[device] + GIB}
    base_tps = 1e3 / base_ms
    if not n_up or not memory_report(tmap, types, plan.placement, budgets, plan.run).fits:
        return WhatIf(f"+1 GiB {name}", "no type upgrade fits", round(base_tps, 4), 0.0, base_ppl, 0.0)
    tps = 1e3 / _tg_ms(tmap, types, plan.devices, plan, hw)
    ppl = prices.quality.estimate(types).ppl_ratio
    return WhatIf(f"+1 GiB {name}", f"{n_up} tensor groups on {device} one type up (the best predicted PPL per "
                  "byte first), placement kept", round(tps, 4), round(tps - base_tps, 4), round(ppl, 6),
                  round((ppl / base_ppl - 1.0) * 100.0, 4))


def _next_gib(tmap: TensorMap, plan: Plan, hw: Hardware, prices: _Prices | None,
              units: Mapping[tuple[int, str], list[str]], unit_bytes: Mapping[tuple[int, str], int],
              unit_dev: Mapping[tuple[int, str], str], base_ms: float) -> tuple[WhatIf, ...]:
    """+1 GiB on each GPU (the next CPU expert units moved in, types kept; with none on the CPU, type upgrades on
    the GPU) and +1 GiB of RAM (type upgrades of what the CPU holds), each re-checked by memory_report."""
    quality = prices.quality if prices is not None else None
    out: list[WhatIf] = []
    base_tps = 1e3 / base_ms
    base_ppl = quality.estimate(plan.types).ppl_ratio if quality is not None else None
    for d in plan.memory.devices:
        if d.device == CPU:
            continue
        budgets = {**plan.budgets, d.device: plan.budgets[d.device] + GIB}
        cands = sorted(k for k in units if unit_dev[k] == CPU)     # the solver's fill order: lowest layer first
        homed = [k for k in cands if plan.layer_device[k[0]] == d.device]   # layers whose attention is there
        pool = homed or cands
        # whole layers first (a layer split between devices keeps its hand-offs), else single units
        layers = sorted({k[0] for k in pool})
        whole = [[k for k in pool if k[0] == layer] for layer in layers
                 if all(unit_dev[k] == CPU for k in units if k[0] == layer)]
        best: tuple[float, str] | None = None
        for batches, what in ((whole, ("layers' routed experts", "layer's routed experts")),
                              ([[k] for k in pool], ("routed-expert units", "routed-expert unit"))):
            room = d.free_bytes + GIB
            devices = dict(plan.devices)
            moved = 0
            for batch in batches:
                size = sum(unit_bytes[k] for k in batch)
                if size > room:
                    continue
                room -= size
                moved += 1
                for k in batch:
                    for n in units[k]:
                        devices[n] = d.device
            # the GPU gaining the units joins the devices even where the plan left it empty (a 2-GPU budget whose
            # plan uses one: memory_report checks, and the compute replay places, only the devices listed)
            used = [m.device for m in plan.memory.devices
                    if m.device != CPU and (m.device in plan.placement.devices or m.device == d.device)]
            placement = Placement(devices, plan.layer_device, (*used, CPU), output_device=plan.output_device)
            if moved and memory_report(tmap, plan.types, placement, budgets, plan.run).fits:
                best = (1e3 / _tg_ms(tmap, plan.types, devices, plan, hw), f"{moved} more {what[moved == 1]} from the CPU, "
                        "types kept")
                break
        if best is None and prices is not None and base_ppl is not None and not cands:
            out.append(_upgrades(tmap, plan, hw, prices, d.device, base_ms, base_ppl))
            continue
        if best is None:
            out.append(WhatIf(f"+1 GiB {d.device}", "no routed-expert unit more fits", round(base_tps, 4), 0.0,
                              base_ppl, 0.0 if base_ppl is not None else None))
            continue
        if best[0] < base_tps:
            # the units' extra hand-offs outweigh their faster reads (a small model's layers split between devices):
            # the solver would leave the GiB unused, so that is what it buys
            out.append(WhatIf(f"+1 GiB {d.device}", f"nothing: {best[1].replace(', types kept', '')} would be "
                              f"predicted slower (TG {best[0]:.1f} tok/s; more GPU<->CPU hand-offs than bytes saved)",
                              round(base_tps, 4), 0.0, base_ppl, 0.0 if base_ppl is not None else None))
            continue
        out.append(WhatIf(f"+1 GiB {d.device}", best[1], round(best[0], 4), round(best[0] - base_tps, 4), base_ppl,
                          0.0 if base_ppl is not None else None))
    cpu = plan.memory.device(CPU)
    if quality is None:
        return tuple(out)
    if cpu.free_bytes >= GIB:
        out.append(WhatIf("+1 GiB RAM", f"nothing: the plan leaves {cpu.free_bytes / GIB:.2f} GiB of RAM unused "
                          "already (more bytes on the CPU would only slow TG under this objective)",
                          round(base_tps, 4), 0.0, base_ppl, 0.0))
        return tuple(out)
    assert prices is not None and base_ppl is not None
    out.append(_upgrades(tmap, plan, hw, prices, CPU, base_ms, base_ppl))
    return tuple(out)
