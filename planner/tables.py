"""Fact tables shipped in ``planner/data`` (CSV files whose leading ``#`` lines cite their sources, TOML tables),
read from one place: :data:`DATA` is the folder, :func:`read_csv_table` and :func:`read_toml` load a table once."""

from __future__ import annotations

import csv
import functools
import tomllib
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


def read_csv_table(name: str) -> list[dict[str, str]]:
    """Rows of ``data/<name>`` as dicts, skipping ``#`` comment lines (the sources and column notes)."""
    with (DATA / name).open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


@functools.cache
def read_toml(name: str) -> dict[str, Any]:
    """``data/<name>`` parsed (cached: the tables are read once per process; callers must not mutate them)."""
    return tomllib.loads((DATA / name).read_text())
