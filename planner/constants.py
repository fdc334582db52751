"""The constants of the memory and speed estimates (``data/speed_constants.toml``), each with its source there."""

from __future__ import annotations

from typing import Any

from planner.tables import read_toml


def constants() -> dict[str, Any]:
    """Estimate constants (memory reserves, efficiencies), each with its source in the TOML (read once)."""
    return read_toml("speed_constants.toml")
