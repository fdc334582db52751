"""Renderers of plans: ``plan`` (with its explanation, recipe, quantize workflow and launch sections),
``plan --pareto`` and a cluster plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from planner.output.sections import counts_block, print_buffers, print_memory, print_quality, print_speed
from planner.output.sink import gib, pct, print_table, print_text
from planner.units import GIB

if TYPE_CHECKING:
    from planner.cluster_plan import ClusterDocument
    from planner.runconfig import RunConfig
    from planner.documents import ParetoSet, PlanDocument
    from planner.explain import Explanation


def slots_text(run: RunConfig) -> str:
    """`` (4 slots of 8192 tokens)`` for a run with server slots (-np), from the engine's own division of the
    context (:attr:`planner.kv_cache.CacheConfig.slot_ctx`); empty for one slot."""
    from planner.kv_cache import CacheConfig

    if run.n_parallel <= 1:
        return ""
    return (f" ({run.n_parallel} slots of {CacheConfig.from_run(run).slot_ctx} tokens"
            + (", sharing one KV cache" if run.kv_unified else "") + ")")


def render_plan(doc: PlanDocument, style: str = "plain") -> None:
    """A plan as text; ``style="ubergarm"`` writes the recipe grouped by role and layer range with comments
    (planner.recipe_style) and the quantize step with it."""
    p = doc.plan
    from collections import Counter

    print_text(f"{p.model} on {', '.join(f'{d} {round(b / GIB, 2):g} GiB' for d, b in p.budgets.items())}, "
               f"engine {p.engine}, context {p.run.ctx}{slots_text(p.run)}, KV {p.run.type_k}/{p.run.type_v}")
    if p.solver:
        s = p.solver
        print_text(f"solver: {s.status} ({s.objective_kind}), gap {pct(s.gap)}, {s.wall_s:.2f} s, "
                   f"{s.n_classes} classes / {s.n_vars} variables, integer scaling error <= {s.scaling_error_bound:.2e}")
        if len(s.steps) > 1:
            print_text("  steps: " + "; ".join(
                f"{st.objective} {st.status} (gap {pct(st.gap)}"
                + (f", stop at {st.gap_limit:.2%})" if st.gap_limit else ")") for st in s.steps))
    print_text(f"size: {gib(p.total_bytes)} ({p.bpw:.3f} BPW), {p.total_bytes:,} bytes")
    print_text(counts_block(dict(Counter(p.types.values()))))
    print_memory(p.memory)
    print_buffers(p.memory)
    print_speed(p.speed)
    if p.quality is not None:
        print_quality(p.quality)
    for n in p.notes:
        print_text(f"note: {n}")
    if doc.explanation is not None:
        _print_explanation(doc.explanation)
    if doc.recipe is not None and style == "ubergarm":
        import shlex

        from planner.recipe_style import styled_script

        from planner.errors import UsageError

        argv = _quantize_argv(doc) or shlex.split(doc.quantize_command or "")
        try:
            styled = styled_script(doc.recipe, p.types, argv, p.devices)
        except ValueError as exc:       # a tensor name with a line break (a hostile header)
            raise UsageError(str(exc), hint="plan without --style ubergarm") from exc
        print_text(f"\nrecipe and quantize command (ubergarm style, {doc.rule_count} rules):\n"
                   + styled.rstrip("\n"))
        if doc.workflow is not None:
            _print_workflow(doc, skip_quantize=True)
    elif doc.recipe is not None:
        label = "--tensor-type items" if doc.recipe.engine == "mainline" else "--custom-q"
        print_text(f"\nrecipe ({label}, {doc.rule_count} rules):\n" + doc.recipe.custom_q)
        if doc.workflow is not None:
            _print_workflow(doc)
        else:
            print_text("\nquantize:\n" + (doc.quantize_command or ""))
    print_text("\nlaunch:\n" + doc.launch_command)
    if doc.launch.split_note:
        print_text(f"note: {doc.launch.split_note}")
    print_text("\nbenchmark the same placement:\n" + doc.sweep_command)


def _print_explanation(e: Explanation) -> None:
    """`plan`: why the plan is what it is, every number from the plan's own models (planner.explain)."""
    print_text("\nwhy (the plan's own memory, speed and quality models):")
    print_text(f"  binding: {e.binding}")
    print_text(f"  objective: {e.objective}")
    for x in e.experts:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in x.next_unit.items())
        print_text(f"  experts on {x.device}: layers {x.layers} ({x.n_layers} layers, {gib(x.bytes, 2)}) save "
                   f"{x.tg_ms_saved:.2f} ms/token of TG against the CPU ({x.ms_per_gib:.3f} ms per GiB)"
                   + (f"; one more CPU layer would save per GiB (by its expert types): {kinds} ms" if kinds else ""))
    print_text(f"  position: {e.position}")
    for t in e.types:
        nxt = (f"{t.next_type} would cost +{gib(t.extra_bytes, 2)} for -{t.ppl_gain_pct:.3f} % PPL "
               f"({t.pct_per_gib:.3f} % per GiB); "
               + (f"it fits, at TG {t.upgrade_tg_delta:+.2f} tok/s" if t.upgrade_fits else "it does not fit")
               if t.next_type else "kept as the source stores it (llama-quantize copies a source's quantized tensors)"
               if t.kept else "no larger candidate is predicted better")
        print_text(f"  types: {t.group} at {t.type_name} ({t.n_tensors} tensors, {gib(t.bytes, 2)}): {nxt}")
    for w in e.next_gib:
        ppl = ("" if w.ppl_delta_pct is None else
               f", PPL {w.ppl_delta_pct:+.3f} %" + (f" ({w.ppl_ratio:.4f})" if w.ppl_ratio is not None else ""))
        print_text(f"  next GiB: {w.resource}: TG {w.tg_delta:+.3f} tok/s ({w.tg_tps:.2f}){ppl}; {w.method}")


