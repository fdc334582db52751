"""Plan documents: a plan plus what it emits (recipe, llama-quantize and llama-server commands), and the
plan JSON read back (:func:`load_plan_json`, the one loader ``export``, ``compare`` and the script header use).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from planner.errors import UsageError
from planner.explain import Explanation
from planner.launch import LaunchCommand
from planner.planning import Plan
from planner.recipe import Recipe
from planner.roles import tied_output
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
    explanation: Explanation | None = None  # why the plan is what it is (planner.explain; `plan` only)


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

    recipe, qcmd, wf, note = recipe_and_workflow(tmap, plan, model_path=model_path, source_path=source_path,
                                                 imatrix=imatrix, has_imatrix=has_imatrix,
                                                 ignore_imatrix_rules=ignore_imatrix_rules) if with_recipe else (
        None, None, None, "")
    gpus = [d for d in sorted(plan.budgets, key=lambda d: (len(d), d)) if d != "CPU"]
    launch = build_launch(tmap, plan.devices, plan.layer_device, plan.run, model_path, host=host, port=port,
                          types=plan.types, gpus=gpus or None, output_device=plan.output_device)
    if len(gpus) > 1:
        recheck_launch(tmap, plan, launch, gpus)
    if check_binary:
        from planner.launch import check_flags, help_of_binary

        check_flags(launch.argv, help_of_binary(check_binary))
    return PlanDocument(PLAN_FORMAT, plan, recipe, qcmd, launch, launch.shell(), launch.shell(launch.sweep_argv),
                        wf, note, len(recipe.rules) if recipe else None)


def recipe_and_workflow(tmap: TensorMap, plan: Plan, *, model_path: str, source_path: str | None = None,
                        imatrix: str | None = None, has_imatrix: bool = False, ignore_imatrix_rules: bool = False
                        ) -> tuple[Recipe, str, Workflow, str]:
    """The plan's recipe (verified by re-application under the imatrix rules llama-quantize will apply), its
    quantize workflow, the workflow's last command and the note saying which imatrix is used: one box's plan and a
    cluster plan (planner.cluster_plan.cluster_document) alike."""
    from planner.recipe import build_recipe

    recipe = build_recipe(tmap, plan.types, engine=plan.run.qengine, has_imatrix=has_imatrix,
                          ignore_imatrix_rules=ignore_imatrix_rules)
    builtin_name = tmap.source.removeprefix("builtin:") if tmap.source.startswith("builtin:") else None
    wf = quantize_workflow(tmap, recipe, builtin_name=builtin_name, engine=plan.run.qengine, output=model_path,
                           quantized_bytes=plan.total_bytes, imatrix=imatrix, use_imatrix=has_imatrix,
                           threads=plan.run.threads, ram_bytes=plan.budgets.get("CPU"), source_gguf=source_path,
                           ignore_imatrix_rules=ignore_imatrix_rules)
    note = (f"imatrix: {imatrix}" if has_imatrix and imatrix else
            f"imatrix: computed by the workflow ({wf.imatrix}); the plan assumes one (default), "
            "--no-imatrix plans without" if has_imatrix else
            "imatrix: none (--no-imatrix): llama-quantize without --imatrix, imatrix-only types not used")
    return recipe, shlex.join(wf.steps[-1].argv), wf, note


def recheck_launch(tmap: TensorMap, plan: Plan, launch: LaunchCommand, gpus: list[str]) -> None:
    """Re-derive a multi-GPU command as the engine will read it (its -ngl/-ts under the engine's own layer rule,
    then -ot) and check memory per device; a command that does not reproduce the plan, or does not fit, is a
    bug and is never emitted.

    Raises:
        EmitterError: the layer map, a tensor's device or a device's memory differs from the plan.
    """
    from planner.errors import EmitterError
    from planner.launch import parse_server_command, placement_from_command
    from planner.memory import memory_report

    parsed = parse_server_command(list(launch.argv), engine=plan.run.engine)
    placement = placement_from_command(tmap, parsed, gpus, types=plan.types,
                                       gpu_free_bytes=[plan.budgets[g] for g in gpus])
    if placement.layer_device != plan.layer_device:
        raise EmitterError(f"{plan.run.engine} would map the layers differently from the plan under "
                           f"{' '.join(launch.argv[:12])} ...")
    tied = tmap.derived(tied_output) is not None
    if tied and placement.logits_device(True) != plan.placement.logits_device(True):
        raise EmitterError(f"the command puts the tied output layer on {placement.logits_device(True)}, the plan on "
                           f"{plan.placement.logits_device(True)}")
    bad = [n for n, d in plan.devices.items() if placement.device_of(n) != d]
    if bad:
        raise EmitterError(f"the command puts {bad[0]} on {placement.device_of(bad[0])}, the plan on "
                           f"{plan.devices[bad[0]]}")
    mem = memory_report(tmap, plan.types, placement, plan.budgets, plan.run)
    if not mem.fits:
        raise EmitterError("the command re-derived under the engine's rule does not fit: " + "; ".join(mem.problems()))


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


MAX_PLAN_BYTES = 64 << 20          # a plan JSON of the largest model is a few MiB
_NAME = r"[A-Za-z0-9_.\-]{1,63}"                        # tensor names (validate.py: the engines' character set)
_DEVICE = r"[A-Za-z][A-Za-z0-9_:.\[\]/\-]{0,63}"        # CPU, CUDA0, RPC[host:port]...
_PRINTABLE = r"[^\x00-\x1f\x7f]*"


def plan_schema() -> Any:
    """The schema of a plan JSON as :func:`planner.output.to_jsonable` writes a :class:`PlanDocument`: every
    field with its type, plus what the commands rebuild from it held to the values the tool writes (engines,
    KV and tensor types, device and tensor names, run numbers in range, one-line text)."""
    from planner.engines import engine_names
    from planner.quants import catalogue
    from planner.validate import array, boolean, enum, int_, mapping, nullable, schema_for, text

    types = enum(*catalogue().names())
    device = text(64, _DEVICE)
    overrides = {
        "PlanDocument.format": enum(PLAN_FORMAT),
        "Plan.model": text(256, _PRINTABLE),
        "Plan.model_source": text(4096, _PRINTABLE),
        "Plan.engine": enum(*engine_names()),
        "Plan.types": mapping(text(63, _NAME), types),
        "Plan.devices": mapping(text(63, _NAME), device),
        "Plan.layer_device": array(device, 4096),
        "Plan.budgets": mapping(device, int_(0, 1 << 60)),
        "Plan.notes": array(text(1024, _PRINTABLE), 100),
        "RunConfig.engine": enum(*engine_names()),
        "RunConfig.ctx": int_(1, 1 << 30),
        "RunConfig.type_k": types,
        "RunConfig.type_v": types,
        "RunConfig.ubatch": int_(1, 1 << 16),
        "RunConfig.batch": int_(1, 1 << 20),
        "RunConfig.amb": int_(0, 1 << 20),
        "RunConfig.load": enum("rtr", "no-mmap", "mmap"),
        "RunConfig.n_parallel": int_(1, 4096),
        "RunConfig.kv_unified": boolean(),
        "RunConfig.threads": nullable(int_(1, 4096)),
        "RunConfig.cache_ram_mib": nullable(int_(-1, 1 << 30)),
        "RunConfig.ctx_checkpoints": nullable(int_(0, 1 << 30)),
        "RunConfig.gpu_margin_bytes": int_(0, 1 << 40),
        "RunConfig.os_reserve_bytes": int_(0, 1 << 50),
        "LaunchCommand.argv": array(text(1 << 16, _PRINTABLE), 1000),
        "LaunchCommand.sweep_argv": array(text(1 << 16, _PRINTABLE), 1000),
    }
    return schema_for(PlanDocument, overrides)


def _read_plan_json(path: str) -> Any:
    from planner.errors import PlanFileError

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanFileError(f"cannot read the plan file: {exc.strerror or exc}", source=path) from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanFileError(f"the plan file is larger than {MAX_PLAN_BYTES >> 20} MiB", source=path)

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PlanFileError(f"not a JSON document: {str(exc)[:200]}", path="$", source=path,
                            hint="give a plan JSON written by `gguf-planner plan --out` or `place --out`") from None


def load_plan_json(path: str) -> SavedPlan:
    """Read a plan JSON written by ``plan``/``place --out``, validated against :func:`plan_schema` before any
    field is used (a plan file is untrusted input: it may have been edited or come from someone else).

    The model is rebuilt from the plan's ``model_source`` only when that is a built-in name or a local file:
    a URL is never fetched because a plan file says so.

    Raises:
        PlanFileError: anything but what the tool writes, with the JSON path of the first bad field (exit 4).
    """
    return saved_plan(read_plan_file(path), path)


def read_plan_file(path: str) -> Any:
    """A plan file's JSON, size-capped and strictly parsed (no NaN/Infinity), not yet validated.

    Raises:
        PlanFileError: unreadable, too large or not JSON.
    """
    return _read_plan_json(path)


def saved_plan(doc: Any, path: str) -> SavedPlan:
    """:func:`load_plan_json` for a document already read (a cluster plan keeps its plan document nested).

    Raises:
        PlanFileError: anything but what the tool writes, with the JSON path of the first bad field (exit 4).
    """
    from planner.errors import PlanFileError, PlannerError
    from planner.source import load_model

    plan_schema().check(doc, source=path)
    p = doc["plan"]
    src = p["model_source"]
    if "://" in src:
        raise PlanFileError("the plan's model is a URL, and export never fetches a URL named in a plan file",
                            path="$.plan.model_source", source=path,
                            hint="download the model and plan from the local file, or plan the built-in name")
    try:
        tmap = load_model(src.removeprefix("builtin:"), check_size=False)
    except PlannerError as exc:
        raise PlanFileError(f"the plan's model cannot be loaded: {exc}", path="$.plan.model_source",
                            source=path) from None
    names = {t.name for t in tmap.tensors}
    for key in ("types", "devices"):
        if set(p[key]) != names:
            odd = sorted(set(p[key]) ^ names)[0]
            raise PlanFileError(f"the plan's {key} do not name the model's tensors (e.g. {odd!r})",
                                path=f"$.plan.{key}", source=path)
    if len(p["layer_device"]) != tmap.params.n_loaded_layers:
        raise PlanFileError(f"{len(p['layer_device'])} layer devices for a model of "
                            f"{tmap.params.n_loaded_layers} layers", path="$.plan.layer_device", source=path)
    argv = doc["launch"]["argv"]
    model_path = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None
    return SavedPlan(path, tmap, dict(p["types"]), dict(p["devices"]), tuple(p["layer_device"]),
                     RunConfig(**p["run"]), model_path, p)


def _styled_recipe_of(doc: Any) -> tuple[Recipe, dict[str, str], dict[str, str]]:
    """The plan JSON's recipe, tensor types and devices for ``--style ubergarm`` (checked: strings only)."""
    r = doc["recipe"]
    rules = tuple((str(rx), str(ty)) for rx, ty in r["rules"])
    recipe = Recipe(engine=str(r["engine"]), base_type=str(r["base_type"]), rules=rules, custom_q=str(r["custom_q"]))
    types = {str(k): str(v) for k, v in doc["plan"]["types"].items()}
    devices = {str(k): str(v) for k, v in (doc["plan"].get("devices") or {}).items()}
    return recipe, types, devices


