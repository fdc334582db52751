"""llama-server's prompt cache: RAM the server fills after loading, outside every buffer the load log prints.

Both engines keep the states of past prompts (their KV cache rows) in host memory, up to ``--cache-ram`` MiB
(``-cram``; default 8192 MiB: mainline common/common.h:634 @0c1e57098, PR 16391; ik common/common.h:558 @8337e4cd),
dropping the oldest to stay under the limit (mainline tools/server/server-task.cpp:1731-1760).  A plan that leaves
less RAM than that would be pushed into swap or killed after a few long prompts although every buffer fits; so a
plan sets ``-cram`` to the RAM it leaves free when that is below the engine's default, and ``check`` says when a
command's limit is above the RAM its placement leaves.

The servers' context checkpoints (:mod:`planner.ctx_checkpoint`) fill RAM the same way, outside the prompt cache's
limit: each slot keeps up to N of them (-ctxcp / -ctx-ckpt, default 32) for models whose memory cannot be rolled
back (sliding-window caches on mainline, recurrent state on both).  Their worst case, slots x N x one checkpoint,
is set aside first: a plan caps N where the default would not fit, and the prompt cache gets what remains.
"""

from __future__ import annotations

from dataclasses import replace

from planner.ctx_checkpoint import checkpoint_bytes
from planner.engines import engine_profile
from planner.kv_cache import CacheConfig
from planner.runconfig import RunConfig
from planner.tensors import ModelParams

MIB = 1 << 20


def default_mib(engine: str) -> int:
    """The engine's own limit when a command does not set one (0: the engine has no prompt cache)."""
    prof = engine_profile(engine)
    return int(prof["cache_ram_default_mib"]) if prof["cache_ram"] else 0


def limit_mib(run: RunConfig) -> int:
    """The limit the engine runs ``run`` with (-1: no limit, 0: no cache)."""
    default = default_mib(run.engine)
    if not default:
        return 0
    return run.cache_ram_mib if run.cache_ram_mib is not None else default


def checkpoints_default(engine: str) -> int:
    """The checkpoints a slot keeps when a command does not say (0: the engine's server makes none)."""
    prof = engine_profile(engine)
    return int(prof["ctx_checkpoints_default"]) if prof["ctx_checkpoints"] else 0


def checkpoint_ram(run: RunConfig, params: ModelParams) -> tuple[int, int]:
    """(checkpoints per slot ``run`` keeps, bytes of one) -- (n, 0) for a model without any."""
    n = checkpoints_default(run.engine) if run.ctx_checkpoints is None else run.ctx_checkpoints
    if not checkpoints_default(run.engine):
        return 0, 0
    return n, checkpoint_bytes(params, CacheConfig.from_run(run))


def _mib(n: int) -> str:
    return f"{n / MIB:.0f}" if n >= 10 * MIB else f"{n / MIB:.1f}"


def planned(run: RunConfig, cpu_free_bytes: int, params: ModelParams) -> tuple[RunConfig, tuple[str, ...]]:
    """``run`` with the context checkpoints capped and ``-cram`` set to the RAM the plan leaves, and why.

    The checkpoints' worst case (slots x N x one) is set aside first: N drops to what fits when the engine's
    default does not; the prompt cache gets the rest (``-cram`` when that is below the engine's default)."""
    notes: list[str] = []
    free, after = max(0, cpu_free_bytes), ""
    n, one = checkpoint_ram(run, params)
    if n and one:
        per_n = run.n_parallel * one
        if run.ctx_checkpoints is None and per_n * n > free:
            fit = free // per_n
            run = replace(run, ctx_checkpoints=fit)
            flag = engine_profile(run.engine)["ctx_checkpoints"][0]
            notes.append(f"context checkpoints: {flag} {fit}" + (" (off)" if not fit else "")
                         + f": llama-server keeps up to {n} checkpoints of {_mib(one)} MiB per slot in RAM by "
                         f"default, {_mib(per_n * n)} MiB for {run.n_parallel} slot(s), more than the {free // MIB} "
                         "MiB this plan leaves free")
            n = fit
        if per_n * n:
            after = f" after the context checkpoints ({_mib(per_n * n)} MiB: {run.n_parallel} x {n} x {_mib(one)})"
        free -= per_n * n
    run, why = _planned_cram(run, free, after)
    return run, (*notes, why) if why else tuple(notes)


def _planned_cram(run: RunConfig, cpu_free_bytes: int, after: str) -> tuple[RunConfig, str]:
    default = default_mib(run.engine)
    if not default or run.cache_ram_mib is not None or cpu_free_bytes >= default * MIB:
        return run, ""
    mib = max(0, cpu_free_bytes // MIB)
    flag = engine_profile(run.engine)["cache_ram"]
    what = f"{flag} {mib}" if mib else f"{flag} 0 (off)"
    return replace(run, cache_ram_mib=mib), (
        f"prompt cache: {what}: llama-server keeps up to {default} MiB of past prompts in RAM by default, more "
        f"than the {mib} MiB this plan leaves free{after}")


def warning(run: RunConfig, cpu_free_bytes: int, params: ModelParams) -> tuple[str, ...]:
    """Lines for ``check`` when the command's context checkpoints or prompt cache can outgrow the RAM its
    placement leaves (the checkpoints first: the prompt cache gets what they leave)."""
    out: list[str] = []
    free = max(0, cpu_free_bytes)
    n, one = checkpoint_ram(run, params)
    if n and one:
        per_n = run.n_parallel * one
        if per_n * n > free:
            flag = engine_profile(run.engine)["ctx_checkpoints"][0]
            said = f"up to {n}" + ("" if run.ctx_checkpoints is not None else f" ({flag}, the default)")
            out.append(f"context checkpoints: llama-server keeps {said} checkpoints of {_mib(one)} MiB per slot in "
                       f"RAM, {_mib(per_n * n)} MiB for {run.n_parallel} slot(s), more than the {free // MIB} MiB "
                       f"this command leaves free: add {flag} {free // per_n}")
        free = max(0, free - per_n * n)
    cram = _cram_warning(run, free)
    return (*out, cram) if cram else tuple(out)


def _cram_warning(run: RunConfig, cpu_free_bytes: int) -> str:
    limit = limit_mib(run)
    if limit == 0 or (limit > 0 and limit * MIB <= max(0, cpu_free_bytes)):
        return ""
    mib = max(0, cpu_free_bytes // MIB)
    flag = engine_profile(run.engine)["cache_ram"]
    said = f"no limit ({flag} -1)" if limit < 0 else (
        f"up to {limit} MiB" + ("" if run.cache_ram_mib is not None else f" ({flag}, the default)"))
    return (f"prompt cache: llama-server keeps {said} of past prompts in RAM, more than the {mib} MiB this command "
            f"leaves free: add {flag} {mib}")
