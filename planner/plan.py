"""Placement and joint planning: tensor map + hardware + run config -> a verified Plan.

``place`` keeps each tensor's type and chooses devices; ``plan`` chooses types and devices together.
Both build the same groups and hand them to :func:`planner.solver.solve`; the result is re-checked
independently by :func:`planner.memory.memory_report` before anyone sees it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from planner.errors import InfeasibleBudgetError, UsageError
from planner.memory import (
    CPU,
    GIB,
    MemoryReport,
    Placement,
    RunConfig,
    compute_buffer_bytes,
    kv_bytes_per_layer,
    memory_report,
    mix_bytes,
)
from planner.quants import catalogue
from planner.solver import Group, Objective, Option, Solution, solve
from planner.speed import SpeedEstimate, active_fraction, device_speeds, estimate_speed
from planner.tensors import TensorInfo, TensorMap

# gate and up share one type and one device (ik fuses them; -ot regexes move them together)
TIED_ROLES = {"ffn_gate_exps": "ffn_gate_up_exps", "ffn_up_exps": "ffn_gate_up_exps",
              "ffn_gate": "ffn_gate_up", "ffn_up": "ffn_gate_up",
              "ffn_gate_shexp": "ffn_gate_up_shexp", "ffn_up_shexp": "ffn_gate_up_shexp"}

# Candidate types for the joint planner, best quality first.  Types that llama-quantize refuses
# without an imatrix (facts §3a) are only offered when one is given.
DEFAULT_CANDIDATES = {
    "ik": ("q8_0", "iq6_k", "q6_K", "iq5_k", "iq5_ks", "q5_K", "iq4_k", "iq4_ks", "iq4_xs", "q4_K",
           "iq4_kss", "iq3_k", "iq3_ks", "q3_K", "iq2_kl", "iq2_k", "iq2_ks"),
    "mainline": ("q8_0", "q6_K", "q5_K", "q4_K", "iq4_xs", "iq4_nl", "q3_K", "iq3_s", "q2_K"),
}
NEEDS_IMATRIX = ("iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m", "iq1_kt", "iq2_kt")


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-device memory the plan may use, before margins, KV and compute (bytes)."""

    devices: tuple[str, ...]            # "CUDA0", ..., "CPU" last
    bytes: dict[str, int]
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hardware(cls, hw) -> "Budget":
        devs, sizes, labels = [], {}, {}
        for g in hw.gpus:
            name = f"CUDA{g.index}"
            devs.append(name)
            # a probed GPU: what is free now (a desktop or another process may hold some), as llama.cpp's
            # own --fit does; profiles and flags describe an idle card: its total
            sizes[name] = int(g.free_bytes if g.free_bytes is not None else g.total_bytes)
            labels[name] = g.name
        devs.append(CPU)
        sizes[CPU] = int(getattr(hw, "usable_ram_bytes", hw.ram_total_bytes))
        labels[CPU] = getattr(hw, "cpu_model", "CPU")
        return cls(tuple(devs), sizes, labels)

    @property
    def gpus(self) -> tuple[str, ...]:
        return tuple(d for d in self.devices if d != CPU)


@dataclass(frozen=True, slots=True)
class SolverInfo:
    status: str
    gap: float
    wall_s: float = field(metadata={"json": False})   # timing varies run to run: kept out of the plan JSON
    objective: float
    objective_kind: str
    n_classes: int
    n_vars: int
    scaling_error_bound: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A verified assignment of a type and a device to every tensor, with its predictions."""

    model: str
    model_source: str
    engine: str
    run: RunConfig
    types: dict[str, str]
    devices: dict[str, str]
    layer_device: tuple[str, ...]
    budgets: dict[str, int]
    total_bytes: int
    n_elements: int
    bpw: float
    memory: MemoryReport
    speed: SpeedEstimate
    quality: object | None
    solver: SolverInfo | None
    notes: tuple[str, ...] = ()

    @property
    def placement(self) -> Placement:
        devs = tuple(sorted({*self.devices.values(), *self.layer_device}, key=lambda d: (d == CPU, d)))
        if CPU not in devs:
            devs = devs + (CPU,)
        return Placement(self.devices, self.layer_device, devs)


# --------------------------------------------------------------------------------- helpers

@functools.lru_cache(maxsize=None)
def _quantizable(t: TensorInfo) -> bool:
    from planner.quantize import QuantizeSpec, is_quantizable

    return is_quantizable(t, QuantizeSpec(base_type="Q8_0"))


PROOF_WORK = 0.5        # balanced, second step: deterministic work allowed for a proof of the fastest plan
SPEED_STEP_GAP = 1e-3   # balanced, second step: stop within 0.1 % of the fastest plan (0.01 tok/s at 10 tok/s)
N_BANDS = 4   # --granularity band: the layers in this many contiguous bands, one type per role in each


def _type_key(role: str, layer: int | None, n_layer: int, granularity: str) -> str:
    """Groups sharing a key share one type: none per layer, one per role, or one per role and band."""
    if granularity == "layer" or layer is None:
        return ""
    if granularity == "role":
        return role
    band = layer * N_BANDS // max(1, n_layer)
    return f"{role}@band{band}"


def _movable(t: TensorInfo) -> bool:
    """Tensors a placement may send to another device than their layer's: FFN matrices and the output."""
    return t.n_dims >= 2 and ((t.role.startswith("ffn_") and t.role != "ffn_gate_inp") or t.role == "output")


