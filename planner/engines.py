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
