"""The one output sink: results to stdout as rich tables or JSON, progress and notes to stderr.

Library stages return frozen dataclasses; commands hand them here.  ``to_jsonable`` turns any
dataclass tree into plain JSON with a stable key order (field order, then sorted dict keys).
rich is imported only in this module.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.units import GIB, MIB

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod

    from planner.check import CheckResult
    from planner.cluster_plan import ClusterDocument
    from planner.compare import Comparison
    from planner.documents import ParetoSet, PlanDocument
    from planner.explain import Explanation
    from planner.fixes import FixOption, FixProposal
    from planner.hardware import GPU, Hardware, ProfileSummary
    from planner.memory import MemoryReport
    from planner.model_list import BuiltinModel
    from planner.quality import QualityEstimate
    from planner.quantize import Footprint
    from planner.calibrate import CalibrateResult
    from planner.speed import SpeedEstimate
    from planner.verify import Check, VerifyReport
    from planner.summary import ModelSummary

MAX_TABLE_ROWS = 200   # rows of a table in the text output; --json has them all


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, tuples, enums and paths into JSON-ready values (stable order)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("json") is False:
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("json") == "omit_default" and value == f.default:
                continue                      # an option left at its default leaves the JSON as it was
            out[f.name] = to_jsonable(value)
        return out
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return round(obj, 6)
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n"


def gib(n_bytes: int | float, digits: int = 3) -> str:
    return f"{n_bytes / GIB:.{digits}f} GiB"


def mib(n_bytes: int | float, digits: int = 1) -> str:
    return f"{n_bytes / MIB:.{digits}f} MiB"


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)


def note(text: str) -> None:
    """Progress / informational line on stderr (never mixes with --json stdout)."""
    print(text, file=sys.stderr)


def print_json(obj: Any) -> None:
    """JSON on stdout; \\u escapes when stdout's encoding is not UTF-8 (PYTHONIOENCODING=ascii), so the
    document stays valid JSON whatever the terminal."""
    encoding = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "")
    if encoding == "utf8":
        sys.stdout.write(dumps(obj))
    else:
        sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=True) + "\n")


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, justify: Sequence[JustifyMethod] | None = None, caption: str | None = None) -> None:
    """Render one table to stdout."""
    from rich.table import Table

    table = Table(title=title, caption=caption, show_lines=False, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify=(justify[i] if justify else "left"), no_wrap=False)
    for row in rows:
        table.add_row(*[("" if v is None else str(v)) for v in row])
    _console().print(table)


def print_kv(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    """A two-column key/value table."""
    print_table(title, ["", ""], [(k, v) for k, v in pairs])


Renderer = Callable[[Any], None]


def emit(result: Any, *, as_json: bool, render: Renderer) -> None:
    """Send a command's result to stdout, as JSON or through its renderer."""
    if as_json:
        print_json(result)
    else:
        render(result)


