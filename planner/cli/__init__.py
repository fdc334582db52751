"""Thin click CLI: parse options, make one library call, hand the result to planner.output.

``app`` holds the group (errors → exit codes, option range checks), ``options`` the option blocks several commands
share; each other module registers the commands of one job on ``main``.
"""

from __future__ import annotations

from planner.cli import check, compare, describe, export, logs, plan  # noqa: F401 - importing registers the commands
from planner.cli.app import main

__all__ = ["main"]
