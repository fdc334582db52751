"""Hardware stage: probe this machine, load a profile, or take flags → one frozen :class:`Hardware`.

Three ways in, one dataclass out:

* :func:`probe` reads psutil, NVML (through ``pynvml``, imported lazily, only here), ``/proc`` and ``/sys``
  relative to a ``root`` so tests can fake the tree.  It never raises for missing hardware or failed reads;
  it leaves the figure ``None`` (or CPU-only) and says why in ``Hardware.notes``.
* :func:`load_profile` reads ``hwprofiles/*.toml`` (strictly validated; :func:`save_profile` writes the same
  format).
* :func:`resolve_hardware` applies ``--vram/--ram/--cores/--gpu/--ram-bw`` on top, user flag > profile > probe.

Every figure records where it came from: ``"probed"``, ``"profile"``, ``"user"`` or ``"default"`` (from the
default profile :data:`DEFAULT_PROFILE`; see :func:`resolve_hardware` for when).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from planner.errors import OutputExistsError, ProfileError, UsageError

GIB = 1 << 30

DEFAULT_PROFILE = "rtx3090ti-9950x-96g"
def _profiles_dir() -> Path:
    """hwprofiles/ beside the package (source checkout, editable install), else the copy a wheel installs
    under <prefix>/share/gguf-planner/hwprofiles (pyproject data-files)."""
    import sys

    here = Path(__file__).resolve().parents[1] / "hwprofiles"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "gguf-planner" / "hwprofiles"


PROFILES_DIR = _profiles_dir()
GPU_TABLE = Path(__file__).resolve().parent / "data" / "gpus.csv"

SOURCES = ("probed", "profile", "user", "default")

# PCIe per-lane signalling rate (GT/s) and line-code efficiency: 8b/10b for 1.x/2.x, 128b/130b for 3.0-5.0
# (PCI-SIG base specs), 6.0 FLIT mode carries 242 of 256 bytes.  Gen4 x16 → 31.5 GB/s on the wire.
PCIE_LANE: Mapping[int, tuple[float, float]] = {
    1: (2.5, 8 / 10), 2: (5.0, 8 / 10), 3: (8.0, 128 / 130), 4: (16.0, 128 / 130), 5: (32.0, 128 / 130),
    6: (64.0, 242 / 256),
}
PCIE_WIDTHS = (1, 2, 4, 8, 16, 32)
# Estimate: pinned cudaMemcpy host→device reaches about 80 % of the encoded link rate after TLP/DLLP overhead
# (CUDA bandwidthTest commonly reports ~25 GB/s on PCIe 4.0 x16 of 31.5).  An assumption, not a measurement.
H2D_EFFICIENCY = 0.8

# CPU features the CPU kernels of llama.cpp / ik_llama.cpp dispatch on (ggml-cpu feature checks), in report order.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimddp")
_FLAG_ALIASES = {"asimd": "neon"}  # aarch64 /proc/cpuinfo calls NEON "asimd"

THP_ENABLED_MODES = ("always", "madvise", "never")
THP_DEFRAG_MODES = ("always", "defer", "defer+madvise", "madvise", "never")

# cgroup v1 reports "no limit" as LONG_MAX rounded down to a page (9223372036854771712); anything this big is no limit.
_CGROUP_UNLIMITED = 1 << 60
# A spec-table row is trusted for a probed card only if its memory size is within this fraction of NVML's total
# (catches laptop parts and 8/16 GB twins that share a name).
_GPU_MEMORY_MATCH_TOLERANCE = 0.125


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
    h2d_gbs: float  # host→device GB/s: PCIe rate * H2D_EFFICIENCY (estimate)
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
                   if f.init and f.name not in ("sources", "notes", "name"))
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


def h2d_gbs(pcie_gen: int, pcie_width: int) -> float:
    """Estimated host→device GB/s for a PCIe link (encoded rate * :data:`H2D_EFFICIENCY`), to 0.01 GB/s."""
    gts, efficiency = PCIE_LANE[pcie_gen]
    return round(gts * efficiency / 8 * pcie_width * H2D_EFFICIENCY, 2)


def ram_bw_gbs(channels: int, mts: int) -> float:
    """Peak DRAM bandwidth in GB/s: 64-bit (8-byte) channels * MT/s."""
    return round(channels * mts * 8 / 1000, 3)


# --- the GPU spec table ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    memory_bytes: int
    mem_bw_gbs: float
    pcie_gen: int
    pcie_width: int
    source_url: str


_NAME_NOISE = {"nvidia", "geforce", "tesla", "quadro"}


def _name_words(name: str) -> tuple[str, ...]:
    words = re.split(r"[^0-9a-z+]+", name.lower())
    return tuple(w for w in words if w and w not in _NAME_NOISE)


@lru_cache(maxsize=1)
def gpu_table() -> tuple[GpuSpec, ...]:
    """The rows of ``planner/data/gpus.csv``."""
    lines = [ln for ln in GPU_TABLE.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    rows = []
    for rec in csv.DictReader(lines):
        rows.append(GpuSpec(name=rec["name"], memory_bytes=gib_to_bytes(float(rec["memory_gib"])),
                            mem_bw_gbs=float(rec["mem_bw_gbs"]), pcie_gen=int(rec["pcie_gen"]),
                            pcie_width=int(rec["pcie_width"]), source_url=rec["source_url"]))
    return tuple(rows)


def match_gpu(nvml_name: str, total_bytes: int | None = None) -> GpuSpec | None:
    """The spec row for a card as NVML names it: the row with the most words, all present in the name.

    With ``total_bytes``, a row whose memory differs by more than 12.5 % is rejected (laptop parts, twins).
    """
    words = set(_name_words(nvml_name))
    if "laptop" in words or "mobile" in words:
        return None
    best: GpuSpec | None = None
    best_len = 0
    for row in gpu_table():
        rw = _name_words(row.name)
        if set(rw) <= words and len(rw) > best_len:
            best, best_len = row, len(rw)
    if best is not None and total_bytes:
        if abs(total_bytes - best.memory_bytes) > _GPU_MEMORY_MATCH_TOLERANCE * best.memory_bytes:
            return None
    return best


def lookup_gpu(model: str) -> GpuSpec:
    """The spec row for a user-typed model ("RTX 4090", "3090ti", "a6000").

    Raises:
        UsageError: unknown or ambiguous model (with close matches).
    """
    table = gpu_table()
    compact = "".join(_name_words(model))
    if not compact:
        raise UsageError(f"--gpu {model!r} is empty")
    keyed = [(row, "".join(_name_words(row.name))) for row in table]
    exact = [row for row, key in keyed if key == compact]
    if exact:
        return exact[0]
    hits = [(len(key), row) for row, key in keyed if compact in key]
    if hits:
        shortest = min(n for n, _ in hits)
        best = [row for n, row in hits if n == shortest]
        if len(best) == 1:
            return best[0]
        raise UsageError(f"--gpu {model!r} is ambiguous",
                         hint="say which: " + ", ".join(repr(r.name) for r in best))
    import difflib
    close = difflib.get_close_matches(model, [row.name for row in table], n=3, cutoff=0.4)
    hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else \
        f"known models are listed in {GPU_TABLE.name}; for another card leave out --gpu and give --vram"
    raise UsageError(f"unknown GPU model {model!r}", hint=hint)


# --- the probe ---------------------------------------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _exc(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _bracketed(text: str | None) -> str | None:
    """The selected mode of a sysfs choice file: 'always [madvise] never' → 'madvise'."""
    if text is None:
        return None
    m = re.search(r"\[([^\]]+)\]", text)
    if m:
        return m.group(1)
    text = text.strip()
    return text or None


def _meminfo_kb(text: str | None, key: str) -> int | None:
    """A ``key: N kB`` (or bare count) value from /proc/meminfo or a node meminfo file."""
    if text is None:
        return None
    m = re.search(rf"(?m)\b{re.escape(key)}:\s*(\d+)", text)
    return int(m.group(1)) if m else None


def _cpuinfo(text: str | None) -> tuple[str | None, tuple[str, ...], int | None]:
    """(model name, relevant flags, physical core count) from /proc/cpuinfo (x86 or aarch64)."""
    if not text:
        return None, (), None
    model = None
    for key in ("model name", "Hardware", "Model", "cpu model"):
        m = re.search(rf"(?mi)^{re.escape(key)}\s*:\s*(.+?)\s*$", text)
        if m:
            model = m.group(1)
            break
    m = re.search(r"(?m)^(?:flags|Features)\s*:\s*(.*)$", text)
    raw = {_FLAG_ALIASES.get(f, f) for f in m.group(1).split()} if m else set()
    flags = tuple(f for f in CPU_FLAGS if f in raw)
    cores = set()
    for block in re.split(r"\n\s*\n", text):
        pid = re.search(r"(?m)^physical id\s*:\s*(\d+)", block)
        cid = re.search(r"(?m)^core id\s*:\s*(\d+)", block)
        if pid and cid:
            cores.add((pid.group(1), cid.group(1)))
    return model, flags, (len(cores) or None)


def _cgroup_paths(root: Path) -> tuple[str | None, dict[str, str]]:
    """(v2 path, {v1 controller: path}) of this process, from /proc/self/cgroup."""
    text = _read(root / "proc/self/cgroup") or ""
    v2 = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        for ctrl in parts[1].split(","):
            if ctrl:
                v1[ctrl] = parts[2]
    return v2, v1


def _walk_up(base: Path, rel: str | None) -> list[Path]:
    """The cgroup directory of this process and its ancestors up to ``base`` (which is always included)."""
    dirs = []
    if rel:
        cur = base / rel.strip("/")
        while cur != base and base in cur.parents:
            if cur.is_dir():
                dirs.append(cur)
            cur = cur.parent
    dirs.append(base)
    return dirs


def _cgroup_limits(root: Path) -> tuple[int | None, float | None]:
    """(memory limit bytes, CPU quota in cores) from cgroup v2 and v1 files; the tightest along the path wins."""
    cg = root / "sys/fs/cgroup"
    v2, v1 = _cgroup_paths(root)
    mems: list[int] = []
    cpus: list[float] = []
    for d in _walk_up(cg, v2):
        mem = (_read(d / "memory.max") or "").strip()
        if mem.isdigit():
            mems.append(int(mem))
        cpu = (_read(d / "cpu.max") or "").split()
        if len(cpu) == 2 and cpu[0].isdigit() and cpu[1].isdigit() and int(cpu[1]) > 0:
            cpus.append(int(cpu[0]) / int(cpu[1]))
    for d in _walk_up(cg / "memory", v1.get("memory")):
        mem = (_read(d / "memory.limit_in_bytes") or "").strip()
        if mem.isdigit():
            mems.append(int(mem))
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for d in _walk_up(cg / mount, v1.get("cpu")):
            quota = (_read(d / "cpu.cfs_quota_us") or "").strip()
            period = (_read(d / "cpu.cfs_period_us") or "").strip()
            if quota.isdigit() and period.isdigit() and int(period) > 0 and int(quota) > 0:
                cpus.append(int(quota) / int(period))
    mems = [m for m in mems if m < _CGROUP_UNLIMITED]
    return (min(mems) if mems else None), (round(min(cpus), 3) if cpus else None)


def _numa(root: Path) -> tuple[NumaNode, ...]:
    base = root / "sys/devices/system/node"
    nodes = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return ()
    for d in entries:
        m = re.fullmatch(r"node(\d+)", d.name)
        if not m:
            continue
        kb = _meminfo_kb(_read(d / "meminfo"), "MemTotal")
        cpus = (_read(d / "cpulist") or "").strip()
        nodes.append(NumaNode(id=int(m.group(1)), mem_total_bytes=(kb or 0) * 1024, cpus=cpus))
    return tuple(sorted(nodes, key=lambda n: n.id))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _probe_gpus(nvml: Any, notes: list[str], fallback: GPU | None) -> tuple[list[GPU], dict[str, str]]:
    """GPUs through the NVML seam (an object with the pynvml functions used below)."""
    if nvml is None:
        try:
            import pynvml as nvml  # the one place pynvml is imported
        except ImportError as exc:
            notes.append(f"NVML unavailable: {_exc(exc)}; planning for the CPU only")
            return [], {}
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - any NVML failure degrades to CPU-only
        notes.append(f"NVML unavailable: nvmlInit failed ({_exc(exc)}); planning for the CPU only")
        return [], {}
    gpus: list[GPU] = []
    sources: dict[str, str] = {}
    try:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:  # noqa: BLE001
            notes.append(f"NVML unavailable: nvmlDeviceGetCount failed ({_exc(exc)}); planning for the CPU only")
            return [], {}
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(nvml.nvmlDeviceGetName(handle))
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                total, free = int(mem.total), int(mem.free)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"GPU {index}: NVML failed ({_exc(exc)}); this GPU is left out")
                continue

            def optional(what: str, fn_name: str, *args: Any) -> Any:
                try:
                    return getattr(nvml, fn_name)(handle, *args)
                except Exception as exc:  # noqa: BLE001
                    notes.append(f"GPU {index}: {what} unavailable ({_exc(exc)})")
                    return None

            cc = optional("compute capability", "nvmlDeviceGetCudaComputeCapability")
            gen = optional("PCIe generation", "nvmlDeviceGetMaxPcieLinkGeneration")
            if gen is None:
                gen = optional("current PCIe generation", "nvmlDeviceGetCurrPcieLinkGeneration")
            width = optional("PCIe width", "nvmlDeviceGetMaxPcieLinkWidth")
            if width is None:
                width = optional("current PCIe width", "nvmlDeviceGetCurrPcieLinkWidth")
            gen = int(gen) if gen is not None and int(gen) in PCIE_LANE else None
            width = int(width) if width is not None and int(width) > 0 else None

            i = len(gpus)
            bw_src = h2d_src = "probed"
            spec = match_gpu(name, total)
            if spec is not None:
                bw = spec.mem_bw_gbs
                notes.append(f"GPU {index} memory bandwidth {bw:g} GB/s from the spec table row {spec.name!r}")
            else:
                bus = optional("memory bus width", "nvmlDeviceGetMemoryBusWidth")
                clock = optional("max memory clock", "nvmlDeviceGetMaxClockInfo", getattr(nvml, "NVML_CLOCK_MEM", 2))
                if bus and clock:
                    # GDDR/HBM move data on both clock edges of NVML's reported memory clock.
                    bw = round(int(bus) / 8 * int(clock) * 2 / 1000, 1)
                    notes.append(f"GPU {index} memory bandwidth {bw:g} GB/s from NVML bus width {int(bus)} bit x "
                                 f"{int(clock)} MHz x 2")
                elif fallback is not None:
                    bw, bw_src = fallback.mem_bw_gbs, "default"
                    notes.append(f"GPU {index} {name!r}: memory bandwidth unknown, assuming {bw:g} GB/s from the "
                                 f"default profile {DEFAULT_PROFILE}")
                else:
                    bw, bw_src = 0.0, "default"
            if gen is not None and width is not None:
                h2d = h2d_gbs(gen, width)
            else:
                h2d, h2d_src = (fallback.h2d_gbs if fallback else h2d_gbs(4, 16)), "default"
                notes.append(f"GPU {index}: PCIe link unknown, assuming {h2d:g} GB/s host→device")
            gpus.append(GPU(index=index, name=name, total_bytes=total, free_bytes=free, mem_bw_gbs=float(bw),
                            h2d_gbs=h2d, compute_capability=(f"{int(cc[0])}.{int(cc[1])}" if cc else None),
                            pcie_gen=gen, pcie_width=width, source="probed"))
            sources.update(_gpu_sources(i, "probed", mem_bw_gbs=bw_src, h2d_gbs=h2d_src))
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass
    if count and not gpus:
        notes.append("no GPU could be read through NVML; planning for the CPU only")
    return gpus, sources


def _disk_free(disk_path: str | os.PathLike[str], system: Any, notes: list[str]) -> int | None:
    """Free bytes on the disk that holds ``disk_path`` (or its nearest existing parent: a model not yet fetched)."""
    where = Path(disk_path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        return int(system.disk_usage(str(where)).free)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"free disk space at {disk_path} unavailable ({_exc(exc)})")
        return None


def probe(root: Path = Path("/"), nvml: Any = None, disk_path: str | os.PathLike[str] | None = None, *,
          system: Any = None) -> Hardware:
    """Describe this machine.

    ``root`` prefixes every /proc and /sys read (tests fake a tree); ``nvml`` is the NVML seam (default: the
    real ``pynvml``, imported here); ``system`` is the psutil seam (default: ``psutil``); ``disk_path`` is a
    file or folder whose disk's free space to report.  Never raises for missing hardware, drivers or
    unreadable files: the figure is left ``None`` (GPUs: none) and ``notes`` says why.  RAM bandwidth cannot be
    probed reliably and comes from the default profile (source ``"default"``).
    """
    root = Path(root)
    notes: list[str] = []
    src: dict[str, str] = {}
    default = default_profile()
    if system is None:
        import psutil as system

    # RAM, swap: psutil, with /proc/meminfo as the fallback.
    meminfo = _read(root / "proc/meminfo")
    ram_total: int = 0
    ram_avail: int | None = None
    try:
        vm = system.virtual_memory()
        ram_total, ram_avail = int(vm.total), int(vm.available)
    except Exception as exc:  # noqa: BLE001
        kb_total, kb_avail = _meminfo_kb(meminfo, "MemTotal"), _meminfo_kb(meminfo, "MemAvailable")
        ram_total = (kb_total or 0) * 1024
        ram_avail = kb_avail * 1024 if kb_avail is not None else None
        notes.append(f"psutil.virtual_memory failed ({_exc(exc)}); RAM from /proc/meminfo"
                     + ("" if kb_total else ": unreadable too, RAM unknown (0)"))
    try:
        swap: int | None = int(system.swap_memory().total)
    except Exception as exc:  # noqa: BLE001
        swap = None
        notes.append(f"swap size unavailable ({_exc(exc)})")
    hugepages_free = _meminfo_kb(meminfo, "HugePages_Free")

    # CPU: psutil for counts, /proc/cpuinfo for model, flags and (as a fallback) physical cores.
    model, flags, cpuinfo_cores = _cpuinfo(_read(root / "proc/cpuinfo"))
    if model is None:
        import platform
        model = f"unknown {platform.machine() or 'CPU'}"
        notes.append("CPU model not found in /proc/cpuinfo")
    try:
        logical = int(system.cpu_count(logical=True) or 0) or os.cpu_count() or 1
    except Exception:  # noqa: BLE001
        logical = os.cpu_count() or 1
    try:
        physical = int(system.cpu_count(logical=False) or 0)
    except Exception:  # noqa: BLE001
        physical = 0
    if not physical:
        physical = cpuinfo_cores or logical
        notes.append(f"physical core count not reported by psutil; using {physical}")
    mem_limit, cpu_quota = _cgroup_limits(root)

    disk_free = _disk_free(disk_path, system, notes) if disk_path is not None else None

    gpus, gpu_src = _probe_gpus(nvml, notes, default.gpus[0] if default.gpus else None)

    for key in _HW_FIELDS:
        src[key] = "probed"
    src.update(gpu_src)
    for key in ("ram_bw_gbs", "ram_channels", "ram_mts"):
        src[key] = "default"
    notes.append(f"RAM bandwidth cannot be probed: assuming {default.ram_bw_gbs:g} GB/s from the default profile "
                 f"{DEFAULT_PROFILE} (pass --ram-bw or --profile)")
    return Hardware(
        gpus=tuple(gpus), ram_total_bytes=ram_total, ram_available_bytes=ram_avail, ram_limit_bytes=mem_limit,
        cpu_model=model, physical_cores=physical, logical_cores=logical, cpu_quota_cores=cpu_quota,
        cpu_flags=flags, ram_bw_gbs=default.ram_bw_gbs, ram_channels=default.ram_channels,
        ram_mts=default.ram_mts, numa_nodes=_numa(root),
        thp_enabled=_bracketed(_read(root / "sys/kernel/mm/transparent_hugepage/enabled")),
        thp_defrag=_bracketed(_read(root / "sys/kernel/mm/transparent_hugepage/defrag")),
        hugepages_free=hugepages_free, swap_total_bytes=swap, disk_free_bytes=disk_free,
        sources=_sources(src), notes=tuple(notes), name="probed")


# --- profiles ----------------------------------------------------------------------------------------------------

# Schema: table → key → (type, required).  Types: int, num (int or float), str, [str] (list of strings).
_SCHEMA: Mapping[str, Mapping[str, tuple[str, bool]]] = {
    "profile": {"description": ("str", False)},
    "cpu": {"model": ("str", True), "physical_cores": ("int", True), "logical_cores": ("int", True),
            "flags": ("[str]", False), "quota_cores": ("num", False)},
    "memory": {"total_gib": ("num", True), "available_gib": ("num", False), "limit_gib": ("num", False),
               "swap_gib": ("num", False), "channels": ("int", False), "mts": ("int", False),
               "bandwidth_gbs": ("num", False), "hugepages_free": ("int", False)},
    "os": {"thp_enabled": ("str", False), "thp_defrag": ("str", False)},
    "numa": {"id": ("int", True), "memory_gib": ("num", True), "cpus": ("str", True)},
    "gpu": {"name": ("str", True), "memory_gib": ("num", True), "free_gib": ("num", False),
            "mem_bw_gbs": ("num", False), "pcie_gen": ("int", False), "pcie_width": ("int", False),
            "h2d_gbs": ("num", False), "compute_capability": ("str", False)},
}
_ARRAYS = ("numa", "gpu")  # [[numa]] and [[gpu]] are arrays of tables
_REQUIRED_TABLES = ("cpu", "memory")
_TYPE_WORDS = {"int": "an integer", "num": "a number", "str": "a string", "[str]": "a list of strings"}


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """One line of ``gguf-planner profiles``."""

    name: str
    description: str
    gpus: tuple[str, ...]
    vram_bytes: int
    ram_bytes: int
    ram_bw_gbs: float
    physical_cores: int
    logical_cores: int
    path: str


class _Checker:
    """Strict reads from one parsed TOML file; every complaint names the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def fail(self, key: str, message: str, hint: str = "") -> ProfileError:
        return ProfileError(message, path=self.path, key=key, hint=hint)

    def table(self, where: str, data: Any, schema: Mapping[str, tuple[str, bool]]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, "must be a table")
        for key in data:
            if key not in schema:
                raise self.fail(f"{where}.{key}", "unknown key",
                                hint="known keys: " + ", ".join(schema))
        out: dict[str, Any] = {}
        for key, (kind, required) in schema.items():
            dotted = f"{where}.{key}"
            if key not in data:
                if required:
                    raise self.fail(dotted, "missing required key")
                continue
            value = data[key]
            ok = {"int": isinstance(value, int) and not isinstance(value, bool),
                  "num": isinstance(value, (int, float)) and not isinstance(value, bool),
                  "str": isinstance(value, str),
                  "[str]": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
            if not ok:
                raise self.fail(dotted, f"must be {_TYPE_WORDS[kind]}, not {type(value).__name__} {value!r}")
            if kind == "num":
                if not math.isfinite(value):
                    raise self.fail(dotted, f"must be finite, not {value!r}")
                value = float(value)
            if key.endswith("_gib") and value < 0:
                raise self.fail(dotted, f"negative size {value:g} GiB")
            out[key] = value
        return out

    def positive(self, where: str, values: Mapping[str, Any], *keys: str) -> None:
        for key in keys:
            if key in values and values[key] <= 0:
                raise self.fail(f"{where}.{key}", f"must be positive, not {values[key]!r}")

    def choice(self, dotted: str, value: Any, allowed: Sequence[Any]) -> None:
        if value not in allowed:
            raise self.fail(dotted, f"{value!r} is not one of {', '.join(map(str, allowed))}")


def resolve_profile_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A profile NAME (a file in ``hwprofiles/``) or a PATH to a .toml file.

    Raises:
        ProfileError: no such profile (with the shipped names as a hint).
    """
    text = os.fspath(name_or_path)
    as_path = Path(text).expanduser()
    looks_like_path = os.sep in text or "/" in text or text.endswith(".toml")
    if looks_like_path or as_path.is_file():
        if not as_path.is_file():
            raise ProfileError("profile file not found", path=text)
        return as_path
    candidate = PROFILES_DIR / f"{text}.toml"
    if candidate.is_file():
        return candidate
    import difflib
    names = profile_names()
    close = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
    hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else \
        "shipped profiles: " + ", ".join(names)
    raise ProfileError(f"unknown hardware profile {text!r}", path=str(PROFILES_DIR), hint=hint)


def profile_names() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def _load(path: Path) -> tuple[Hardware, str]:
    """(Hardware, description) from one profile file, strictly validated."""
    chk = _Checker(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read profile ({_exc(exc)})", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"not valid TOML: {exc}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ProfileError("not UTF-8 text", path=str(path)) from exc
    for key in data:
        if key not in _SCHEMA:
            raise chk.fail(key, "unknown table", hint="known tables: " + ", ".join(
                f"[[{t}]]" if t in _ARRAYS else f"[{t}]" for t in _SCHEMA))
    for key in _REQUIRED_TABLES:
        if key not in data:
            raise chk.fail(key, f"missing required table [{key}]")
    for key in _ARRAYS:
        if key in data and not isinstance(data[key], list):
            raise chk.fail(key, f"must be an array of tables, written [[{key}]]")

    meta = chk.table("profile", data.get("profile", {}), _SCHEMA["profile"])
    cpu = chk.table("cpu", data["cpu"], _SCHEMA["cpu"])
    chk.positive("cpu", cpu, "physical_cores", "logical_cores", "quota_cores")
    if cpu["logical_cores"] < cpu["physical_cores"]:
        raise chk.fail("cpu.logical_cores", f"{cpu['logical_cores']} is fewer than physical_cores "
                                            f"{cpu['physical_cores']}")
    for flag in cpu.get("flags", []):
        chk.choice("cpu.flags", flag, CPU_FLAGS)
    mem = chk.table("memory", data["memory"], _SCHEMA["memory"])
    chk.positive("memory", mem, "total_gib", "channels", "mts", "bandwidth_gbs")
    if "hugepages_free" in mem and mem["hugepages_free"] < 0:
        raise chk.fail("memory.hugepages_free", f"must not be negative, not {mem['hugepages_free']}")
    if "bandwidth_gbs" in mem:
        bandwidth = mem["bandwidth_gbs"]
    elif "channels" in mem and "mts" in mem:
        bandwidth = ram_bw_gbs(mem["channels"], mem["mts"])
    else:
        raise chk.fail("memory.bandwidth_gbs", "missing: give bandwidth_gbs, or channels and mts")
    osv = chk.table("os", data.get("os", {}), _SCHEMA["os"])
    if "thp_enabled" in osv:
        chk.choice("os.thp_enabled", osv["thp_enabled"], THP_ENABLED_MODES)
    if "thp_defrag" in osv:
        chk.choice("os.thp_defrag", osv["thp_defrag"], THP_DEFRAG_MODES)

    numa = []
    for i, raw in enumerate(data.get("numa", [])):
        node = chk.table(f"numa[{i}]", raw, _SCHEMA["numa"])
        if node["id"] < 0:
            raise chk.fail(f"numa[{i}].id", f"must not be negative, not {node['id']}")
        numa.append(NumaNode(id=node["id"], mem_total_bytes=gib_to_bytes(node["memory_gib"]), cpus=node["cpus"]))

    gpus = []
    for i, raw in enumerate(data.get("gpu", [])):
        where = f"gpu[{i}]"
        g = chk.table(where, raw, _SCHEMA["gpu"])
        chk.positive(where, g, "memory_gib", "mem_bw_gbs", "h2d_gbs")
        if "pcie_gen" in g:
            chk.choice(f"{where}.pcie_gen", g["pcie_gen"], tuple(PCIE_LANE))
        if "pcie_width" in g:
            chk.choice(f"{where}.pcie_width", g["pcie_width"], PCIE_WIDTHS)
        if "compute_capability" in g and not re.fullmatch(r"\d+\.\d+", g["compute_capability"]):
            raise chk.fail(f"{where}.compute_capability", f"{g['compute_capability']!r} is not like '8.6'")
        total = gib_to_bytes(g["memory_gib"])
        bw = g.get("mem_bw_gbs")
        if bw is None:
            spec = match_gpu(g["name"], total)
            if spec is None:
                raise chk.fail(f"{where}.mem_bw_gbs", f"missing, and {g['name']!r} is not in {GPU_TABLE.name}")
            bw = spec.mem_bw_gbs
        gen, width = g.get("pcie_gen"), g.get("pcie_width")
        h2d = g.get("h2d_gbs")
        if h2d is None:
            h2d = h2d_gbs(gen, width) if gen is not None and width is not None else h2d_gbs(4, 16)
        gpus.append(GPU(index=i, name=g["name"], total_bytes=total,
                        free_bytes=gib_to_bytes(g["free_gib"]) if "free_gib" in g else None,
                        mem_bw_gbs=float(bw), h2d_gbs=float(h2d), compute_capability=g.get("compute_capability"),
                        pcie_gen=gen, pcie_width=width, source="profile"))

    def opt_bytes(key: str) -> int | None:
        return gib_to_bytes(mem[key]) if key in mem else None

    src = {key: "profile" for key in _HW_FIELDS}
    for i in range(len(gpus)):
        src.update(_gpu_sources(i, "profile"))
    hw = Hardware(
        gpus=tuple(gpus), ram_total_bytes=gib_to_bytes(mem["total_gib"]),
        ram_available_bytes=opt_bytes("available_gib"),
        ram_limit_bytes=opt_bytes("limit_gib"), cpu_model=cpu["model"], physical_cores=cpu["physical_cores"],
        logical_cores=cpu["logical_cores"], cpu_quota_cores=cpu.get("quota_cores"),
        cpu_flags=tuple(f for f in CPU_FLAGS if f in cpu.get("flags", [])), ram_bw_gbs=float(bandwidth),
        ram_channels=mem.get("channels"), ram_mts=mem.get("mts"), numa_nodes=tuple(numa),
        thp_enabled=osv.get("thp_enabled"), thp_defrag=osv.get("thp_defrag"),
        hugepages_free=mem.get("hugepages_free"), swap_total_bytes=opt_bytes("swap_gib"), disk_free_bytes=None,
        sources=_sources(src), notes=(), name=path.stem)
    return hw, meta.get("description", "")


def load_profile(name_or_path: str | os.PathLike[str]) -> Hardware:
    """Load a hardware profile by NAME (``hwprofiles/NAME.toml``) or PATH.

    Raises:
        ProfileError: missing file, bad TOML, unknown key, wrong type, negative size... (names file and key).
    """
    return _load(resolve_profile_path(name_or_path))[0]


@lru_cache(maxsize=1)
def default_profile() -> Hardware:
    """The default profile (:data:`DEFAULT_PROFILE`), sources as loaded ("profile")."""
    return _load(PROFILES_DIR / f"{DEFAULT_PROFILE}.toml")[0]


def list_profiles() -> tuple[ProfileSummary, ...]:
    """Summaries of the shipped profiles, by name."""
    out = []
    for name in profile_names():
        path = PROFILES_DIR / f"{name}.toml"
        hw, description = _load(path)
        out.append(ProfileSummary(name=name, description=description, gpus=tuple(g.name for g in hw.gpus),
                                  vram_bytes=hw.vram_total_bytes, ram_bytes=hw.ram_total_bytes,
                                  ram_bw_gbs=hw.ram_bw_gbs, physical_cores=hw.physical_cores,
                                  logical_cores=hw.logical_cores, path=str(path)))
    return tuple(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _gib(n_bytes: int) -> float:
    return n_bytes / GIB  # exact in binary floating point for any size below 2**53 bytes


def profile_toml(hw: Hardware, description: str = "") -> str:
    """The profile text for ``hw``.  Moment-in-time figures (free VRAM, available RAM, free disk) are left out."""
    lines = ["# gguf-planner hardware profile.  Sizes in GiB (2**30 bytes), bandwidths in GB/s (1e9 bytes/s).",
             f"# Written from {hw.name!r}; figure sources: "
             + ", ".join(sorted(set(hw.sources.values()))) + "."]

    def table(header: str, pairs: Iterable[tuple[str, Any]]) -> None:
        lines.extend(["", header])
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in pairs if v is not None)

    table("[profile]", [("description", description or f"saved from {hw.name}")])
    table("[cpu]", [("model", hw.cpu_model), ("physical_cores", hw.physical_cores),
                    ("logical_cores", hw.logical_cores), ("flags", list(hw.cpu_flags)),
                    ("quota_cores", hw.cpu_quota_cores)])
    table("[memory]", [("total_gib", _gib(hw.ram_total_bytes)),
                       ("limit_gib", None if hw.ram_limit_bytes is None else _gib(hw.ram_limit_bytes)),
                       ("swap_gib", None if hw.swap_total_bytes is None else _gib(hw.swap_total_bytes)),
                       ("channels", hw.ram_channels), ("mts", hw.ram_mts), ("bandwidth_gbs", hw.ram_bw_gbs),
                       ("hugepages_free", hw.hugepages_free)])
    if hw.thp_enabled in THP_ENABLED_MODES or hw.thp_defrag in THP_DEFRAG_MODES:
        table("[os]", [("thp_enabled", hw.thp_enabled if hw.thp_enabled in THP_ENABLED_MODES else None),
                       ("thp_defrag", hw.thp_defrag if hw.thp_defrag in THP_DEFRAG_MODES else None)])
    for node in hw.numa_nodes:
        table("[[numa]]", [("id", node.id), ("memory_gib", _gib(node.mem_total_bytes)), ("cpus", node.cpus)])
    for g in hw.gpus:
        table("[[gpu]]", [("name", g.name), ("memory_gib", _gib(g.total_bytes)), ("mem_bw_gbs", float(g.mem_bw_gbs)),
                          ("pcie_gen", g.pcie_gen), ("pcie_width", g.pcie_width), ("h2d_gbs", float(g.h2d_gbs)),
                          ("compute_capability", g.compute_capability)])
    return "\n".join(lines) + "\n"


def save_profile(hw: Hardware, path: str | os.PathLike[str], force: bool = False, *, description: str = "") -> Path:
    """Write ``hw`` as a profile TOML, atomically (temp file + ``os.replace``); :func:`load_profile` reads it back.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        ProfileError: the file cannot be written.
    """
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(str(target))
    text = profile_toml(hw, description)
    folder = target.parent if str(target.parent) else Path(".")
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, prefix=f".{target.name}.",
                                         suffix=".tmp", delete=False) as fh:
            tmp_name = fh.name
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except OSError as exc:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise ProfileError(f"cannot write profile ({_exc(exc)})", path=str(target)) from exc
    return target


# --- flags on top: user > profile > probe -------------------------------------------------------------------------

_VRAM_ITEM = re.compile(r"(\d+(\.\d*)?|\.\d+)")


def parse_vram(text: str) -> list[float]:
    """``"24,24"`` → ``[24.0, 24.0]``: GiB per GPU; ``"0"`` → ``[0.0]`` (CPU only).

    Raises:
        UsageError: empty items, non-numbers, negatives, or a 0 among several GPUs.
    """
    items = [part.strip() for part in str(text).split(",")]
    values = []
    for item in items:
        if item.startswith("-") and _VRAM_ITEM.fullmatch(item[1:]):
            raise UsageError(f"--vram {text!r}: negative size {item}", hint="give GiB per GPU, e.g. 24,24")
        if not _VRAM_ITEM.fullmatch(item):
            raise UsageError(f"--vram {text!r}: {item!r} is not a number of GiB",
                             hint="give GiB per GPU separated by commas, e.g. 24 or 24,24; 0 for CPU only")
        values.append(float(item))
    _check_vram(values)
    return values


def _check_vram(values: Sequence[float]) -> None:
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise UsageError(f"--vram: {v!r} GiB is not a size", hint="give GiB per GPU, e.g. 24,24")
    if len(values) > 1 and any(v == 0 for v in values):
        raise UsageError("--vram: 0 GiB among several GPUs", hint="use --vram 0 alone for a CPU-only plan")


def _template_gpu(base: Hardware, i: int) -> tuple[GPU, str]:
    """The GPU whose other figures a --vram GPU i inherits, and the source of those figures."""
    if base.gpus:
        g = base.gpus[min(i, len(base.gpus) - 1)]
        return g, g.source
    d = default_profile().gpus[0]
    return d, "default"


def resolve_hardware(*, profile: str | os.PathLike[str] | None = None, vram: Sequence[float] | None = None,
                     ram: float | None = None, cores: int | None = None, gpu: str | None = None,
                     ram_bw: float | None = None, probe_fn: Callable[..., Hardware] = probe,
                     disk_path: str | os.PathLike[str] | None = None) -> Hardware:
    """Hardware from a profile and/or flags, falling back to the probe: user flag > profile > probe.

    * ``profile`` given: the profile, with the flags on top.
    * ``vram`` or ``ram`` given without a profile: the user is describing a machine by hand, so every
      figure they did not give (GPU bandwidth, PCIe, cores, RAM bandwidth, THP...) comes from the default
      profile :data:`DEFAULT_PROFILE` (source ``"default"``), not from this machine.
    * otherwise: the probe (RAM bandwidth from the default profile), with ``cores``/``gpu``/``ram_bw`` on top.

    ``vram`` is GiB per GPU (``[]`` or ``[0]``: CPU only), ``ram`` GiB, ``gpu`` a model in the GPU spec table
    (sets name, bandwidth and PCIe of every GPU; alone on a GPU-less base it adds one card of the model's size),
    ``ram_bw`` GB/s.  ``disk_path`` (the model) adds the free space of its disk on this machine.

    Raises:
        UsageError: a flag value is out of range or ``gpu`` is unknown.
        ProfileError: the profile cannot be loaded.
    """
    if vram is not None:
        _check_vram(list(vram))
    if ram is not None and not (math.isfinite(ram) and ram > 0):
        raise UsageError(f"--ram {ram!r}: must be a positive number of GiB")
    if cores is not None and (isinstance(cores, bool) or int(cores) != cores or cores < 1):
        raise UsageError(f"--cores {cores!r}: must be a whole number of at least 1")
    if ram_bw is not None and not (math.isfinite(ram_bw) and ram_bw > 0):
        raise UsageError(f"--ram-bw {ram_bw!r}: must be a positive number of GB/s")
    spec = lookup_gpu(gpu) if gpu is not None else None

    if profile is not None:
        base = load_profile(profile)
    elif vram is not None or ram is not None:
        base = _relabel(default_profile(), "default", name="manual", notes=(
            f"described by hand: figures not given on the command line come from the default profile "
            f"{DEFAULT_PROFILE}",))
    else:
        base = probe_fn(disk_path=disk_path) if disk_path is not None else probe_fn()
        disk_path = None  # the probe measured it

    src = dict(base.sources)
    notes = list(base.notes)
    changes: dict[str, Any] = {}
    if disk_path is not None:  # the model's disk is on this machine whatever the profile says
        import psutil

        changes["disk_free_bytes"] = _disk_free(disk_path, psutil, notes)
        src["disk_free_bytes"] = "probed"
    gpus = list(base.gpus)

    if vram is not None:
        sizes = [v for v in vram if v > 0]
        new: list[GPU] = []
        for k in [k for k in src if k.startswith("gpus[")]:
            del src[k]
        for i, size in enumerate(sizes):
            tmpl, tmpl_src = _template_gpu(base, i)
            new.append(replace(tmpl, index=i, total_bytes=gib_to_bytes(size), free_bytes=None, source="user"))
            # bandwidth and PCIe stay what the template GPU had, with the template's sources
            inherited = {f: (base.source_of(f"gpus[{min(i, len(base.gpus) - 1)}].{f}") if base.gpus else tmpl_src)
                         for f in ("mem_bw_gbs", "h2d_gbs")}
            src.update(_gpu_sources(i, "user", **inherited))
        gpus = new
        src["gpus"] = "user"
    if spec is not None:
        if not gpus:
            gpus = [GPU(index=0, name=spec.name, total_bytes=spec.memory_bytes, free_bytes=None,
                        mem_bw_gbs=spec.mem_bw_gbs, h2d_gbs=h2d_gbs(spec.pcie_gen, spec.pcie_width),
                        compute_capability=None, pcie_gen=spec.pcie_gen, pcie_width=spec.pcie_width, source="user")]
            src.update(_gpu_sources(0, "user"))
        else:
            for i, g in enumerate(gpus):
                same_card = match_gpu(g.name) == spec
                gpus[i] = replace(g, name=g.name if same_card else spec.name, mem_bw_gbs=spec.mem_bw_gbs,
                                  h2d_gbs=h2d_gbs(spec.pcie_gen, spec.pcie_width), pcie_gen=spec.pcie_gen,
                                  pcie_width=spec.pcie_width,
                                  compute_capability=g.compute_capability if same_card else None)
                src[f"gpus[{i}].mem_bw_gbs"] = src[f"gpus[{i}].h2d_gbs"] = "user"
        src["gpus"] = "user"
        notes.append(f"--gpu {gpu!r}: {spec.name}, {spec.mem_bw_gbs:g} GB/s, PCIe {spec.pcie_gen}.0 "
                     f"x{spec.pcie_width} ({spec.source_url})")
    changes["gpus"] = tuple(gpus)

    if ram is not None:
        total = gib_to_bytes(ram)
        changes.update(ram_total_bytes=total, ram_available_bytes=None)
        src.update(ram_total_bytes="user", ram_available_bytes="user")
        if base.numa_nodes:
            n = len(base.numa_nodes)
            share = total // n
            changes["numa_nodes"] = tuple(
                replace(node, mem_total_bytes=share + (total - share * n if k == 0 else 0))
                for k, node in enumerate(base.numa_nodes))
            src["numa_nodes"] = "user"
    if cores is not None:
        cores = int(cores)
        smt = base.logical_cores // base.physical_cores if (
            base.physical_cores and base.logical_cores % base.physical_cores == 0) else 1
        changes.update(physical_cores=cores, logical_cores=cores * max(1, smt))
        src.update(physical_cores="user", logical_cores="user")
    if ram_bw is not None:
        changes["ram_bw_gbs"] = float(ram_bw)
        src["ram_bw_gbs"] = "user"
        if base.ram_channels and base.ram_mts and ram_bw_gbs(base.ram_channels, base.ram_mts) != float(ram_bw):
            notes.append(f"--ram-bw {ram_bw:g} GB/s replaces the {base.ram_channels} channels x "
                         f"{base.ram_mts} MT/s peak of {ram_bw_gbs(base.ram_channels, base.ram_mts):g} GB/s")
    if base.name == "probed" and ram_bw is not None:
        notes = [n for n in notes if not n.startswith("RAM bandwidth cannot be probed")]
    return replace(base, **changes, sources=_sources(src), notes=tuple(notes))


def hardware_from_options(*, profile: str | None = None, vram: str | None = None, ram: float | None = None,
                          cores: int | None = None, gpu: str | None = None, ram_bw: float | None = None,
                          disk_path: str | os.PathLike[str] | None = None,
                          probe_fn: Callable[..., Hardware] = probe) -> Hardware:
    """The CLI's hardware options as typed (``vram`` is the raw "24,24" text) → :class:`Hardware`.

    Raises:
        UsageError, ProfileError: see :func:`parse_vram` and :func:`resolve_hardware`.
    """
    return resolve_hardware(profile=profile, vram=parse_vram(vram) if vram is not None else None, ram=ram,
                            cores=cores, gpu=gpu, ram_bw=ram_bw, disk_path=disk_path, probe_fn=probe_fn)
