"""Hardware stage: probe this machine, load a profile, or take flags → one frozen :class:`Hardware`.

Three ways in, one dataclass out:

* :func:`probe` reads psutil, NVML (through ``pynvml``, imported lazily, only here), ``/proc`` and ``/sys``
  relative to a ``root`` so tests can fake the tree.  It never raises for missing hardware or failed reads;
  it leaves the figure ``None`` (or CPU-only) and says why in ``Hardware.notes``.
* :func:`load_profile` reads ``planner/data/hwprofiles/*.toml`` (strictly validated; :func:`save_profile` writes the same
  format).
* :func:`resolve_hardware` applies ``--vram/--ram/--cores/--gpu/--ram-bw`` on top, user flag > profile > probe.

Every figure records where it came from: ``"probed"``, ``"profile"``, ``"user"`` or ``"default"`` (from the
default profile :data:`DEFAULT_PROFILE`; see :func:`resolve_hardware` for when).

Modules: :mod:`~planner.hardware.model` (the dataclasses), :mod:`~planner.hardware.gpus` (GPU table, PCIe and DRAM
bandwidth), :mod:`~planner.hardware.probe`, :mod:`~planner.hardware.profiles` (schema, loader, writer) and
:mod:`~planner.hardware.resolve` (flags on top).
"""

from __future__ import annotations

from planner.hardware.gpus import (GPU_TABLE, PCIE_LANE, PCIE_WIDTHS, GpuSpec, _name_words, gpu_table, h2d_efficiency,
                                   h2d_gbs, lookup_gpu, match_gpu, ram_bw_gbs)
from planner.hardware.model import (CPU_FLAGS, GPU, SOURCES, THP_DEFRAG_MODES, THP_ENABLED_MODES, Hardware, NumaNode,
                                    Sources, gib_to_bytes)
from planner.hardware.probe import probe
from planner.hardware.profiles import (DEFAULT_PROFILE, PROFILES, ProfileSummary, default_profile, list_profiles,
                                       load_profile, profile_names, profile_toml, resolve_profile_path, save_profile)
from planner.hardware.resolve import hardware_from_options, parse_vram, resolve_hardware
from planner.units import GIB

__all__ = [
    "CPU_FLAGS", "DEFAULT_PROFILE", "GIB", "GPU", "GPU_TABLE", "PCIE_LANE", "PCIE_WIDTHS", "PROFILES", "SOURCES",
    "THP_DEFRAG_MODES", "THP_ENABLED_MODES", "GpuSpec", "Hardware", "NumaNode", "ProfileSummary", "Sources",
    "_name_words", "default_profile", "gib_to_bytes", "gpu_table", "h2d_efficiency", "h2d_gbs", "hardware_from_options",
    "list_profiles", "load_profile", "lookup_gpu", "match_gpu", "parse_vram", "probe", "profile_names", "profile_toml",
    "ram_bw_gbs", "resolve_hardware", "resolve_profile_path", "save_profile",
]
