"""GPU and link facts: the GPU spec table (``data/gpus.csv``), PCIe and DRAM bandwidth arithmetic."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from planner.errors import UsageError
from planner.constants import constants
from planner.hardware.model import gib_to_bytes
from planner.tables import DATA

GPU_TABLE = DATA / "gpus.csv"

# PCIe per-lane signalling rate (GT/s) and line-code efficiency: 8b/10b for 1.x/2.x, 128b/130b for 3.0-5.0
# (PCI-SIG base specs), 6.0 FLIT mode carries 242 of 256 bytes.  Gen4 x16 → 31.5 GB/s on the wire.
PCIE_LANE: Mapping[int, tuple[float, float]] = {
    1: (2.5, 8 / 10), 2: (5.0, 8 / 10), 3: (8.0, 128 / 130), 4: (16.0, 128 / 130), 5: (32.0, 128 / 130),
    6: (64.0, 242 / 256),
}


PCIE_WIDTHS = (1, 2, 4, 8, 16, 32)


def h2d_efficiency() -> float:
    """Pinned host-to-device copies reach this fraction of the encoded PCIe link rate (``[speed] h2d_efficiency``
    in data/speed_constants.toml, with its source there)."""
    return float(constants()["speed"]["h2d_efficiency"])


def h2d_gbs(pcie_gen: int, pcie_width: int) -> float:
    """Estimated host→device GB/s for a PCIe link (encoded rate * :func:`h2d_efficiency`), to 0.01 GB/s."""
    gts, efficiency = PCIE_LANE[pcie_gen]
    return round(gts * efficiency / 8 * pcie_width * h2d_efficiency(), 2)


def ram_bw_gbs(channels: int, mts: int) -> float:
    """Peak DRAM bandwidth in GB/s: 64-bit (8-byte) channels * MT/s."""
    return round(channels * mts * 8 / 1000, 3)


# A spec-table row is trusted for a probed card only if its memory size is within this fraction of NVML's total
# (catches laptop parts and 8/16 GB twins that share a name).
_GPU_MEMORY_MATCH_TOLERANCE = 0.125


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    memory_bytes: int
    mem_bw_gbs: float
    pcie_gen: int
    pcie_width: int
    source_url: str


_NAME_NOISE = {"nvidia", "geforce", "tesla", "quadro"}


def _name_words(name: str) -> tuple[str, ...]:
    words = re.split(r"[^0-9a-z+]+", name.lower())
    return tuple(w for w in words if w and w not in _NAME_NOISE)


@lru_cache(maxsize=1)
def gpu_table() -> tuple[GpuSpec, ...]:
    """The rows of ``planner/data/gpus.csv``."""
    lines = [ln for ln in GPU_TABLE.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    rows = []
    for rec in csv.DictReader(lines):
        rows.append(GpuSpec(name=rec["name"], memory_bytes=gib_to_bytes(float(rec["memory_gib"])),
                            mem_bw_gbs=float(rec["mem_bw_gbs"]), pcie_gen=int(rec["pcie_gen"]),
                            pcie_width=int(rec["pcie_width"]), source_url=rec["source_url"]))
    return tuple(rows)


def match_gpu(nvml_name: str, total_bytes: int | None = None) -> GpuSpec | None:
    """The spec row for a card as NVML names it: the row with the most words, all present in the name.

    With ``total_bytes``, a row whose memory differs by more than 12.5 % is rejected (laptop parts, twins).
    """
    words = set(_name_words(nvml_name))
    if "laptop" in words or "mobile" in words:
        return None
    best: GpuSpec | None = None
    best_len = 0
    for row in gpu_table():
        rw = _name_words(row.name)
        if set(rw) <= words and len(rw) > best_len:
            best, best_len = row, len(rw)
    if best is not None and total_bytes:
        if abs(total_bytes - best.memory_bytes) > _GPU_MEMORY_MATCH_TOLERANCE * best.memory_bytes:
            return None
    return best


def lookup_gpu(model: str) -> GpuSpec:
    """The spec row for a user-typed model ("RTX 4090", "3090ti", "a6000").

    Raises:
        UsageError: unknown or ambiguous model (with close matches).
    """
    table = gpu_table()
    compact = "".join(_name_words(model))
    if not compact:
        raise UsageError(f"--gpu {model!r} is empty")
    keyed = [(row, "".join(_name_words(row.name))) for row in table]
    exact = [row for row, key in keyed if key == compact]
    if exact:
        return exact[0]
    hits = [(len(key), row) for row, key in keyed if compact in key]
    if hits:
        shortest = min(n for n, _ in hits)
        best = [row for n, row in hits if n == shortest]
        if len(best) == 1:
            return best[0]
        raise UsageError(f"--gpu {model!r} is ambiguous",
                         hint="say which: " + ", ".join(repr(r.name) for r in best))
    import difflib
    close = difflib.get_close_matches(model, [row.name for row in table], n=3, cutoff=0.4)
    hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else \
        f"known models are listed in {GPU_TABLE.name}; for another card leave out --gpu and give --vram"
    raise UsageError(f"unknown GPU model {model!r}", hint=hint)
