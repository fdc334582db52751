"""Speed model (an ESTIMATE): token generation and prompt processing from the mechanisms that take the time.

Token generation (one token, the devices run one after another along the layers):

* every device reads its weights: dense tensors fully, routed experts by ``n_expert_used / n_expert``, over its
  effective bandwidth (GPU: spec x efficiency; CPU: DRAM peak x efficiency, capped by threads x per-thread rate,
  cut by SMT oversubscription and NUMA placement);
* the KV cache up to the current depth is read where each layer's cache lives, and attention costs compute that
  grows with depth: CUDA flash attention "vec" (CUDA cores, per Q head) or "mma" (tensor cores, once per KV head,
  a quantized cache converted to f16 first) by the engine's rule, CPU flash attention by the engine's rate;
* per-layer kernel launch / thread-pool sync on each device, each GPU<->CPU and GPU<->GPU hand-off, and a fixed
  per-token cost (graph build unless the engine reuses the graph).

Prompt processing (one ubatch of ``-ub`` tokens): CPU-resident weights that the GPU can multiply are copied to the
GPU once per ubatch (ggml-backend offload of batches >= 32; only the routed experts with ik's
only_active_experts) and multiplied there at a fraction of the tensor-core peak; weights it cannot multiply (the
``-rtr`` repacks without CUDA kernels, or a CPU-only run) are multiplied on the CPU at the ISA's rate times
``n / (n + half)`` for ``n`` activation rows per weight row (so CPU PP grows with ``-ub`` for MoE experts) and the
thread count; flash attention over the depth on whichever device holds each layer.

Every constant is in ``data/speed_constants.toml`` with its source.  :func:`speed_terms` returns the model as a sum
of named terms (seconds) so that :mod:`planner.calibrate` can fit one multiplier per term group to a user's own
sweep-bench output; :func:`estimate_speed` sums them (with those multipliers, if given).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from planner.device_speed import (PP_GROUPS, TG_GROUPS, DeviceSpeed, _k, cpu_core_gflops, cpu_threads, device_speeds,
                                   effective_cores, engine_constants, hw_scales)
from planner.devices import is_gpu, is_remote
from planner.memory import CPU, Placement, RunConfig, constants, shape_bytes
from planner.quants import catalogue
from planner.roles import active_fraction, moves_with_ffn, tied_output
from planner.speed_basis import SpeedBasis, speed_basis
from planner.tensors import TensorInfo, TensorMap

if TYPE_CHECKING:
    from planner.hardware import Hardware


@dataclass(frozen=True, slots=True)
class SpeedTerms:
    """The model at one depth as named terms: TG seconds per token and PP seconds per ubatch, by group."""

    depth: int
    ubatch: int
    tg: dict[str, float]
    pp: dict[str, float]

    def tg_time(self, scales: Mapping[str, float] | None = None) -> float:
        s = scales or {}
        return sum(v * s.get(k, 1.0) for k, v in self.tg.items())

    def pp_time(self, scales: Mapping[str, float] | None = None) -> float:
        s = scales or {}
        return sum(v * s.get(k, 1.0) for k, v in self.pp.items())


@dataclass(frozen=True, slots=True)
class SpeedEstimate:
    tg_tps: float               # token generation at depth 0
    tg_tps_ctx: float           # token generation at the full context
    pp_tps: float               # prompt processing (one ubatch) at depth 0
    pp_tps_ctx: float           # prompt processing at the full context
    tg_ms_by_device: dict[str, float]
    handoffs_per_token: int
    assumptions: tuple[str, ...]
    label: str = "estimate"
    points: tuple[tuple[int, float, float], ...] = field(default=())    # (depth, TG tok/s, PP tok/s)
    basis: SpeedBasis | None = None
    terms: tuple[SpeedTerms, ...] = field(default=(), metadata={"json": False})

    def tg_at(self, depth: int) -> float:
        return next(tg for d, tg, _ in self.points if d == depth)

    def pp_at(self, depth: int) -> float:
        return next(pp for d, _, pp in self.points if d == depth)


# ----------------------------------------------------------------------------- model pieces

def _path_order(tmap: TensorMap) -> tuple[int | str, ...]:
    """One token's path through the loaded layers, placement aside: per layer its index (the attention's device
    is the layer's), then the name of each FFN matrix, in map order; the output last."""
    by_layer: dict[int, list[TensorInfo]] = {}
    for t in tmap.tensors:
        if t.layer is not None and t.n_dims >= 2:
            by_layer.setdefault(t.layer, []).append(t)
    seq: list[int | str] = []
    for il in range(tmap.params.n_loaded_layers):
        seq.append(il)
        seq.extend(t.name for t in by_layer.get(il, []) if moves_with_ffn(t.role))
    seq.append("output.weight")
    return tuple(seq)


