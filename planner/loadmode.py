"""Load mode as a decision: ``-rtr`` (run-time repack), ``--no-mmap`` or mmap, chosen by predicted speed.

ik_llama.cpp's README (8337e4cd and later): for hybrid CPU/GPU runs of MoE models with experts on the CPU, do not
use ``-rtr`` unless you know why: it repacks every tensor left in RAM to a row-interleaved type while loading, and
types without a CUDA row-interleaved kernel (notably the k-quants) are then always multiplied on the CPU, even for
prompt processing, where the GPU would otherwise take a copy of the weights per ubatch.  ``-rtr`` also turns mmap
off (PR 147), as ``--no-mmap`` does, so both copy the CPU-resident weights into RAM: their memory is the same.

The speed model (:func:`planner.speed.estimate_speed`, a cluster's with its links) predicts both modes for the planned placement; ``-rtr`` is
chosen only when it predicts faster generation or faster prompt processing at no loss of the other, and the plan
says why either way.  A CPU-only plan keeps the engine's default (ik: ``-rtr``, its CPU kernels for interleaved
rows), which the model rates as a tie.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from planner.devices import CPU
from planner.engines import engine_profile
from planner.memory import Placement
from planner.runconfig import RunConfig
from planner.speed import SpeedEstimate
from planner.tensors import TensorMap


@dataclass(frozen=True, slots=True)
class LoadChoice:
    """The chosen load mode, its predicted speed, and one line saying why."""

    run: RunConfig
    speed: SpeedEstimate
    reason: str


def choose_load(tmap: TensorMap, placement: Placement, run: RunConfig,
                estimate: Callable[[RunConfig], SpeedEstimate]) -> LoadChoice:
    """Pick ``rtr`` or ``no-mmap`` for an engine that has ``-rtr``; other engines keep ``run.load``.  ``estimate``:
    the plan's speed under a run configuration (one box: planner.speed.estimate_speed; a cluster:
    planner.cluster_plan.cluster_speed)."""
    prof = engine_profile(run.engine)
    has_gpu = any(d != CPU for d in placement.devices)
    cpu_weights = any(placement.device_of(t.name) == CPU and t.n_dims >= 2 and t.role != "token_embd"
                      for t in tmap.tensors)
    if prof["rtr"] and has_gpu and not cpu_weights and run.load == "rtr":
        # nothing for -rtr to repack: it would only turn mmap off and copy token_embd into RAM (ik a tied one
        # twice, memory.Placement.tied_duplicate_device); the engine's default, mmap, it is
        mm = replace(run, load="mmap")
        return LoadChoice(mm, estimate(mm),
                          "load: mmap (the engine's default): every matrix is on a GPU, so -rtr has nothing to repack")
    if not prof["rtr"] or not has_gpu or not cpu_weights:
        return LoadChoice(run, estimate(run), "")
    rtr_run = replace(run, load="rtr")
    plain_run = replace(run, load="no-mmap")
    rtr = estimate(rtr_run)
    plain = estimate(plain_run)
    faster = (rtr.tg_tps > plain.tg_tps and rtr.pp_tps >= plain.pp_tps) or \
             (rtr.pp_tps > plain.pp_tps and rtr.tg_tps >= plain.tg_tps)
    if faster:
        return LoadChoice(rtr_run, rtr, f"load: -rtr, predicted faster (TG {rtr.tg_tps:.1f} vs {plain.tg_tps:.1f} "
                                        f"tok/s, PP {rtr.pp_tps:.0f} vs {plain.pp_tps:.0f} tok/s without it)")
    figures = (f"predicted with -rtr: PP {rtr.pp_tps:.0f} vs {plain.pp_tps:.0f} tok/s, "
               f"TG {rtr.tg_tps:.1f} vs {plain.tg_tps:.1f}; pass --load rtr to force it")
    if rtr.pp_tps < plain.pp_tps:
        why = ("with -rtr the CPU-resident weights whose repacked types have no CUDA kernel would be multiplied "
               "on the CPU during prompt processing")
    else:
        why = "-rtr is not predicted faster here, and ik's README advises against it for hybrid runs"
    return LoadChoice(plain_run, plain, f"load: --no-mmap, not -rtr: {why} ({figures})")


def engine_load(tmap: TensorMap, placement: Placement, run: RunConfig) -> tuple[RunConfig, str]:
    """The load mode the engine runs a placement with, and a note when it is not ``run.load``: current ik turns
    mmap off as soon as one tensor is overridden to the CPU (``cpu_override_disables_mmap`` in engines.toml), which
    a placement needs when a layer on a GPU keeps a tensor (its experts) on the CPU; a ``--load mmap`` plan would
    print a command that runs as ``--no-mmap``, so the plan says ``--no-mmap`` and why."""
    if run.load != "mmap" or not engine_profile(run.engine)["cpu_override_disables_mmap"]:
        return run, ""
    ld = placement.layer_device
    if not any(t.layer is not None and t.layer < len(ld) and ld[t.layer] != CPU and placement.device_of(t.name) == CPU
               for t in tmap.tensors):
        return run, ""
    return replace(run, load="no-mmap"), (
        f"load: --no-mmap, not mmap: {run.engine} turns mmap off when a tensor is overridden to the CPU (-ot ...=CPU; "
        "ik src/llama-load-tensors.cpp:5309-5311, PR 1510)")
