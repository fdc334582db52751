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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

GIB = 1 << 30
MIB = 1 << 20


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, tuples, enums and paths into JSON-ready values (stable order)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("json") is False:
                continue
            out[f.name] = to_jsonable(getattr(obj, f.name))
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


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)


def note(text: str) -> None:
    """Progress / informational line on stderr (never mixes with --json stdout)."""
    print(text, file=sys.stderr)


def print_json(obj: Any) -> None:
    sys.stdout.write(dumps(obj))


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, justify: Sequence[str] | None = None, caption: str | None = None) -> None:
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


def render_hardware(hw: Any) -> None:
    """A ``Hardware``: one row per figure with its source, then the notes."""
    def pcie(g: Any) -> str:
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


def render_profiles(profiles: Any) -> None:
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
