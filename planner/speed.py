"""Speed model (an ESTIMATE): token generation and prompt processing in tokens/s.

Token generation is memory-bound: every token reads the dense tensors fully, the routed expert
tensors by ``n_expert_used / n_expert`` and the KV cache up to the current depth, each over its
device's effective bandwidth; compute bound is checked too.  Prompt processing, for batches of at
least ``offload_min_batch`` tokens, copies CPU-resident weights to the GPU over PCIe once per ubatch
(why ``-ub 2048`` multiplies PP on hybrid rigs) and runs the matmuls there.  All constants are in
``data/speed_constants.toml`` with their sources; the same constants serve every rig.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from planner.devices import is_remote
from planner.memory import CPU, Placement, RunConfig, constants, kv_bytes_per_layer, mix_bytes
from planner.roles import active_fraction, moves_with_ffn
from planner.tensors import TensorInfo, TensorMap


@dataclass(frozen=True, slots=True)
class DeviceSpeed:
    """What the speed model needs to know about one device."""

    name: str
    mem_bw_gbs: float
    flops: float          # effective FLOP/s for matmuls
    h2d_gbs: float = 0.0  # host->device, GPUs only


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


def device_speeds(hw, cfg: RunConfig) -> dict[str, DeviceSpeed]:
    """Effective bandwidth and compute of each device of a Hardware description."""
    k = constants()["speed"]
    tflops = constants()["gpu_tflops"]
    out: dict[str, DeviceSpeed] = {}
    for g in hw.gpus:
        peak = next((v for key, v in tflops.items() if key != "default" and key.lower() in g.name.lower()),
                    tflops["default"])
        out[f"CUDA{g.index}"] = DeviceSpeed(
            f"CUDA{g.index}", g.mem_bw_gbs * 1e9 * k["gpu_bw_efficiency"],
            peak * 1e12 * k["gpu_flops_efficiency"], g.h2d_gbs * 1e9)   # GPU.h2d_gbs is already effective
    flags = set(hw.cpu_flags)
    per_core = (k["cpu_gflops_per_core_avx512"] if "avx512f" in flags else
                k["cpu_gflops_per_core_avx2"] if "avx2" in flags else k["cpu_gflops_per_core_other"])
    threads = cfg.threads or hw.physical_cores
    out[CPU] = DeviceSpeed(CPU, hw.ram_bw_gbs * 1e9 * k["cpu_bw_efficiency"], per_core * 1e9 * threads)
    return out


def handoffs(tmap: TensorMap, placement: Placement) -> int:
    """Device changes along one token's path through the layers (attention, then FFN, per layer)."""
    seq: list[str] = []
    by_layer: dict[int, list[TensorInfo]] = {}
    for t in tmap.tensors:
        if t.layer is not None and t.n_dims >= 2:
            by_layer.setdefault(t.layer, []).append(t)
    for il in range(tmap.params.n_loaded_layers):
        seq.append(placement.layer_device[il] if il < len(placement.layer_device) else CPU)
        for t in by_layer.get(il, []):
            if moves_with_ffn(t.role):
                seq.append(placement.device_of(t.name))
    seq.append(placement.device_of("output.weight"))
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b)


