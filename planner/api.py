"""The library API: a few functions over typed requests, one per command that plans.

    >>> from planner.api import plan
    >>> from planner.hardware import resolve_hardware
    >>> from planner.request import PlanRequest
    >>> from planner.runconfig import RunConfig
    >>> hw = resolve_hardware(vram=[24.0], ram=96.0)
    >>> doc = plan(None, hw, PlanRequest(run=RunConfig(threads=hw.threads_default)))   # doctest: +SKIP

:func:`plan` chooses types and devices for an unquantized model (or places a quantized one),
:func:`place` places a given mix, :func:`check` predicts a user's own command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from planner.documents import ParetoSet, PlanDocument, document, launch_model_path
from planner.errors import InfeasibleBudgetError, UsageError
from planner.hardware import Hardware
from planner.imatrix_use import ImatrixUse
from planner.kv_cache import check_engine
from planner.memory import Placement
from planner.pareto import pareto_plans
from planner.context_search import resolve_ctx, with_ctx
from planner.planning import Plan, feasible_for, joint_plan
from planner.planning import place as place_mix
from planner.quants import catalogue
from planner.request import EmitOptions, PlanRequest
from planner.runconfig import UBATCH_CHOICES
from planner.tensors import TensorMap
from planner.units import GIB

if TYPE_CHECKING:       # check and cluster plans import their stages when they run (a plan does not need them)
    from planner.check import CheckResult
    from planner.cluster import Cluster
    from planner.cluster_plan import ClusterDocument

__all__ = ["check", "check_command", "parse_fixed", "place", "plan", "size_cap_bytes", "with_quality"]


def parse_fixed(items: Sequence[str], engine: str) -> tuple[tuple[str, str], ...]:
    """``--fixed REGEX=TYPE`` items as (regex, type) pairs; the type must exist for the engine.

    Raises:
        UsageError: an item is not REGEX=TYPE.
        UnknownQuantTypeError: the type is not in the engine's catalogue.
    """
    pinned: list[tuple[str, str]] = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--fixed {item!r} is not REGEX=TYPE")
        rx, ty = item.rsplit("=", 1)
        catalogue().get(ty, engine=engine)
        pinned.append((rx, ty))
    return tuple(pinned)


def _check_imatrix_types(request: PlanRequest) -> None:
    """Imatrix-only types are allowed exactly when an imatrix is declared (or ik's --ignore-imatrix-rules).

    Raises:
        UsageError: ``--allow``/``--fixed`` names such a type while planning with --no-imatrix.
    """
    from planner.quantize import imatrix_types

    engine = request.run.qengine
    if request.has_imatrix or (request.ignore_imatrix_rules and engine == "ik"):
        return
    need = imatrix_types(engine)
    named = sorted({catalogue().get(t, engine=engine).name for t in (*request.allow, *(ty for _, ty in request.fixed))}
                   & need)
    if named:
        raise UsageError(f"{', '.join(named)} need an importance matrix and the plan has none (--no-imatrix)",
                         hint="pass --imatrix FILE" + (", or --ignore-imatrix-rules to quantize without one"
                                                       if engine == "ik" else ""))


def size_cap_bytes(max_size_gib: float | None) -> int | None:
    """``--max-size GIB`` in bytes (None: no cap)."""
    return int(max_size_gib * GIB) if max_size_gib else None


def plan(model: str | None, hardware: Hardware, request: PlanRequest,
         emit: EmitOptions | None = None) -> PlanDocument | ParetoSet:
    """``gguf-planner plan``: the joint ILP for an unquantized model, placement for a quantized GGUF.

    ``request.kv_auto``: q8_0 KV cache (half of f16, near-lossless), q4_0 only if q8_0 does not fit.

    Raises:
        InfeasibleBudgetError: nothing fits, with the shortfall and the nearest feasible options.
        UsageError, UnknownQuantTypeError: a malformed request.
    """
    emit = emit or EmitOptions()
    if request.kv_auto:
        q8 = replace(request, kv_auto=False, run=replace(request.run, type_k="q8_0", type_v="q8_0"))
        try:
            return plan(model, hardware, q8, emit)
        except InfeasibleBudgetError:
            request = replace(q8, run=replace(q8.run, type_k="q4_0", type_v="q4_0"))
    from planner.quality import QualityModel
    from planner.source import load_model

    tmap = load_model(model)
    check_engine(tmap.params, request.run.engine)      # an architecture the engine refuses: one line, first
    for ty in (*request.allow, *request.deny, *(ty for _, ty in request.fixed)):
        catalogue().get(ty, engine=request.run.qengine)
    request = replace(request, has_imatrix=request.has_imatrix or bool(request.imatrix))
    _check_imatrix_types(request)
    out_path = emit.model_path or launch_model_path(model, tmap, quantized_here=not tmap.is_quantized)
    if tmap.is_quantized:
        types = {t.name: t.dtype for t in tmap.tensors}
        placed = with_ctx(tmap, request, lambda r: place_mix(tmap, types, hardware, r),
                          feasible_for(tmap, hardware, types))
        return document(tmap, placed, model_path=out_path, with_recipe=False, check_binary=emit.check_binary)
    imx = None
    if request.imatrix:
        from planner.imatrix import read_imatrix

        imx = read_imatrix(request.imatrix)
    quality = QualityModel.build(tmap, imatrix=imx, has_imatrix=request.has_imatrix)
    if request.pareto:
        plans = pareto_plans(tmap, hardware, request, quality, request.pareto)
        return ParetoSet(tmap.name, tuple(document(tmap, p, model_path=out_path, imatrix=request.imatrix,
                                                   has_imatrix=request.has_imatrix,
                                                   ignore_imatrix_rules=request.ignore_imatrix_rules)
                                          for p in plans))
    try:
        p = with_ctx(tmap, request, _ubatch_for_min_pp(request, lambda r: joint_plan(tmap, hardware, r, quality)),
                     feasible_for(tmap, hardware, None))
    except InfeasibleBudgetError as exc:
        from planner.cluster_plan import second_box_option

        exc.options.append(second_box_option(exc, tmap, request))
        raise
    free = hardware.disk_free_bytes
    if free is not None and p.total_bytes > free:
        p = replace(p, notes=p.notes + (
            f"the quantized file needs {p.total_bytes / GIB:.1f} GiB but its disk has {free / GIB:.1f} GiB free",))
    from planner.explain import explain

    doc = document(tmap, p, model_path=out_path, source_path=model if model and model.endswith(".gguf") else None,
                   imatrix=request.imatrix, check_binary=emit.check_binary, has_imatrix=request.has_imatrix,
                   ignore_imatrix_rules=request.ignore_imatrix_rules)
    return replace(doc, explanation=explain(tmap, p, hardware, request, quality))


def _ubatch_for_min_pp(request: PlanRequest, attempt: Callable[[PlanRequest], Plan]) -> Callable[[PlanRequest], Plan]:
    """With --min-pp and -ub not given: the smallest -ub (UBATCH_CHOICES) whose plan meets the target; a larger
    micro-batch raises PP but its compute buffers take memory the weights could use."""
    if not (request.ub_auto and request.min_pp):
        return attempt

    def by_ubatch(r: PlanRequest) -> Plan:
        # the ILP's PP terms are linear; the full estimate may still miss the target: then try the next -ub
        last: InfeasibleBudgetError | None = None
        fallback: Plan | None = None
        for ub in UBATCH_CHOICES:
            run = replace(r.run, ubatch=ub, batch=max(r.run.batch, ub))
            try:
                p = attempt(replace(r, run=run, ub_auto=False))
            except InfeasibleBudgetError as exc:
                last = exc
                continue
            if p.speed.pp_tps >= (r.min_pp or 0.0) * 0.999:
                return p
            fallback = fallback or p
        if fallback is not None:
            return fallback            # carries the note that the target is missed
        assert last is not None
        raise last

    return by_ubatch


def place(model: str | None, tmap: TensorMap, types: Mapping[str, str], hardware: Hardware, request: PlanRequest,
          emit: EmitOptions | None = None, *, quantized_here: bool = False) -> PlanDocument:
    """``gguf-planner place``: devices for a given mix (``types``), maximising predicted generation speed.

    ``quantized_here``: the mix is what a quantization of ``model`` would write (the command then names the
    quantized output, never the source).

    Raises:
        InfeasibleBudgetError: the mix does not fit, with the shortfall and the nearest feasible options.
    """
    emit = emit or EmitOptions()
    placed = with_ctx(tmap, request, lambda r: place_mix(tmap, types, hardware, r),
                      feasible_for(tmap, hardware, types))
    path = emit.model_path or launch_model_path(model, tmap, quantized_here=quantized_here)
    return document(tmap, placed, model_path=path, with_recipe=False, check_binary=emit.check_binary)


def check(tmap: TensorMap, types: Mapping[str, str], placement: Placement, hardware: Hardware,
          request: PlanRequest, warnings: Sequence[str] = (), imatrix: ImatrixUse | None = None) -> CheckResult:
    """``gguf-planner check``: memory per device and speed of a given mix and placement, and with ``imatrix``
    (the declared or recorded imatrix use) its predicted quality.

    Raises:
        ImatrixFormatError: the declared imatrix file is malformed or made for another model.
    """
    from planner.check import evaluate

    result = evaluate(tmap, types, placement, hardware, request.run, warnings=warnings)
    return with_quality(result, tmap, types, imatrix) if imatrix is not None else result


def with_quality(result: CheckResult, tmap: TensorMap, types: Mapping[str, str], imatrix: ImatrixUse) -> CheckResult:
    """``result`` with the predicted quality of its mix (band and the source of its constants) under the imatrix
    use that applies to ``tmap`` (a quantized GGUF's record wins over the declaration).

    Raises:
        ImatrixFormatError: the declared imatrix file is malformed or made for another model.
    """
    from planner.imatrix_use import imatrix_for
    from planner.quality import QualityModel

    use = imatrix_for(tmap, imatrix)
    quality = QualityModel.build(tmap, imatrix=use.file if use.origin == "given" else None, has_imatrix=use.used)
    return replace(result, quality=quality.estimate(types), imatrix=use.note)


def check_command(model: str | None, tmap: TensorMap, types: Mapping[str, str], argv: Sequence[str],
                  hardware: Hardware, *, engine: str, run_overrides: Mapping[str, Any] | None = None,
                  propose: bool = True) -> CheckResult:
    """``gguf-planner check -- llama-server ...`` on one box: memory per device and speed of the command as the
    engine reads it, and (``propose``) the smallest change that makes it fit or a faster one, with the plan's own
    command for the same mix and machine (:mod:`planner.fixes`); every proposed command is checked the same way.
    """
    from planner.check import check_command as _check_command
    from planner.errors import PlannerError
    from planner.fixes import propose_fix

    result = _check_command(tmap, types, argv, hardware, engine=engine, run_overrides=run_overrides)
    if not propose:
        return result
    model_path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-m", "--model")), None)

    def plan_command() -> tuple[Sequence[str], str]:
        try:
            doc = place(model, tmap, types, hardware, PlanRequest(run=result.run),
                        EmitOptions(model_path=model_path or launch_model_path(model, tmap, quantized_here=False)))
        except PlannerError as exc:
            return (), f"no plan places this mix here: {str(exc).splitlines()[0]}"
        return doc.launch.argv, "gguf-planner place: devices chosen by the solver for the same mix, context and KV"

    fix = propose_fix(tmap, types, argv, hardware, result, engine=engine, run_overrides=run_overrides,
                      plan_command=plan_command)
    return replace(result, fix=fix)


def plan_cluster(model: str | None, cluster: Cluster, request: PlanRequest, emit: EmitOptions | None = None
                 ) -> ClusterDocument:
    """``gguf-planner plan --cluster/--rpc-host``: types and placement over an RPC cluster (remote devices as
    budgets, the network in the speed terms), with the main command and one rpc-server command per host.

    Raises:
        UsageError: a quantized model (its types are fixed: use ``check``), --ctx max, --kv auto or --pareto.
        InfeasibleBudgetError: the model does not fit the cluster.
    """
    from planner.cluster_plan import cluster_document, plan_cluster as _plan_cluster
    from planner.quality import QualityModel
    from planner.source import load_model

    emit = emit or EmitOptions()
    if request.ctx_max or request.kv_auto or request.pareto:
        raise UsageError("--ctx max, --kv auto and --pareto are not available for cluster plans yet",
                         hint="give --ctx N and --kv TYPE")
    tmap = load_model(model)
    if tmap.is_quantized:
        raise UsageError("cluster plans choose the types of an unquantized model",
                         hint="for a quantized GGUF, write the command and run `check` on it")
    request = replace(request, has_imatrix=request.has_imatrix or bool(request.imatrix),
                      run=resolve_ctx(tmap, request.run))
    imx = None
    if request.imatrix:
        from planner.imatrix import read_imatrix

        imx = read_imatrix(request.imatrix)
    quality = QualityModel.build(tmap, imatrix=imx, has_imatrix=request.has_imatrix)
    out_path = emit.model_path or launch_model_path(model, tmap, quantized_here=True)
    cp = _plan_cluster(tmap, cluster, request, quality, model_path=out_path)
    return cluster_document(tmap, cp, model_path=out_path,
                            source_path=model if model and model.endswith(".gguf") else None,
                            imatrix=request.imatrix, has_imatrix=request.has_imatrix,
                            ignore_imatrix_rules=request.ignore_imatrix_rules)
