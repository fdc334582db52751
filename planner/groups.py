"""Solver input: the groups of tensors that share a type and a device, their options, the per-device capacities.

Every tensor of the model lands in exactly one :class:`planner.solver.Group` (gate and up tied, biases
apart) or in the fixed bytes of its home device.  A group's options are (type, device) pairs with their exact
bytes, predicted loss and predicted seconds per token; the capacities are each device's budget minus what no
choice changes (margin or OS reserve, KV cache of the layers it holds, compute buffer, fixed tensors).
Where a layer's attention and KV live follows the engines' layer split (llama.cpp ``src/llama.cpp``
``llm_load_tensors``: the first ``n_layer - ngl`` layers on the CPU, the rest split over GPUs by ``-ts``).
"""

from __future__ import annotations


from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from planner.constants import constants
from planner.devices import CPU, gpu_name, is_gpu, is_remote
from planner.errors import UsageError
from planner.input_copies import layer_copy_allowance
from planner.lowbit import (FloorClass, candidate_names, filter_candidates, floor_role, floors_for_budget,
                            respects_floor)
from planner.memory import compute_buffer_bytes, kv_bytes_by_layer, output_alone, output_extra, shape_bytes
from planner.mmproj import mmproj_device
from planner.quantize import imatrix_types, quantizable
from planner.quants import catalogue
from planner.regexes import compile_user_regex, search
from planner.request import PlanRequest
from planner.roles import TIED_ROLES, active_fraction, is_movable, layer_copies, moves_with_ffn, tied_output
from planner.runconfig import RunConfig
from planner.solver import Group, Option
from planner.device_speed import DeviceSpeed, device_speeds
from planner.speed import linear_pp_fixed, linear_tg_costs
from planner.tensors import TensorInfo, TensorMap

if TYPE_CHECKING:
    from planner.hardware import Hardware
    from planner.quality import QualityModel

# Candidate types for the joint planner: data/candidates.toml through planner.lowbit (imatrix-only types exactly
# when an imatrix is declared), kept at or above the engines' own floors for output/token_embd/attn_v.


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-device memory the plan may use, before margins, KV and compute (bytes)."""

    devices: tuple[str, ...]            # "CUDA0", ..., "CPU" last
    bytes: dict[str, int]
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hardware(cls, hw: Hardware) -> Budget:
        """GPUs first (free memory when probed, else total), the CPU's usable RAM last."""
        devs: list[str] = []
        sizes: dict[str, int] = {}
        labels: dict[str, str] = {}
        for g in hw.gpus:
            name = gpu_name(g.index)
            devs.append(name)
            # a probed GPU: what is free now (a desktop or another process may hold some), as llama.cpp's
            # own --fit does; profiles and flags describe an idle card: its total
            sizes[name] = int(g.free_bytes if g.free_bytes is not None else g.total_bytes)
            labels[name] = g.name
        devs.append(CPU)
        sizes[CPU] = int(hw.usable_ram_bytes)
        labels[CPU] = hw.cpu_model
        return cls(tuple(devs), sizes, labels)

    @property
    def gpus(self) -> tuple[str, ...]:
        return tuple(d for d in self.devices if d != CPU)


N_BANDS = 4   # --granularity band: the layers in this many contiguous bands, one type per role in each


def _type_key(role: str, layer: int | None, n_layer: int, granularity: str) -> str:
    """Groups sharing a key share one type: none per layer, one per role, or one per role and band."""
    if granularity == "layer" or layer is None:
        return ""
    if granularity == "role":
        return role
    band = layer * N_BANDS // max(1, n_layer)
    return f"{role}@band{band}"


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
    # biases stay apart, except the experts' (gpt-oss): the engines' -ot patterns (ffn_.*_exps) move them with
    # their weights, so they share the group's device; they keep their own type
    joins = t.name.endswith(".weight") or (role.endswith("_exps") and t.name.endswith(".bias"))
    suffix = "" if joins else "." + t.name.rsplit(".", 1)[-1]
    if t.layer is None:
        return role + suffix, role
    return f"blk.{t.layer}.{role}{suffix}", role


