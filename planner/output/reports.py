"""Renderers of the reports on a given command, candidates or runs: ``check`` (with its fix), ``compare``,
``verify`` and ``calibrate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from planner.output.sections import print_buffers, print_memory, print_quality, print_speed
from planner.output.sink import gib, print_table, print_text
from planner.units import GIB

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from planner.calibrate import CalibrateResult
    from planner.check import CheckResult
    from planner.compare import Comparison
    from planner.fixes import FixOption, FixProposal
    from planner.speed import SpeedEstimate
    from planner.verify import Check, VerifyReport


def render_check(r: CheckResult) -> None:
    print_text(f"{r.model}: {gib(r.total_bytes)} of weights, context {r.run.ctx}, KV {r.run.type_k}/{r.run.type_v}")
    for w in r.warnings:
        print_text(f"warning ({r.run.engine}): {w}")
    print_memory(r.memory)
    print_buffers(r.memory)
    print_speed(r.speed)
    if r.quality is not None:
        print_quality(r.quality)
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
