"""The options several commands share (hardware, model and recipe, imatrix, run, logs) and the small
conversions from their values to the library's requests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from planner.units import GIB

if TYPE_CHECKING:
    from planner.cluster import Cluster
    from planner.hardware import Hardware
    from planner.imatrix_use import ImatrixUse
    from planner.runconfig import RunConfig
    from planner.tensors import TensorMap

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]   # what click.option(...) returns

HARDWARE_OPTION_NAMES = ("profile", "vram", "ram", "cores", "gpu", "ram_bw")
ENGINE_PROFILES = ("ik", "ik-2025", "mainline")    # data/engines.toml's profiles (tests/test_options.py checks)


def stack(func: F, options: Sequence[Decorator]) -> F:
    """``func`` under ``options`` in the order written: the first is the first in --help."""
    out: Callable[..., Any] = func
    for option in reversed(options):
        out = option(out)
    return cast(F, out)       # click options register parameters on the function and return it


def engine_option(help: str | None = None, choices: Sequence[str] = ENGINE_PROFILES) -> Decorator:  # noqa: A002
    """--engine: the engine profile a command predicts for (default ik)."""
    return click.option("--engine", type=click.Choice(list(choices)), default="ik", show_default=True, help=help)


def json_option(help: str | None = None) -> Decorator:  # noqa: A002
    """--json: print the result as JSON (planner.output's one sink) instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def margin_options(func: F) -> F:
    """--gpu-margin / --os-reserve: memory kept free per GPU and for the OS (run_options and `check`)."""
    return stack(func, [
        click.option("--gpu-margin", type=float, default=None, metavar="GIB",
                     help="VRAM kept free per GPU [default: 1.0]"),
        click.option("--os-reserve", type=float, default=None, metavar="GIB",
                     help="RAM kept for the OS and the server process [default: 4.0]"),
    ])


def cluster_options(cluster_help: str, rpc_host_help: str) -> Decorator:
    """--cluster / --rpc-host (`plan` and `check`); the command reads them with :func:`cluster_from_options`."""
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        return stack(func, [
            click.option("--cluster", metavar="NAME|PATH", help=cluster_help),
            click.option("--rpc-host", "rpc_hosts", multiple=True, metavar="NAME=KEY:VALUE,...", help=rpc_host_help),
        ])
    return apply


def hardware_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --profile/--vram/--ram/--cores/--gpu/--ram-bw; the command receives them as one ``hw_opts`` dict.

    Use: ``hw = hardware.hardware_from_options(**hw_opts)`` (add ``disk_path=`` for the model's disk).
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
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
    return stack(wrapper, options)


def model_options(func: F) -> F:
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
    return stack(func, options)


def imatrix_options(func: F) -> F:
    """--imatrix / --no-imatrix / --ignore-imatrix-rules for commands that predict what llama-quantize writes
    (the answer itself: planner.imatrix_use.declared_imatrix)."""
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
    return stack(func, options)


def run_options(func: F) -> F:
    """Context, KV cache, batch and load flags that change memory and speed."""
    options: list[Decorator] = [
        engine_option("engine profile the flags and type sets are for"),
        click.option("--ctx", default=None, metavar="N|max",
                     help="context length [default: 32768, or the model's training context if shorter]"),
        click.option("--kv", default="q8_0", show_default=True, metavar="TYPE|auto",
                     help="KV cache type (-ctk and -ctv); plan: auto = q8_0, or q4_0 when q8_0 does not fit"),
        click.option("--ub", "ubatch", type=int, default=None,
                     help="-ub micro-batch [plan/place default: the largest of 512..4096 that fits beside the plan; "
                          "with --min-pp the smallest that meets it; else 512]"),
        click.option("--batch", "batch", type=int, default=None, help="-b logical batch, >= -ub [default: max(2048, -ub)]"),
        click.option("--amb", type=int, default=512, show_default=True, help="-amb MiB (ik)"),
        click.option("--swa-full", is_flag=True,
                     help="mainline --swa-full: sliding-window layers cache the whole context (emitted)"),
        click.option("--parallel", "n_parallel", type=click.IntRange(min=1), default=1, show_default=True,
                     metavar="N", help="llama-server slots (-np): each serves -c/N tokens; mainline gives each its "
                                       "own KV stream unless --kv-unified"),
        click.option("--kv-unified", is_flag=True,
                     help="mainline -kvu: the slots share one KV cache of -c cells (ik's only layout)"),
        click.option("--load", type=click.Choice(["rtr", "no-mmap", "mmap"]), default=None,
                     help="how weights are loaded (plan/place default: chosen by predicted speed: --no-mmap for "
                          "hybrid ik runs unless -rtr is predicted faster, rtr for CPU-only ik, mmap for mainline)"),
        click.option("--threads", type=int, default=None, help="CPU threads (default: physical cores)"),
        margin_options,
    ]
    return stack(func, options)


def mmproj_options(func: F) -> F:
    """--mmproj FILE and --no-mmproj-offload: a projector loaded beside the model (planner/mmproj.py)."""
    return stack(func, [
        click.option("--mmproj", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                     help="a vision/audio projector GGUF loaded with the model: its weights (from its header) are "
                          "charged to the first GPU (the CPU with --no-mmproj-offload) and --mmproj is emitted"),
        click.option("--no-mmproj-offload", is_flag=True, help="keep the --mmproj projector on the CPU"),
    ])


def run_config(engine: str, ctx: str | None, kv: str, ubatch: int | None, batch: int | None, amb: int, load: str | None,
               threads: int | None, gpu_margin: float | None, os_reserve: float | None,
               hw: Hardware | None = None, swa_full: bool = False, n_parallel: int = 1,
               kv_unified: bool = False) -> RunConfig:
    """The :class:`RunConfig` of the run options (``--ctx max`` and no --ctx: 0, chosen later)."""
    from planner.launch import engine_profile
    from planner.runconfig import RunConfig, batch_sizes

    ctx_n = 0   # 0: chosen per model (planner.context_search.resolve_ctx) or searched (--ctx max)
    if ctx not in (None, "max"):
        from planner.errors import UsageError
        from planner.validate import check_option

        try:
            ctx_n = int(ctx)
        except ValueError:
            raise UsageError(f"--ctx expects a number or 'max', got {ctx!r}") from None
        check_option("--ctx", ctx_n)
    ub, b = batch_sizes(ubatch, batch)
    if swa_full and engine != "mainline":
        from planner.errors import UsageError

        raise UsageError("--swa-full is a mainline flag: ik keeps the whole context in every layer's cache",
                         hint="drop --swa-full, or plan for --engine mainline")
    if kv_unified and not engine_profile(engine)["kv_unified"]:
        from planner.errors import UsageError

        raise UsageError(f"--kv-unified is a mainline flag: {engine}'s slots always share one KV cache of -c cells",
                         hint="drop --kv-unified, or plan for --engine mainline")
    from planner.engines import server_parallel

    n_parallel, kv_unified, _ = server_parallel(engine, n_parallel, kv_unified)
    return RunConfig(engine=engine, ctx=ctx_n, type_k=kv, type_v=kv, ubatch=ub, batch=b, amb=amb, swa_full=swa_full,
                     n_parallel=n_parallel, kv_unified=kv_unified,
                     load=load or engine_profile(engine)["default_load"],
                     threads=threads or (hw.threads_default if hw is not None else None),
                     **margins(gpu_margin, os_reserve))


def margins(gpu_margin: float | None, os_reserve: float | None) -> dict[str, Any]:
    """RunConfig keyword arguments of --gpu-margin / --os-reserve (GiB -> bytes); only those given."""
    out = {}
    if gpu_margin is not None:
        out["gpu_margin_bytes"] = int(gpu_margin * GIB)
    if os_reserve is not None:
        out["os_reserve_bytes"] = int(os_reserve * GIB)
    return out


def cluster_from_options(cluster: str | None, rpc_hosts: Sequence[str], hw_opts: dict[str, Any]) -> Cluster | None:
    """The cluster of ``--cluster FILE`` or of ``--rpc-host`` values over the main host's hardware; None if neither."""
    if not cluster and not rpc_hosts:
        return None
    from planner import hardware
    from planner.cluster_flags import cluster_from_flags
    from planner.cluster_toml import load_cluster

    if cluster:
        if rpc_hosts or any(v is not None for v in hw_opts.values()):
            raise click.UsageError("--cluster describes every host: leave out --rpc-host and the hardware options")
        return load_cluster(cluster)
    return cluster_from_flags(hardware.hardware_from_options(**hw_opts), list(rpc_hosts))


def local_dir(path: str | None) -> str | None:
    """The folder of a local model/output path, for the free space of its disk; None otherwise."""
    from pathlib import Path

    if not path or "://" in path:
        return None
    p = Path(path).expanduser()
    d = p if p.is_dir() else p.parent
    return str(d) if (p.suffix == ".gguf" or p.is_dir()) and d.is_dir() else None


def recipe_text(recipe_file: str | None) -> str | None:
    """The text of --recipe-file, None without one."""
    if not recipe_file:
        return None
    from pathlib import Path

    return Path(recipe_file).read_text()


def write_json_out(doc: object, out: str | None, force: bool) -> None:
    """Write a result as JSON to --out (refusing to overwrite without --force); nothing without --out."""
    if not out:
        return
    from pathlib import Path

    from planner import output
    from planner.fileout import write_new_file

    write_new_file(Path(out), output.dumps(doc), force=force)
    output.note(f"wrote {out}")


def logs_model_mix(model: str | None, base_type: str | None, custom_q: Sequence[str], recipe_file: str | None,
                   token_embedding_type: str | None, output_tensor_type: str | None, pure: bool,
                   engine: str, imatrix_file: str | None = None, no_imatrix: bool = False,
                   ignore_imatrix_rules: bool = False) -> tuple[TensorMap, dict[str, str], ImatrixUse]:
    """The model and mix the logs of `verify` / `calibrate` ran (the recipe options applied with the imatrix
    setting every command shares: planner.imatrix_use; a quantized GGUF's own record wins)."""
    from planner.imatrix_use import declared_imatrix, imatrix_for, validate_declared
    from planner.mix import mix_from_options
    from planner.source import load_model

    qengine = "mainline" if engine == "mainline" else "ik"
    declared = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, qengine)
    tmap = load_model(model)
    validate_declared(declared, tmap)
    imx = imatrix_for(tmap, declared)
    types, _ = mix_from_options(tmap, base_type=base_type, custom_q=custom_q, recipe_text=recipe_text(recipe_file),
                                engine=qengine, token_embedding_type=token_embedding_type,
                                output_tensor_type=output_tensor_type, pure=pure, imatrix=imx)
    return tmap, types, imx


def log_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """LOGS plus what `verify` and `calibrate` need to predict them: the model and mix, the machine, the engine
    profile and the command (when the logs do not show it)."""
    func = click.option("--command", "command", metavar="'llama-... ARGS'",
                        help="the command that produced the logs, when they do not show it")(func)
    func = engine_option("engine profile of the logged build")(func)
    func = model_options(hardware_options(imatrix_options(func)))
    func = click.option("--model", "model", metavar="MODEL",
                        help="the model the logs ran (GGUF, config.json, built-in)")(func)
    return click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))(func)