def plan_floor(tmap: TensorMap, budget: Budget, request: PlanRequest) -> FloorClass | None:
    """The engines' floor class for this plan (None with ``request.floors`` off): from the densest mix the
    weight budget allows (RAM + VRAM, or --max-size when smaller)."""
    if not request.floors:
        return None
    weights = sum(budget.bytes.values())
    if request.max_size_bytes:
        weights = min(weights, request.max_size_bytes)
    n = sum(t.n_elements for t in tmap.tensors if tmap.is_loaded(t))
    return floors_for_budget(request.run.qengine, weights, n, n_expert=tmap.params.n_expert,
                             tied=tmap.derived(tied_output) is not None)


def candidate_types(t: TensorInfo, engine: str, *, allow: Sequence[str] | None, deny: Sequence[str],
                    has_imatrix: bool, on_gpu: bool, floor: FloorClass | None = None,
                    ignore_imatrix_rules: bool = False) -> list[str]:
    """Stored types (after llama-quantize's row fallback) the planner may give ``t``: the engine's candidates
    (or ``allow``) without ``deny``, without imatrix-only types unless an imatrix is declared (or ik's
    --ignore-imatrix-rules), at or above ``floor`` for output/token_embd/attn_v.

    Pure in what it reads of ``t`` (row length, row count, whether it is token_embd, its floor role), so the
    answer is memoized on those: a plan asks once per tensor and again per tensor when simplifying the recipe
    (measured: 0.3 of 2.6 CPU s of the headline plan before the memo)."""
    frole = floor_role(t.name) if floor is not None else None
    key = (t.ne0, t.shape[1] if t.n_dims > 1 else 1, t.role == "token_embd", engine, tuple(allow or ()),
           tuple(deny), has_imatrix, on_gpu, floor.floors.get(frole) if floor is not None and frole else None,
           ignore_imatrix_rules)
    hit = _CANDIDATES.get(key)
    if hit is None:
        hit = _CANDIDATES[key] = tuple(_candidate_types(t, engine, allow=allow, deny=deny, has_imatrix=has_imatrix,
                                                        on_gpu=on_gpu, floor=floor,
                                                        ignore_imatrix_rules=ignore_imatrix_rules))
    return list(hit)


_CANDIDATES: dict[tuple, tuple[str, ...]] = {}


def _candidate_types(t: TensorInfo, engine: str, *, allow: Sequence[str] | None, deny: Sequence[str],
                     has_imatrix: bool, on_gpu: bool, floor: FloorClass | None,
                     ignore_imatrix_rules: bool) -> list[str]:
    cat = catalogue()
    ok_imatrix = has_imatrix or (ignore_imatrix_rules and engine == "ik")
    names = list(allow) if allow else list(candidate_names(engine, has_imatrix=ok_imatrix, on_cpu=not on_gpu))
    out: list[str] = []
    for n in names:
        qt = cat.get(n, engine=engine)
        if qt.name in deny or (not ok_imatrix and qt.name in imatrix_types(engine)):
            continue
        qt, _ = cat.row_fallback(qt, t.ne0, engine)
        if t.role == "token_embd" and qt.is_repacked:
            continue
        if qt.is_repacked and t.shape[1] % qt.repack_rows:
            qt = cat.get(qt.repack_base or qt.name)
        if on_gpu and not qt.runs_on_cuda(engine):
            continue
        if qt.name not in out:
            out.append(qt.name)
    if floor is not None:
        # an --allow list restricts the other tensors' types, not the floors: when none of its types reaches
        # the floor, the floor type itself stays a candidate (--no-floors is how to go below it)
        role = floor_role(t.name)
        ft = floor.floors.get(role) if role else None
        if ft is not None and not any(respects_floor(c, ft) for c in out):
            qt, _ = cat.row_fallback(cat.get(ft, engine=engine), t.ne0, engine)
            if not (on_gpu and not qt.runs_on_cuda(engine)) and qt.name not in deny:
                out.append(qt.name)
        out = filter_candidates(t.name, out, floor)
    return out


