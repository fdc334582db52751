"""`compare`: candidate mixes side by side on one machine."""

from __future__ import annotations

from typing import Any

import click

from planner.cli.app import main
from planner.cli.options import hardware_options, imatrix_options, json_option, run_config, run_options



@main.command("compare")
@click.argument("candidates", nargs=-1, required=True)
@click.option("--model", "model", help="model the named ftypes and recipes apply to (default: qwen3-235b-a22b)")
@hardware_options
@run_options
@imatrix_options
@click.option("--measured", multiple=True, metavar="NAME=PPL[+-ERR]|NAME=LOG",
              help="a measured PPL of candidate NAME (or a llama-perplexity log), shown next to the prediction; "
                   "repeatable; the reference PPL is --reference-ppl or the best-predicted measured candidate's")
@click.option("--reference-ppl", metavar="PPL[+-ERR]|LOG",
              help="PPL of the unquantized model (or a Q8_0) on the same text, for --measured")
@click.option("--plot", type=click.Path(dir_okay=False), help="write size vs quality (speed as colour), .png or .svg")
@click.option("--force", is_flag=True, help="let --plot overwrite")
@json_option()
def compare_command(candidates: tuple[str, ...], model: str | None, hw_opts: dict[str, Any], engine: str,
                    ctx: str | None, kv: str, ubatch: int | None, batch: int | None, amb: int, swa_full: bool,
                    n_parallel: int, kv_unified: bool, load: str | None,
                    threads: int | None, gpu_margin: float | None, os_reserve: float | None, imatrix_file: str | None,
                    no_imatrix: bool, ignore_imatrix_rules: bool, measured: tuple[str, ...], reference_ppl: str | None,
                    plot: str | None, force: bool, as_json: bool) -> None:
    """Compare candidate mixes side by side on this hardware: size, BPW, fit, GPU/CPU bytes, speed, quality.

    A candidate is a named ftype (IQ3_K), a recipe string (re=type,...), a recipe file, a GGUF file, or a
    plan JSON. Non-dominated rows (size, TG, quality) are marked.

    \b
    Examples:
      gguf-planner compare IQ3_K IQ4_KS Q4_K_M examples/seed-mix-IQ3_K.recipe --vram 24 --ram 96 --plot out.png
      gguf-planner compare Q8_0 IQ3_K --measured Q8_0=5.3141+-0.0332 --measured IQ3_K=perplexity.log
    """
    from planner import hardware, output
    from planner.compare import compare, plot_comparison
    from planner.imatrix_use import declared_imatrix

    imx = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, engine)
    hw = hardware.hardware_from_options(**hw_opts)
    run = run_config(engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin, os_reserve, hw, swa_full,
                     n_parallel, kv_unified)
    result = compare(list(candidates), model=model, hw=hw, run=run, imatrix=imx, measured=list(measured),
                     reference=reference_ppl)
    if plot:
        plot_comparison(result, plot, force=force)
        output.note(f"wrote {plot}")
    output.emit(result, as_json=as_json, render=output.render_compare)
