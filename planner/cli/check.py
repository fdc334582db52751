"""`check`: predict memory and speed of the user's own llama-server command."""

from __future__ import annotations

from typing import Any

import click

import sys

from planner.cli.app import main
from planner.cli.options import (cluster_from_options, cluster_options, engine_option, hardware_options, imatrix_options,
                                 json_option, margin_options, margins, mmproj_options, model_options, recipe_text)
from planner.mmproj import with_mmproj



@main.command("check", context_settings={"ignore_unknown_options": True})
@click.argument("model", required=False)
@model_options
@hardware_options
@engine_option()
@margin_options
@cluster_options("the hosts of a command with --rpc: a cluster TOML",
                 "an rpc-server host of the command's --rpc (repeatable, in --rpc order)")
@imatrix_options
@mmproj_options
@json_option()
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def check_command(model: str | None, base_type: str | None, custom_q: tuple[str, ...], recipe_file: str | None,
                  token_embedding_type: str | None, output_tensor_type: str | None, pure: bool, hw_opts: dict[str, Any],
                  engine: str, gpu_margin: float | None, os_reserve: float | None, cluster: str | None,
                  rpc_hosts: tuple[str, ...], imatrix_file: str | None, no_imatrix: bool, ignore_imatrix_rules: bool,
                  mmproj: str | None, no_mmproj_offload: bool, as_json: bool, command: tuple[str, ...]) -> None:
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
    from planner.launch import parse_server_command
    from planner import api
    from planner.imatrix_use import declared_imatrix
    from planner.mix import mix_from_options
    from planner.source import load_model

    from pathlib import Path

    if model is not None and command and command[0].startswith("-") and \
            Path(model).name.removesuffix(".exe") in ("llama-server", "server", "llama-sweep-bench", "llama-cli"):
        # `check -- llama-server -m ...`: click binds the first word after `--` to MODEL; it is the binary
        command = (model, *command)
        model = None
    if not command:
        raise UsageError("give the llama-server command after --")
    parsed = parse_server_command(list(command), engine=engine)
    if not (model or parsed.model):
        raise UsageError("no model: give MODEL or -m in the command")
    tmap = load_model(model or parsed.model)
    clus = cluster_from_options(cluster, rpc_hosts, hw_opts)
    hw = clus.main if clus is not None else hardware.hardware_from_options(**hw_opts)
    run = dataclasses.replace(parsed.run, ctx=parsed.run.ctx or tmap.params.n_ctx_train,
                              threads=parsed.run.threads or hw.threads_default,
                              **margins(gpu_margin, os_reserve))
    imx = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, engine)
    # --mmproj here, else the command's own --mmproj: its bytes come from the file's header
    run = with_mmproj(run, mmproj or run.mmproj, offload=run.mmproj_offload and not no_mmproj_offload)
    types, _ = mix_from_options(tmap, base_type=base_type, custom_q=custom_q, recipe_text=recipe_text(recipe_file),
                                engine=engine, token_embedding_type=token_embedding_type,
                                output_tensor_type=output_tensor_type, pure=pure, imatrix=imx)
    if parsed.rpc or clus is not None:
        if clus is None:
            raise UsageError("the command uses --rpc: describe those hosts with --cluster FILE or --rpc-host "
                             "NAME=addr:IP,port:P,ram:GIB,bw:LINK (one per --rpc endpoint, in order)")
        from planner.cluster_plan import check_cluster

        run = dataclasses.replace(run, threads=parsed.run.threads or clus.main.threads_default)
        result = api.with_quality(check_cluster(tmap, types, parsed, clus, run, warnings=parsed.warnings), tmap,
                                  types, imx)
    else:
        checked = api.check_command(model or parsed.model, tmap, types, list(command), hw, engine=engine,
                                    run_overrides={**margins(gpu_margin, os_reserve), "mmproj": run.mmproj,
                                                   "mmproj_bytes": run.mmproj_bytes,
                                                   "mmproj_offload": run.mmproj_offload,
                                                   "mmproj_compute_bytes": run.mmproj_compute_bytes,
                                                   "mmproj_input_bytes": run.mmproj_input_bytes})
        result = api.with_quality(checked, tmap, types, imx)
    output.emit(result, as_json=as_json, render=output.render_check)
    if not result.memory.fits:
        sys.exit(2)
