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
    # memory per engine buffer as the load log names them: (kind, buffer, bytes); kinds "weights", "kv" (exact)
    # and "compute" (estimate, planner.compute_buffers)
    buffers: tuple[tuple[str, str, int], ...] = ()


def evaluate(tmap: TensorMap, types: Mapping[str, str], placement: Placement, hw: Hardware, run: RunConfig,
             quality: QualityModel | None = None, warnings: Sequence[str] = ()) -> CheckResult:
    """Memory and speed of a given mix and placement (the `check` command's library call)."""
    budget = Budget.from_hardware(hw)
    mem = memory_report(tmap, types, placement, budget.bytes, run)
    spd = estimate_speed(tmap, types, placement, hw, run)
    q = quality.estimate(types) if quality is not None else None
    sizes = mix_bytes(tmap, types)
    from planner.engine_buffers import placement_buffers
    from planner.memory import kv_bytes_by_layer

    kv = kv_bytes_by_layer(tmap.params, run)
    buffers = placement_buffers(run.engine, tmap, types, placement.tensor_device, placement.layer_device, kv,
                                load=run.load)
    buffers += compute_buffer_lines(mem, has_gpu=any(d != "CPU" for d in placement.layer_device)
                                    or any(d != "CPU" for d in placement.tensor_device.values()))
    return CheckResult(model=tmap.name, run=run, memory=mem, speed=spd, quality=q,
                       total_bytes=sum(sizes.values()),
                       weights_by_device={d.device: d.term("weights") for d in mem.devices},
                       problems=tuple(mem.problems()), warnings=tuple(warnings), buffers=tuple(buffers))


def compute_buffer_lines(mem: MemoryReport, *, has_gpu: bool) -> list[tuple[str, str, int]]:
    """("compute", buffer name, bytes) per device as the engines log ``<name> compute buffer size``: the CPU
    backend's buffer is pinned host memory (``CUDA_Host``) when a GPU is in use (ik ``llama_default_buffer_type_cpu
    (true)``, mainline the device's host buffer type), else ``CPU``."""
    out = []
    for d in mem.devices:
        nbytes = d.term("compute")
        if not nbytes:
            continue
        name = d.device if d.device != "CPU" else ("CUDA_Host" if has_gpu else "CPU")
        out.append(("compute", name, nbytes))
    return out
