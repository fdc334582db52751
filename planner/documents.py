"""Plan documents: a plan plus what it emits (recipe, llama-quantize and llama-server commands), and the
plan JSON read back (:func:`load_plan_json`, the one loader ``export``, ``compare`` and the script header use).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import UsageError
from planner.launch import LaunchCommand
from planner.planning import Plan
from planner.recipe import Recipe
from planner.runconfig import RunConfig
from planner.tensors import TensorMap
from planner.units import GIB
from planner.workflow import Workflow, quantize_workflow

PLAN_FORMAT = "gguf-planner/plan-v1"


@dataclass(frozen=True, slots=True)
class PlanDocument:
    """A plan plus what it emits: the recipe, the llama-quantize and llama-server commands."""

    format: str
    plan: Plan
    recipe: Recipe | None
    quantize_command: str | None
    launch: LaunchCommand
    launch_command: str
    sweep_command: str
    workflow: Workflow | None = None       # BF16 source, imatrix and quantize steps (planner.workflow)
    imatrix: str = ""                      # what the quantize step assumes about the imatrix, in words
    rule_count: int | None = None          # rules in the recipe


@dataclass(frozen=True, slots=True)
class ParetoSet:
    """Non-dominated plans from the best-quality one to the fastest one (``--pareto N``)."""

    model: str
    documents: tuple[PlanDocument, ...]


def document(tmap: TensorMap, plan: Plan, *, model_path: str, source_path: str | None = None,
             imatrix: str | None = None, with_recipe: bool = True, host: str = "127.0.0.1",
             port: int = 8080, check_binary: str | None = None, has_imatrix: bool = False,
             ignore_imatrix_rules: bool = False) -> PlanDocument:
    """Emit the recipe (verified by re-application), the quantize workflow and the launch command (verified -ot).

    ``has_imatrix``: the plan assumes an imatrix (``imatrix`` names the file, else the workflow computes one);
    the recipe is verified under the same imatrix rules llama-quantize will apply.
    """
    from planner.launch import build_launch
    from planner.recipe import build_recipe
    recipe: Recipe | None = None
    qcmd: str | None = None
    wf: Workflow | None = None
    note = ""
    if with_recipe:
        recipe = build_recipe(tmap, plan.types, engine=plan.run.qengine, has_imatrix=has_imatrix,
                              ignore_imatrix_rules=ignore_imatrix_rules)
        builtin_name = tmap.source.removeprefix("builtin:") if tmap.source.startswith("builtin:") else None
        wf = quantize_workflow(tmap, recipe, builtin_name=builtin_name, engine=plan.run.qengine, output=model_path,
                               quantized_bytes=plan.total_bytes, imatrix=imatrix, use_imatrix=has_imatrix,
                               threads=plan.run.threads, ram_bytes=plan.budgets.get("CPU"), source_gguf=source_path,
                               ignore_imatrix_rules=ignore_imatrix_rules)
        qcmd = shlex.join(wf.steps[-1].argv)
        note = (f"imatrix: {imatrix}" if has_imatrix and imatrix else
                f"imatrix: computed by the workflow ({wf.imatrix}); the plan assumes one (default), "
                "--no-imatrix plans without" if has_imatrix else
                "imatrix: none (--no-imatrix): llama-quantize without --imatrix, imatrix-only types not used")
    launch = build_launch(tmap, plan.devices, plan.layer_device, plan.run, model_path, host=host, port=port)
    if check_binary:
        from planner.launch import check_flags, help_of_binary

        check_flags(launch.argv, help_of_binary(check_binary))
    return PlanDocument(PLAN_FORMAT, plan, recipe, qcmd, launch, launch.shell(), launch.shell(launch.sweep_argv),
                        wf, note, len(recipe.rules) if recipe else None)


@dataclass(frozen=True, slots=True)
class SavedPlan:
    """A plan JSON read back: what ``export`` and ``compare`` need to rebuild its commands and predictions."""

    path: str
    tmap: TensorMap
    types: dict[str, str]
    devices: dict[str, str]
    layer_device: tuple[str, ...]
    run: RunConfig
    model_path: str | None            # the GGUF the saved launch command loads, when it has one
    plan: dict[str, Any]              # the saved plan object (memory and speed predictions as written)


def load_plan_json(path: str) -> SavedPlan:
    """Read a plan JSON written by ``plan``/``place --out`` (a document, or a bare plan object).

    Raises:
        UsageError: the file cannot be read, is not JSON, or lacks what a plan has.
    """
    from planner.source import load_model

    try:
        doc = json.loads(Path(path).read_text())
        if not isinstance(doc, dict):
            raise TypeError("the top level is not an object")
        if doc.get("format", PLAN_FORMAT) != PLAN_FORMAT:
            raise ValueError(f"format {doc['format']!r}, expected {PLAN_FORMAT!r}")
        p = doc["plan"] if "plan" in doc else doc
        src = p["model_source"]
        tmap = load_model(src.removeprefix("builtin:"), check_size=False)
        run = RunConfig(**p["run"])
        model_path = doc.get("launch", {}).get("argv", [None, None, None])[2] if "launch" in doc else None
        return SavedPlan(path, tmap, dict(p["types"]), dict(p["devices"]), tuple(p["layer_device"]), run,
                         model_path, p)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise UsageError(f"{path} is not a gguf-planner plan JSON: {exc}") from exc


def quantize_script(path: str) -> str:
    """The quantize workflow of a plan JSON (``plan --out``) as a bash script, one step after the other.

    Raises:
        UsageError: the file is not a plan document with a quantize workflow (``place`` plans and already
            quantized models have none).
    """
    from planner.scripts import command_lines, comment, script
    from planner.workflow import disk_gib

    try:
        doc = json.loads(Path(path).read_text())
        wf = doc["workflow"]
        if not isinstance(wf, dict):
            raise TypeError("no quantize workflow in this plan")
        steps = [(str(st["title"]), [str(a) for a in st["argv"]], int(st["disk_bytes"]), bool(st["disk_exact"]),
                  str(st.get("writes", ""))) for st in wf["steps"]]
        notes = [str(a) for a in wf.get("assumptions", ())]
        comments = [f"quantize workflow for {doc['plan']['model']} ({doc['plan']['model_source']}), "
                    f"{doc.get('imatrix', '')}",
                    f"disk: {disk_gib(int(wf['total_disk_bytes']))} if every file is kept, "
                    f"{disk_gib(int(wf['peak_disk_bytes']))} at most when intermediates are deleted", *notes]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} has no quantize workflow: {exc}",
                         hint="write the plan JSON with `gguf-planner plan --out` for an unquantized model") from exc
    body: list[str] = []
    for i, (title, argv, nbytes, exact, writes) in enumerate(steps, 1):
        if not argv:
            raise UsageError(f"{path}: step {i} has no command")
        body.append(comment(f"{i}. {title}: writes {writes}, {disk_gib(nbytes)}" + ("" if exact else " (est.)")))
        body += command_lines(argv)
        body.append("")
    return script(comments, body)


def script_comments(saved: SavedPlan) -> list[str]:
    """Predicted memory and speed of a saved plan, for the exported script's header.

    Raises:
        UsageError: the saved plan lacks its predictions.
    """
    p = saved.plan
    try:
        out = [f"model: {p['model']} ({p['model_source']}), engine {p['engine']}, context {p['run']['ctx']}"]
        for d in p["memory"]["devices"]:
            terms = ", ".join(f"{t['name']} {t['bytes'] / GIB:.2f}" + ("" if t["exact"] else "~")
                              for t in d["terms"])
            out.append(f"{d['device']}: {d['total_bytes'] / GIB:.2f} of {d['budget_bytes'] / GIB:.2f} GiB "
                       f"({terms}; ~ = estimate)")
        s = p["speed"]
        out.append(f"estimated TG {s['tg_tps']:.1f} tok/s (at full context {s['tg_tps_ctx']:.1f}), "
                   f"PP {s['pp_tps']:.0f} tok/s")
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{saved.path} lacks the predictions of a plan: {exc}") from exc
    return out


def launch_model_path(model: str | None, tmap: TensorMap, *, quantized_here: bool) -> str:
    """The GGUF the emitted commands load: the file given when it is used as it is, else the file a
    quantization from it would write (never the source itself), else a name for a built-in model."""
    if quantized_here:
        return planned_name(model, tmap)
    if model and ("://" in model or Path(model).is_file()):
        return model
    return f"{tmap.name}.gguf"


def planned_name(model: str | None, tmap: TensorMap) -> str:
    """Output GGUF name for a planned quantization: next to the source, never the source itself."""
    if model and model.endswith(".gguf") and "://" not in model:
        stem = re.sub(r"-\d{5}-of-\d{5}$", "", Path(model).name[:-5])
        stem = re.sub(r"[-_.](bf16|BF16|f16|F16|f32|F32)$", "", stem)
        return str(Path(model).with_name(f"{stem}-planned.gguf"))
    return f"{tmap.name}-planned.gguf"
