"""Thin click CLI: parse options, make one library call, hand the result to output.py."""

from __future__ import annotations

import functools
import os
import sys

import click

from planner import __version__
from planner.errors import PlannerError, exit_code_for, format_error
from planner.units import GIB


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


class PlannerGroup(click.Group):
    """Maps every exception to one line and an exit code (tracebacks only with GGUF_PLANNER_DEBUG=1)."""

    def invoke(self, ctx: click.Context):
        try:
            _safe_streams()
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

    def invoke(self, ctx: click.Context):
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


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def models_command(as_json):
    """List the built-in models: architecture, total/active parameters, layers, attention kind.

    \b
    Examples:
      gguf-planner models
      gguf-planner plan gpt-oss-120b --vram 24 --ram 128
    """
    from planner import output
    from planner.model_list import list_models

    output.emit(list_models(), as_json=as_json, render=output.render_models)


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


# --- model, recipe and run options (shared) -----------------------------------------------------

def model_options(func):
    """MODEL plus the recipe options of `footprint` (they win over a GGUF's stored types)."""
    options = [
        click.option("--base-type", metavar="FTYPE", help="llama-quantize base type, e.g. IQ3_K, Q4_K_M"),
        click.option("--custom-q", "custom_q", multiple=True, metavar="RE=TYPE,...",
                     help="ik --custom-q rules (mainline: --tensor-type items); repeatable"),
        click.option("--recipe-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                     help="recipe file: one regex=type per line, # comments"),
        click.option("--token-embedding-type", metavar="TYPE"),
        click.option("--output-tensor-type", metavar="TYPE"),
        click.option("--pure", is_flag=True, help="llama-quantize --pure (no per-tensor default rules)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def imatrix_options(func):
    """--imatrix / --no-imatrix / --ignore-imatrix-rules for commands that predict what llama-quantize writes."""
    options = [
        click.option("--imatrix", "imatrix_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                     help="quantize with this imatrix: llama-quantize's imatrix rules and its importances apply "
                          "[default: an imatrix is assumed, as plan's workflow computes one; a quantized GGUF's "
                          "quantize.imatrix.* record wins]"),
        click.option("--no-imatrix", is_flag=True, help="quantize without an imatrix (no-imatrix rules, "
                                                        "imatrix-only types refused)"),
        click.option("--ignore-imatrix-rules", is_flag=True,
                     help="ik llama-quantize --ignore-imatrix-rules: imatrix-only types without an imatrix"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_options(func):
    """Context, KV cache, batch and load flags that change memory and speed."""
    options = [
        click.option("--engine", type=click.Choice(["ik", "ik-2025", "mainline"]), default="ik", show_default=True,
                     help="engine profile the flags and type sets are for"),
        click.option("--ctx", default=None, metavar="N|max",
                     help="context length [default: 32768, or the model's training context if shorter]"),
        click.option("--kv", default="q8_0", show_default=True, metavar="TYPE|auto",
                     help="KV cache type (-ctk and -ctv); plan: auto = q8_0, or q4_0 when q8_0 does not fit"),
        click.option("--ub", "ubatch", type=int, default=None,
                     help="-ub micro-batch [plan/place default: the largest of 512..4096 that fits beside the plan; "
                          "with --min-pp the smallest that meets it; else 512]"),
        click.option("--batch", "batch", type=int, default=None, help="-b logical batch, >= -ub [default: max(2048, -ub)]"),
        click.option("--amb", type=int, default=512, show_default=True, help="-amb MiB (ik)"),
        click.option("--load", type=click.Choice(["rtr", "no-mmap", "mmap"]), default=None,
                     help="how weights are loaded (plan/place default: chosen by predicted speed: --no-mmap for "
                          "hybrid ik runs unless -rtr is predicted faster, rtr for CPU-only ik, mmap for mainline)"),
        click.option("--threads", type=int, default=None, help="CPU threads (default: physical cores)"),
        click.option("--gpu-margin", type=float, default=None, metavar="GIB",
                     help="VRAM kept free per GPU [default: 1.0]"),
        click.option("--os-reserve", type=float, default=None, metavar="GIB",
                     help="RAM kept for the OS and the server process [default: 4.0]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_config(engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin, os_reserve, hw=None):
    from planner.launch import engine_profile
    from planner.runconfig import RunConfig, batch_sizes

    ctx_n = 0   # 0: chosen per model (planner.plan.resolve_ctx) or searched (--ctx max)
    if ctx not in (None, "max"):
        from planner.errors import UsageError
        from planner.validate import check_option

        try:
            ctx_n = int(ctx)
        except ValueError:
            raise UsageError(f"--ctx expects a number or 'max', got {ctx!r}") from None
        check_option("--ctx", ctx_n)
    ub, b = batch_sizes(ubatch, batch)
    return RunConfig(engine=engine, ctx=ctx_n, type_k=kv, type_v=kv, ubatch=ub, batch=b, amb=amb,
                     load=load or engine_profile(engine)["default_load"],
                     threads=threads or (hw.threads_default if hw is not None else None),
                     **_margins(gpu_margin, os_reserve))


def _margins(gpu_margin, os_reserve) -> dict:
    out = {}
    if gpu_margin is not None:
        out["gpu_margin_bytes"] = int(gpu_margin * GIB)
    if os_reserve is not None:
        out["os_reserve_bytes"] = int(os_reserve * GIB)
    return out


def _cluster_from_options(cluster, rpc_hosts, hw_opts):
    """The cluster of ``--cluster FILE`` or of ``--rpc-host`` values over the main host's hardware; None if neither."""
    if not cluster and not rpc_hosts:
        return None
    from planner import cluster as clustermod
    from planner import hardware

    if cluster:
        if rpc_hosts or any(v is not None for v in hw_opts.values()):
            raise click.UsageError("--cluster describes every host: leave out --rpc-host and the hardware options")
        return clustermod.load_cluster(cluster)
    return clustermod.cluster_from_flags(hardware.hardware_from_options(**hw_opts), list(rpc_hosts))


def _local_dir(path):
    """The folder of a local model/output path, for the free space of its disk; None otherwise."""
    from pathlib import Path

    if not path or "://" in path:
        return None
    p = Path(path).expanduser()
    d = p if p.is_dir() else p.parent
    return str(d) if (p.suffix == ".gguf" or p.is_dir()) and d.is_dir() else None


def _recipe_text(recipe_file):
    if not recipe_file:
        return None
    from pathlib import Path

    return Path(recipe_file).read_text()


@main.command("inspect")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
def inspect_command(model, as_json):
    """Show a model's tensors: architecture, parameters, size, BPW, types, per-role and per-layer bytes.

    MODEL is a GGUF file (or the first shard of a split), a config.json, a URL, or a built-in name
    (default: qwen3-235b-a22b).

    \b
    Examples:
      gguf-planner inspect qwen3-235b-a22b
      gguf-planner inspect Qwen3-235B-A22B-mix-IQ3_K-00001-of-00003.gguf --json
    """
    from planner import output
    from planner.source import load_model
    from planner.summary import summarize

    output.emit(summarize(load_model(model)), as_json=as_json, render=output.render_summary)


@main.command("footprint")
@click.argument("model", required=False)
@model_options
@click.option("--engine", type=click.Choice(["ik", "mainline"]), default="ik", show_default=True)
@click.option("--all-tensors", is_flag=True, help="list every tensor, not only the first of each role")
@imatrix_options
@click.option("--json", "as_json", is_flag=True)
def footprint_command(model, base_type, custom_q, recipe_file, token_embedding_type, output_tensor_type, pure,
                      engine, all_tensors, imatrix_file, no_imatrix, ignore_imatrix_rules, as_json):
    """Predict what llama-quantize writes: per-tensor types, bytes, GiB, BPW, per-type counts, fallbacks.

    \b
    Examples:
      gguf-planner footprint qwen3-235b-a22b --base-type IQ3_K --recipe-file examples/seed-mix-IQ3_K.recipe
      gguf-planner footprint model-bf16.gguf --base-type Q4_K_M --json
    """
    from planner import output
    from planner.imatrix_use import declared_imatrix
    from planner.mix import mix_from_options
    from planner.quantize import default_base_type
    from planner.source import load_model

    imx = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, engine)
    tmap = load_model(model)
    _, fp = mix_from_options(tmap, base_type=base_type or default_base_type(engine),
                             custom_q=custom_q, recipe_text=_recipe_text(recipe_file), engine=engine,
                             token_embedding_type=token_embedding_type, output_tensor_type=output_tensor_type,
                             pure=pure, imatrix=imx)
    output.emit(fp, as_json=as_json, render=lambda f: output.render_footprint(f, all_tensors=all_tensors))


def _write_json_out(doc, out, force):
    if not out:
        return
    from pathlib import Path

    from planner import output
    from planner.fileout import write_new_file

    write_new_file(Path(out), output.dumps(doc), force=force)
    output.note(f"wrote {out}")


@main.command("place")
@click.argument("model", required=False)
@model_options
@hardware_options
@run_options
@click.option("--model-path", metavar="PATH", help="path of the GGUF in the emitted command (default: MODEL)")
@click.option("--min-tg", type=float, help="refuse placements slower than this many tokens/s")
@click.option("--min-pp", type=float, help="refuse placements with slower prompt processing (tokens/s)")
@click.option("--check-binary", type=click.Path(exists=True, dir_okay=False),
              help="refuse launch flags this llama-server binary does not list in --help")
@click.option("--out", type=click.Path(dir_okay=False), help="write the plan JSON here")
@click.option("--force", is_flag=True, help="let --out overwrite")
@click.option("--json", "as_json", is_flag=True)
def place_command(model, base_type, custom_q, recipe_file, token_embedding_type, output_tensor_type, pure,
                  hw_opts, engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin, os_reserve, model_path,
                  min_tg, min_pp, check_binary, out, force, as_json):
    """Choose GPU(s) or CPU for every tensor of a given mix, maximising predicted generation speed.

    \b
    Examples:
      gguf-planner place qwen3-235b-a22b --recipe-file examples/seed-mix-IQ3_K.recipe --profile rtx3090ti-9950x-96g
      gguf-planner place model.gguf --vram 24,24 --ram 256 --ctx max --engine mainline
    """
    from planner import api, hardware, output
    from planner.mix import mix_from_options
    from planner.request import EmitOptions, PlanRequest
    from planner.source import load_model

    tmap = load_model(model)
    hw = hardware.hardware_from_options(**hw_opts)
    run = _run_config(engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin, os_reserve, hw)
    types, fp = mix_from_options(tmap, base_type=base_type, custom_q=custom_q, recipe_text=_recipe_text(recipe_file),
                                 engine=engine, token_embedding_type=token_embedding_type,
                                 output_tensor_type=output_tensor_type, pure=pure)
    doc = api.place(model, tmap, types, hw, PlanRequest(run=run, min_tg=min_tg, min_pp=min_pp, ctx_max=(ctx == "max"),
                                                        load_auto=load is None, ub_auto=ubatch is None and batch is None),
                    EmitOptions(model_path=model_path, check_binary=check_binary), quantized_here=fp is not None)
    _write_json_out(doc, out, force)
    output.emit(doc, as_json=as_json, render=output.render_plan)


@main.command("check", context_settings={"ignore_unknown_options": True})
@click.argument("model", required=False)
@model_options
@hardware_options
@click.option("--engine", type=click.Choice(["ik", "ik-2025", "mainline"]), default="ik", show_default=True)
@click.option("--gpu-margin", type=float, default=None, metavar="GIB", help="VRAM kept free per GPU [default: 1.0]")
@click.option("--os-reserve", type=float, default=None, metavar="GIB",
              help="RAM kept for the OS and the server process [default: 4.0]")
@click.option("--cluster", metavar="NAME|PATH", help="the hosts of a command with --rpc: a cluster TOML")
@click.option("--rpc-host", "rpc_hosts", multiple=True, metavar="NAME=KEY:VALUE,...",
              help="an rpc-server host of the command's --rpc (repeatable, in --rpc order)")
@imatrix_options
@click.option("--json", "as_json", is_flag=True)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def check_command(model, base_type, custom_q, recipe_file, token_embedding_type, output_tensor_type, pure, hw_opts,
                  engine, gpu_margin, os_reserve, cluster, rpc_hosts, imatrix_file, no_imatrix, ignore_imatrix_rules,
                  as_json, command):
    """Predict memory per device and speed of your own llama-server command, and what will not fit.

    Put the command after `--`. The model is the command's -m unless MODEL or recipe options are given
    (they win, so a mix can be checked before it is made). Exits 2 when it does not fit.

    \b
    Examples:
      gguf-planner check --profile rtx3090ti-9950x-96g -- llama-server -m model.gguf -c 32768 -ngl 99 -ot "blk\\.[2-9][0-9]\\.ffn.*=CPU"
      gguf-planner check qwen3-235b-a22b --recipe-file examples/seed-mix-IQ3_K.recipe --vram 24 --ram 96 -- llama-server -c 32768 -ctk q8_0 -ctv q8_0 -ngl 99 -rtr
    """
    import dataclasses

    from planner import hardware, output
    from planner.errors import UsageError
    from planner.launch import parse_server_command, placement_from_command
    from planner import api
    from planner.imatrix_use import declared_imatrix
    from planner.mix import mix_from_options
    from planner.request import PlanRequest
    from planner.source import load_model

    from pathlib import Path

    if model is not None and command and command[0].startswith("-") and \
            Path(model).name.removesuffix(".exe") in ("llama-server", "server", "llama-sweep-bench", "llama-cli"):
        # `check -- llama-server -m ...`: click binds the first word after `--` to MODEL; it is the binary
        model, command = None, (model, *command)
    if not command:
        raise UsageError("give the llama-server command after --")
    parsed = parse_server_command(list(command), engine=engine)
    if not (model or parsed.model):
        raise UsageError("no model: give MODEL or -m in the command")
    tmap = load_model(model or parsed.model)
    clus = _cluster_from_options(cluster, rpc_hosts, hw_opts)
    hw = clus.main if clus is not None else hardware.hardware_from_options(**hw_opts)
    run = dataclasses.replace(parsed.run, ctx=parsed.run.ctx or tmap.params.n_ctx_train,
                              threads=parsed.run.threads or hw.threads_default,
                              **_margins(gpu_margin, os_reserve))
    imx = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, engine)
    types, _ = mix_from_options(tmap, base_type=base_type, custom_q=custom_q, recipe_text=_recipe_text(recipe_file),
                                engine=engine, token_embedding_type=token_embedding_type,
                                output_tensor_type=output_tensor_type, pure=pure, imatrix=imx)
    if parsed.rpc or clus is not None:
        if clus is None:
            raise UsageError("the command uses --rpc: describe those hosts with --cluster FILE or --rpc-host "
                             "NAME=addr:IP,port:P,ram:GIB,bw:LINK (one per --rpc endpoint, in order)")
        from planner.cluster_plan import check_cluster

        run = dataclasses.replace(run, threads=parsed.run.threads or clus.main.threads_default)
        result = check_cluster(tmap, types, parsed, clus, run, warnings=parsed.warnings)
    else:
        placement = placement_from_command(tmap, parsed, [f"CUDA{g.index}" for g in hw.gpus], types=types,
                                           gpu_free_bytes=[g.free_bytes if g.free_bytes is not None else g.total_bytes
                                                           for g in hw.gpus])
        result = api.check(tmap, types, placement, hw, PlanRequest(run=run), warnings=parsed.warnings, imatrix=imx)
    output.emit(result, as_json=as_json, render=output.render_check)
    if not result.memory.fits:
        sys.exit(2)


@main.command("export")
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="a plan JSON from `plan --out` or `place --out`")
@click.option("--out", type=click.Path(dir_okay=False), help="script to write, e.g. run.sh")
@click.option("--scripts", "scripts_dir", type=click.Path(file_okay=False),
              help="a cluster plan: write main.sh and one <host>.sh per rpc-server host into this folder")
@click.option("--model-path", metavar="PATH", help="GGUF path baked into the script (MODEL env var overrides it)")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--check-binary", type=click.Path(exists=True, dir_okay=False), help="refuse flags this binary lacks")
@click.option("--quantize", "quantize_script", is_flag=True,
              help="write the quantize workflow (BF16 source, imatrix, llama-quantize) instead of the launch script")
@click.option("--force", is_flag=True, help="overwrite an existing script")
def export_command(plan_file, out, scripts_dir, model_path, port, check_binary, quantize_script, force):
    """Write a bash launch script for a plan (set -euo pipefail, quoted arguments, predictions as comments).

    With --quantize: the plan's quantize workflow as a script instead (the same renderer).

    \b
    Examples:
      gguf-planner plan --vram 24 --ram 96 --out plan.json
      gguf-planner export --plan plan.json --out run.sh --model-path /models/mix-00001-of-00003.gguf
      gguf-planner export --plan plan.json --quantize --out quantize.sh
    """
    from pathlib import Path

    from planner import output
    from planner.documents import load_plan_json, quantize_script as workflow_script, script_comments
    from planner.fileout import write_new_file
    from planner.launch import build_launch, check_flags, export_script, help_of_binary

    if quantize_script:
        write_new_file(Path(out), workflow_script(plan_file), force=force, mode=0o755)
        output.note(f"wrote {out}")
        return

    if scripts_dir:
        from planner.cluster_plan import export_cluster_json

        for written in export_cluster_json(plan_file, scripts_dir, force=force, model_path=model_path, port=port):
            output.note(f"wrote {written}")
        return
    if not out:
        raise click.UsageError("give --out run.sh (or --scripts DIR for a cluster plan)")
    saved = load_plan_json(plan_file)
    from planner.quoting import safe_filename

    path = model_path or saved.model_path or f"{safe_filename(saved.tmap.name)}.gguf"
    launch = build_launch(saved.tmap, saved.devices, saved.layer_device, saved.run, path, port=port,
                          types=saved.types)
    if check_binary:
        check_flags(launch.argv, help_of_binary(check_binary))
    text = export_script(launch, model_path=path, port=port, comments=script_comments(saved))
    write_new_file(Path(out), text, force=force, mode=0o755)
    output.note(f"wrote {out}")


@main.command("plan")
@click.argument("model", required=False)
@hardware_options
@run_options
@click.option("--objective", type=click.Choice(["balanced", "quality", "speed"]), default="balanced", show_default=True,
              help="balanced: the best quality, then the fastest plan within --quality-slack of it; quality: "
                   "least predicted loss; speed: fastest predicted generation")
@click.option("--min-tg", type=float, help="minimum predicted generation speed, tokens/s")
@click.option("--min-pp", type=float, help="minimum predicted prompt processing speed (one ubatch), tokens/s")
@click.option("--max-size", type=float, metavar="GIB", help="cap on the total size of the weights")
@click.option("--allow", multiple=True, metavar="TYPE", help="candidate types (repeatable; default: a curated set)")
@click.option("--deny", multiple=True, metavar="TYPE", help="types never to use (repeatable)")
@click.option("--fixed", multiple=True, metavar="REGEX=TYPE", help="pin matching tensors to a type (repeatable)")
@click.option("--pareto", type=int, default=0, metavar="N",
              help="return N non-dominated plans from the best-quality to the fastest (table / JSON list)")
@click.option("--granularity", type=click.Choice(["layer", "role", "band"]), default="layer", show_default=True,
              help="types per tensor of each layer, one per role, or one per role in 4 layer bands (shorter recipes)")
@click.option("--check-binary", type=click.Path(exists=True, dir_okay=False),
              help="refuse launch flags this llama-server binary does not list in --help")
@click.option("--imatrix", type=click.Path(exists=True, dir_okay=False),
              help="imatrix file (.dat or GGUF) llama-quantize will use [default: one is assumed and the workflow "
                   "computes it]")
@click.option("--no-imatrix", is_flag=True, help="plan for quantizing without an imatrix (no imatrix-only types)")
@click.option("--ignore-imatrix-rules", is_flag=True,
              help="ik llama-quantize --ignore-imatrix-rules: allow imatrix-only types without an imatrix")
@click.option("--no-floors", is_flag=True,
              help="let output/token_embd/attn_v go below the engine's own floors for the plan's bpw class")
@click.option("--max-rules", type=int, default=None, metavar="N",
              help="merge per-role type groups until the recipe has at most N rules (the cost is reported)")
@click.option("--style", "recipe_style", type=click.Choice(["plain", "ubergarm"]), default="plain", show_default=True,
              help="recipe text: one --custom-q line, or grouped by role and layer range with comments (the same "
                   "rules)")
@click.option("--quality-slack", type=float, default=0.5, show_default=True, metavar="PCT",
              help="balanced: the fastest plan whose predicted PPL ratio is within PCT %% of the best-quality plan")
@click.option("--model-path", metavar="PATH", help="output GGUF path used in the emitted commands")
@click.option("--cluster", metavar="NAME|PATH",
              help="plan across hosts joined by llama.cpp RPC: a cluster TOML (docs/rpc.md); it names the main "
                   "host's profile")
@click.option("--rpc-host", "rpc_hosts", multiple=True, metavar="NAME=KEY:VALUE,...",
              help="an rpc-server host, e.g. box2=addr:192.168.1.20,ram:256,bw:10gbe,cache (repeatable; the main "
                   "host is the machine described by the hardware options)")
@click.option("--scripts", "scripts_dir", type=click.Path(file_okay=False),
              help="cluster plans: write main.sh and one <host>.sh per rpc-server host into this folder")
@click.option("--out", type=click.Path(dir_okay=False), help="write the plan JSON here")
@click.option("--force", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def plan_command(model, hw_opts, engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin, os_reserve, objective,
                 min_tg, min_pp, max_size, allow, deny, fixed, pareto, granularity, check_binary, imatrix, no_imatrix,
                 ignore_imatrix_rules, no_floors, max_rules, recipe_style, quality_slack, model_path, cluster, rpc_hosts,
                 scripts_dir, out, force, as_json):
    """Choose quant types and device placement together (exact ILP), and emit the recipe and launch command.

    Without hardware flags the machine is probed; --vram/--ram describe a machine by hand and the remaining
    figures come from the default profile (the seed rig). A quantized GGUF keeps its types (this is `place`).

    \b
    Examples:
      gguf-planner plan --vram 24 --ram 96
      gguf-planner plan qwen3-235b-a22b --profile rtx4090-7950x-192g --ctx 65536 --out plan.json
      gguf-planner plan --vram 24,24 --ram 256 --engine mainline --min-tg 12
      gguf-planner plan deepseek-r1 --vram 24 --ram 128 --imatrix imatrix-DeepSeek-R1-0528.dat
    """
    from planner import api, hardware, output
    from planner.imatrix_use import declared_imatrix
    from planner.request import EmitOptions, PlanRequest

    clus = _cluster_from_options(cluster, rpc_hosts, hw_opts)
    if scripts_dir and clus is None:
        raise click.UsageError("--scripts writes a cluster's scripts: give --cluster or --rpc-host "
                               "(one box: `export --plan`)")
    hw = clus.main if clus is not None else hardware.hardware_from_options(
        **hw_opts, disk_path=_local_dir(model_path or model))
    run = _run_config(engine, ctx, "q8_0" if kv == "auto" else kv, ubatch, batch, amb, load, threads, gpu_margin,
                      os_reserve, hw)
    request = PlanRequest(run=run, objective=objective, min_tg=min_tg, min_pp=min_pp, load_auto=load is None,
                          ub_auto=ubatch is None and batch is None,
                          max_size_bytes=api.size_cap_bytes(max_size), allow=tuple(allow), deny=tuple(deny),
                          fixed=api.parse_fixed(fixed, run.qengine), has_imatrix=not no_imatrix,
                          quality_slack_pct=quality_slack, granularity=granularity, ctx_max=(ctx == "max"),
                          kv_auto=(kv == "auto"), pareto=pareto, imatrix=imatrix,
                          ignore_imatrix_rules=ignore_imatrix_rules, floors=not no_floors, max_rules=max_rules)
    declared_imatrix(imatrix, no_imatrix, ignore_imatrix_rules, engine)    # contradictions and engine flags
    if clus is not None:
        from planner.cluster_plan import write_cluster_scripts

        cdoc = api.plan_cluster(model, clus, request, EmitOptions(model_path=model_path, check_binary=check_binary))
        _write_json_out(cdoc, out, force)
        if scripts_dir:
            for path in write_cluster_scripts(cdoc, scripts_dir, force=force):
                output.note(f"wrote {path}")
        output.emit(cdoc, as_json=as_json, render=output.render_cluster_plan)
        return
    doc = api.plan(model, hw, request, EmitOptions(model_path=model_path, check_binary=check_binary))
    _write_json_out(doc, out, force)
    output.emit(doc, as_json=as_json, render=output.render_pareto if pareto else
                functools.partial(output.render_plan, style=recipe_style))


# --- verify and calibrate: the user's own engine logs -------------------------------------------

def _logs_model_mix(model, base_type, custom_q, recipe_file, token_embedding_type, output_tensor_type, pure,
                    engine):
    from planner.mix import mix_from_options
    from planner.source import load_model

    tmap = load_model(model)
    types, _ = mix_from_options(tmap, base_type=base_type, custom_q=custom_q, recipe_text=_recipe_text(recipe_file),
                                engine="mainline" if engine == "mainline" else "ik",
                                token_embedding_type=token_embedding_type, output_tensor_type=output_tensor_type,
                                pure=pure)
    return tmap, types


def log_options(func):
    """LOGS plus what `verify` and `calibrate` need to predict them: the model and mix, the machine, the engine
    profile and the command (when the logs do not show it)."""
    func = click.option("--command", "command", metavar="'llama-... ARGS'",
                        help="the command that produced the logs, when they do not show it")(func)
    func = click.option("--engine", type=click.Choice(["ik", "ik-2025", "mainline"]), default="ik",
                        show_default=True, help="engine profile of the logged build")(func)
    func = model_options(hardware_options(func))
    func = click.option("--model", "model", metavar="MODEL",
                        help="the model the logs ran (GGUF, config.json, built-in)")(func)
    return click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))(func)


@main.command("verify")
@log_options
@click.option("--json", "as_json", is_flag=True)
def verify_command(logs, model, base_type, custom_q, recipe_file, token_embedding_type, output_tensor_type, pure,
                   hw_opts, engine, command, as_json):
    """Compare engine logs with the prediction for the same model and command, term by term.

    LOGS are what llama-server, llama-cli, llama-sweep-bench or llama-bench printed (ik_llama.cpp or llama.cpp):
    weights and KV per device must match to 0.1 MiB; compute buffers and TG/PP are estimates, shown with their
    error.

    \b
    Examples:
      gguf-planner verify run.log --model Qwen3-235B-A22B-mix-IQ3_K-00001-of-00003.gguf --profile rtx3090ti-9950x-96g
      gguf-planner verify sweep.log --model qwen3-235b-a22b --recipe-file mix.recipe --base-type IQ3_K \\
          --command 'llama-sweep-bench -m m.gguf -ngl 99 -ot exps=CPU -fa -ctk q8_0 -ctv q8_0'
    """
    import shlex

    from planner import hardware, output
    from planner.verify import verify_logs

    tmap, types = _logs_model_mix(model, base_type, custom_q, recipe_file, token_embedding_type,
                                  output_tensor_type, pure, engine)
    hw = hardware.hardware_from_options(**hw_opts)
    reports = verify_logs(logs, tmap, types, hw, engine=engine, argv=shlex.split(command) if command else None)
    output.emit(reports, as_json=as_json, render=output.render_verify)


@main.command("calibrate")
@log_options
@click.option("--save", type=click.Path(dir_okay=False), metavar="PROFILE.toml",
              help="write the machine's profile with the fitted constants (use it with --profile)")
@click.option("--force", is_flag=True, help="let --save overwrite")
@click.option("--json", "as_json", is_flag=True)
def calibrate_command(logs, model, base_type, custom_q, recipe_file, token_embedding_type, output_tensor_type, pure,
                      hw_opts, engine, command, save, force, as_json):
    """Fit the speed model's constants to this machine from its own llama-sweep-bench output(s).

    Least squares on the model's terms (CPU/GPU bandwidth, PCIe, GEMM rates, launch cost, depth slope): the
    fitted values with their uncertainty, the residual of every row, and which constants the runs could not tell
    apart (benchmarks/calibration_design.py says which runs separate them).

    \b
    Examples:
      gguf-planner calibrate sweep.log --model qwen3-235b-a22b --base-type IQ3_K --recipe-file mix.recipe \\
          --profile rtx3090ti-9950x-96g --save mybox.toml
      gguf-planner plan --profile mybox.toml
    """
    import shlex

    from planner import hardware, output
    from planner.calibrate import calibrate_and_save

    tmap, types = _logs_model_mix(model, base_type, custom_q, recipe_file, token_embedding_type,
                                  output_tensor_type, pure, engine)
    hw = hardware.hardware_from_options(**hw_opts)
    res = calibrate_and_save(logs, tmap, types, hw, engine=engine, argv=shlex.split(command) if command else None,
                             save=save, force=force)
    output.emit(res, as_json=as_json, render=output.render_calibration)


@main.command("compare")
@click.argument("candidates", nargs=-1, required=True)
@click.option("--model", "model", help="model the named ftypes and recipes apply to (default: qwen3-235b-a22b)")
@hardware_options
@run_options
@imatrix_options
@click.option("--measured", multiple=True, metavar="NAME=PPL[+-ERR]|NAME=LOG",
              help="a measured PPL of candidate NAME (or a llama-perplexity log), shown next to the prediction; "
                   "repeatable; the reference PPL is a candidate's or --reference-ppl")
@click.option("--reference-ppl", metavar="PPL[+-ERR]|LOG",
              help="PPL of the unquantized model (or a Q8_0) on the same text, for --measured")
@click.option("--plot", type=click.Path(dir_okay=False), help="write size vs quality (speed as colour), .png or .svg")
@click.option("--force", is_flag=True, help="let --plot overwrite")
@click.option("--json", "as_json", is_flag=True)
def compare_command(candidates, model, hw_opts, engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin,
                    os_reserve, imatrix_file, no_imatrix, ignore_imatrix_rules, measured, reference_ppl, plot, force,
                    as_json):
    """Compare candidate mixes side by side on this hardware: size, BPW, fit, GPU/CPU bytes, speed, quality.

    A candidate is a named ftype (IQ3_K), a recipe string (re=type,...), a recipe file, a GGUF file, or a
    plan JSON. Non-dominated rows (size, TG, quality) are marked.

    \b
    Examples:
      gguf-planner compare IQ3_K IQ4_KS Q4_K_M examples/seed-mix-IQ3_K.recipe --vram 24 --ram 96 --plot out.png
    """
    from planner import hardware, output
    from planner.compare import compare, plot_comparison
    from planner.imatrix_use import declared_imatrix

    imx = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, engine)
    hw = hardware.hardware_from_options(**hw_opts)
    run = _run_config(engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin, os_reserve, hw)
    result = compare(list(candidates), model=model, hw=hw, run=run, imatrix=imx, measured=list(measured),
                     reference=reference_ppl)
    if plot:
        plot_comparison(result, plot, force=force)
        output.note(f"wrote {plot}")
    output.emit(result, as_json=as_json, render=output.render_compare)