def quantize_script(path: str, style: str = "plain") -> str:
    """The quantize workflow of a plan JSON (``plan --out``) as a bash script, one step after the other.

    ``style="ubergarm"``: the llama-quantize step is written as :func:`planner.recipe_style.styled_script` writes
    it (the recipe grouped by role and layer range with comments, in a quoted here-document, joined for the engine).

    Raises:
        UsageError: the file is not a plan document with a quantize workflow (``place`` plans and already
            quantized models have none), or its recipe cannot be written as a here-document.
    """
    from planner.quoting import comment_line
    from planner.recipe_style import carries_recipe, styled_script
    from planner.scripts import command_lines, script
    from planner.workflow import disk_gib

    try:
        doc = json.loads(Path(path).read_text())
        wf = doc["workflow"]
        if not isinstance(wf, dict):
            raise TypeError("no quantize workflow in this plan")
        steps = [(str(st["title"]), [str(a) for a in st["argv"]], int(st["disk_bytes"]), bool(st["disk_exact"]),
                  str(st.get("writes", ""))) for st in wf["steps"]]
        comments = [comment_line("quantize workflow for {} ({})", doc["plan"]["model"], doc["plan"]["model_source"]),
                    comment_line("{}", str(doc.get("imatrix", ""))),
                    comment_line("disk: {} if every file is kept, {} at most when intermediates are deleted",
                                 disk_gib(int(wf["total_disk_bytes"])), disk_gib(int(wf["peak_disk_bytes"]))),
                    *(comment_line("{}", str(a)) for a in wf.get("assumptions", ()))]
        styled = _styled_recipe_of(doc) if style == "ubergarm" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path} has no quantize workflow: {exc}",
                         hint="write the plan JSON with `gguf-planner plan --out` for an unquantized model") from exc
    body = _preflight([str(x) for x in wf.get("programs", ())], [str(x) for x in wf.get("inputs", ())])
    for i, (title, argv, nbytes, exact, writes) in enumerate(steps, 1):
        if not argv:
            raise UsageError(f"{path}: step {i} has no command")
        body.append(comment_line(f"{i}. {{}}: writes {{}}, {{}}", title, writes,
                                 disk_gib(nbytes) + ("" if exact else " (est.)")))
        if styled is not None and carries_recipe(styled[0], argv):
            try:
                body += styled_script(styled[0], styled[1], argv, styled[2]).rstrip("\n").split("\n")
            except ValueError as exc:
                raise UsageError(f"{path}: {exc}", hint="export without --style ubergarm") from exc
            styled = None
        else:
            body += command_lines(argv)
        body.append("")
    if styled is not None:
        raise UsageError(f"{path}: no llama-quantize step of the workflow takes the plan's recipe")
    return script(comments, body)