def layer_split(n_layer: int, budget: Budget, n_cpu_layers: int = 0) -> tuple[str, ...]:
    """Layers' attention/KV devices: the first ``n_cpu_layers`` on CPU, the rest split over GPUs in
    contiguous ranges proportional to their memory (llama.cpp's default tensor split)."""
    gpus = budget.gpus
    if not gpus:
        return tuple([CPU] * n_layer)
    n_gpu = n_layer - n_cpu_layers
    total = sum(budget.bytes[g] for g in gpus)
    out = [CPU] * n_cpu_layers
    assigned = 0
    for i, g in enumerate(gpus):
        if i == len(gpus) - 1:
            k = n_gpu - assigned
        else:
            k = round(n_gpu * budget.bytes[g] / total)
        out += [g] * k
        assigned += k
    return tuple(out)


def _group_key(t: TensorInfo) -> tuple[str, str]:
    role = TIED_ROLES.get(t.role, t.role)
    suffix = "" if t.name.endswith(".weight") else "." + t.name.rsplit(".", 1)[-1]   # biases stay apart
    if t.layer is None:
        return role + suffix, role
    return f"blk.{t.layer}.{role}{suffix}", role


def candidate_types(t: TensorInfo, engine: str, *, allow: Sequence[str] | None, deny: Sequence[str],
                    has_imatrix: bool, on_gpu: bool) -> list[str]:
    """Stored types (after llama-quantize's row fallback) the planner may give ``t``."""
    cat = catalogue()
    names = list(allow) if allow else list(DEFAULT_CANDIDATES[engine])
    out: list[str] = []
    for n in names:
        qt = cat.get(n, engine=engine)
        if qt.name in deny or (not has_imatrix and qt.name in NEEDS_IMATRIX and not allow):
            continue
        qt, _ = cat.row_fallback(qt, t.ne0, engine)
        if t.role == "token_embd" and qt.is_repacked:
            continue
        if qt.is_repacked and t.shape[1] % qt.repack_rows:
            qt = cat.get(qt.repack_base)
        if on_gpu and not qt.runs_on_cuda(engine):
            continue
        if qt.name not in out:
            out.append(qt.name)
    return out


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything the planner needs besides the model and the machine."""

    run: RunConfig = RunConfig()
    objective: str = "balanced"          # quality | speed | balanced
    min_tg: float | None = None
    min_pp: float | None = None
    max_size_bytes: int | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    fixed: tuple[tuple[str, str], ...] = ()   # (regex, type) pinned by the user
    has_imatrix: bool = True
    work_limit: float = 2.0              # CP-SAT deterministic time per solve (see planner.solver.Objective)
    quality_slack_pct: float = 0.5       # balanced: PPL ratio may exceed the best-quality plan's by this %
    granularity: str = "layer"           # layer | role | band: how many distinct types a role may get


def build_groups(tmap: TensorMap, layer_device: Sequence[str], budget: Budget, hw, cfg: RunConfig, *,
                 types: Mapping[str, str] | None, request: PlanRequest, quality=None
                 ) -> tuple[list[Group], dict[str, int], dict[str, float]]:
    """Groups, the bytes fixed per device (non-quantized tensors, token_embd), and the fixed parts of the
    TG and PP times ({"tg_s", "pp_s"}) that no choice changes.

    ``types`` given: placement only (each group's type is fixed). Otherwise the joint problem.
    """
    import re

    from planner.speed import constants as _c

    engine = cfg.qengine
    speeds = device_speeds(hw, cfg)
    spb = {d: 1.0 / sp.mem_bw_gbs for d, sp in speeds.items()}    # seconds per byte read per token
    consts = _c()["speed"]
    offload = bool(budget.gpus) and min(cfg.ubatch, cfg.batch) >= consts["offload_min_batch"]
    h2d = speeds[budget.gpus[0]].h2d_gbs if budget.gpus else 0.0
    ub = min(cfg.ubatch, cfg.batch)
    fixed_time = {"tg_s": consts["token_overhead_s"], "pp_s": 0.0}
    flops_tok = 0.0
    handoff = _c()["speed"]["handoff_s"]
    p = tmap.params
    fixed_bytes: dict[str, int] = {d: 0 for d in budget.devices}
    members: dict[str, list[TensorInfo]] = {}
    roles: dict[str, str] = {}
    for t in tmap.tensors:
        if not tmap.is_loaded(t):
            continue          # NextN/MTP blocks are not loaded: no memory, no time; typed after the solve
        key, role = _group_key(t)
        members.setdefault(key, []).append(t)
        roles[key] = role
    fixed_rules = [(re.compile(rx), ty) for rx, ty in request.fixed]
    cat = catalogue()
    size_cache: dict[tuple, int] = {}
    loss_cache: dict[tuple, float] = {}

    def nbytes_of(type_name: str, shape: tuple[int, ...]) -> int:
        key = (type_name, shape)
        if key not in size_cache:
            size_cache[key] = cat.get(type_name).tensor_bytes(shape)
        return size_cache[key]

    def loss_of(name: str, type_name: str) -> float:
        key = (name, type_name)
        if key not in loss_cache:
            loss_cache[key] = quality.tensor_loss(name, type_name)
        return loss_cache[key]

    active = {t.name: active_fraction(t, p.n_expert_used) for t in tmap.tensors}
    cand_cache: dict[tuple, list[str]] = {}
    last_gpu = budget.gpus[-1] if budget.gpus else CPU
    out_dev_extra = {}
    if "output.weight" in {t.name for t in tmap.tensors}:
        base = {d: compute_buffer_bytes(tmap, cfg, holds_layers=True, holds_output=False, is_gpu=d != CPU)
                for d in budget.devices}
        out_dev_extra = {d: compute_buffer_bytes(tmap, cfg, holds_layers=True, holds_output=True,
                                                 is_gpu=d != CPU) - base[d] for d in budget.devices}
    groups: list[Group] = []
    for t in tmap.tensors:
        if t.n_dims >= 2 and t.role != "token_embd":
            flops_tok += 2.0 * t.n_elements * active_fraction(t, p.n_expert_used)
    if offload:
        fixed_time["pp_s"] = ub * flops_tok / sum(speeds[g].flops for g in budget.gpus)
    else:
        fixed_time["pp_s"] = sum(ub * flops_tok / speeds[d].flops for d in (CPU,))
    for key, ts in members.items():
        t0 = ts[0]
        role = roles[key]
        layer = t0.layer
        if layer is not None:
            home = layer_device[layer]
        elif role == "token_embd":
            home = CPU     # ik and mainline keep the input layer on the CPU
        else:
            home = last_gpu
        placement_only = types is not None
        if (not placement_only and not _quantizable(t0)) or (placement_only and not _movable(t0)):
            for t in ts:
                nb = catalogue().get(types.get(t.name, t.dtype) if types else t.dtype).tensor_bytes(t.shape)
                fixed_bytes[home] += nb
                fixed_time["tg_s"] += nb * active_fraction(t, p.n_expert_used) * spb[home]
                if offload and home == CPU and t.layer is not None:
                    fixed_time["pp_s"] += nb / h2d
            continue
        # device options: attention and norms stay with their layer; FFN and output may go to CPU
        movable = role.startswith("ffn_") or role == "output"
        devs = [home] + ([CPU] if movable and home != CPU else [])
        options: list[Option] = []
        for dev in devs:
            if types is not None:
                tnames = [types.get(t.name, t.dtype) for t in ts]
                choices = [tuple(tnames)]
            else:
                pinned = next((ty for rx, ty in fixed_rules if rx.search(t0.name)), None)
                ckey = (t0.ne0, t0.shape[1] if t0.n_dims > 1 else 1, t0.role == "token_embd", dev != CPU, pinned)
                cands = cand_cache.get(ckey)
                if cands is None:
                    cands = cand_cache[ckey] = candidate_types(
                        t0, engine, allow=[pinned] if pinned else request.allow or None, deny=request.deny,
                        has_imatrix=request.has_imatrix, on_gpu=dev != CPU)
                choices = [tuple([c] * len(ts)) for c in cands]
            for tn in choices:
                if types is not None and dev != CPU and not all(
                        catalogue().get(x).runs_on_cuda(engine) for x in tn):
                    continue
                per = [nbytes_of(x, t.shape) for x, t in zip(tn, ts)]
                extra = out_dev_extra.get(dev, 0) if role == "output" else 0
                sec = sum(b * active[t.name] for b, t in zip(per, ts)) * spb[dev]
                loss = sum(loss_of(t.name, x) for x, t in zip(tn, ts)) if quality else 0.0
                pp = sum(per) / h2d if (offload and dev == CPU and layer is not None) else 0.0
                options.append(Option("+".join(dict.fromkeys(tn)) if len(set(tn)) > 1 else tn[0], dev,
                                      sum(per) + extra, loss, sec, pp))
        if not options:
            raise UsageError(f"no allowed type can store {t0.name} on {devs}",
                             hint="check --allow/--deny and the engine's type set")
        groups.append(Group(key, role, layer, tuple(t.name for t in ts), tuple(options), home=home,
                            handoff_s=2 * handoff if (movable and layer is not None and home != CPU) else 0.0,
                            type_key=_type_key(role, layer, p.n_layer, request.granularity) if types is None else ""))
    return groups, fixed_bytes, fixed_time


def capacities(tmap: TensorMap, layer_device: Sequence[str], budget: Budget, cfg: RunConfig,
               fixed_bytes: Mapping[str, int]) -> dict[str, int]:
    """Bytes left for the solver's groups on each device: budget minus margin/reserve, KV, compute, fixed."""
    kv = kv_bytes_per_layer(tmap.params, cfg)
    cap = {}
    for d in budget.devices:
        is_gpu = d != CPU
        holds = d in layer_device or not is_gpu
        c = budget.bytes[d] - (cfg.gpu_margin_bytes if is_gpu else cfg.os_reserve_bytes)
        c -= kv * sum(1 for x in layer_device[:tmap.params.n_loaded_layers] if x == d)
        c -= compute_buffer_bytes(tmap, cfg, holds_layers=holds, holds_output=False, is_gpu=is_gpu)
        c -= fixed_bytes.get(d, 0)
        cap[d] = c
    return cap


def loss_slack(quality, request: PlanRequest) -> float:
    """Balanced objective: loss units equal to ``quality_slack_pct`` % of PPL ratio (ppl = exp(k * loss))."""
    k = getattr(quality, "ppl_scale", None) or getattr(quality, "k", 1.0)
    return math.log(1.0 + request.quality_slack_pct / 100.0) / k


def _finish(tmap: TensorMap, hw, budget: Budget, request: PlanRequest, layer_device: tuple[str, ...],
            types: dict[str, str], devices: dict[str, str], sol: Solution | None, quality,
            notes: list[str]) -> Plan:
    cfg = request.run
    placement = Placement(devices, layer_device, budget.devices)
    mem = memory_report(tmap, types, placement, budget.bytes, cfg)
    if not mem.fits:
        raise InfeasibleBudgetError("internal re-check failed: " + "; ".join(mem.problems()),
                                    shortfall_bytes=mem.shortfall())
    spd = estimate_speed(tmap, types, placement, hw, cfg)
    # the ILP's time terms are memory-bound and linear; the full estimate also checks compute: say so if it differs
    if request.min_tg and spd.tg_tps < request.min_tg:
        notes.append(f"predicted TG {spd.tg_tps:.2f} tok/s is below --min-tg {request.min_tg}: the CPU is "
                     "compute-bound here, which the ILP's bandwidth terms do not see")
    if request.min_pp and spd.pp_tps < request.min_pp * 0.999:
        notes.append(f"predicted PP {spd.pp_tps:.1f} tok/s is below --min-pp {request.min_pp}")
    sizes = mix_bytes(tmap, types)
    total = sum(sizes.values())
    q = quality.estimate(types) if quality is not None else None
    info = None
    if sol is not None:
        info = SolverInfo(sol.status, sol.gap, sol.wall_s, sol.objective,
                          "placement" if request.objective == "placement" else request.objective,
                          sol.n_classes, sol.n_vars, sol.scaling_error_bound)
    return Plan(model=tmap.name, model_source=tmap.source, engine=cfg.engine,
                run=cfg, types=dict(types), devices=dict(devices), layer_device=layer_device,
                budgets=dict(budget.bytes), total_bytes=total, n_elements=tmap.n_elements,
                bpw=8.0 * total / tmap.n_elements, memory=mem, speed=spd, quality=q, solver=info,
                notes=tuple(notes))


def _solve_with_layers(tmap, hw, budget, request, *, types, quality) -> tuple[tuple[str, ...], Solution, list]:
    """Try all layers on the GPUs first; if attention + KV do not fit, move the first layers to CPU."""
    cfg = request.run
    need = (_smallest_weights(tmap, types, request) + kv_bytes_per_layer(tmap.params, cfg) * tmap.params.n_layer
            + cfg.os_reserve_bytes + cfg.gpu_margin_bytes * len(budget.gpus))
    if need > sum(budget.bytes.values()):      # necessary condition: no split of layers can help
        raise InfeasibleBudgetError("even the smallest types do not fit in RAM + VRAM together",
                                    shortfall_bytes={"all devices": need - sum(budget.bytes.values())})
    n = tmap.params.n_layer
    last_err: InfeasibleBudgetError | None = None
    tried = [0] if not budget.gpus else sorted({0, *range(max(1, n // 16), n + 1, max(1, n // 16)), n})
    for n_cpu in tried:
        layer_device = layer_split(n, budget, n_cpu)
        groups, fixed, fixed_time = build_groups(tmap, layer_device, budget, hw, request.run, types=types,
                                                 request=request, quality=quality)
        cap = capacities(tmap, layer_device, budget, request.run, fixed)
        if any(c < 0 for c in cap.values()):
            last_err = InfeasibleBudgetError("fixed terms alone exceed a device budget",
                                             shortfall_bytes={d: -c for d, c in cap.items() if c < 0})
            continue
        obj = _objective(request, quality, types is not None, fixed_time)
        # capacities are all non-negative here: moving more attention to the CPU moves the same bytes
        # and only slows generation, so an infeasible answer now is final
        try:
            if obj.kind == "balanced":
                # epsilon-constraint: the best quality first, then the fastest plan within the slack of it
                t0 = time.perf_counter()
                best = solve(groups, cap, replace(obj, kind="quality"), fixed_seconds=fixed_time["tg_s"])
                step2 = replace(obj, kind="speed", max_loss=best.loss + loss_slack(quality, request))
                # prove the fastest plan within the slack if that is quick; else accept 0.1 % of TG (reported)
                sol = solve(groups, cap, replace(step2, work_limit=min(PROOF_WORK, obj.work_limit)),
                            hint=best, fixed_seconds=fixed_time["tg_s"])
                if sol.status != "OPTIMAL":
                    sol = solve(groups, cap, replace(step2, relative_gap=SPEED_STEP_GAP), hint=sol,
                                fixed_seconds=fixed_time["tg_s"])
                return layer_device, replace(sol, wall_s=time.perf_counter() - t0), groups
            return layer_device, solve(groups, cap, obj, fixed_seconds=fixed_time["tg_s"]), groups
        except InfeasibleBudgetError as exc:
            last_err = exc
            break
    assert last_err is not None
    raise last_err


def _objective(request: PlanRequest, quality, placement_only: bool, fixed_time: Mapping[str, float]) -> Objective:
    max_s = 1.0 / request.min_tg if request.min_tg else None
    max_pp = None
    if request.min_pp:
        max_pp = min(request.run.ubatch, request.run.batch) / request.min_pp - fixed_time["pp_s"]
    cpu_first = request.run.engine == "mainline"
    if placement_only:
        return Objective("speed", max_seconds=max_s, max_pp_seconds=max_pp, work_limit=request.work_limit,
                         cpu_first=cpu_first)
    return Objective(request.objective, max_seconds=max_s, max_pp_seconds=max_pp,
                     max_total_bytes=request.max_size_bytes, work_limit=request.work_limit, cpu_first=cpu_first)


def _expand(sol: Solution, groups_tensors: Mapping[str, tuple[str, ...]]) -> tuple[dict, dict]:
    types, devices = {}, {}
    for key, opt in sol.choice.items():
        names = groups_tensors[key]
        tnames = opt.type_name.split("+")
        for i, n in enumerate(names):
            types[n] = tnames[i] if len(tnames) > 1 else tnames[0]
            devices[n] = opt.device
    return types, devices


def place(tmap: TensorMap, types: Mapping[str, str], hw, request: PlanRequest) -> Plan:
    """Choose a device for every tensor of a fixed mix, maximising predicted TG within every budget.

    Raises:
        InfeasibleBudgetError: with the shortfall per device and the nearest feasible options.
    """
    budget = Budget.from_hardware(hw)
    cfg = request.run
    need = sum(mix_bytes(tmap, types).values()) + cfg.os_reserve_bytes + cfg.gpu_margin_bytes * len(budget.gpus)
    have = sum(budget.bytes.values())
    if need > have:   # no placement can help: skip the solver
        raise _with_options(InfeasibleBudgetError("weights alone exceed RAM + VRAM",
                                                  shortfall_bytes={"RAM+VRAM": need - have}),
                            tmap, types, budget, request, hw)
    try:
        layer_device, sol, groups = _solve_with_layers(tmap, hw, budget, replace(request, objective="placement"),
                                                       types=types, quality=None)
    except InfeasibleBudgetError as exc:
        raise _with_options(exc, tmap, types, budget, request, hw) from None
    return _assemble(tmap, hw, budget, replace(request, objective="placement"), layer_device, sol, groups,
                     fixed_types=types, quality=None)


def _assemble(tmap, hw, budget, request, layer_device, sol, groups, *, fixed_types, quality) -> Plan:
    gmap = {g.key: g.tensors for g in groups}
    types, devices = _expand(sol, gmap)
    last = tmap.params.n_loaded_layers - 1
    for t in tmap.tensors:
        if t.name not in types and not tmap.is_loaded(t) and fixed_types is None:
            # a NextN/MTP block is not loaded: quantize it like the same role in the last loaded layer
            twin = f"blk.{last}." + t.name.split(".", 2)[2]
            if twin in types and _quantizable(t):
                types[t.name] = types[twin]
        if t.name not in types:
            types[t.name] = fixed_types.get(t.name, t.dtype) if fixed_types else t.dtype
        if t.name not in devices:
            devices[t.name] = (CPU if t.role == "token_embd" else
                               layer_device[t.layer] if t.layer is not None else
                               (budget.gpus[-1] if budget.gpus else CPU))
    notes = []
    n_cpu = sum(1 for d in layer_device if d == CPU)
    if budget.gpus and n_cpu:
        notes.append(f"attention and KV of the first {n_cpu} layers stay on the CPU (-ngl {len(layer_device) - n_cpu})")
    return _finish(tmap, hw, budget, request, layer_device, types, devices, sol, quality, notes)


def joint_plan(tmap: TensorMap, hw, request: PlanRequest, quality) -> Plan:
    """Choose quant types and devices together (the ILP of issue 6)."""
    budget = Budget.from_hardware(hw)
    try:
        layer_device, sol, groups = _solve_with_layers(tmap, hw, budget, request, types=None, quality=quality)
    except InfeasibleBudgetError as exc:
        raise _with_options(exc, tmap, None, budget, request, hw, quality) from None
    return _assemble(tmap, hw, budget, request, layer_device, sol, groups, fixed_types=None, quality=quality)


def _feasible(tmap: TensorMap, hw, budget: Budget, request: PlanRequest, types, quality) -> bool:
    """Whether any plan exists under these budgets (the fastest objective: feasibility is all we ask)."""
    probe_req = replace(request, objective="speed", work_limit=1.0)
    try:
        _solve_with_layers(tmap, hw, budget, probe_req, types=types, quality=quality)
        return True
    except InfeasibleBudgetError:
        return False


def _smallest_weights(tmap: TensorMap, types, request: PlanRequest) -> int:
    """Bytes of the loaded tensors at their smallest allowed types (a lower bound for every plan)."""
    cat = catalogue()
    total = 0
    smallest: dict[tuple, int] = {}
    for t in tmap.tensors:
        if not tmap.is_loaded(t):
            continue
        if types is not None:
            total += cat.get(types.get(t.name, t.dtype)).tensor_bytes(t.shape)
        elif _quantizable(t):
            key = (t.shape, t.role == "token_embd")
            if key not in smallest:
                cands = candidate_types(t, request.run.qengine, allow=request.allow or None, deny=request.deny,
                                        has_imatrix=request.has_imatrix, on_gpu=False) or [t.dtype]
                smallest[key] = min(cat.get(c).tensor_bytes(t.shape) for c in cands)
            total += smallest[key]
        else:
            total += cat.get(t.dtype).tensor_bytes(t.shape)
    return total


def _with_options(exc: InfeasibleBudgetError, tmap: TensorMap, types, budget: Budget, request: PlanRequest,
                  hw=None, quality=None) -> InfeasibleBudgetError:
    """Name the nearest changes that make a plan feasible; each one is checked with the solver."""
    cfg = request.run
    weights = _smallest_weights(tmap, types, request)
    kv = kv_bytes_per_layer(tmap.params, cfg) * tmap.params.n_layer
    gpu_usable = sum(max(0, budget.bytes[g] - cfg.gpu_margin_bytes) for g in budget.gpus)
    need_total = weights + kv + cfg.os_reserve_bytes + compute_buffer_bytes(
        tmap, cfg, holds_layers=True, holds_output=True, is_gpu=False)
    have = budget.bytes[CPU]
    short = dict(exc.shortfall_bytes or {})
    if need_total > have + gpu_usable and not short:
        short = {"RAM+VRAM": need_total - have - gpu_usable}
    options: list[str] = []
    if hw is not None:
        def ok(b: Budget, r: PlanRequest) -> bool:
            return _feasible(tmap, hw, b, r, types, quality)

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


# --------------------------------------------------------------------------------- documents

PLAN_FORMAT = "gguf-planner/plan-v1"


@dataclass(frozen=True, slots=True)
class PlanDocument:
    """A plan plus what it emits: the recipe, the llama-quantize and llama-server commands."""

    format: str
    plan: Plan
    recipe: object | None               # planner.recipe.Recipe
    quantize_command: str | None
    launch: object                      # planner.launch.LaunchCommand
    launch_command: str
    sweep_command: str


def document(tmap: TensorMap, plan: Plan, *, model_path: str, source_path: str | None = None,
             imatrix: str | None = None, with_recipe: bool = True, host: str = "127.0.0.1",
             port: int = 8080, check_binary: str | None = None) -> PlanDocument:
    """Emit the recipe (verified by re-application) and the launch command (verified -ot) for a plan."""
    from planner.launch import build_launch
    from planner.recipe import build_recipe

    recipe = qcmd = None
    if with_recipe:
        recipe = build_recipe(tmap, plan.types, engine=plan.run.qengine)
        src = source_path or f"{tmap.name}-BF16-00001-of-0000N.gguf"
        qcmd = recipe.quantize_command(src, model_path, imatrix=imatrix)
    launch = build_launch(tmap, plan.devices, plan.layer_device, plan.run, model_path, host=host, port=port)
    if check_binary:
        from planner.launch import check_flags, help_of_binary

        check_flags(launch.argv, help_of_binary(check_binary))
    return PlanDocument(PLAN_FORMAT, plan, recipe, qcmd, launch, launch.shell(), launch.shell(launch.sweep_argv))


def mix_from_options(tmap: TensorMap, *, base_type: str | None, custom_q: Sequence[str] = (),
                     recipe_text: str | None = None, engine: str = "ik", token_embedding_type: str | None = None,
                     output_tensor_type: str | None = None, pure: bool = False, has_imatrix: bool = False):
    """The mix to place: stored types of a quantized GGUF, or the llama-quantize prediction of a recipe.

    Returns (types, footprint or None).

    Raises:
        UsageError: an unquantized model with no recipe (there is nothing sensible to place).
    """
    from planner.quantize import (
        QuantizeSpec,
        parse_custom_q,
        parse_recipe_text,
        quantize,
    )

    items = list(custom_q)
    if recipe_text:
        items += parse_recipe_text(recipe_text)
    qengine = "mainline" if engine == "mainline" else "ik"
    if base_type or items or token_embedding_type or output_tensor_type:
        if tmap.is_quantized:
            raise UsageError(f"{tmap.source} is already quantized: a recipe applies to an unquantized source",
                             hint="`gguf-planner inspect` shows its types and sizes; `place` and `check` take it "
                                  "without recipe options")
        spec = QuantizeSpec(base_type=base_type or ("IQ3_K" if qengine == "ik" else "Q4_K_M"),
                            custom_q=parse_custom_q(items, qengine) if items else (), engine=qengine,
                            token_embedding_type=token_embedding_type, output_tensor_type=output_tensor_type,
                            pure=pure, has_imatrix=has_imatrix)
        fp = quantize(tmap, spec)
        return {r.name: r.type_name for r in fp.tensors}, fp
    if not tmap.is_quantized:
        raise UsageError(f"{tmap.name} is unquantized ({tmap.source})",
                         hint="say which mix to use: --base-type IQ4_KS, --custom-q RULES or --recipe-file FILE")
    return {t.name: t.dtype for t in tmap.tensors}, None


def load_plan_json(path: str):
    """Read a plan JSON written by `plan`/`place --out`: returns (tmap, types, devices, layer_device, run, model)."""
    import json

    from planner.source import load_model

    try:
        doc = json.loads(open(path).read())
        p = doc["plan"] if "plan" in doc else doc
        src = p["model_source"]
        tmap = load_model(src.removeprefix("builtin:"), check_size=False)
        run = RunConfig(**p["run"])
        model_path = doc.get("launch", {}).get("argv", [None, None, None])[2] if "launch" in doc else None
        return tmap, dict(p["types"]), dict(p["devices"]), tuple(p["layer_device"]), run, model_path
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a gguf-planner plan JSON: {exc}") from exc


def evaluate(tmap: TensorMap, types: Mapping[str, str], placement: Placement, hw, run: RunConfig,
             quality=None, warnings: Sequence[str] = ()):
    """Memory and speed of a given mix and placement (the `check` command's library call)."""
    budget = Budget.from_hardware(hw)
    mem = memory_report(tmap, types, placement, budget.bytes, run)
    spd = estimate_speed(tmap, types, placement, hw, run)
    q = quality.estimate(types) if quality is not None else None
    sizes = mix_bytes(tmap, types)
    return CheckResult(model=tmap.name, run=run, memory=mem, speed=spd, quality=q,
                       total_bytes=sum(sizes.values()),
                       weights_by_device={d.device: d.term("weights") for d in mem.devices},
                       problems=tuple(mem.problems()), warnings=tuple(warnings))


@dataclass(frozen=True, slots=True)
class CheckResult:
    model: str
    run: RunConfig
    memory: MemoryReport
    speed: SpeedEstimate
    quality: object | None
    total_bytes: int
    weights_by_device: dict[str, int]
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def _largest_ctx(tmap: TensorMap, attempt, request: PlanRequest) -> Plan:
    """--ctx max: the largest context (multiple of 256, up to n_ctx_train) for which ``attempt`` succeeds."""
    hi = max(256, tmap.params.n_ctx_train or 131072) // 256
    lo, best = 1, None
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


def place_with_ctx(tmap: TensorMap, types: Mapping[str, str], hw, request: PlanRequest, *, ctx_max: bool) -> Plan:
    if not ctx_max:
        request = replace(request, run=resolve_ctx(tmap, request.run))
    if ctx_max:
        return _largest_ctx(tmap, lambda r: place(tmap, types, hw, r), request)
    return place(tmap, types, hw, request)


def plan_with_ctx(tmap: TensorMap, hw, request: PlanRequest, quality, *, ctx_max: bool) -> Plan:
    if not ctx_max:
        request = replace(request, run=resolve_ctx(tmap, request.run))
    if ctx_max:
        return _largest_ctx(tmap, lambda r: joint_plan(tmap, hw, r, quality), request)
    return joint_plan(tmap, hw, request, quality)


def script_comments(plan_file: str) -> list[str]:
    """Predicted memory and speed of a plan JSON, for the exported script's header."""
    import json

    doc = json.loads(open(plan_file).read())
    p = doc.get("plan", doc)
    out = [f"model: {p['model']} ({p['model_source']}), engine {p['engine']}, context {p['run']['ctx']}"]
    for d in p["memory"]["devices"]:
        terms = ", ".join(f"{t['name']} {t['bytes'] / GIB:.2f}" + ("" if t["exact"] else "~")
                          for t in d["terms"])
        out.append(f"{d['device']}: {d['total_bytes'] / GIB:.2f} of {d['budget_bytes'] / GIB:.2f} GiB ({terms}; ~ = estimate)")
    s = p["speed"]
    out.append(f"estimated TG {s['tg_tps']:.1f} tok/s (at full context {s['tg_tps_ctx']:.1f}), "
               f"PP {s['pp_tps']:.0f} tok/s")
    return out


def launch_model_path(model: str | None, tmap: TensorMap, *, quantized_here: bool) -> str:
    """The GGUF the emitted commands load: the file given when it is used as it is, else the file a
    quantization from it would write (never the source itself), else a name for a built-in model."""
    from pathlib import Path

    if quantized_here:
        return planned_name(model, tmap)
    if model and ("://" in model or Path(model).is_file()):
        return model
    return f"{tmap.name}.gguf"


def planned_name(model: str | None, tmap: TensorMap) -> str:
    """Output GGUF name for a planned quantization: next to the source, never the source itself."""
    import re as _re
    from pathlib import Path

    if model and model.endswith(".gguf") and "://" not in model:
        stem = _re.sub(r"-\d{5}-of-\d{5}$", "", Path(model).name[:-5])
        stem = _re.sub(r"[-_.](bf16|BF16|f16|F16|f32|F32)$", "", stem)
        return str(Path(model).with_name(f"{stem}-planned.gguf"))
    return f"{tmap.name}-planned.gguf"


def plan_command_impl(model: str | None, hw, run: RunConfig, *, objective: str = "balanced",
                      min_tg: float | None = None, min_pp: float | None = None, max_size_gib: float | None = None, allow=(), deny=(), fixed=(),
                      imatrix: str | None = None, has_imatrix: bool = True, quality_slack: float = 0.5,
                      model_path: str | None = None, ctx_max: bool = False, granularity: str = "layer",
                      kv_auto: bool = False, check_binary: str | None = None, pareto: int = 0):
    """`gguf-planner plan`: the joint ILP for an unquantized model, placement for a quantized GGUF.

    ``kv_auto``: q8_0 KV cache (half of f16, near-lossless), q4_0 only if q8_0 does not fit.
    """
    if kv_auto:
        try:
            return plan_command_impl(model, hw, replace(run, type_k="q8_0", type_v="q8_0"), objective=objective,
                                     min_tg=min_tg, min_pp=min_pp, max_size_gib=max_size_gib, allow=allow, deny=deny, fixed=fixed,
                                     imatrix=imatrix, has_imatrix=has_imatrix, quality_slack=quality_slack,
                                     model_path=model_path, ctx_max=ctx_max, granularity=granularity,
                                     check_binary=check_binary, pareto=pareto)
        except InfeasibleBudgetError:
            run = replace(run, type_k="q4_0", type_v="q4_0")
    from planner.quality import QualityModel
    from planner.source import load_model

    tmap = load_model(model)
    pinned = []
    for item in fixed:
        if "=" not in item:
            raise UsageError(f"--fixed {item!r} is not REGEX=TYPE")
        rx, ty = item.rsplit("=", 1)
        catalogue().get(ty, engine=run.qengine)
        pinned.append((rx, ty))
    for ty in (*allow, *deny):
        catalogue().get(ty, engine=run.qengine)
    imx = None
    if imatrix:
        from planner.imatrix import read_imatrix

        imx = read_imatrix(imatrix)
    request = PlanRequest(run=run, objective=objective, min_tg=min_tg, min_pp=min_pp,
                          max_size_bytes=int(max_size_gib * GIB) if max_size_gib else None,
                          allow=tuple(allow), deny=tuple(deny), fixed=tuple(pinned),
                          has_imatrix=has_imatrix or bool(imatrix), quality_slack_pct=quality_slack,
                          granularity=granularity)
    quantized = tmap.is_quantized
    out_path = model_path or launch_model_path(model, tmap, quantized_here=not quantized)
    if quantized:
        types = {t.name: t.dtype for t in tmap.tensors}
        p = place_with_ctx(tmap, types, hw, request, ctx_max=ctx_max)
        return document(tmap, p, model_path=out_path, with_recipe=False, check_binary=check_binary)
    quality = QualityModel.build(tmap, imatrix=imx, has_imatrix=request.has_imatrix)
    if pareto:
        return pareto_plans(tmap, hw, request, quality, pareto, model_path=out_path)
    p = plan_with_ctx(tmap, hw, request, quality, ctx_max=ctx_max)
    free = getattr(hw, "disk_free_bytes", None)
    if free is not None and p.total_bytes > free:
        p = replace(p, notes=p.notes + (
            f"the quantized file needs {p.total_bytes / GIB:.1f} GiB but its disk has {free / GIB:.1f} GiB free",))
    return document(tmap, p, model_path=out_path, source_path=model if model and model.endswith(".gguf") else None,
                    imatrix=imatrix, check_binary=check_binary)


@dataclass(frozen=True, slots=True)
class ParetoSet:
    """Non-dominated plans from the best-quality one to the fastest one (``--pareto N``)."""

    model: str
    documents: tuple[PlanDocument, ...]


def pareto_plans(tmap: TensorMap, hw, request: PlanRequest, quality, n: int, *, model_path: str) -> ParetoSet:
    """N plans across speeds: the best-quality plan, the fastest plan, and the best quality at evenly spaced
    generation times between them (epsilon-constraint, each solved to optimality)."""
    if n < 2:
        raise UsageError("--pareto needs at least 2 plans")
    request = replace(request, run=resolve_ctx(tmap, request.run))
    best = joint_plan(tmap, hw, replace(request, objective="quality", min_tg=None), quality)
    fast = joint_plan(tmap, hw, replace(request, objective="speed", min_tg=None), quality)
    t_best, t_fast = 1.0 / best.speed.tg_tps, 1.0 / fast.speed.tg_tps
    plans = [best]
    for i in range(1, n - 1):
        target = t_best - i * (t_best - t_fast) / (n - 1)
        try:
            plans.append(joint_plan(tmap, hw, replace(request, objective="quality", min_tg=1.0 / target), quality))
        except InfeasibleBudgetError:
            continue
    plans.append(fast)
    unique: list[Plan] = []
    for p in plans:
        if all(p.types != q.types or p.devices != q.devices for q in unique):
            unique.append(p)
    docs = tuple(document(tmap, p, model_path=model_path) for p in unique)
    return ParetoSet(tmap.name, docs)