def _path(tmap: TensorMap, placement: Placement) -> list[str]:
    """Devices along one token's path: per layer the attention device, then each FFN tensor's device."""
    layer_device = placement.layer_device
    n = len(layer_device)
    tied = tmap.derived(tied_output) is not None

    def device_of(name: str) -> str:
        return placement.logits_device(True) if tied and name == TIED_OUTPUT else placement.device_of(name)
    return [(layer_device[x] if x < n else CPU) if isinstance(x, int) else device_of(x)
            for x in tmap.derived(_path_order)]


def handoffs(tmap: TensorMap, placement: Placement) -> int:
    """Device changes along one token's path through the layers (attention, then FFN, per layer)."""
    seq = _path(tmap, placement)
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b)


def handoff_kinds(tmap: TensorMap, placement: Placement) -> tuple[int, int]:
    """(GPU<->CPU, GPU<->GPU) device changes along one token's path."""
    seq = _path(tmap, placement)
    cpu_gpu = sum(1 for a, b in zip(seq, seq[1:]) if a != b and CPU in (a, b))
    gpu_gpu = sum(1 for a, b in zip(seq, seq[1:]) if a != b and CPU not in (a, b))
    return cpu_gpu, gpu_gpu


def rtr_type(type_name: str) -> str:
    """What ``-rtr`` turns a CPU-resident tensor's type into (get_repack_info, data/speed_constants.toml)."""
    return constants()["rtr_repack"].get(type_name, type_name)


def gpu_fa_kernel(engine: str, cfg: RunConfig, n_gqa: int, cc: float | None) -> str:
    """"mma" or "vec": the CUDA flash-attention kernel an engine runs for one token (rule in the TOML)."""
    rule = engine_constants(engine)["fa_tg"]
    if rule == "vec" or n_gqa % 2:
        return "vec"
    if rule == "mma":
        return "mma"
    ada = constants()["gpu_arch"]["ada_cc"]
    f16 = cfg.type_k == "f16" and cfg.type_v == "f16"
    return "mma" if (f16 and (cc is None or cc < ada)) else "vec"


def _attn_dims(tmap: TensorMap) -> tuple[int, int, int]:
    """(Q heads, head size for QK, head size for V) of the attention as the kernels see it."""
    p = tmap.params
    if p.is_mla:
        # MLA with the compressed cache: each head attends over kv_lora_rank + n_rot (K) and kv_lora_rank (V)
        return p.n_head, p.kv_lora_rank + p.n_rot, p.kv_lora_rank
    return p.n_head, p.head_dim, (p.head_dim_v or p.head_dim)


# ----------------------------------------------------------------------------- the terms

_Row = tuple[str, int | None, tuple[int, ...], str, float, bool, bool, float, bool, int]


