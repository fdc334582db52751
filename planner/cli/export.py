"""`export`: a saved plan JSON as a launch script, a cluster's per-host scripts, or the quantize workflow."""

from __future__ import annotations

import click

from planner.cli.app import main


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
@click.option("--style", "recipe_style", type=click.Choice(["plain", "ubergarm"]), default="plain", show_default=True,
              help="with --quantize: ubergarm writes the recipe grouped by role and layer range with comments, as "
                   "plan --style does")
@click.option("--force", is_flag=True, help="overwrite an existing script")
def export_command(plan_file: str, out: str | None, scripts_dir: str | None, model_path: str | None, port: int,
                   check_binary: str | None, quantize_script: bool, recipe_style: str, force: bool) -> None:
    """Write a bash launch script for a plan (set -euo pipefail, quoted arguments, predictions as comments).

    With --quantize: the plan's quantize workflow as a script instead (the same renderer).

    \b
    Examples:
      gguf-planner plan --vram 24 --ram 96 --out plan.json
      gguf-planner export --plan plan.json --out run.sh --model-path /models/mix-00001-of-00003.gguf
      gguf-planner export --plan plan.json --quantize --out quantize.sh
      gguf-planner export --plan plan.json --quantize --style ubergarm --out quantize.sh
    """
    from pathlib import Path

    from planner import output
    from planner.documents import load_plan_json, quantize_script as workflow_script, script_comments
    from planner.fileout import write_new_file
    from planner.launch import build_launch, check_flags, export_script, help_of_binary

    if quantize_script:
        if not out:
            raise click.UsageError("give --out quantize.sh")
        write_new_file(Path(out), workflow_script(plan_file, style=recipe_style), force=force, mode=0o755)
        output.note(f"wrote {out}")
        return
    if recipe_style != "plain":
        raise click.UsageError("--style applies to the quantize script: add --quantize")

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
                          types=saved.types, output_device=saved.plan.get("output_device"))
    if check_binary:
        check_flags(launch.argv, help_of_binary(check_binary))
    text = export_script(launch, model_path=path, port=port, comments=script_comments(saved))
    write_new_file(Path(out), text, force=force, mode=0o755)
    output.note(f"wrote {out}")
