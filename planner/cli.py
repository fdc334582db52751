"""Thin click CLI: parse options, make one library call, hand the result to output.py."""

from __future__ import annotations

import os
import sys

import click

from planner import __version__
from planner.errors import PlannerError, exit_code_for, format_error


class PlannerGroup(click.Group):
    """Maps every exception to one line and an exit code (tracebacks only with GGUF_PLANNER_DEBUG=1)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            if os.environ.get("GGUF_PLANNER_DEBUG") or (
                    not isinstance(exc, PlannerError) and "PYTEST_CURRENT_TEST" in os.environ):
                raise
            click.echo(format_error(exc), err=True)
            sys.exit(exit_code_for(exc))


@click.group(cls=PlannerGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                  "max_content_width": 110})
@click.version_option(__version__, prog_name="gguf-planner")
def main() -> None:
    """Plan quant types and device placement for huge GGUF models on one box.

    \b
    Examples:
      gguf-planner plan --vram 24 --ram 96
      gguf-planner inspect qwen3-235b-a22b
      gguf-planner probe --json
    """


# --- commands are registered below, one block per command -------------------------------------
