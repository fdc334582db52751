"""Fact tables shipped in ``planner/data``: CSV files whose leading ``#`` lines cite their sources."""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).parent / "data"


def read_csv_table(name: str) -> list[dict[str, str]]:
    """Rows of ``data/<name>`` as dicts, skipping ``#`` comment lines (the sources and column notes)."""
    with (DATA / name).open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))
