"""`verify` and `calibrate`: the user's own engine logs against the prediction, and the speed constants fitted to
them."""

from __future__ import annotations

from typing import Any

import click

from planner.cli.app import main
from planner.cli.options import cluster_options, json_option, log_options, logs_model_mix


@main.command("verify")
@log_options
@cluster_options("the hosts of a command with --rpc: a cluster TOML",
                 "an rpc-server host of the command's --rpc (repeatable, in --rpc order)")
@json_option()
def verify_command(logs: tuple[str, ...], model: str | None, base_type: str | None, custom_q: tuple[str, ...],
                   recipe_file: str | None, token_embedding_type: str | None, output_tensor_type: str | None,
                   pure: bool, hw_opts: dict[str, Any], imatrix_file: str | None, no_imatrix: bool,
                   ignore_imatrix_rules: bool, engine: str, command: str | None, cluster: str | None,
                   rpc_hosts: tuple[str, ...], as_json: bool) -> None:
    """Compare engine logs with the prediction for the same model and command, term by term.

    LOGS are what llama-server, llama-cli, llama-sweep-bench or llama-bench printed (ik_llama.cpp or llama.cpp):
    weights and KV per device must match to 0.1 MiB; compute buffers and TG/PP are estimates, shown with their
    error.

    \b
    Examples:
      gguf-planner verify run.log --model Qwen3-235B-A22B-mix-IQ3_K-00001-of-00003.gguf --profile rtx3090ti-9950x-96g
      gguf-planner verify sweep.log --model qwen3-235b-a22b --recipe-file mix.recipe --base-type IQ3_K \\
          --command 'llama-sweep-bench -m m.gguf -ngl 99 -ot exps=CPU -fa -ctk q8_0 -ctv q8_0'
      gguf-planner verify main.log --model k2.gguf --cluster 2x3090-384g+epyc-256g-10gbe \\
          --command 'llama-server -m k2.gguf --rpc 192.168.10.2:50052 -ngl 62 -ts 15,23,23 ...'
    """
    import dataclasses
    import shlex

    from planner import hardware, output
    from planner.cli.options import cluster_from_options
    from planner.verify import verify_logs

    tmap, types, imx = logs_model_mix(model, base_type, custom_q, recipe_file, token_embedding_type,
                                       output_tensor_type, pure, engine, imatrix_file, no_imatrix,
                                       ignore_imatrix_rules)
    clus = cluster_from_options(cluster, rpc_hosts, hw_opts)
    hw = clus.main if clus is not None else hardware.hardware_from_options(**hw_opts)
    reports = verify_logs(logs, tmap, types, hw, engine=engine, argv=shlex.split(command) if command else None,
                          cluster=clus)
    reports = tuple(dataclasses.replace(r, notes=(*r.notes, imx.note)) for r in reports)
    output.emit(reports, as_json=as_json, render=output.render_verify)


@main.command("calibrate")
@log_options
@click.option("--save", type=click.Path(dir_okay=False), metavar="PROFILE.toml",
              help="write the machine's profile with the fitted constants (use it with --profile)")
@click.option("--force", is_flag=True, help="let --save overwrite")
@json_option()
def calibrate_command(logs: tuple[str, ...], model: str | None, base_type: str | None, custom_q: tuple[str, ...],
                      recipe_file: str | None, token_embedding_type: str | None, output_tensor_type: str | None,
                      pure: bool, hw_opts: dict[str, Any], imatrix_file: str | None, no_imatrix: bool,
                      ignore_imatrix_rules: bool, engine: str, command: str | None, save: str | None,
                      force: bool, as_json: bool) -> None:
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
    import dataclasses
    import shlex

    from planner import hardware, output
    from planner.calibrate import calibrate_and_save

    tmap, types, imx = logs_model_mix(model, base_type, custom_q, recipe_file, token_embedding_type,
                                       output_tensor_type, pure, engine, imatrix_file, no_imatrix,
                                       ignore_imatrix_rules)
    hw = hardware.hardware_from_options(**hw_opts)
    res = calibrate_and_save(logs, tmap, types, hw, engine=engine, argv=shlex.split(command) if command else None,
                             save=save, force=force)
    cal = res.calibration
    res = dataclasses.replace(res, calibration=dataclasses.replace(cal, notes=(*cal.notes, imx.note)))
    output.emit(res, as_json=as_json, render=output.render_calibration)
