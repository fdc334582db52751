"""Flags on top of a profile or the probe: ``--vram/--ram/--cores/--gpu/--ram-bw``, user flag > profile > probe."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from planner.errors import UsageError
from planner.hardware.gpus import h2d_gbs, lookup_gpu, match_gpu, ram_bw_gbs
from planner.hardware.model import GPU, Hardware, _gpu_sources, _relabel, _sources, gib_to_bytes
from planner.hardware.probe import _disk_free, probe
from planner.hardware.profiles import DEFAULT_PROFILE, default_profile, load_profile

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
    """Hardware from a profile and/or flags, falling back to the probe: user flag > calibrated profile > profile >
    probe (a flag that sets a figure also drops the calibration multiplier fitted for that figure).

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
    if base.calibration is not None:
        # user flag > calibrated profile: a flag that sets a figure drops the multiplier fitted for it
        dropped = [g for flag, groups in ((ram_bw, ("cpu_weights",)), (spec, ("gpu_weights", "pcie", "gpu_gemm")),
                                          (cores, ("cpu_gemm",)))
                   if flag is not None for g in groups if g in base.calibration.scales]
        if dropped:
            changes["calibration"] = base.calibration.without(dropped)
            notes.append("flags replace the calibrated " + ", ".join(dropped))
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
