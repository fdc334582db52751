"""What a speed estimate rests on: a calibration carried by the machine's profile, the shipped constants of a
shipped profile (or one with the same CPU), or a guess; and which hardware figures were defaulted, so a plan can
list them instead of hiding them in its assumptions."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from planner.hardware import Hardware


@dataclass(frozen=True, slots=True)
class SpeedBasis:
    """What a speed estimate rests on, for the plan's label and the figures that were defaulted."""

    kind: str                        # "calibrated" | "shipped" | "guessed"
    label: str                       # e.g. "estimate (calibrated on your machine, residual 4 %)"
    defaulted: tuple[str, ...]       # hardware figures the user did not give and the probe did not find


_DEFAULTED_FIGURES = (
    ("ram_bw_gbs", lambda hw: f"RAM bandwidth {hw.ram_bw_gbs:.1f} GB/s"),
    ("physical_cores", lambda hw: f"{hw.physical_cores} cores ({hw.threads_default} threads)"),
    ("cpu_flags", lambda hw: "CPU ISA " + (", ".join(hw.cpu_flags) or "none")),
    ("cpu_model", lambda hw: f"CPU {hw.cpu_model}"),
    ("numa_nodes", lambda hw: f"{len(hw.numa_nodes) or 1} NUMA node(s)"),
)


@functools.cache
def _shipped_descriptions() -> dict[str, str]:
    from planner.hardware import list_profiles

    return {p.name: (p.description or p.name) for p in list_profiles()}


@functools.cache
def _shipped_cpu_models() -> dict[str, str]:
    from planner.hardware import load_profile, profile_names

    return {n: load_profile(n).cpu_model for n in profile_names()}


def speed_basis(hw: Hardware, *, profile_descriptions: Mapping[str, str] | None = None) -> SpeedBasis:
    """The basis of the speed estimate on this machine: a calibration carried by the hardware description
    (``hw.calibration``: multipliers and residual), the shipped constants on a shipped profile, or a guess (the
    machine was described by hand or probed and no profile matches its CPU); plus every figure that was defaulted
    (``hw.sources`` == "default"), so the plan can print them instead of hiding them in assumptions."""
    defaulted = []
    sources = getattr(hw, "sources", {}) or {}
    for key, fmt in _DEFAULTED_FIGURES:
        if sources.get(key) == "default":
            defaulted.append(fmt(hw))
    for i, g in enumerate(getattr(hw, "gpus", ())):
        if sources.get(f"gpus[{i}].mem_bw_gbs") == "default":
            defaulted.append(f"CUDA{g.index} bandwidth {g.mem_bw_gbs:.0f} GB/s")
        if sources.get(f"gpus[{i}].h2d_gbs") == "default":
            defaulted.append(f"CUDA{g.index} PCIe {g.h2d_gbs:.1f} GB/s")
    cal = getattr(hw, "calibration", None)
    if cal:
        residual = cal.get("residual") if isinstance(cal, Mapping) else getattr(cal, "residual", None)
        res = f", residual {residual * 100:.0f} %" if residual is not None else ""
        return SpeedBasis("calibrated", f"estimate (calibrated on your machine{res})", tuple(defaulted))
    descriptions = profile_descriptions if profile_descriptions is not None else _shipped_descriptions()
    name = getattr(hw, "name", "")
    if name in descriptions and not defaulted:
        return SpeedBasis("shipped", f"estimate (shipped constants for {descriptions[name]})", ())
    if defaulted:
        return SpeedBasis("guessed", "estimate (guessed: hardware figures defaulted, listed below)", tuple(defaulted))
    cpu = getattr(hw, "cpu_model", "")
    same_cpu = [n for n, model in _shipped_cpu_models().items() if model and model == cpu]
    if same_cpu:
        return SpeedBasis("shipped", f"estimate (shipped constants for {descriptions[same_cpu[0]]})", ())
    return SpeedBasis("guessed", f"estimate (guessed: no profile for this CPU{', ' + cpu if cpu else ''})", ())