def render_hardware(hw: Hardware) -> None:
    """A ``Hardware``: one row per figure with its source, then the notes."""
    def pcie(g: GPU) -> str:
        return f"PCIe {g.pcie_gen}.0 x{g.pcie_width}" if g.pcie_gen and g.pcie_width else "PCIe link unknown"

    rows: list[tuple[str, Any, str]] = []
    if not hw.gpus:
        rows.append(("GPUs", "none (CPU only)", hw.source_of("gpus")))
    for i, g in enumerate(hw.gpus):
        free = f", {gib(g.free_bytes)} free" if g.free_bytes is not None else ""
        rows.append((f"GPU {g.index}", g.name + (f" (compute {g.compute_capability})" if g.compute_capability else ""),
                     g.source))
        rows.append(("  memory", gib(g.total_bytes) + free, hw.source_of(f"gpus[{i}].total_bytes")))
        rows.append(("  memory bandwidth", f"{g.mem_bw_gbs:g} GB/s", hw.source_of(f"gpus[{i}].mem_bw_gbs")))
        rows.append(("  host→device", f"{g.h2d_gbs:g} GB/s ({pcie(g)}, estimate)",
                     hw.source_of(f"gpus[{i}].h2d_gbs")))
    ram_bw = f"{hw.ram_bw_gbs:g} GB/s"
    if hw.ram_channels and hw.ram_mts:
        ram_bw += f" ({hw.ram_channels} channels x {hw.ram_mts} MT/s)"
    opt = lambda v, fmt=str, none="unknown": none if v is None else fmt(v)  # noqa: E731
    rows += [
        ("RAM total", gib(hw.ram_total_bytes), hw.source_of("ram_total_bytes")),
        ("RAM available", opt(hw.ram_available_bytes, gib), hw.source_of("ram_available_bytes")),
        ("RAM limit (cgroup)", opt(hw.ram_limit_bytes, gib, "none"), hw.source_of("ram_limit_bytes")),
        ("RAM usable", gib(hw.usable_ram_bytes), "derived"),
        ("RAM bandwidth", ram_bw, hw.source_of("ram_bw_gbs")),
        ("CPU", hw.cpu_model, hw.source_of("cpu_model")),
        ("cores", f"{hw.physical_cores} physical / {hw.logical_cores} logical", hw.source_of("physical_cores")),
        ("CPU quota (cgroup)", opt(hw.cpu_quota_cores, lambda q: f"{q:g} cores", "none"),
         hw.source_of("cpu_quota_cores")),
        ("threads (default)", hw.threads_default, "derived"),
        ("CPU flags", " ".join(hw.cpu_flags) or "none of interest", hw.source_of("cpu_flags")),
    ]
    for node in hw.numa_nodes:
        rows.append((f"NUMA node {node.id}", f"{gib(node.mem_total_bytes)}, cpus {node.cpus}",
                     hw.source_of("numa_nodes")))
    rows += [
        ("THP enabled / defrag", f"{opt(hw.thp_enabled)} / {opt(hw.thp_defrag)}", hw.source_of("thp_enabled")),
        ("hugepages free", opt(hw.hugepages_free), hw.source_of("hugepages_free")),
        ("swap", opt(hw.swap_total_bytes, gib), hw.source_of("swap_total_bytes")),
    ]
    if hw.disk_free_bytes is not None:
        rows.append(("disk free (model)", gib(hw.disk_free_bytes), hw.source_of("disk_free_bytes")))
    print_table(f"Hardware: {hw.name}", ["figure", "value", "source"], rows)
    for line in hw.notes:
        print_text(f"note: {line}")