def _tensor_rows(tmap: TensorMap) -> tuple[_Row, ...]:
    """Per loaded tensor, what :func:`speed_terms` needs that placement and mix do not change: (name, layer,
    shape, stored type, share one token reads, 1-D, is a matmul, matmul FLOPs per token, routed expert,
    experts)."""
    n_used = max(1, tmap.params.n_expert_used or 1)
    rows: list[_Row] = []
    for t in tmap.tensors:
        if not tmap.is_loaded(t):
            continue
        frac = active_fraction(t, n_used)
        matmul = t.n_dims >= 2 and t.role != "token_embd"
        rows.append((t.name, t.layer, t.shape, t.dtype, frac, t.n_dims < 2, matmul,
                     2.0 * t.n_elements * frac if matmul else 0.0, t.is_expert, t.n_expert))
    embd = tmap.derived(tied_output)
    if embd is not None:
        # the output tied to token_embd: the logits multiply the whole matrix every token (the engines' duplicate
        # of token_embd on the output layer's device, Placement.logits_device); typed as token_embd
        rows.append((TIED_OUTPUT, None, embd.shape, embd.dtype, 1.0, False, True, 2.0 * embd.n_elements, False, 0))
    return tuple(rows)


TIED_OUTPUT = "output.weight"       # the speed rows' name for a tied output (no such tensor in the file)


