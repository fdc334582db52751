"""The ``check`` command's library call: memory and speed of a given mix and placement (a user's command)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.groups import Budget
from planner.memory import MemoryReport, Placement, memory_report, mix_bytes
from planner.runconfig import RunConfig
from planner.speed import SpeedEstimate, estimate_speed
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from planner.hardware import Hardware
    from planner.quality import QualityEstimate, QualityModel


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Memory per device, speed and (optionally) quality of a given mix and placement."""

    model: str
    run: RunConfig
    memory: MemoryReport
    speed: SpeedEstimate
    quality: QualityEstimate | None
    total_bytes: int
    weights_by_device: dict[str, int]
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def evaluate(tmap: TensorMap, types: Mapping[str, str], placement: Placement, hw: Hardware, run: RunConfig,
             quality: QualityModel | None = None, warnings: Sequence[str] = ()) -> CheckResult:
    """Memory and speed of a given mix and placement (the `check` command's library call)."""
    budget = Budget.from_hardware(hw)
    mem = memory_report(tmap, types, placement, budget.bytes, run)
    spd = estimate_speed(tmap, types, placement, hw, run)
    q = quality.estimate(types) if quality is not None else None
    sizes = mix_bytes(tmap, types)
    return CheckResult(model=tmap.name, run=run, memory=mem, speed=spd, quality=q,
                       total_bytes=sum(sizes.values()),
                       weights_by_device={d.device: d.term("weights") for d in mem.devices},
                       problems=tuple(mem.problems()), warnings=tuple(warnings))

