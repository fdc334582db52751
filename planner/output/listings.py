"""Renderers of what a machine or a model is: ``probe``, ``profiles``, ``models``, ``inspect`` and ``footprint``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from planner.output.sections import counts_block
from planner.output.sink import MAX_TABLE_ROWS, _console, gib, mib, print_kv, print_table, print_text
from planner.units import GIB

if TYPE_CHECKING:
    from planner.hardware import GPU, Hardware, ProfileSummary
    from planner.model_list import BuiltinModel
    from planner.quantize import Footprint
    from planner.summary import ModelSummary


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


def render_summary(s: ModelSummary) -> None:
    print_kv(f"{s.name} ({s.arch})", [
        ("source", s.source), ("layers", s.n_layer),
        ("experts", f"{s.n_expert} ({s.n_expert_used} used)" if s.n_expert else "dense"),
        ("tensors", s.n_tensors), ("parameters", f"{s.n_elements:,} ({s.n_elements / 1e9:.2f} B)"),
        ("size", f"{gib(s.total_bytes)} ({s.bpw:.3f} BPW), {s.total_bytes:,} bytes"),
        ("file", f"{s.file_bytes:,} bytes" if s.file_bytes else "n/a (built-in description)"),
    ])
    print_text(counts_block(s.type_counts))
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
    print_text(counts_block(fp.type_counts))
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
