"""The ``check`` command's library call: memory and speed of a given mix and placement (a user's command)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from planner import prompt_cache
from planner.devices import CPU
from planner.groups import Budget
from planner.memory import MemoryReport, Placement, memory_report, mix_bytes
from planner.runconfig import RunConfig
from planner.speed import SpeedEstimate, estimate_speed
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from planner.fixes import FixProposal
    from planner.hardware import Hardware
    from planner.launch import ParsedCommand
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
    # the smallest change that makes the command fit, or a faster one (planner.fixes; None: nothing to propose)
    fix: FixProposal | None = None
    imatrix: str = ""          # the imatrix assumption behind ``quality`` (planner.imatrix_use), in words


def evaluate(tmap: TensorMap, types: Mapping[str, str], placement: Placement, hw: Hardware, run: RunConfig,
             quality: QualityModel | None = None, warnings: Sequence[str] = ()) -> CheckResult:
    """Memory and speed of a given mix and placement (the `check` command's library call)."""
    budget = Budget.from_hardware(hw)
    mem = memory_report(tmap, types, placement, budget.bytes, run)
    host = next((d for d in mem.devices if d.device == CPU), None)
    cache = prompt_cache.warning(run, host.free_bytes, tmap.params) if host is not None else ()
    warnings = (*warnings, *cache)
    spd = estimate_speed(tmap, types, placement, hw, run)
    q = quality.estimate(types) if quality is not None else None
    sizes = mix_bytes(tmap, types)
    return CheckResult(model=tmap.name, run=run, memory=mem, speed=spd, quality=q,
                       total_bytes=sum(sizes.values()),
                       weights_by_device={d.device: d.term("weights") for d in mem.devices},
                       problems=tuple(mem.problems()), warnings=tuple(warnings))


def command_placement(tmap: TensorMap, types: Mapping[str, str], argv: Sequence[str], hw: Hardware, *,
                      engine: str, run_overrides: Mapping[str, Any] | None = None
                      ) -> tuple[ParsedCommand, RunConfig, Placement]:
    """A llama-server command as the engine reads it on ``hw``: the parsed flags, the run (context 0 = the
    model's training context, threads defaulted to the machine's) and the placement under the engine's own
    layer rule (:func:`planner.launch.placement_from_command`). ``check`` and every fix it proposes go through
    here, so a proposed command is judged by exactly the rules the user's own command was."""
    from planner.launch import parse_server_command, placement_from_command

    parsed = parse_server_command(list(argv), engine=engine)
    run = replace(parsed.run, ctx=parsed.run.ctx or tmap.params.n_ctx_train,
                  threads=parsed.run.threads or hw.threads_default, **dict(run_overrides or {}))
    placement = placement_from_command(tmap, parsed, [f"CUDA{g.index}" for g in hw.gpus], types=types,
                                       gpu_free_bytes=[g.free_bytes if g.free_bytes is not None else g.total_bytes
                                                       for g in hw.gpus])
    return parsed, run, placement


def check_command(tmap: TensorMap, types: Mapping[str, str], argv: Sequence[str], hw: Hardware, *, engine: str,
                  run_overrides: Mapping[str, Any] | None = None) -> CheckResult:
    """Memory and speed of a llama-server command line on ``hw`` (the ``check`` command for one box)."""
    parsed, run, placement = command_placement(tmap, types, argv, hw, engine=engine, run_overrides=run_overrides)
    return evaluate(tmap, types, placement, hw, run, warnings=parsed.warnings)


def command_fits(tmap: TensorMap, types: Mapping[str, str], argv: Sequence[str], hw: Hardware, *, engine: str,
                 run_overrides: Mapping[str, Any] | None = None) -> MemoryReport:
    """Only the memory half of :func:`check_command` (the search for a fix evaluates many commands)."""
    _, run, placement = command_placement(tmap, types, argv, hw, engine=engine, run_overrides=run_overrides)
    return memory_report(tmap, types, placement, Budget.from_hardware(hw).bytes, run)