def build_groups(tmap: TensorMap, layer_device: Sequence[str], budget: Budget, hw: Hardware, cfg: RunConfig, *,
                 types: Mapping[str, str] | None, request: PlanRequest, quality: QualityModel | None = None,
                 speeds: Mapping[str, DeviceSpeed] | None = None, extra_time: Mapping[str, float] | None = None,
                 layer_homes: bool = False) -> tuple[list[Group], dict[str, int], dict[str, float]]:
    """Groups, the bytes fixed per device (non-quantized tensors, token_embd), and the fixed parts of the
    TG and PP times ({"tg_s", "pp_s"}) that no choice changes.

    ``types`` given: placement only (each group's type is fixed). Otherwise the joint problem.  A cluster
    (:mod:`planner.cluster_plan`) passes every device's ``speeds`` and the network's ``extra_time``; a layer
    whose device is remote keeps all its tensors there (one crossing of the link each way per token).
    """
    engine = cfg.qengine
    speeds = dict(speeds) if speeds is not None else device_speeds(hw, cfg)
    spb = {d: 1.0 / sp.mem_bw_gbs for d, sp in speeds.items()}    # seconds per byte read per token
    consts = constants()["speed"]
    local_gpus = [g for g in budget.gpus if not is_remote(g)]
    offload = bool(local_gpus) and min(cfg.ubatch, cfg.batch) >= consts["offload_min_batch"]
    h2d = speeds[local_gpus[0]].h2d_gbs if local_gpus else 0.0
    ub = min(cfg.ubatch, cfg.batch)
    fixed_tg, move_s = linear_tg_costs(tmap, hw, cfg, layer_device)     # launch/sync and per-token costs
    fixed_time = {"tg_s": fixed_tg + (extra_time or {}).get("tg_s", 0.0),
                  "pp_s": linear_pp_fixed(tmap, hw, cfg, layer_device, speeds) + (extra_time or {}).get("pp_s", 0.0)}
    remote_flops: dict[str, float] = {}
    flops_tok = 0.0
    handoff = consts["handoff_s"]
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
    fixed_rules = [(compile_user_regex(rx, "--fixed"), ty) for rx, ty in request.fixed]
    prequantized = tmap.prequantized
    floor = plan_floor(tmap, budget, request) if types is None else None

    def loss_of(name: str, type_name: str) -> float:
        assert quality is not None   # only called when a quality model is given (it remembers each pair)
        return quality.tensor_loss(name, type_name)

    active = {t.name: active_fraction(t, p.n_expert_used) for t in tmap.tensors}
    cand_cache: dict[tuple[int, int, bool, bool, str | None, str | None], list[str]] = {}
    # the output layer's home: the main host's last GPU (a cluster's remote devices come before it)
    last_gpu = next((g for g in reversed(budget.gpus) if not is_remote(g)), CPU)
    copies = solver_copies(tmap, budget, cfg)
    # the output's share of a device's compute buffer, over every way the graph can enter the device: capacities()
    # and the layer homes charge the device's buffer for its entry (compute_buffers.entry_of), which can be less
    # than the entry-free one (ik's replay: a first GPU's 152 vs 168 MiB, Qwen3-235B -ub 512), and the output
    # must still make up the whole buffer with it
    # a GPU that holds no layer computes the head alone (with ``layer_homes`` the solver's alone term charges it)
    out_dev_extra = {d: output_extra(tmap, cfg, d, copies) if layer_homes or d in layer_device or not is_gpu(d)
                     else output_alone(tmap, cfg, copies) for d in budget.devices}
    tied_out = tmap.derived(tied_output)
    tied_devs: list[str] = []
    if tied_out is not None:
        # output tied to token_embd: both engines load a second token_embd with the output layer
        # (memory.Placement.logits_device), which multiplies all of it every token (speed.TIED_OUTPUT). Its
        # device is the output layer's, as the engine's -ngl rule allows it (launch.engine_output_device: ik only
        # with every layer offloaded, mainline with any); on a GPU the input copy stays on the CPU (also_bytes).
        # On a cluster the same rule holds over the engine's device list (the last layer's device may be remote).
        from planner.launch import engine_output_device

        active[tied_out.name] = 1.0
        tied_devs = [CPU] if not layer_device else list(dict.fromkeys(
            engine_output_device(cfg.engine, layer_device, d) for d in (layer_device[-1], CPU)))
    # ik loads a tied token_embd twice into an allocated CPU buffer (memory.Placement.tied_duplicate_device)
    embd_copies = 2 if (tied_out is not None and cfg.engine != "mainline" and cfg.load != "mmap") else 1
    # and derives MLA tensors at load beside their source (engine_buffers.ik_mla_derived): charged with the
    # source's option; the attn_v_b it pairs with is assumed at the source's type (never less than the engine)
    from planner.engine_buffers import ik_mla_derived_size, ik_mla_sources

    mla_src = ik_mla_sources(tmap, cfg.mla) if cfg.engine != "mainline" else {}
    # a layer's own copies of graph-input views: charged where its FFN is on its GPU (input_copies), half with the
    # down projection and half with gate/up where the layer has both (a layer that keeps one on the CPU ends the
    # device's split: its copies are the run's last, which the role's buffer holds)
    copy_allow = layer_copy_allowance(tmap, cfg)
    gate_up = {members[k][0].layer for k, r in roles.items() if r in ("ffn_gate_up_exps", "ffn_gate_up")}
    groups: list[Group] = []
    for t in tmap.tensors:
        if t.n_dims >= 2 and t.role != "token_embd":
            f = 2.0 * t.n_elements * active_fraction(t, p.n_expert_used)
            if t.layer is not None and is_remote(layer_device[t.layer]):
                remote_flops[layer_device[t.layer]] = remote_flops.get(layer_device[t.layer], 0.0) + f
            else:
                flops_tok += f
    if offload:
        fixed_time["pp_s"] += ub * flops_tok / sum(speeds[g].flops for g in local_gpus)
    else:
        fixed_time["pp_s"] += sum(ub * flops_tok / speeds[d].flops for d in (CPU,))
    # a remote layer runs where it lives: no ubatch copy to the main host's GPU (the RPC backend offloads nothing)
    fixed_time["pp_s"] += sum(ub * f / speeds[d].flops for d, f in remote_flops.items())
    for key, ts in members.items():
        t0 = next((t for t in ts if t.name.endswith(".weight")), ts[0])     # the matrix decides the types
        role = roles[key]
        layer = t0.layer
        if layer is not None:
            home = layer_device[layer]
        elif role == "token_embd":
            home = CPU     # ik and mainline keep the input layer on the CPU
        else:
            home = last_gpu
        placement_only = types is not None
        tied_token = tied_out is not None and t0.name == tied_out.name
        if (not placement_only and not quantizable(t0, engine)) or (
                placement_only and not is_movable(t0) and not tied_token):
            for t in ts:
                nb = catalogue().get(types.get(t.name, t.dtype) if types else t.dtype).tensor_bytes(t.shape)
                # a per-layer global (rope_freqs) is charged where memory_report puts its copies (roles.layer_copies)
                for d in layer_copies(t.name, p.arch, layer_device, p.is_swa, engine=cfg.engine,
                                      mapped=CPU if cfg.load == "mmap" else None) or [home]:
                    fixed_bytes[d] += nb * (embd_copies if t.role == "token_embd" and d == CPU else 1)
                if t.name in mla_src:
                    src, partner = mla_src[t.name]
                    fixed_bytes[home] += ik_mla_derived_size(
                        p, src, partner, types.get(t.name, t.dtype) if types else t.dtype,
                        None if partner is None else (types or {}).get(partner.name, partner.dtype))
                fixed_time["tg_s"] += nb * active[t.name] * spb[home]
                if offload and home == CPU and t.layer is not None:
                    fixed_time["pp_s"] += nb / h2d
            continue
        # device options: attention and norms stay with their layer; FFN and output may go to CPU
        movable = (moves_with_ffn(role) or role == "output") and not is_remote(home)
        devs = tied_devs if tied_token else [home] + ([CPU] if movable and home != CPU else [])
        # a converter's quantized tensors (MXFP4 experts) keep their type: llama-quantize will not requantize
        # them (quantize.keep_prequantized_items)
        kept = [t.dtype if not quantizable(t, engine) or t.name in prequantized else None for t in ts]
        any_kept = any(k is not None for k in kept)
        # per type tuple, the same on every device: option name, bytes, bytes one token reads, loss
        priced: dict[tuple[str, ...], tuple[str, int, float, float]] = {}
        options: list[Option] = []
        for dev in devs:
            if types is not None:
                tnames = [types.get(t.name, t.dtype) for t in ts]
                choices = [tuple(tnames)]
            else:
                pinned = next((ty for rx, ty in fixed_rules if search(rx, t0.name)), None)
                ckey = (t0.ne0, t0.shape[1] if t0.n_dims > 1 else 1, t0.role == "token_embd", is_gpu(dev), pinned,
                        floor_role(t0.name))
                cands = cand_cache.get(ckey)
                if cands is None:
                    cands = cand_cache[ckey] = candidate_types(
                        t0, engine, allow=[pinned] if pinned else request.allow or None, deny=request.deny,
                        has_imatrix=request.has_imatrix, on_gpu=is_gpu(dev), floor=floor,
                        ignore_imatrix_rules=request.ignore_imatrix_rules)
                choices = (list(dict.fromkeys(tuple(c if k is None else k for k in kept) for c in cands))
                           if any_kept else [(c,) * len(ts) for c in cands])
            for tn in choices:
                if types is not None and is_gpu(dev) and not all(
                        catalogue().get(x).runs_on_cuda(engine) for x in tn):
                    continue
                price = priced.get(tn)
                if price is None and len(ts) == 1:      # most groups: one tensor (the same sums, spelled out)
                    b = shape_bytes(tn[0], t0.shape)
                    price = priced[tn] = (tn[0], b, b * active[t0.name], loss_of(t0.name, tn[0]) if quality else 0.0)
                if price is None:
                    per = [shape_bytes(x, t.shape) for x, t in zip(tn, ts)]
                    price = priced[tn] = ("+".join(tn) if len(set(tn)) > 1 else tn[0],    # one type per member
                                          sum(per), sum(b * active[t.name] for b, t in zip(per, ts)),
                                          sum(loss_of(t.name, x) for x, t in zip(tn, ts)) if quality else 0.0)
                label, total, read, loss = price
                extra = out_dev_extra.get(dev, 0) if (role == "output" or tied_token) else 0
                if role == "token_embd" and dev == CPU:
                    extra += (embd_copies - 1) * total
                if t0.name in mla_src and len(ts) == 1:
                    extra += ik_mla_derived_size(p, *mla_src[t0.name], tn[0], None)
                if layer is not None and layer < len(copy_allow) and dev == home and dev != CPU:
                    half = copy_allow[layer] // 2 if layer in gate_up else 0
                    extra += {"ffn_down_exps": copy_allow[layer] - half, "ffn_down": copy_allow[layer] - half,
                              "ffn_gate_up_exps": half, "ffn_gate_up": half}.get(role, 0)
                pp = total / h2d if (offload and dev == CPU and layer is not None) else 0.0
                if tied_token:      # the logits matmul of each ubatch where the output layer is (CPU: unoffloaded)
                    flops = (speeds[dev].flops if dev == CPU or is_remote(dev)
                             else sum(speeds[g].flops for g in local_gpus))
                    pp = ub * 2.0 * t0.n_elements / flops
                    options.append(Option(label, dev, total + extra, loss, read * spb[dev], pp,
                                          also_device=CPU if dev != CPU else "", also_bytes=total if dev != CPU else 0))
                    continue
                options.append(Option(label, dev, total + extra, loss, read * spb[dev], pp))
        if not options:
            raise UsageError(f"no allowed type can store {t0.name} on {devs}",
                             hint="check --allow/--deny and the engine's type set")
        groups.append(Group(key, role, layer, tuple(t.name for t in ts), tuple(options), home=home,
                            handoff_s=(2 * handoff + (move_s / 2 if t0.is_expert else 0.0))
                            if (movable and layer is not None and home != CPU) else 0.0,
                            type_key=_type_key(role, layer, p.n_layer, request.granularity) if types is None else ""))
    return groups, fixed_bytes, fixed_time