def render_profiles(profiles: Sequence[ProfileSummary]) -> None:
    """The shipped hardware profiles, one row each."""
    rows = []
    for p in profiles:
        counts: dict[str, int] = {}
        for name in p.gpus:
            name = name.replace("NVIDIA ", "").replace("GeForce ", "")
            counts[name] = counts.get(name, 0) + 1
        gpus = ", ".join(f"{n}x {name}" if n > 1 else name for name, n in counts.items()) or "none"
        rows.append((p.name, gpus, f"{p.vram_bytes / GIB:g}", f"{p.ram_bytes / GIB:g}", f"{p.ram_bw_gbs:g}",
                     f"{p.physical_cores}/{p.logical_cores}"))
    from rich.table import Table

    table = Table(title="Hardware profiles", title_justify="left")
    table.add_column("name", no_wrap=True)  # a name to type after --profile: never cut
    table.add_column("GPUs")
    for col in ("VRAM GiB", "RAM GiB", "RAM GB/s", "cores"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    _console().print(table)


def render_models(models: Sequence[BuiltinModel]) -> None:
    """The built-in models, one row each: architecture, parameters (total/active), layers, attention kind."""
    from rich.table import Table

    table = Table(title="Built-in models", title_justify="left")
    table.add_column("name", no_wrap=True)  # a name to type as MODEL: never cut
    table.add_column("arch")
    for col in ("total", "active", "layers", "experts"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("attention / state", min_width=16)
    for m in models:
        experts = f"{m.n_expert_used}/{m.n_expert}" if m.n_expert else "dense"
        table.add_row(m.name, m.arch, f"{m.total_params / 1e9:.1f}B", f"{m.active_params / 1e9:.1f}B",
                      str(m.n_layer), experts, m.attention)
    _console().print(table)


# --- renderers for the model, footprint, plan, check and compare commands ----------------------

def _counts_block(counts: Mapping[str, int]) -> str:
    from planner.quantize import format_type_counts

    return format_type_counts(counts)


def render_summary(s: ModelSummary) -> None:
    print_kv(f"{s.name} ({s.arch})", [
        ("source", s.source), ("layers", s.n_layer),
        ("experts", f"{s.n_expert} ({s.n_expert_used} used)" if s.n_expert else "dense"),
        ("tensors", s.n_tensors), ("parameters", f"{s.n_elements:,} ({s.n_elements / 1e9:.2f} B)"),
        ("size", f"{gib(s.total_bytes)} ({s.bpw:.3f} BPW), {s.total_bytes:,} bytes"),
        ("file", f"{s.file_bytes:,} bytes" if s.file_bytes else "n/a (built-in description)"),
    ])
    print_text(_counts_block(s.type_counts))
    # a table renders in time quadratic-ish in its rows: a header with 50,000 distinct roles took a minute
    shown = sorted(s.roles, key=lambda r: -r.bytes)[:MAX_TABLE_ROWS] if len(s.roles) > MAX_TABLE_ROWS else s.roles
    print_table("per role", ["role", "tensors", "parameters", "size", "types"],
                [(r.role, r.tensors, f"{r.n_elements:,}", mib(r.bytes), r.types) for r in shown],
                justify=["left", "right", "right", "right", "left"],
                caption=(f"the {MAX_TABLE_ROWS} largest of {len(s.roles):,} roles; --json lists all"
                         if len(shown) < len(s.roles) else None))
    layers = s.layer_bytes
    if layers:
        rows = []
        start = 0
        for i in range(1, len(layers) + 1):
            if i == len(layers) or layers[i] != layers[start]:
                rows.append((f"{start}" if i - 1 == start else f"{start}-{i - 1}", mib(layers[start])))
                start = i
        more = len(rows) - MAX_TABLE_ROWS
        rows = rows[:MAX_TABLE_ROWS] + ([(f"... {more:,} more ranges", "--json lists all")] if more > 0 else [])
        rows.append(("outside layers", mib(s.nonlayer_bytes)))
        print_table("per layer", ["layers", "size per layer"], rows, justify=["left", "right"])


def render_footprint(fp: Footprint, *, all_tensors: bool = False) -> None:
    print_text(f"{fp.model}: base {fp.base_type}, engine {fp.engine}")
    print_text(f"{gib(fp.total_bytes)} ({fp.bpw:.3f} BPW), {fp.total_bytes:,} bytes of tensors, "
               f"{fp.data_bytes:,} bytes of padded data")
    if getattr(fp, "file_bytes", None):
        print_text(f"predicted file size: {fp.file_bytes:,} bytes")
    if fp.imatrix:
        print_text(fp.imatrix)
    print_text("")
    print_text(_counts_block(fp.type_counts))
    seen: set[tuple] = set()
    rows = []
    for r in fp.tensors:
        key = (r.name.split(".", 2)[-1] if r.name.startswith("blk.") else r.name, r.type_name, r.reason)
        if not all_tensors and key in seen:
            continue
        seen.add(key)
        rows.append((r.name, r.src_type, r.type_name, f"{r.nbytes:,}", r.reason))
    print_table("tensors" + ("" if all_tensors else " (first of each role/type; --all-tensors for every one)"),
                ["tensor", "source", "type", "bytes", "why"], rows,
                justify=["left", "left", "left", "right", "left"])
    if fp.fallbacks:
        print_table("row-size fallbacks", ["tensor", "type", "why"],
                    [(r.name, r.type_name, r.fallback) for r in fp.fallbacks])


def _memory_rows(mem: MemoryReport) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for d in mem.devices:
        terms = ", ".join(f"{t.name} {gib(t.bytes, 2)}" + ("" if t.exact else " (est.)") for t in d.terms)
        rows.append((d.device, gib(d.total_bytes, 2), gib(d.budget_bytes, 2), gib(d.free_bytes, 2),
                     "yes" if d.fits else "NO", terms))
    return rows


def _print_memory(mem: MemoryReport, title: str = "memory per device") -> None:
    print_table(title, ["device", "total", "budget", "free", "fits", "terms"], _memory_rows(mem),
                justify=["left", "right", "right", "right", "left", "left"])


def pct(gap: float) -> str:
    """A solver gap as a percentage; a tiny non-zero gap is shown as such, never rounded to 0.00 %."""
    if 0 < gap < 5e-5:
        return f"{gap * 100:.1g}%"
    return f"{gap:.2%}"


def _print_speed(s: SpeedEstimate) -> None:
    basis = s.basis
    label = basis.label if basis is not None else "estimate"
    print_text(f"speed, {label}: TG {s.tg_tps:.1f} tok/s at depth 0, {s.tg_tps_ctx:.1f} at full context; "
               f"PP {s.pp_tps:.0f} tok/s at depth 0, {s.pp_tps_ctx:.0f} at full context")
    if basis is not None and basis.defaulted:
        print_text("  defaulted hardware figures: " + "; ".join(basis.defaulted))
    print_text("  assumptions: " + "; ".join(s.assumptions))


def _print_quality(q: QualityEstimate) -> None:
    print_text(f"quality (estimate): PPL ratio {q.ppl_ratio:.4f} (range {q.ppl_ratio_low:.4f}-{q.ppl_ratio_high:.4f}); "
               f"constants {q.constants}")


def render_plan(doc: PlanDocument, style: str = "plain") -> None:
    """A plan as text; ``style="ubergarm"`` writes the recipe grouped by role and layer range with comments
    (planner.recipe_style) and the quantize step with it."""
    p = doc.plan
    from collections import Counter

    print_text(f"{p.model} on {', '.join(f'{d} {round(b / GIB, 2):g} GiB' for d, b in p.budgets.items())}, "
               f"engine {p.engine}, context {p.run.ctx}, KV {p.run.type_k}/{p.run.type_v}")
    if p.solver:
        s = p.solver
        print_text(f"solver: {s.status} ({s.objective_kind}), gap {pct(s.gap)}, {s.wall_s:.2f} s, "
                   f"{s.n_classes} classes / {s.n_vars} variables, integer scaling error <= {s.scaling_error_bound:.2e}")
        if len(s.steps) > 1:
            print_text("  steps: " + "; ".join(
                f"{st.objective} {st.status} (gap {pct(st.gap)}"
                + (f", stop at {pct(st.gap_limit)})" if st.gap_limit else ")") for st in s.steps))
    print_text(f"size: {gib(p.total_bytes)} ({p.bpw:.3f} BPW), {p.total_bytes:,} bytes")
    print_text(_counts_block(dict(Counter(p.types.values()))))
    _print_memory(p.memory)
    _print_speed(p.speed)
    if p.quality is not None:
        _print_quality(p.quality)
    for n in p.notes:
        print_text(f"note: {n}")
    if doc.explanation is not None:
        _print_explanation(doc.explanation)
    if doc.recipe is not None and style == "ubergarm":
        import shlex

        from planner.recipe_style import styled_script

        argv = _quantize_argv(doc) or shlex.split(doc.quantize_command or "")
        print_text(f"\nrecipe and quantize command (ubergarm style, {doc.rule_count} rules):\n"
                   + styled_script(doc.recipe, p.types, argv, p.devices).rstrip("\n"))
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
               if t.next_type else "no larger candidate is predicted better")
        print_text(f"  types: {t.group} at {t.type_name} ({t.n_tensors} tensors, {gib(t.bytes, 2)}): {nxt}")
    for w in e.next_gib:
        ppl = ("" if w.ppl_delta_pct is None else
               f", PPL {w.ppl_delta_pct:+.3f} %" + (f" ({w.ppl_ratio:.4f})" if w.ppl_ratio is not None else ""))
        print_text(f"  next GiB: {w.resource}: TG {w.tg_delta:+.3f} tok/s ({w.tg_tps:.2f}){ppl}; {w.method}")


def _quantize_argv(doc: PlanDocument) -> list[str] | None:
    """The workflow's llama-quantize step (the one whose argv carries the recipe)."""
    if doc.workflow is None or doc.recipe is None:
        return None
    for st in doc.workflow.steps:
        if doc.recipe.custom_q in st.argv or any(a == f"{rx}={ty}" for a in st.argv for rx, ty in doc.recipe.rules):
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


def render_check(r: CheckResult) -> None:
    print_text(f"{r.model}: {gib(r.total_bytes)} of weights, context {r.run.ctx}, KV {r.run.type_k}/{r.run.type_v}")
    for w in r.warnings:
        print_text(f"warning ({r.run.engine}): {w}")
    _print_memory(r.memory)
    if getattr(r, "buffers", ()):
        print_text("engine buffers (as the load log prints them; compute: see the table, estimate):")
        for kind, name, nbytes in r.buffers:
            what = "KV buffer size" if kind == "kv" else "buffer size"
            print_text(f"  {name:>10} {what} = {nbytes / 2**20:10.2f} MiB")
    _print_speed(r.speed)
    if r.quality is not None:
        _print_quality(r.quality)
    if r.imatrix:
        print_text(r.imatrix)
    if r.problems:
        for p in r.problems:
            print_text(f"DOES NOT FIT: {p}")
    else:
        print_text("fits")
    if r.fix is not None:
        _print_fix(r.fix, r.speed)


def _fix_line(o: FixOption) -> str:
    free = ", ".join(f"{d} {v / GIB:+.2f} GiB" for d, v in o.free_bytes.items())
    moved = f"; moves {gib(o.moved_bytes, 2)} of weights" if o.moved_bytes else ""
    cost = f"; gives up: {o.cost}" if o.cost else ""
    return (f"{'fits' if o.fits else 'DOES NOT FIT'}, TG {o.tg_tps:.1f} tok/s, PP {o.pp_tps:.0f} tok/s (estimates); "
            f"free after: {free}{moved}{cost}")


def _print_fix(f: FixProposal, now: SpeedEstimate) -> None:
    """`check`: the proposed change, checked the same way as the command, the alternatives and the plan's own."""
    print_text(f"\nfix ({f.reason}):")
    print_text(f"  smallest = {f.smallest}")
    if f.fix is None:
        print_text("  no change of where weights live makes it fit" + ("; see the alternatives" if f.alternatives else
                                                                          ", nor a shorter -c or a q8_0 KV cache"))
    else:
        print_text(f"  change: {f.fix.change}")
        print_text(f"  checked: {_fix_line(f.fix)} (now: TG {now.tg_tps:.1f}, PP {now.pp_tps:.0f})")
        print_text(f"  {f.fix.command}")
    for o in f.alternatives:
        print_text(f"  alternative: {o.change}")
        print_text(f"    checked: {_fix_line(o)}")
        print_text(f"    {o.command}")
    if f.plan is not None:
        print_text(f"  the plan's own command ({f.plan_note}):")
        print_text(f"    checked: {_fix_line(f.plan)}")
        print_text(f"    {f.plan.command}")
    elif f.plan_note:
        print_text(f"  the plan's own command: {f.plan_note}")


def render_compare(c: Comparison) -> None:
    has_measured = any(r.measured_ratio is not None for r in c.rows)
    rows = []
    for r in c.rows:
        band = (f"{r.ppl_ratio:.4f} ({r.ppl_ratio_low:.4f}-{r.ppl_ratio_high:.4f})"
                if r.ppl_ratio and r.ppl_ratio_low and r.ppl_ratio_high else "-")
        row = ["*" if r.pareto else "", r.name, gib(r.total_bytes, 2), f"{r.bpw:.3f}",
               gib(r.gpu_bytes, 1), gib(r.cpu_bytes, 1), "yes" if r.fits else "no",
               f"{r.tg_tps:.1f}" if r.tg_tps else "-", f"{r.pp_tps:.0f}" if r.pp_tps else "-", band]
        if has_measured:
            row.append("-" if r.measured_ratio is None else
                       f"{r.measured_ratio:.4f}" + (f" ± {r.measured_se:.4f}" if r.measured_se else "")
                       + (" (inside band)" if r.measured_inside_band else " (OUTSIDE band)"))
        rows.append(tuple(row))
    head = ["", "candidate", "size", "BPW", "GPU", "CPU", "fits", "TG t/s", "PP t/s", "PPL ratio (band)"]
    justify: list[JustifyMethod] = ["left", "left", "right", "right", "right", "right", "left", "right", "right",
                                    "right"]
    if has_measured:
        head.append("measured")
        justify.append("right")
    print_table(f"{c.model} on {c.hardware}", head, rows, justify=justify,
                caption="* = not dominated in (size, TG, quality); TG/PP/PPL are estimates")
    sources = sorted({r.constants for r in c.rows if r.constants})
    for src in sources:
        print_text(f"quality constants: {src}")
    for n in c.notes:
        print_text(f"note: {n}")


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


def render_verify(reports: Sequence[VerifyReport]) -> None:
    """`verify`: memory terms (exact ones judged to 0.1 MiB) and TG/PP per depth next to the prediction."""
    for rep in reports:
        mem = [c for c in rep.checks if c.term not in ("TG", "PP", "ppl_ratio")]
        if mem:
            rows = []
            for c in mem:
                verdict = "estimate" if c.ok is None else ("match" if c.ok else "MISMATCH")
                where = c.device or "total"
                if c.log_name and c.log_name != c.device:
                    where += f" ({c.log_name})"
                rows.append((c.term, where, f"{c.predicted:,.2f}", f"{c.measured:,.2f}", f"{c.error:+,.2f}", verdict))
            print_table(f"{rep.source}: {rep.engine} log, {rep.spelling}",
                        ["term", "device", "predicted", "measured", "error", ""], rows,
                        justify=["left", "left", "right", "right", "right", "left"],
                        caption="MiB; weights and KV are exact (match within 0.1 MiB), compute buffers an estimate")
        speed: dict[str, dict[str, Check]] = {}
        for c in rep.checks:
            if c.term in ("TG", "PP"):
                speed.setdefault(c.device, {})[c.term] = c
        if speed:
            keys = list(speed)
            if len(keys) > 9:                       # evenly spaced rows, first and last included
                step = (len(keys) - 1) / 8
                keys = [keys[round(i * step)] for i in range(9)]
            srows: list[tuple[str, ...]] = []
            for k in keys:
                row: list[str] = [k]
                for term in ("TG", "PP"):
                    sc = speed[k].get(term)
                    row += ([f"{sc.predicted:.2f}", f"{sc.measured:.2f}", f"{sc.rel_error:+.0%}"]
                            if sc is not None else ["", "", ""])
                srows.append(tuple(row))
            print_table("speed (estimate), tok/s", ["at", "TG pred.", "TG meas.", "err", "PP pred.", "PP meas.", "err"],
                        srows, justify=["left", "right", "right", "right", "right", "right", "right"],
                        caption=f"{len(speed)} rows" + (", 9 shown" if len(speed) > 9 else ""))
        for c in rep.checks:
            if c.term == "ppl_ratio":
                print_text(f"PPL(Q)/PPL(base): predicted {c.predicted:.4f} (estimate), measured {c.measured:.4f} "
                           f"({c.rel_error:+.1%})")
        for n in rep.notes:
            print_text(f"  note: {n}")


def render_calibration(res: CalibrateResult) -> None:
    """`calibrate`: fitted constants with uncertainty, residuals before/after, what the runs did not separate."""
    cal = res.calibration
    rows = []
    for c in cal.constants:
        shipped = "" if c.shipped is None else f"{c.shipped:,.4g} {c.unit}"
        value = "" if c.value is None else f"{c.value:,.4g} {c.unit}"
        rows.append((c.quantity, shipped, value, f"±{c.rel_uncertainty:.0%}", f"x{c.multiplier:.3f}",
                     "fitted" if c.separated else "not separated"))
    print_table(f"calibrated on {cal.n_rows} sweep-bench rows (estimate)",
                ["constant", "shipped", "this machine", "1 sigma", "multiplier", ""], rows)
    res_rows: list[tuple[object, ...]] = [
        (r.run, r.kind, r.depth, f"{r.measured_tps:.2f}", f"{r.shipped_tps:.2f}", f"{r.predicted_tps:.2f}",
         f"{r.rel_error:+.1%}") for r in cal.residuals]
    if len(res_rows) > 12:                    # the first and last rows
        res_rows = res_rows[:6] + [("...", "", "", "", "", "", "")] + res_rows[-6:]
    print_table("rows (tok/s)", ["run", "", "depth", "measured", "shipped", "calibrated", "error"], res_rows)
    print_text(f"residual {cal.rms_residual:.1%} (shipped constants: {cal.rms_residual_shipped:.1%})")
    for n in cal.notes:
        print_text(f"  note: {n}")
    if res.saved:
        print_text(f"saved calibrated profile {res.saved}: use it with --profile {res.saved}")


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
