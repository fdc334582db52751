"""`plan` (choose types and placement together) and `place` (placement of a given mix)."""

from __future__ import annotations

import functools
from typing import Any

import click

from planner.cli.app import main
from planner.cli.options import (cluster_from_options, cluster_options, hardware_options, imatrix_options, json_option,
                                 local_dir, mmproj_options, model_options, recipe_text, run_config, run_options,
                                 write_json_out)
from planner.mmproj import with_mmproj



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
@mmproj_options
@click.option("--model-path", metavar="PATH", help="output GGUF path used in the emitted commands")
@cluster_options("plan across hosts joined by llama.cpp RPC: a cluster TOML (docs/rpc.md); it names the main "
                 "host's profile",
                 "an rpc-server host, e.g. box2=addr:192.168.1.20,ram:256,bw:10gbe,cache (repeatable; the main "
                 "host is the machine described by the hardware options)")
@click.option("--scripts", "scripts_dir", type=click.Path(file_okay=False),
              help="cluster plans: write main.sh and one <host>.sh per rpc-server host into this folder")
@click.option("--out", type=click.Path(dir_okay=False), help="write the plan JSON here")
@click.option("--force", is_flag=True)
@json_option()
def plan_command(model: str | None, hw_opts: dict[str, Any], engine: str, ctx: str | None, kv: str, ubatch: int | None,
                 batch: int | None, amb: int, swa_full: bool, n_parallel: int, kv_unified: bool, load: str | None,
                 threads: int | None,
                 gpu_margin: float | None,
                 os_reserve: float | None, objective: str, min_tg: float | None, min_pp: float | None,
                 max_size: float | None, allow: tuple[str, ...], deny: tuple[str, ...], fixed: tuple[str, ...],
                 pareto: int, granularity: str, check_binary: str | None, imatrix: str | None, no_imatrix: bool,
                 ignore_imatrix_rules: bool, no_floors: bool, max_rules: int | None, recipe_style: str,
                 quality_slack: float, mmproj: str | None, no_mmproj_offload: bool, model_path: str | None,
                 cluster: str | None, rpc_hosts: tuple[str, ...], scripts_dir: str | None, out: str | None,
                 force: bool, as_json: bool) -> None:
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

    clus = cluster_from_options(cluster, rpc_hosts, hw_opts)
    if scripts_dir and clus is None:
        raise click.UsageError("--scripts writes a cluster's scripts: give --cluster or --rpc-host "
                               "(one box: `export --plan`)")
    hw = clus.main if clus is not None else hardware.hardware_from_options(
        **hw_opts, disk_path=local_dir(model_path or model))
    run = with_mmproj(run_config(engine, ctx, "q8_0" if kv == "auto" else kv, ubatch, batch, amb, load, threads,
                                 gpu_margin, os_reserve, hw, swa_full, n_parallel, kv_unified), mmproj,
                     offload=not no_mmproj_offload)
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
        write_json_out(cdoc, out, force)
        if scripts_dir:
            for path in write_cluster_scripts(cdoc, scripts_dir, force=force):
                output.note(f"wrote {path}")
        output.emit(cdoc, as_json=as_json, render=output.render_cluster_plan)
        return
    doc = api.plan(model, hw, request, EmitOptions(model_path=model_path, check_binary=check_binary))
    write_json_out(doc, out, force)
    output.emit(doc, as_json=as_json, render=output.render_pareto if pareto else
                functools.partial(output.render_plan, style=recipe_style))


@main.command("place")
@click.argument("model", required=False)
@model_options
@hardware_options
@run_options
@mmproj_options
@click.option("--model-path", metavar="PATH", help="path of the GGUF in the emitted command (default: MODEL)")
@click.option("--min-tg", type=float, help="refuse placements slower than this many tokens/s")
@click.option("--min-pp", type=float, help="refuse placements with slower prompt processing (tokens/s)")
@click.option("--check-binary", type=click.Path(exists=True, dir_okay=False),
              help="refuse launch flags this llama-server binary does not list in --help")
@click.option("--out", type=click.Path(dir_okay=False), help="write the plan JSON here")
@click.option("--force", is_flag=True, help="let --out overwrite")
@imatrix_options
@json_option()
def place_command(model: str | None, base_type: str | None, custom_q: tuple[str, ...], recipe_file: str | None,
                  token_embedding_type: str | None, output_tensor_type: str | None, pure: bool, hw_opts: dict[str, Any],
                  engine: str, ctx: str | None, kv: str, ubatch: int | None, batch: int | None, amb: int, swa_full: bool,
                  n_parallel: int, kv_unified: bool, load: str | None, threads: int | None, gpu_margin: float | None,
                  os_reserve: float | None,
                  mmproj: str | None, no_mmproj_offload: bool, model_path: str | None, min_tg: float | None,
                  min_pp: float | None, check_binary: str | None, out: str | None, force: bool,
                  imatrix_file: str | None, no_imatrix: bool, ignore_imatrix_rules: bool, as_json: bool) -> None:
    """Choose GPU(s) or CPU for every tensor of a given mix, maximising predicted generation speed.

    \b
    Examples:
      gguf-planner place qwen3-235b-a22b --recipe-file examples/seed-mix-IQ3_K.recipe --profile rtx3090ti-9950x-96g
      gguf-planner place model.gguf --vram 24,24 --ram 256 --ctx max --engine mainline
    """
    from planner import api, hardware, output
    from planner.imatrix_use import declared_imatrix, validate_declared
    from planner.mix import mix_from_options
    from planner.request import EmitOptions, PlanRequest
    from planner.source import load_model

    imx = declared_imatrix(imatrix_file, no_imatrix, ignore_imatrix_rules, engine)
    tmap = load_model(model)
    validate_declared(imx, tmap)
    hw = hardware.hardware_from_options(**hw_opts)
    run = with_mmproj(run_config(engine, ctx, kv, ubatch, batch, amb, load, threads, gpu_margin, os_reserve, hw,
                                 swa_full, n_parallel, kv_unified), mmproj, offload=not no_mmproj_offload)
    types, fp = mix_from_options(tmap, base_type=base_type, custom_q=custom_q, recipe_text=recipe_text(recipe_file),
                                 engine=engine, token_embedding_type=token_embedding_type,
                                 output_tensor_type=output_tensor_type, pure=pure, imatrix=imx)
    doc = api.place(model, tmap, types, hw, PlanRequest(run=run, min_tg=min_tg, min_pp=min_pp, ctx_max=(ctx == "max"),
                                                        load_auto=load is None, ub_auto=ubatch is None and batch is None),
                    EmitOptions(model_path=model_path, check_binary=check_binary), quantized_here=fp is not None)
    write_json_out(doc, out, force)
    if fp is not None:
        output.note(imx.note)         # the recipe was sized under this assumption
    output.emit(doc, as_json=as_json, render=output.render_plan)