def estimate_speed(tmap: TensorMap, mix: Mapping[str, str], placement: Placement, hw,
                   cfg: RunConfig, *, speeds: Mapping[str, DeviceSpeed] | None = None,
                   network=None) -> SpeedEstimate:
    """Predicted TG and PP (labelled estimates) for a mix and placement on a machine.

    On an RPC cluster, ``speeds`` holds every device (remote ones named ``host/device``) and ``network`` (a
    :class:`planner.network.NetworkCost`) adds the link terms per token and per ubatch; a remote device
    computes its own layers in PP (the RPC backend offloads nothing to the main host's GPU).
    """
    k = constants()["speed"]
    p = tmap.params
    speeds = dict(speeds) if speeds is not None else device_speeds(hw, cfg)
    sizes = mix_bytes(tmap, mix)
    read: dict[str, float] = {d: 0.0 for d in speeds}
    flops: dict[str, float] = {d: 0.0 for d in speeds}
    cpu_layer_bytes = 0      # CPU-resident layer weights streamed to the GPU per ubatch in PP
    cpu_layer_flops = 0.0
    gpu_flops_tok = 0.0
    for t in tmap.tensors:
        if not tmap.is_loaded(t):
            continue
        dev = placement.device_of(t.name)
        if dev not in speeds:
            dev = CPU
        frac = active_fraction(t, p.n_expert_used)
        read[dev] += sizes[t.name] * frac
        f = 2.0 * t.n_elements * frac if t.n_dims >= 2 and t.role != "token_embd" else 0.0
        flops[dev] += f
        if dev == CPU and t.layer is not None:
            cpu_layer_bytes += sizes[t.name]
            cpu_layer_flops += f
        elif dev != CPU and not is_remote(dev):
            gpu_flops_tok += f
    kv_cell = kv_bytes_per_layer(p, cfg) / cfg.kv_size
    kv_layers: dict[str, int] = {}
    for dev in placement.layer_device[:p.n_loaded_layers]:
        kv_layers[dev] = kv_layers.get(dev, 0) + 1
    n_handoff = handoffs(tmap, placement)
    fixed = n_handoff * k["handoff_s"] + k["token_overhead_s"]

    def tg_time(depth: int) -> tuple[float, dict[str, float]]:
        per_dev = {}
        for d, s in speeds.items():
            b = read[d] + kv_cell * depth * kv_layers.get(d, 0)
            t_mem = b / s.mem_bw_gbs if s.mem_bw_gbs else 0.0
            t_cmp = flops[d] / s.flops if s.flops else 0.0
            per_dev[d] = max(t_mem, t_cmp)
        return sum(per_dev.values()) + fixed, per_dev

    t0, per_dev0 = tg_time(0)
    t_ctx, _ = tg_time(cfg.ctx)
    if network is not None:
        t0 += network.tg_s
        t_ctx += network.tg_s_ctx

    gpus = [d for d in speeds if d != CPU and not is_remote(d)]
    remotes = [d for d in speeds if is_remote(d)]
    ub = min(cfg.ubatch, cfg.batch)
    attn_flops_per_depth = 4.0 * p.n_head * p.head_dim  # QK^T and AV per token per cached token per layer

    def pp_time(depth: int) -> float:
        attn = {d: attn_flops_per_depth * depth * kv_layers.get(d, 0) * ub for d in speeds}
        remote_t = sum((flops[d] * ub + attn[d]) / speeds[d].flops for d in remotes)
        if network is not None:
            remote_t += network.pp_s_ctx if depth else network.pp_s
        if gpus and ub >= k["offload_min_batch"]:
            main = speeds[gpus[0]]
            copy = cpu_layer_bytes / main.h2d_gbs if main.h2d_gbs else 0.0
            gpu_work = (gpu_flops_tok + cpu_layer_flops) * ub + sum(attn[g] for g in gpus) + attn.get(CPU, 0)
            gpu_t = gpu_work / sum(speeds[g].flops for g in gpus)
            return copy + gpu_t + remote_t
        cpu_t = (flops[CPU] * ub + attn.get(CPU, 0)) / speeds[CPU].flops
        gpu_t = sum((flops[g] * ub + attn[g]) / speeds[g].flops for g in gpus)
        return cpu_t + gpu_t + remote_t

    assumptions = (
        f"CPU bandwidth {hw.ram_bw_gbs:.0f} GB/s x {k['cpu_bw_efficiency']}",
        *(f"{g}: {speeds[g].mem_bw_gbs / 1e9:.0f} GB/s effective, PCIe {speeds[g].h2d_gbs / 1e9:.1f} GB/s effective"
          for g in gpus),
        f"{cfg.threads or hw.physical_cores} CPU threads",
        f"{n_handoff} GPU<->CPU hand-offs per token at {k['handoff_s'] * 1e6:.0f} us",
        "expert tensors read by n_expert_used/n_expert per token",
        f"PP: CPU-resident weights copied to the GPU once per ubatch of {ub}" if gpus else "PP on CPU",
        *(f"{d}: {speeds[d].mem_bw_gbs / 1e9:.0f} GB/s effective, its layers computed there" for d in remotes),
        *(network.assumptions if network is not None else ()),
    )
    return SpeedEstimate(
        tg_tps=1.0 / t0, tg_tps_ctx=1.0 / t_ctx,
        pp_tps=ub / pp_time(0), pp_tps_ctx=ub / pp_time(cfg.ctx),
        tg_ms_by_device={d: v * 1e3 for d, v in per_dev0.items()},
        handoffs_per_token=n_handoff, assumptions=assumptions)