def _quantize_argv(doc: PlanDocument) -> list[str] | None:
    """The workflow's llama-quantize step (the one whose argv carries the recipe)."""
    from planner.recipe_style import carries_recipe

    if doc.workflow is None or doc.recipe is None:
        return None
    for st in doc.workflow.steps:
        if carries_recipe(doc.recipe, st.argv):
            return list(st.argv)
    return None


def _print_workflow(doc: PlanDocument, skip_quantize: bool = False) -> None:
    """The quantize workflow: each step's command and the disk space it writes (``skip_quantize``: the
    llama-quantize step's command was printed with the styled recipe)."""
    import shlex

    from planner.workflow import disk_gib

    wf = doc.workflow
    assert wf is not None
    print_text(f"\nquantize workflow ({doc.imatrix}):")
    for i, st in enumerate(wf.steps, 1):
        size = disk_gib(st.disk_bytes) + ("" if st.disk_exact else " (est.)")
        print_text(f"{i}. {st.title}: writes {st.writes}, {size}" + (f"; {st.note}" if st.note else ""))
        if skip_quantize and list(st.argv) == _quantize_argv(doc):
            print_text("   (the llama-quantize command under the recipe above)")
            continue
        print_text("   " + shlex.join(st.argv))
    print_text(f"disk: {disk_gib(wf.total_disk_bytes)} if every file is kept, {disk_gib(wf.peak_disk_bytes)} at most "
               "when each intermediate is deleted after its last use")
    for a in wf.assumptions:
        print_text(f"note: {a}")


def render_pareto(ps: ParetoSet) -> None:
    from planner.quality import difference_inside_band

    rows = []
    for i, d in enumerate(ps.documents, 1):
        p = d.plan
        q = p.quality
        rows.append((i, gib(p.total_bytes, 2), f"{p.bpw:.3f}", f"{p.speed.tg_tps:.1f}", f"{p.speed.pp_tps:.0f}",
                     f"{q.ppl_ratio:.4f} ({q.ppl_ratio_low:.4f}-{q.ppl_ratio_high:.4f})" if q else "-",
                     len(d.recipe.rules) if d.recipe else "-",
                     f"{p.solver.status} {pct(p.solver.gap)}" if p.solver else "-"))
    print_table(f"{ps.model}: non-dominated plans (best quality first)",
                ["#", "size", "BPW", "TG t/s", "PP t/s", "PPL ratio (band)", "rules", "solver (gap)"], rows,
                justify=["right", "right", "right", "right", "right", "right", "right", "left"], caption="TG/PP/PPL are estimates; --json prints every plan in full")
    for src in sorted({d.plan.quality.constants for d in ps.documents if d.plan.quality}):
        print_text(f"quality constants: {src}")
    for i, (a, b) in enumerate(zip(ps.documents, ps.documents[1:]), 1):
        qa, qb = a.plan.quality, b.plan.quality
        if qa is not None and qb is not None and difference_inside_band(qa, qb):
            print_text(f"note: plans {i} and {i + 1}: predicted PPL ratios {qa.ppl_ratio:.4f} and {qb.ppl_ratio:.4f} "
                       "differ by less than the band (the model cannot tell which is better)")


def render_cluster_plan(cd: ClusterDocument) -> None:
    """A cluster plan: the plan as for one box, then per host, the network, and what to run where."""
    render_plan(cd.document)
    print_table("memory per host", ["host", "devices", "total", "budget", "weights", "KV", "fits"],
                [(h.host, ", ".join(h.devices), gib(h.total_bytes, 2), gib(h.budget_bytes, 2),
                  gib(h.weights_bytes, 2), gib(h.kv_bytes, 2), "yes" if h.fits else "NO") for h in cd.hosts],
                justify=["left", "left", "right", "right", "right", "right", "left"])
    layers = ", ".join(f"{d}: {n}" for d, n in cd.remote_layers.items())
    print_text(f"remote layers (whole layers, first in the engines' device order): {layers}")
    print_text(f"network (estimate, in the speed above): {cd.network_tg_ms:.2f} ms per token at depth 0, "
               f"{cd.network_tg_ms_ctx:.2f} at full context; {cd.network_pp_ms:.1f} ms per ubatch")
    warm = "" if cd.load_warm_s is None else f", {cd.load_warm_s / 60:.1f} min with a warm rpc-server -c cache"
    print_text(f"load (estimate): remote weights {cd.load_cold_s / 60:.1f} min over the links{warm}")
    for n in cd.load_notes:
        print_text(f"  {n}")
    for s in cd.servers:
        print_text(f"\non {s.host} ({s.address}), start first:\n{s.command}")
    for w in cd.warnings:
        print_text(f"\nwarning: {w}")
