"""Engine profiles (``data/engines.toml``): flag spellings, defaults and the quant engine of each profile.

Read by the launch emitter, the command parser of ``check`` and :class:`planner.runconfig.RunConfig`.
"""

from __future__ import annotations

import functools
from typing import Any

from planner.errors import UsageError
from planner.tables import read_toml

ENGINE_TABLE = "engines.toml"


def engines() -> dict[str, Any]:
    """The whole engines table: one sub-table per engine profile plus shared keys."""
    return read_toml(ENGINE_TABLE)


def engine_names() -> tuple[str, ...]:
    """Engine profiles, in table order: ik, ik-2025, mainline."""
    return tuple(k for k, v in engines().items() if isinstance(v, dict))


def engine_profile(name: str) -> dict[str, Any]:
    """One engine profile's flag table.

    Raises:
        UsageError: no such profile.
    """
    prof = engines().get(name)
    if not isinstance(prof, dict):
        raise UsageError(f"unknown engine {name!r}", hint=f"choose one of {', '.join(engine_names())}")
    return prof


@functools.cache
def quant_engine(engine: str) -> str:
    """The quant engine whose type catalogue and llama-quantize rules an engine profile uses (``quant_engine``)."""
    return str(engine_profile(engine)["quant_engine"])


def server_parallel(engine: str, n_parallel: int | None, kv_unified: bool) -> tuple[int, bool, str]:
    """(slots, unified KV cache, a note) llama-server runs for ``-np`` (None: not given) and ``-kvu`` as given.

    The profile's ``parallel_default`` (engines.toml) is what the server takes without ``-np``; a negative one is
    auto, resolved by ``parallel_auto``: mainline runs 4 slots sharing one unified cache, whatever -kvu/-no-kvu says
    (common/arg.cpp:1403 ``n_parallel = -1``, tools/server/server.cpp:156-160 @0c1e57098); ik 1 (common.h:300
    @8337e4cd), and it has no -kvu (its cache is always one buffer of -c cells).

    Raises:
        UsageError: -np 0 (mainline: "invalid value for n_parallel", common/arg.cpp:2547), or a negative -np where
            the engine has no automatic slot count.
    """
    prof = engine_profile(engine)
    if n_parallel == 0:
        raise UsageError("-np 0: llama-server needs at least one slot")
    unified = kv_unified and bool(prof["kv_unified"])
    n = prof["parallel_default"] if n_parallel is None else n_parallel
    if n > 0:
        return n, unified, ""
    auto = prof.get("parallel_auto")
    if not auto:
        raise UsageError(f"-np {n_parallel}: {engine} has no automatic slot count", hint="give -np 1 or more")
    n, unified = int(auto["n_parallel"]), bool(auto["kv_unified"])
    given = "no -np" if n_parallel is None else f"-np {n_parallel} (auto)"
    return n, unified, (f"{given}: {engine}'s llama-server runs {n} slots"
                        + (" sharing one unified KV cache" if unified else "")
                        + " (its default); checked as -np " + str(n) + (" -kvu" if unified else ""))