def _preflight(programs: Sequence[str], inputs: Sequence[str]) -> list[str]:
    """Lines that stop the script before its first step when a program is not on PATH or a file the user supplies
    is missing (the converter is run from the engine's checkout; the calibration text is the user's), so a missing
    piece is found before hours of download and conversion, not after."""
    from planner.quoting import comment_line, shell_quote

    if not programs and not inputs:
        return []
    out = [comment_line("{}", "preflight: the programs and the files you supply, before anything is written")]
    if programs:
        out.append(f"for p in {' '.join(shell_quote(p) for p in programs)}; do command -v \"$p\" >/dev/null || "
                   "{ echo \"missing program: $p (not on PATH)\" >&2; exit 1; }; done")
    if inputs:
        out.append(f"for f in {' '.join(shell_quote(f) for f in inputs)}; do [[ -e \"$f\" ]] || "
                   "{ echo \"missing input: $f (run from the folder that holds it, or edit the path)\" >&2; exit 1; }; "
                   "done")
    return [*out, ""]


def script_comments(saved: SavedPlan) -> list[str]:
    """Predicted memory and speed of a saved plan, as complete ``#`` lines for the exported script's header:
    every value from the plan file goes through :func:`planner.quoting.comment_line` (one quoting function)."""
    from planner.quoting import comment_line

    p = saved.plan
    out = [comment_line("model: {} ({}), engine {}, context {}", p["model"], p["model_source"], p["engine"],
                        p["run"]["ctx"])]
    for d in p["memory"]["devices"]:
        terms = ", ".join("{} {}" + ("" if t["exact"] else "~") for t in d["terms"])
        values = [v for t in d["terms"] for v in (t["name"], f"{t['bytes'] / GIB:.2f}")]
        out.append(comment_line("{}: {} of {} GiB (" + terms + "; ~ = estimate)", d["device"],
                                f"{d['total_bytes'] / GIB:.2f}", f"{d['budget_bytes'] / GIB:.2f}", *values))
    s = p["speed"]
    out.append(comment_line("estimated TG {} tok/s (at full context {}), PP {} tok/s", f"{s['tg_tps']:.1f}",
                            f"{s['tg_tps_ctx']:.1f}", f"{s['pp_tps']:.0f}"))
    return out


