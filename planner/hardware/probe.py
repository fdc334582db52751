"""Probe this machine: psutil, NVML (``pynvml``, imported lazily, only here), ``/proc`` and ``/sys`` read relative
to a ``root`` so tests can fake the tree.  Never raises for missing hardware or failed reads: the figure is left
``None`` (or the machine is CPU-only) and ``Hardware.notes`` says why."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from planner.hardware.gpus import h2d_gbs, match_gpu
from planner.hardware.gpus import PCIE_LANE
from planner.hardware.model import (_FLAG_ALIASES, _HW_FIELDS, CPU_FLAGS, GPU, Hardware, NumaNode, _exc, _gpu_sources,
                                    _sources)
from planner.hardware.profiles import DEFAULT_PROFILE, default_profile

# cgroup v1 reports "no limit" as LONG_MAX rounded down to a page (9223372036854771712); anything this big is no limit.
_CGROUP_UNLIMITED = 1 << 60


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None




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
            import pynvml  # the one place pynvml is imported

            nvml = pynvml
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

            def optional(what: str, fn_name: str, *args: Any, handle: Any = handle, index: int = index) -> Any:
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
        import psutil

        system = psutil

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
