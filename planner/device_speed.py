"""The speed model's devices: each device's effective bandwidth and compute from a Hardware description, the
machine's calibration multipliers, and the speed constants (``data/speed_constants.toml``, each with its source)
that :mod:`planner.speed` builds its terms from.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.memory import CPU, RunConfig, constants

if TYPE_CHECKING:
    from planner.hardware import Hardware

# Term groups: the quantities calibrate can fit, one multiplier each (time = Σ multiplier x nominal term).
TG_GROUPS = ("cpu_weights", "gpu_weights", "kv_read", "attn", "launch", "handoff", "fixed")
PP_GROUPS = ("pcie", "gpu_gemm", "cpu_gemm", "attn_pp", "pp_fixed")
GROUPS = TG_GROUPS + PP_GROUPS


@dataclass(frozen=True, slots=True)
class DeviceSpeed:
    """What the speed model needs to know about one device (rates in bytes/s and FLOP/s)."""

    name: str
    mem_bw_gbs: float     # effective bytes/s for TG reads (the name is historical: the value is in B/s)
    flops: float          # effective FLOP/s for prompt-processing matmuls at full reuse
    h2d_gbs: float = 0.0  # host->device bytes/s, GPUs only (effective: PCIe rate x pinned-copy efficiency)
    tensor_flops: float = 0.0   # GPU dense FP16 tensor peak (FLOP/s)
    compute_capability: float | None = None


@functools.cache
def _k() -> dict:
    return constants()["speed"]


def engine_constants(engine: str) -> dict:
    """The per-engine speed constants (``[engine.<profile>]`` in speed_constants.toml)."""
    table = constants()["engine"]
    return table.get(engine, table["ik"])


def gpu_tensor_tflops(name: str) -> float:
    """Dense FP16 tensor peak of a GPU by name (longest matching key of ``[gpu_tflops]``)."""
    tflops = constants()["gpu_tflops"]
    hits = [k for k in tflops if k != "default" and k.lower() in name.lower()]
    return tflops[max(hits, key=len)] if hits else tflops["default"]


def cpu_core_gflops(hw: Hardware) -> float:
    """CPU matmul peak per physical core for the machine's best ISA (GFLOP/s)."""
    k = _k()
    flags = set(getattr(hw, "cpu_flags", ()))
    if "avx512f" in flags:
        return k["cpu_gflops_per_core_avx512"]
    if "avx2" in flags:
        return k["cpu_gflops_per_core_avx2"]
    return k["cpu_gflops_per_core_other"]


def effective_cores(hw: Hardware, threads: int) -> float:
    """Physical cores doing work for ``threads`` threads; oversubscribing physical cores (SMT) costs
    ``smt_oversubscribed_factor``."""
    phys = max(1, int(getattr(hw, "physical_cores", threads) or threads))
    if threads <= phys:
        return float(threads)
    return phys * _k()["smt_oversubscribed_factor"]


def numa_bandwidth_factor(hw: Hardware, numa: str | None) -> float:
    """Effective DRAM bandwidth as a fraction of the whole machine's peak under a ``--numa`` mode."""
    nodes = len(getattr(hw, "numa_nodes", ()) or ()) or 1
    if nodes <= 1:
        return 1.0
    k = _k()
    frac = {None: k["numa_default_node_fraction"], "distribute": k["numa_distribute_node_fraction"],
            "isolate": k["numa_isolate_node_fraction"], "numactl": k["numa_isolate_node_fraction"]}
    return min(1.0, frac.get(numa, k["numa_default_node_fraction"]) / nodes)


def cpu_threads(hw: Hardware, cfg: RunConfig) -> int:
    return int(cfg.threads or getattr(hw, "threads_default", 0) or hw.physical_cores)


def hw_scales(hw: Hardware) -> dict[str, float]:
    """The calibration multipliers a hardware description carries (``hw.calibration["multipliers"]``), or {}."""
    cal = getattr(hw, "calibration", None)
    if not cal:
        return {}
    mult = cal.get("multipliers", {}) if isinstance(cal, Mapping) else getattr(cal, "scales", {})
    return {g: float(v) for g, v in mult.items() if g in GROUPS and float(v) > 0}


def device_speeds(hw: Hardware, cfg: RunConfig, *, numa: str | None = None, calibrated: bool = True) -> dict[str, DeviceSpeed]:
    """Effective bandwidth and compute of each device of a Hardware description (with the machine's calibration
    applied to the rates, unless ``calibrated`` is false: the nominal rates the calibration multiplies)."""
    m = hw_scales(hw) if calibrated else {}
    numa = numa if numa is not None else getattr(cfg, "numa", None)
    k = _k()
    out: dict[str, DeviceSpeed] = {}
    for g in hw.gpus:
        peak = gpu_tensor_tflops(g.name) * 1e12
        cc = None
        try:
            cc = float(g.compute_capability) if g.compute_capability else None
        except ValueError:
            cc = None
        out[f"CUDA{g.index}"] = DeviceSpeed(
            f"CUDA{g.index}", g.mem_bw_gbs * 1e9 * k["gpu_bw_efficiency"] / m.get("gpu_weights", 1.0),
            peak * k["gpu_flops_efficiency"] / m.get("gpu_gemm", 1.0), g.h2d_gbs * 1e9 / m.get("pcie", 1.0), peak, cc)
    threads = cpu_threads(hw, cfg)
    cores = effective_cores(hw, threads)
    bw = hw.ram_bw_gbs * 1e9 * k["cpu_bw_efficiency"] * numa_bandwidth_factor(hw, numa)
    bw = min(bw, threads * k["cpu_bw_per_thread_gbs"] * 1e9)
    if threads > max(1, hw.physical_cores):
        bw *= k["smt_oversubscribed_factor"]
    if cfg.load == "mmap":
        bw *= k["cpu_bw_mmap_factor"]
    eng = engine_constants(cfg.engine)
    out[CPU] = DeviceSpeed(CPU, bw / m.get("cpu_weights", 1.0),
                           cpu_core_gflops(hw) * 1e9 * cores * eng["cpu_gemm_scale"] / m.get("cpu_gemm", 1.0))
    return out
