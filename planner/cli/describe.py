"""Commands that describe without planning: this machine (`probe`), the shipped models and hardware profiles
(`models`, `profiles`), a model's tensors (`inspect`) and what llama-quantize would write (`footprint`)."""

from __future__ import annotations

from typing import Any

import click

from planner.cli.app import main
from planner.cli.options import engine_option, hardware_options, imatrix_options, json_option, model_options, recipe_text


@main.command("probe")
@json_option("print JSON instead of a table")
@click.option("--save", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="also write the result as a hardware profile")
@click.option("--force", is_flag=True, help="let --save overwrite an existing file")
@hardware_options
def probe_command(as_json: bool, save: str | None, force: bool, hw_opts: dict[str, Any]) -> None:
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
@json_option("print JSON instead of a table")
def models_command(as_json: bool) -> None:
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
@json_option("print JSON instead of a table")
def profiles_command(as_json: bool) -> None:
    """List the shipped hardware profiles (use one with --profile NAME).

    \b
    Examples:
      gguf-planner profiles
      gguf-planner probe --profile rtx3090ti-9950x-96g
    """
    from planner import hardware, output

    output.emit(hardware.list_profiles(), as_json=as_json, render=output.render_profiles)


@main.command("inspect")
@click.argument("model", required=False)
@json_option("print JSON instead of tables")
def inspect_command(model: str | None, as_json: bool) -> None:
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
@engine_option(choices=("ik", "mainline"))
@click.option("--all-tensors", is_flag=True, help="list every tensor, not only the first of each role")
@imatrix_options
@json_option()
def footprint_command(model: str | None, base_type: str | None, custom_q: tuple[str, ...], recipe_file: str | None,
                      token_embedding_type: str | None, output_tensor_type: str | None, pure: bool, engine: str,
                      all_tensors: bool, imatrix_file: str | None, no_imatrix: bool, ignore_imatrix_rules: bool,
                      as_json: bool) -> None:
    """Predict what llama-quantize writes: per-tensor types, bytes, GiB, BPW, per-type counts, fallbacks.

    \b
    Examples:
      gguf-planner footprint qwen3-235b-a22b --base-type IQ3_K --recipe-file examples/seed-mix-IQ3_K.recipe
      gguf-planner footprint model-bf16.gguf --base-type Q4_K_M --json
    """
    from planner import output
    from planner.imatrix_use import declared_imatrix, validate_declared
    from planner.mix import mix_from_options
    from planner.quantize import default_base_type
    from planner.source import load_model

    imx = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, engine)
    tmap = load_model(model)
    validate_declared(imx, tmap)
    _, fp = mix_from_options(tmap, base_type=base_type or default_base_type(engine),
                             custom_q=custom_q, recipe_text=recipe_text(recipe_file), engine=engine,
                             token_embedding_type=token_embedding_type, output_tensor_type=output_tensor_type,
                             pure=pure, imatrix=imx)
    output.emit(fp, as_json=as_json, render=lambda f: output.render_footprint(f, all_tensors=all_tensors))
