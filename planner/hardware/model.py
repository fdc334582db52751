"""The hardware data model: :class:`Hardware`, :class:`GPU`, :class:`NumaNode` and where each figure came from."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from planner.units import GIB

if TYPE_CHECKING:
    from planner.calibrate import MachineCalibration

SOURCES = ("probed", "profile", "user", "default")


# CPU features the CPU kernels of llama.cpp / ik_llama.cpp dispatch on (ggml-cpu feature checks), in report order.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimddp")


_FLAG_ALIASES = {"asimd": "neon"}  # aarch64 /proc/cpuinfo calls NEON "asimd"


THP_ENABLED_MODES = ("always", "madvise", "never")


THP_DEFRAG_MODES = ("always", "defer", "defer+madvise", "madvise", "never")


# --- the data model ----------------------------------------------------------------------------------------------

class Sources(dict):
    """Read-only, hashable mapping figure → source (a dict so ``--json`` writes it as an object)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Hardware.sources is read-only; build a new Hardware with dataclasses.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Sources, (dict(self),))


@dataclass(frozen=True, slots=True)
class NumaNode:
    id: int
    mem_total_bytes: int
    cpus: str  # the kernel's cpulist, e.g. "0-15,32-47"


@dataclass(frozen=True, slots=True)
class GPU:
    index: int
    name: str
    total_bytes: int  # device memory
    free_bytes: int | None  # None when not probed
    mem_bw_gbs: float  # GB/s (1e9), device memory bandwidth
    h2d_gbs: float  # host→device GB/s: PCIe rate * h2d_efficiency (estimate)
    compute_capability: str | None
    pcie_gen: int | None
    pcie_width: int | None
    source: str  # "probed" | "profile" | "user" | "default": where total_bytes (the card) came from


@dataclass(frozen=True, slots=True)
class Hardware:
    """One machine: GPUs, RAM, CPU, kernel memory settings; ``sources`` says where each figure came from."""

    gpus: tuple[GPU, ...]
    ram_total_bytes: int
    ram_available_bytes: int | None
    ram_limit_bytes: int | None  # cgroup memory.max / memory.limit_in_bytes; None = no limit
    cpu_model: str
    physical_cores: int
    logical_cores: int
    cpu_quota_cores: float | None  # cgroup cpu.max / cfs quota; None = no quota
    cpu_flags: tuple[str, ...]  # subset of CPU_FLAGS
    ram_bw_gbs: float  # channels * MT/s * 8 B / 1000 unless given
    ram_channels: int | None
    ram_mts: int | None
    numa_nodes: tuple[NumaNode, ...]
    thp_enabled: str | None
    thp_defrag: str | None
    hugepages_free: int | None
    swap_total_bytes: int | None
    disk_free_bytes: int | None  # free space on the disk holding the model, when asked
    sources: Sources  # figure → source; per-GPU keys look like "gpus[0].mem_bw_gbs"
    notes: tuple[str, ...]  # why something is missing or assumed
    name: str  # profile name, "probed" or "manual"
    # speed-model multipliers fitted on this machine (`gguf-planner calibrate --save`; a profile's [calibration])
    calibration: MachineCalibration | None = None
    # Derived once at construction (and part of --json):
    usable_ram_bytes: int = field(init=False)  # min(total, cgroup limit)
    threads_default: int = field(init=False)  # physical cores, capped by the cgroup CPU quota

    def __post_init__(self) -> None:
        usable = self.ram_total_bytes
        if self.ram_limit_bytes is not None:
            usable = min(usable, self.ram_limit_bytes)
        threads = max(1, self.physical_cores)
        if self.cpu_quota_cores is not None:
            threads = max(1, min(threads, math.floor(self.cpu_quota_cores)))
        object.__setattr__(self, "usable_ram_bytes", usable)
        object.__setattr__(self, "threads_default", threads)

    @property
    def vram_total_bytes(self) -> int:
        return sum(g.total_bytes for g in self.gpus)

    def source_of(self, name: str) -> str:
        """Where a figure came from.  ``name`` is a field name or ``"gpus[i].<gpu field>"``.

        Raises:
            KeyError: no such figure.
        """
        if name in self.sources:
            return self.sources[name]
        m = re.fullmatch(r"gpus\[(\d+)\]\.(\w+)", name)
        if m and int(m.group(1)) < len(self.gpus) and m.group(2) in _GPU_FIELDS:
            return self.gpus[int(m.group(1))].source
        raise KeyError(name)


_HW_FIELDS = tuple(f.name for f in dataclasses.fields(Hardware)
                   if f.init and f.name not in ("sources", "notes", "name", "calibration"))


_GPU_FIELDS = tuple(f.name for f in dataclasses.fields(GPU))


_GPU_SOURCED = ("total_bytes", "free_bytes", "mem_bw_gbs", "h2d_gbs")  # per-GPU figures with their own source


def _sources(mapping: Mapping[str, str]) -> Sources:
    """Stable order: Hardware field order, then per-GPU keys by GPU and field."""
    def rank(key: str) -> tuple[int, int, int]:
        m = re.fullmatch(r"gpus\[(\d+)\]\.(\w+)", key)
        if m:
            sub = m.group(2)
            return (1, int(m.group(1)), _GPU_FIELDS.index(sub) if sub in _GPU_FIELDS else 99)
        return (0, _HW_FIELDS.index(key) if key in _HW_FIELDS else 99, 0)
    for key, src in mapping.items():
        assert src in SOURCES, (key, src)
    return Sources(sorted(mapping.items(), key=lambda kv: (rank(kv[0]), kv[0])))


def _gpu_sources(i: int, src: str, **per_field: str) -> dict[str, str]:
    return {f"gpus[{i}].{f}": per_field.get(f, src) for f in _GPU_SOURCED}


def _relabel(hw: Hardware, source: str, *, name: str | None = None, notes: Iterable[str] = ()) -> Hardware:
    """The same figures, every one attributed to ``source``."""
    gpus = tuple(replace(g, source=source) for g in hw.gpus)
    return replace(hw, gpus=gpus, sources=_sources({k: source for k in hw.sources}),
                   name=hw.name if name is None else name, notes=hw.notes + tuple(notes))


def gib_to_bytes(gib: float) -> int:
    return int(round(gib * GIB))


def _exc(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
