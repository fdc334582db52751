"""The one output sink: results to stdout as rich tables or JSON, progress and notes to stderr.

Library stages return frozen dataclasses; commands hand them here (``output.emit(result, as_json=...,
render=output.render_x)``).  One module per job: ``sink`` (JSON, tables, notes, the size formats),
``sections`` (blocks several reports share), ``listings`` (probe, profiles, models, inspect, footprint), ``plan``
(plan, --pareto, cluster plans) and ``reports`` (check, compare, verify, calibrate).  Every public name is
re-exported here, so callers import ``planner.output`` only.
"""

from __future__ import annotations

from planner.output.listings import render_footprint, render_hardware, render_models, render_profiles, render_summary
from planner.output.plan import render_cluster_plan, render_pareto, render_plan
from planner.output.reports import render_calibration, render_check, render_compare, render_verify
from planner.output.sink import (MAX_TABLE_ROWS, Renderer, dumps, emit, gib, mib, note, pct, print_json, print_kv,
                                 print_table, print_text, to_jsonable)

__all__ = [
    "MAX_TABLE_ROWS", "Renderer", "dumps", "emit", "gib", "mib", "note", "pct", "print_json", "print_kv",
    "print_table", "print_text", "to_jsonable",
    "render_hardware", "render_profiles", "render_models", "render_summary", "render_footprint",
    "render_plan", "render_pareto", "render_cluster_plan",
    "render_check", "render_compare", "render_verify", "render_calibration",
]
