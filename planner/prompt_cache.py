"""llama-server's prompt cache: RAM the server fills after loading, outside every buffer the load log prints.

Both engines keep the states of past prompts (their KV cache rows) in host memory, up to ``--cache-ram`` MiB
(``-cram``; default 8192 MiB: mainline common/common.h:634 @0c1e57098, PR 16391; ik common/common.h:558 @8337e4cd),
dropping the oldest to stay under the limit (mainline tools/server/server-task.cpp:1731-1760).  A plan that leaves
less RAM than that would be pushed into swap or killed after a few long prompts although every buffer fits; so a
plan sets ``-cram`` to the RAM it leaves free when that is below the engine's default, and ``check`` says when a
command's limit is above the RAM its placement leaves.
"""

from __future__ import annotations

from dataclasses import replace

from planner.engines import engine_profile
from planner.runconfig import RunConfig

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


def planned(run: RunConfig, cpu_free_bytes: int) -> tuple[RunConfig, str]:
    """``run`` with ``-cram`` set to the RAM the plan leaves when the engine's default is more, and why."""
    default = default_mib(run.engine)
    if not default or run.cache_ram_mib is not None or cpu_free_bytes >= default * MIB:
        return run, ""
    mib = max(0, cpu_free_bytes // MIB)
    what = f"-cram {mib}" if mib else "-cram 0 (off)"
    return replace(run, cache_ram_mib=mib), (
        f"prompt cache: {what}: llama-server keeps up to {default} MiB of past prompts in RAM by default, more "
        f"than the {mib} MiB this plan leaves free")


def warning(run: RunConfig, cpu_free_bytes: int) -> str:
    """A line for ``check`` when the command's prompt cache can outgrow the RAM its placement leaves."""
    limit = limit_mib(run)
    if limit == 0 or (limit > 0 and limit * MIB <= max(0, cpu_free_bytes)):
        return ""
    mib = max(0, cpu_free_bytes // MIB)
    said = "no limit (-cram -1)" if limit < 0 else (
        f"up to {limit} MiB" + ("" if run.cache_ram_mib is not None else " (-cram, the default)"))
    return (f"prompt cache: llama-server keeps {said} of past prompts in RAM, more than the {mib} MiB this command "
            f"leaves free: add -cram {mib}")

