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


# --- hardware options (shared) and the probe / profiles commands ------------------------------------------------

HARDWARE_OPTION_NAMES = ("profile", "vram", "ram", "cores", "gpu", "ram_bw")


def hardware_options(func):
    """Add --profile/--vram/--ram/--cores/--gpu/--ram-bw; the command receives them as one ``hw_opts`` dict.

    Use: ``hw = hardware.hardware_from_options(**hw_opts)`` (add ``disk_path=`` for the model's disk).
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        hw_opts = {name: kwargs.pop(name) for name in HARDWARE_OPTION_NAMES}
        return func(*args, hw_opts=hw_opts, **kwargs)

    options = [
        click.option("--profile", metavar="NAME|PATH",
                     help="hardware profile: a name from `gguf-planner profiles` or a .toml path"),
        click.option("--vram", metavar="GIB[,GIB...]",
                     help="GPU memory per GPU in GiB, e.g. 24 or 24,24; 0 for CPU only"),
        click.option("--ram", type=float, metavar="GIB", help="system RAM in GiB"),
        click.option("--cores", type=int, metavar="N", help="physical CPU cores"),
        click.option("--gpu", metavar="MODEL", help="GPU model for bandwidth and PCIe, e.g. 'RTX 3090'"),
        click.option("--ram-bw", "ram_bw", type=float, metavar="GB/S", help="RAM bandwidth in GB/s"),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


@main.command("probe")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--save", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="also write the result as a hardware profile")
@click.option("--force", is_flag=True, help="let --save overwrite an existing file")
@hardware_options
def probe_command(as_json, save, force, hw_opts):
    """Describe this machine (GPUs, RAM, CPU, THP, NUMA) and where each figure came from.

    Flags override the probe; with --vram/--ram and no --profile the machine is described by hand and the
    figures not given come from the default profile.

    \b
    Examples:
      gguf-planner probe
      gguf-planner probe --json
      gguf-planner probe --save mybox.toml
      gguf-planner probe --vram 24,24 --ram 128 --gpu "RTX 3090"
    """
    from planner import hardware, output

    hw = hardware.hardware_from_options(**hw_opts)
    if save:
        output.note(f"saved profile {hardware.save_profile(hw, save, force=force)}")
    output.emit(hw, as_json=as_json, render=output.render_hardware)


@main.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def profiles_command(as_json):
    """List the shipped hardware profiles (use one with --profile NAME).

    \b
    Examples:
      gguf-planner profiles
      gguf-planner probe --profile rtx3090ti-9950x-96g
    """
    from planner import hardware, output

    output.emit(hardware.list_profiles(), as_json=as_json, render=output.render_profiles)