def solver_copies(tmap: TensorMap, budget: Budget, cfg: RunConfig) -> int:
    """The scheduler input copies the solver reserves compute buffers for.  A plan that puts every layer on the
    GPUs without ``-ot`` runs with pipeline parallelism on mainline (:func:`planner.compute_buffers.sched_copies`),
    which holds each split input that many times; the solver cannot know beforehand whether its answer is such a
    plan, so it reserves for it unless the model cannot fit on the GPUs even at the catalogue's smallest type."""
    from planner.compute_buffers import sched_copies

    copies = sched_copies(cfg.engine, n_devices=len(budget.gpus), all_offloaded=True, overrides=False)
    if copies == 1:
        return 1
    bpw = min(t.bpw for t in catalogue().types if cfg.qengine in t.engines)
    floor = sum(t.n_elements for t in tmap.tensors if tmap.is_loaded(t)) * bpw / 8
    room = sum(budget.bytes[g] - cfg.gpu_margin_bytes for g in budget.gpus)
    return copies if floor <= room else 1


def capacities(tmap: TensorMap, layer_device: Sequence[str], budget: Budget, cfg: RunConfig,
               fixed_bytes: Mapping[str, int]) -> dict[str, int]:
    """Bytes left for the solver's groups on each device: budget minus margin/reserve, KV, compute, fixed."""
    from planner.compute_buffers import entry_of

    kv = kv_bytes_by_layer(tmap.params, cfg)
    mm_dev = mmproj_device(cfg, budget.devices)
    copies = solver_copies(tmap, budget, cfg)
    cap = {}
    for d in budget.devices:
        gpu = is_gpu(d)
        holds = d in layer_device or not gpu
        c = budget.bytes[d] - (cfg.gpu_margin_bytes if gpu else cfg.os_reserve_bytes)
        c -= sum(nbytes for x, nbytes in zip(layer_device, kv) if x == d)
        c -= compute_buffer_bytes(tmap, cfg, holds_layers=holds, holds_output=False, is_gpu=gpu, copies=copies,
                                  entry=entry_of(layer_device, d, CPU),   # as memory_report charges it
                                  n_layers=sum(1 for x in layer_device if x == d) if gpu else None)
        c -= fixed_bytes.get(d, 0)
        c -= cfg.mmproj_bytes + cfg.mmproj_compute_bytes if d == mm_dev else 0
        c -= cfg.mmproj_input_bytes if mm_dev is not None and d == CPU else 0
        cap[d] = c
    return cap


