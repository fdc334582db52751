"""Text blocks that several reports share: the type counts, memory per device, the engine's buffer lines, the
speed and the quality estimate (``plan``, ``check``, ``inspect``, ``footprint``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from planner.output.sink import gib, print_table, print_text

if TYPE_CHECKING:
    from planner.memory import MemoryReport
    from planner.quality import QualityEstimate
    from planner.speed import SpeedEstimate


def counts_block(counts: Mapping[str, int]) -> str:
    from planner.quantize import format_type_counts

    return format_type_counts(counts)


def memory_rows(mem: MemoryReport) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for d in mem.devices:
        terms = ", ".join(f"{t.name} {gib(t.bytes, 2)}" + ("" if t.exact else " (est.)") for t in d.terms)
        rows.append((d.device, gib(d.total_bytes, 2), gib(d.budget_bytes, 2), gib(d.free_bytes, 2),
                     "yes" if d.fits else "NO", terms))
    return rows


def print_memory(mem: MemoryReport, title: str = "memory per device") -> None:
    print_table(title, ["device", "total", "budget", "free", "fits", "terms"], memory_rows(mem),
                justify=["left", "right", "right", "right", "left", "left"])


def print_buffers(mem: MemoryReport) -> None:
    """The engine's own buffer lines (``<name> buffer size``, ``KV buffer size``, ``compute buffer size``) so a
    user can compare them line by line with the load log."""
    if not mem.buffers:
        return
    print_text("engine buffers (as the load log prints them; weights and KV exact, compute estimated):")
    for kind, name, nbytes in mem.buffers:
        what = {"kv": "KV buffer size", "compute": "compute buffer size"}.get(kind, "buffer size")
        print_text(f"  {name:>10} {what} = {nbytes / 2**20:10.2f} MiB" + (" (est.)" if kind == "compute" else ""))


def print_speed(s: SpeedEstimate) -> None:
    basis = s.basis
    label = basis.label if basis is not None else "estimate"
    print_text(f"speed, {label}: TG {s.tg_tps:.1f} tok/s at depth 0, {s.tg_tps_ctx:.1f} at full context; "
               f"PP {s.pp_tps:.0f} tok/s at depth 0, {s.pp_tps_ctx:.0f} at full context")
    if basis is not None and basis.defaulted:
        print_text("  defaulted hardware figures: " + "; ".join(basis.defaulted))
    print_text("  assumptions: " + "; ".join(s.assumptions))


def print_quality(q: QualityEstimate) -> None:
    print_text(f"quality (estimate): PPL ratio {q.ppl_ratio:.4f} (range {q.ppl_ratio_low:.4f}-{q.ppl_ratio_high:.4f}); "
               f"constants {q.constants}")