def speed_terms(tmap: TensorMap, mix: Mapping[str, str], placement: Placement, hw: Hardware, cfg: RunConfig,
                depths: Iterable[int] = (0,), *, numa: str | None = None,
                threads_batch: int | None = None, speeds: Mapping[str, DeviceSpeed] | None = None,
                network: Callable[[int, int], float] | None = None) -> tuple[SpeedTerms, ...]:
    """The model's named terms at each depth (see the module docstring).

    On an RPC cluster (:mod:`planner.cluster_plan`) ``speeds`` holds every device, remote ones named
    ``host/device``: a remote device's weights are read at its own bandwidth (term ``weights <device>``, not
    calibrated), its layers' PP matmuls run there at its own rate (the RPC backend offloads nothing to the main
    host's GPU), and ``network(n_tokens, depth)`` adds the link time of one pass (term ``network``).
    """
    k = _k()
    eng = engine_constants(cfg.engine)
    p = tmap.params
    cat = catalogue()
    speeds = dict(speeds) if speeds is not None else device_speeds(hw, cfg, numa=numa, calibrated=False)
    gpus = [d for d in speeds if d != CPU and not is_remote(d)]
    remote_pp: dict[str, float] = {}         # per token, the matmul FLOPs a remote device runs in PP

    def cpu_like(d: str) -> bool:
        return d == CPU or (is_remote(d) and not is_gpu(d))
    ub = max(1, min(cfg.ubatch, cfg.batch))
    n_used = max(1, p.n_expert_used or 1)

    # per-token weight reads and per-token matmul FLOPs by device
    read = {d: 0.0 for d in speeds}
    flops_tok = {d: 0.0 for d in speeds}
    pcie_bytes = 0.0                         # CPU-resident weights the GPU multiplies in PP (copied per ubatch)
    pp_gpu_flops_tok = 0.0                   # per token, run on GPUs in PP (resident + offloaded)
    pp_gpu_expert_mats = 0                   # expert tensors multiplied on a GPU in PP (one matmul per expert each)
    pp_cpu_flop_rows: list[tuple[float, float]] = []   # (FLOPs per token, activation rows per weight row)
    moe_layers_on: dict[str, set[int]] = {d: set() for d in speeds}
    touched = 1.0 - (1.0 - n_used / p.n_expert) ** ub if p.n_expert else 1.0
    offload = bool(gpus) and ub >= k["offload_min_batch"]
    cpu_matmul_layers: set[int] = set()     # layers with a 2-D tensor on the CPU (their thread-pool syncs)
    device_of = placement.device_of
    tied = tmap.derived(tied_output) is not None
    for name, layer, shape, dtype, frac, flat, matmul, f, expert, n_expert in tmap.derived(_tensor_rows):
        dev = placement.logits_device(True) if tied and name == TIED_OUTPUT else device_of(name)
        if dev == CPU and layer is not None and not flat:
            cpu_matmul_layers.add(layer)
        if dev not in speeds:
            dev = CPU
        qtype = mix.get("token_embd.weight" if tied and name == TIED_OUTPUT else name, dtype)
        nbytes = shape_bytes(qtype, shape)
        read[dev] += nbytes * frac
        flops_tok[dev] += f
        if expert and layer is not None:
            moe_layers_on[dev].add(layer)
        if not matmul:
            continue
        rows = ub * n_used / n_expert if (expert and n_expert) else ub
        if is_remote(dev):
            remote_pp[dev] = remote_pp.get(dev, 0.0) + f
            continue
        if dev != CPU:
            pp_gpu_flops_tok += f
            pp_gpu_expert_mats += 1 if expert else 0
            continue
        if cfg.load == "rtr" and cfg.engine != "mainline":
            qtype = rtr_type(qtype)
        on_gpu = offload and layer is not None and cat.has(qtype) and cat.get(qtype).runs_on_cuda(cfg.qengine)
        if on_gpu and expert and eng["moe_offload"] == "active" and n_expert:
            # ik: offload an id-matmul only if ub x n_expert_used >= min_batch x n_expert
            on_gpu = ub * n_used >= k["offload_min_batch"] * n_expert
        if on_gpu:
            share = touched if (expert and eng["only_active_experts"]) else 1.0
            pcie_bytes += nbytes * share
            pp_gpu_flops_tok += f
            pp_gpu_expert_mats += 1 if expert else 0
        else:
            pp_cpu_flop_rows.append((f, rows))

    # KV cache per block as the engine allocates it (planner.kv_cache): attention blocks read their cached cells up
    # to the depth (a sliding window caps them), recurrent blocks their whole per-sequence state every token
    from planner.kv_cache import CacheConfig, layer_caches

    # one request's cache: with server slots (-np) a request reads its own sequence's cells and recurrent state
    # only, not the other slots' (whose memory planner.kv_cache charges)
    cache_ctx = max(cfg.ctx, max(depths, default=0) + 1, 256)
    attn_blocks: dict[str, list[tuple[float, int]]] = {}     # device -> [(bytes per cell, cells)]
    state_bytes: dict[str, float] = {}
    for c in layer_caches(p, CacheConfig.from_run(replace(cfg, ctx=cache_ctx, n_parallel=1, kv_unified=False))):
        dev = placement.layer_device[c.layer] if c.layer < len(placement.layer_device) else CPU
        dev = dev if dev in speeds else CPU
        state_bytes[dev] = state_bytes.get(dev, 0.0) + c.state_bytes
        if c.cells:
            attn_blocks.setdefault(dev, []).append(((c.k_bytes + c.v_bytes + c.index_bytes) / c.cells, c.cells))
    layers_on: dict[str, int] = {}
    for dev in placement.layer_device[:p.n_loaded_layers]:
        dev = dev if dev in speeds else CPU
        layers_on[dev] = layers_on.get(dev, 0) + 1

    def cells_read(d: str, depth: int) -> tuple[float, float]:
        """(KV bytes, attention cell-layers) one token reads on device d at this depth."""
        blocks = attn_blocks.get(d, ())
        return (state_bytes.get(d, 0.0) + sum(per * min(depth, n) for per, n in blocks),
                float(sum(min(depth, n) for _, n in blocks)))

    n_head, dk, dv = _attn_dims(tmap)
    attn_flops_cell = 2.0 * n_head * (dk + dv)             # QK^T and AV for one query against one cached cell
    n_gqa = max(1, p.n_head // max(1, p.n_head_kv)) if not p.is_mla else 2
    f16_row = catalogue().get("f16").row_bytes
    f16_cell_layer = (f16_row(p.n_embd_k_gqa) + f16_row(p.n_embd_v_gqa)) if not p.is_mla else \
        f16_row(p.kv_lora_rank + p.n_rot)
    quant_cache = not (cfg.type_k == "f16" and cfg.type_v == "f16")

    # fixed per-token costs
    cpu_gpu, gpu_gpu = handoff_kinds(tmap, placement)
    launch = 0.0
    for d in speeds:
        n_layers = layers_on.get(d, 0)
        if d == CPU:
            launch += len(cpu_matmul_layers) * k["cpu_layer_s"]
        elif cpu_like(d):
            launch += n_layers * k["cpu_layer_s"]
        else:
            launch += n_layers * k["gpu_layer_s"] + len(moe_layers_on[d]) * k["gpu_moe_layer_s"]
    handoff_t = cpu_gpu * k["handoff_s"] + gpu_gpu * k["gpu_handoff_s"]
    fixed = k["token_overhead_s"] * (0.25 if eng["graph_reuse"] else 1.0)

    threads = cpu_threads(hw, cfg)
    tb = threads_batch or cfg.threads_batch or threads
    cpu_cores_pp = effective_cores(hw, tb)
    cpu_peak = cpu_core_gflops(hw) * 1e9 * eng["cpu_gemm_scale"]
    cpu_fa_tg_rate = eng["cpu_fa_tg_gflops_per_core"] * 1e9 * effective_cores(hw, threads)

    out = []
    for depth in depths:
        tg = dict.fromkeys(TG_GROUPS, 0.0)
        for d, s in speeds.items():
            grp = f"weights {d}" if is_remote(d) else "cpu_weights" if d == CPU else "gpu_weights"
            tg[grp] = tg.get(grp, 0.0) + (read[d] / s.mem_bw_gbs if s.mem_bw_gbs else 0.0)
            kv_bytes, cell_layers = cells_read(d, depth)
            tg["kv_read"] += kv_bytes / s.mem_bw_gbs if s.mem_bw_gbs else 0.0
            if not cell_layers:
                continue
            if cpu_like(d):      # (a remote CPU at the main host's per-core rate: an assumption)
                tg["attn"] += attn_flops_cell * cell_layers / cpu_fa_tg_rate
            elif gpu_fa_kernel(cfg.engine, cfg, n_gqa, s.compute_capability) == "mma":
                if quant_cache:      # convert to f16: write the f16 copy and read it again
                    tg["attn"] += 2.0 * f16_cell_layer * cell_layers / s.mem_bw_gbs
            else:
                eff = k["gpu_fa_vec_efficiency_quant"] if quant_cache else k["gpu_fa_vec_efficiency_f16"]
                tg["attn"] += attn_flops_cell * cell_layers / (s.tensor_flops * eff)
        tg["launch"] = launch
        tg["handoff"] = handoff_t
        tg["fixed"] = fixed
        if network is not None:
            tg["network"] = network(1, depth)

        pp = dict.fromkeys(PP_GROUPS, 0.0)
        if gpus:
            h2d = speeds[gpus[0]].h2d_gbs
            pp["pcie"] = pcie_bytes / h2d if h2d else 0.0
            gpu_rate = sum(speeds[g].flops for g in gpus)
            pp["gpu_gemm"] = pp_gpu_flops_tok * ub / gpu_rate
            # the id-matmul walks the experts one by one (ids copied to the host first)
            pp["gpu_gemm"] += pp_gpu_expert_mats * min(p.n_expert, ub * n_used) * k["gpu_expert_matmul_s"]
        for d, f in remote_pp.items():
            pp["cpu_gemm" if cpu_like(d) else "gpu_gemm"] += f * ub / speeds[d].flops
        if network is not None:
            pp["network"] = network(ub, depth)
        for f, rows in pp_cpu_flop_rows:
            eff = rows / (rows + k["cpu_gemm_half_rows"])
            pp["cpu_gemm"] += f * ub / (cpu_peak * cpu_cores_pp * eff)
        # attention of the ubatch against depth + half of itself (causal), on the device holding each layer
        for d, blocks in attn_blocks.items():
            work = attn_flops_cell * ub * sum(min(depth, n) + ub / 2.0 for _, n in blocks)
            if cpu_like(d):
                pp["attn_pp"] += work / (cpu_peak * cpu_cores_pp * eng["cpu_fa_pp_scale"])
            else:
                pp["attn_pp"] += work / (speeds[d].tensor_flops * k["gpu_fa_pp_efficiency"])
        pp["pp_fixed"] = handoff_t + launch
        out.append(SpeedTerms(depth, ub, tg, pp))
    return tuple(out)


def full_depth(cfg: RunConfig) -> int:
    """The deepest context one request reaches: ``-c``, or with server slots one slot's share
    (:attr:`planner.kv_cache.CacheConfig.slot_ctx`)."""
    from planner.kv_cache import CacheConfig

    return cfg.ctx if cfg.n_parallel <= 1 else CacheConfig.from_run(cfg).slot_ctx


def estimate_speed(tmap: TensorMap, mix: Mapping[str, str], placement: Placement, hw: Hardware, cfg: RunConfig, *,
                   depths: Sequence[int] | None = None, scales: Mapping[str, float] | None = None,
                   constants: Mapping[str, float] | None = None, numa: str | None = None,
                   threads_batch: int | None = None, label: str = "estimate",
                   speeds: Mapping[str, DeviceSpeed] | None = None,
                   network: Callable[[int, int], float] | None = None,
                   notes: Sequence[str] = ()) -> SpeedEstimate:
    """Predicted TG and PP (labelled estimates) for a mix and placement on a machine.

    ``depths``: the KV depths to evaluate (default 0 and the full context); ``scales``: per-term-group multipliers
    (a calibration, :mod:`planner.calibrate`); ``constants`` is accepted for API symmetry and must be None.
    """
    if constants is not None:
        raise ValueError("constants overrides go through scales")
    full = full_depth(cfg)
    depths = tuple(depths) if depths is not None else (0, full)
    if 0 not in depths:
        depths = (0,) + depths
    if full not in depths:
        depths = depths + (full,)
    numa = numa if numa is not None else cfg.numa
    threads_batch = threads_batch if threads_batch is not None else cfg.threads_batch
    terms = speed_terms(tmap, mix, placement, hw, cfg, depths, numa=numa, threads_batch=threads_batch,
                        speeds=speeds, network=network)
    k = _k()
    if scales is None:
        scales = hw_scales(hw) or None
    speeds = dict(speeds) if speeds is not None else device_speeds(hw, cfg, numa=numa, calibrated=False)
    ub = terms[0].ubatch
    points = tuple((t.depth, 1.0 / t.tg_time(scales), ub / t.pp_time(scales)) for t in terms)
    by_depth = {d: (tg, pp) for d, tg, pp in points}
    t0 = terms[0]
    gpus = [d for d in speeds if d != CPU and not is_remote(d)]
    per_dev: dict[str, float] = {}
    # weights part of TG per device (ms), for the plan's explanation
    for d in speeds:
        if is_remote(d):
            per_dev[d] = t0.tg.get(f"weights {d}", 0.0) * 1e3
            continue
        grp = "cpu_weights" if d == CPU else "gpu_weights"
        share = 1.0 if d == CPU else (1.0 / max(1, len(gpus)))
        per_dev[d] = t0.tg[grp] * share * (scales or {}).get(grp, 1.0) * 1e3
    n_cpu_gpu, n_gpu_gpu = handoff_kinds(tmap, placement)
    threads = cpu_threads(hw, cfg)
    assumptions = (
        f"CPU bandwidth {hw.ram_bw_gbs:.0f} GB/s x {k['cpu_bw_efficiency']}"
        + (f" ({speeds[CPU].mem_bw_gbs / 1e9:.0f} GB/s effective with {threads} threads)"),
        *(f"{g}: {speeds[g].mem_bw_gbs / 1e9:.0f} GB/s effective, PCIe {speeds[g].h2d_gbs / 1e9:.1f} GB/s effective"
          for g in gpus),
        f"{threads} CPU threads",
        f"{n_cpu_gpu} GPU<->CPU hand-offs per token at {k['handoff_s'] * 1e6:.0f} us"
        + (f", {n_gpu_gpu} GPU<->GPU at {k['gpu_handoff_s'] * 1e6:.0f} us" if n_gpu_gpu else ""),
        "expert tensors read by n_expert_used/n_expert per token",
        f"attention at depth: engine {cfg.engine}, KV {cfg.type_k}/{cfg.type_v}",
        f"PP: CPU-resident weights the GPU can multiply copied to it once per ubatch of {ub}" if gpus
        else f"PP on the CPU, ubatch {ub}",
        *(("calibrated multipliers: " + ", ".join(f"{g} x{v:.2f}" for g, v in scales.items()),) if scales else ()),
        *(f"{d}: {speeds[d].mem_bw_gbs / 1e9:.0f} GB/s effective on its host, its layers computed there" for d in speeds
          if is_remote(d)),
        *((f"one request at a time: {cfg.n_parallel} slots of {full} tokens (full context = one slot's); concurrent "
           "requests share the devices, not modelled",) if cfg.n_parallel > 1 else ()),
        *notes,
    )
    return SpeedEstimate(
        tg_tps=by_depth[0][0], tg_tps_ctx=by_depth[full][0], pp_tps=by_depth[0][1], pp_tps_ctx=by_depth[full][1],
        tg_ms_by_device=per_dev, handoffs_per_token=n_cpu_gpu + n_gpu_gpu, assumptions=assumptions, label=label,
        points=points, basis=speed_basis(hw), terms=terms)


def linear_tg_costs(tmap: TensorMap, hw: Hardware, cfg: RunConfig, layer_device: Sequence[str]) -> tuple[float, float]:
    """For the planner's linear model of TG time: (seconds per token that do not depend on where the FFN tensors
    go, with every layer's FFN on its layer's device; seconds added per layer whose routed experts move from a GPU
    to the CPU).  Same constants as :func:`speed_terms` (launch/sync per layer, fixed per-token cost)."""
    k = _k()
    eng = engine_constants(cfg.engine)
    moe = any(t.is_expert for t in tmap.tensors)
    fixed = k["token_overhead_s"] * (0.25 if eng["graph_reuse"] else 1.0)
    for dev in layer_device[:tmap.params.n_loaded_layers]:
        if dev == CPU or (is_remote(dev) and not is_gpu(dev)):
            fixed += k["cpu_layer_s"]
        else:
            fixed += k["gpu_layer_s"] + (k["gpu_moe_layer_s"] if moe else 0.0)
    move = (k["cpu_layer_s"] - k["gpu_moe_layer_s"]) if moe else k["cpu_layer_s"]
    return fixed, move


def linear_pp_fixed(tmap: TensorMap, hw: Hardware, cfg: RunConfig, layer_device: Sequence[str],
                    speeds: Mapping[str, DeviceSpeed] | None = None) -> float:
    """For the planner's linear model of PP time: seconds per ubatch (at depth 0) that do not depend on where the
    FFN tensors go: the prompt's own attention on each layer's device and, when a GPU multiplies the experts (all
    of them, resident or copied), the id-matmul's per-expert launches.  Same constants as :func:`speed_terms`."""
    k = _k()
    p = tmap.params
    speeds = dict(speeds) if speeds is not None else device_speeds(hw, cfg)
    ub = max(1, min(cfg.ubatch, cfg.batch))
    gpus = [d for d in speeds if d != CPU and not is_remote(d)]
    n_head, dk, dv = _attn_dims(tmap)
    work_layer = 2.0 * n_head * (dk + dv) * (ub / 2.0) * ub
    eng = engine_constants(cfg.engine)
    cpu_rate = cpu_core_gflops(hw) * 1e9 * effective_cores(hw, cpu_threads(hw, cfg)) * eng["cpu_gemm_scale"]
    out = 0.0
    for dev in layer_device[:p.n_loaded_layers]:
        out += work_layer / (speeds[dev].tensor_flops * k["gpu_fa_pp_efficiency"] if is_gpu(dev)
                             else cpu_rate * eng["cpu_fa_pp_scale"])
    if gpus and ub >= k["offload_min_batch"] and p.n_expert:
        n_mats = sum(1 for t in tmap.tensors if t.is_expert and tmap.is_loaded(t))
        out += n_mats * min(p.n_expert, ub * max(1, p.n_expert_used)) * k["gpu_expert_matmul_s"]
    return out