def smallest_weights(tmap: TensorMap, types: Mapping[str, str] | None, request: PlanRequest,
                     budget: Budget | None = None) -> int:
    """Bytes of the loaded tensors at their smallest allowed types (a lower bound for every plan; with
    ``budget`` the floors of that budget's class apply)."""
    cat = catalogue()
    floor = plan_floor(tmap, budget, request) if budget is not None and types is None else None
    total = 0
    smallest: dict[tuple, int] = {}
    for t in tmap.tensors:
        if not tmap.is_loaded(t):
            continue
        if types is not None:
            total += cat.get(types.get(t.name, t.dtype)).tensor_bytes(t.shape)
        elif quantizable(t, request.run.qengine):
            key = (t.shape, t.role == "token_embd", floor_role(t.name))
            if key not in smallest:
                cands = candidate_types(t, request.run.qengine, allow=request.allow or None, deny=request.deny,
                                        has_imatrix=request.has_imatrix, on_gpu=False, floor=floor,
                                        ignore_imatrix_rules=request.ignore_imatrix_rules) or [t.dtype]
                smallest[key] = min(cat.get(c).tensor_bytes(t.shape) for c in cands)
            total += smallest[key]
        else:
            total += cat.get(t.dtype).tensor_bytes(t.shape)
    return total
