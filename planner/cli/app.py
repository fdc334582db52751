"""The click group every command hangs on: each exception becomes one line and an exit code, and numeric options
are range-checked before a command runs."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from planner import __version__
from planner.errors import PlannerError, exit_code_for, format_error


def _safe_streams() -> None:
    """Streams that never raise on odd text: a closed stdout is an error of its own (exit 3), and an encoding
    that cannot show a character (PYTHONIOENCODING=ascii) writes an escape instead of failing."""
    from planner.errors import OutputWriteError

    if sys.stdout is None:
        raise OutputWriteError("stdout", "it is closed", hint="run the command with stdout open, e.g. > out.txt")
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and (getattr(stream, "encoding", "") or "").lower().replace("-", "") != "utf8":
            reconfigure(errors="backslashreplace")


def _stdout_failed(exc: OSError) -> int:
    """stdout cannot take the output (disk full, I/O error): one line on stderr, exit 3, and the dead stream
    is pointed at /dev/null so the interpreter's last flush cannot fail again."""
    import errno as errno_

    from planner.errors import OutputWriteError, exit_code_for

    reason = {errno_.ENOSPC: "the disk is full", errno_.EFBIG: "the file size limit was reached"}.get(
        exc.errno or 0, exc.strerror or str(exc))
    err = OutputWriteError("stdout", reason, hint="nothing more was written")
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    except OSError:
        pass
    click.echo(format_error(err), err=True)
    return exit_code_for(err)


@contextmanager
def _young_collections_every(allocations: int) -> Iterator[None]:
    """CPython's cyclic collector with its first generation collected every ``allocations`` net allocations
    instead of 700: a plan makes ~10^5-10^6 short-lived objects (graph replays, solver models) and few cycles.
    Measured on the 2-core CI machine (gc.callbacks): collector time of deepseek-v4-flash on mainline 0.49 ->
    0.27 CPU s, of the headline 0.088 -> 0.052; the older generations keep their thresholds."""
    old = gc.get_threshold()
    gc.set_threshold(allocations, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


class PlannerGroup(click.Group):
    """Maps every exception to one line and an exit code (tracebacks only with GGUF_PLANNER_DEBUG=1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            _safe_streams()
            with _young_collections_every(10_000):
                result = super().invoke(ctx)
            if sys.stdout is not None:
                sys.stdout.flush()       # a full disk on stdout shows here, not at interpreter exit
            return result
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # stdout closed early (e.g. `| head`): no traceback, no further writes to the dead pipe
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        except OSError as exc:
            if exc.errno in (28, 5, 27) and not isinstance(exc, PlannerError) and sys.stdout is not None \
                    and not os.environ.get("GGUF_PLANNER_DEBUG"):
                sys.exit(_stdout_failed(exc))    # ENOSPC / EIO / EFBIG while writing the output
            if os.environ.get("GGUF_PLANNER_DEBUG") or "PYTEST_CURRENT_TEST" in os.environ:
                raise
            click.echo(format_error(exc), err=True)
            sys.exit(exit_code_for(exc))
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            if os.environ.get("GGUF_PLANNER_DEBUG") or (
                    not isinstance(exc, PlannerError) and "PYTEST_CURRENT_TEST" in os.environ):
                raise
            click.echo(format_error(exc), err=True)
            sys.exit(exit_code_for(exc))


# click parameter name -> the option a user typed, for the range checks of planner.validate.OPTION_RANGES
_OPTION_OF = {"vram": "--vram", "ram": "--ram", "cores": "--cores", "ram_bw": "--ram-bw", "ubatch": "--ub",
              "batch": "--batch", "amb": "--amb", "threads": "--threads", "gpu_margin": "--gpu-margin", "os_reserve": "--os-reserve",
              "min_tg": "--min-tg", "min_pp": "--min-pp", "max_size": "--max-size", "pareto": "--pareto",
              "quality_slack": "--quality-slack", "port": "--port"}


class CheckedCommand(click.Command):
    """A command whose numeric options are range-checked before it runs: one line naming the option, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        from planner.validate import check_option

        for name, value in ctx.params.items():
            option = _OPTION_OF.get(name)
            if option is None or value is None:
                continue
            if name == "vram":
                for item in str(value).split(","):
                    try:
                        number = float(item)
                    except ValueError:
                        continue          # not a number: the hardware parser names it
                    check_option(option, number)
            else:
                check_option(option, value)
        return super().invoke(ctx)


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


main.command_class = CheckedCommand