def launch_model_path(model: str | None, tmap: TensorMap, *, quantized_here: bool) -> str:
    """The GGUF the emitted commands load: the file given when it is used as it is, else the file a
    quantization from it would write (never the source itself), else a name for a built-in model (a file
    name made safe from the model's name, which may come from a header)."""
    from planner.quoting import safe_filename

    if quantized_here:
        return planned_name(model, tmap)
    if model and ("://" in model or Path(model).is_file()):
        return model
    return f"{safe_filename(tmap.name)}.gguf"


def planned_name(model: str | None, tmap: TensorMap) -> str:
    """Output GGUF name for a planned quantization: next to the source, never the source itself.

    The name comes from the user's own path when there is one, else from the model's name made safe
    (``general.name`` with ``/``, ``..`` or an absolute path cannot pick the folder llama-quantize writes to).
    """
    from planner.quoting import safe_filename

    if model and model.endswith(".gguf") and "://" not in model:
        stem = re.sub(r"-\d{5}-of-\d{5}$", "", Path(model).name[:-5])
        stem = re.sub(r"[-_.](bf16|BF16|f16|F16|f32|F32)$", "", stem)
        return str(Path(model).with_name(f"{safe_filename(stem)}-planned.gguf"))
    return f"{safe_filename(tmap.name)}-planned.gguf"
