"""Measured quality data: published PPL ladders, Thireus' per-tensor sensitivity files, llama-perplexity output.

Three kinds of measurement enter the quality model (``planner/quality.py``) through this module:

* **Ladders** (``data/measured/*.toml``): whole mixes of one model measured on one corpus with llama-perplexity,
  each with the recipe its author published.  :func:`load_ladders` reads them; :func:`mix_types` turns a point's
  recipe into per-tensor types through the project's llama-quantize emulation (:mod:`planner.quantize`).
* **Thireus sensitivity files** (github.com/Thireus/GGUF-Tool-Suite ``models/<model>/kld_results.csv``,
  ``ppl_results.csv`` and ``group0/*.csv``): a ``QTYPE`` column followed by one column per tensor (PPL or KLD of
  the model when that one tensor is dropped to QTYPE, all others at the baseline) or a single ``group0`` column
  (the whole model at each QTYPE: the per-type degradation curve).  :func:`read_sensitivity` parses both.
* **The user's own runs**: :func:`parse_perplexity_output` reads the final lines of ``llama-perplexity``
  (``Final estimate: PPL = 5.4403 +/- 0.03421``) and of its ``--kl-divergence`` summary (``Mean    KLD: ...``).

Statistics used to score the quality model on ladders (:func:`spearman`, :func:`evaluate_ladder`) live here too,
so the tests and ``docs/quality.md`` compute the same numbers.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import re
import statistics
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from typing import TYPE_CHECKING

from planner.errors import UsageError

if TYPE_CHECKING:
    from planner.tensors import TensorMap

DATA = Path(__file__).parent / "data" / "measured"
MISSING_MARK = 404.0          # Thireus' CSVs write 404 where a measurement is missing
MAX_SENSITIVITY_BYTES = 8 << 20


# ------------------------------------------------------------------------------------------ ladders

@dataclass(frozen=True, slots=True)
class MixSpec:
    """How a published mix was made (see the header of ``data/measured/ladders.toml``)."""

    ftype: str | None = None
    custom_q: tuple[str, ...] = ()
    pure: bool = False
    qtype: str | None = None
    unquantized: bool = False
    engine: str = "ik"


@dataclass(frozen=True, slots=True)
class LadderPoint:
    name: str
    ppl: float
    ppl_se: float | None
    mix: MixSpec


@dataclass(frozen=True, slots=True)
class Ladder:
    """PPL of several mixes of one model on one corpus; ``points[0]`` is the reference."""

    id: str
    model: str
    builtin: str                            # "" in a user's ladder for a model read from a file
    params: tuple[tuple[str, int], ...]     # overrides of the built-in's ModelParams (same template, other shapes)
    corpus: str
    imatrix: bool
    source: str
    points: tuple[LadderPoint, ...]

    @property
    def reference(self) -> LadderPoint:
        return self.points[0]


def _ladder(raw: Mapping, where: str) -> Ladder:
    try:
        engine = raw.get("engine", "ik")
        points = []
        for p in raw["point"]:
            spec = MixSpec(ftype=p.get("ftype"), custom_q=tuple(p.get("custom_q", ())), pure=bool(p.get("pure", False)),
                           qtype=p.get("qtype"), unquantized=bool(p.get("unquantized", False)),
                           engine=p.get("engine", engine))
            if not (spec.ftype or spec.qtype or spec.unquantized):
                raise UsageError(f"{where}: ladder {raw['id']} point {p['name']!r} names no ftype, qtype or unquantized")
            ppl = float(p["ppl"])
            se = p.get("ppl_se")
            if not (ppl > 0 and math.isfinite(ppl)) or (se is not None and not se >= 0):
                raise UsageError(f"{where}: ladder {raw['id']} point {p['name']!r} has ppl {ppl} +/- {se}")
            points.append(LadderPoint(str(p["name"]), ppl, None if se is None else float(se), spec))
        if len(points) < 2:
            raise UsageError(f"{where}: ladder {raw['id']} needs a reference and at least one point")
        return Ladder(id=str(raw["id"]), model=str(raw["model"]), builtin=str(raw.get("builtin", "")),
                      params=tuple(sorted((str(k), int(v)) for k, v in raw.get("params", {}).items())),
                      corpus=str(raw["corpus"]), imatrix=bool(raw.get("imatrix", True)), source=str(raw["source"]),
                      points=tuple(points))
    except KeyError as exc:
        raise UsageError(f"{where}: ladder {raw.get('id', '?')} lacks {exc.args[0]!r}") from None


def read_ladders(path: str | os.PathLike[str]) -> tuple[Ladder, ...]:
    """Ladders from one TOML file in the format of ``data/measured/ladders.toml``.

    Raises:
        UsageError: unreadable file, bad TOML, a missing field or a non-positive PPL.
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read ladder file {p}: {exc}") from exc
    return tuple(_ladder(x, str(p)) for x in raw.get("ladder", ()))


@functools.cache
def load_ladders() -> tuple[Ladder, ...]:
    """Every shipped ladder (``data/measured/*.toml``), in file then source order."""
    out: list[Ladder] = []
    for f in sorted(DATA.glob("*.toml")):
        out.extend(read_ladders(f))
    return tuple(out)


def ladder_tmap(ladder: Ladder) -> TensorMap:
    """The tensor map of the ladder's model: the built-in, with the ladder's shape overrides applied."""
    from planner.tensors import build, builtin  # noqa: PLC0415  (tensors imports quants; keep this module light)

    tmap = builtin(ladder.builtin)
    if not ladder.params:
        return tmap
    params = replace(tmap.params, **dict(ladder.params))  # type: ignore[arg-type]  # int fields only (TOML)
    return build(params, ladder.model, f"{ladder.builtin} template, {ladder.id}")


def mix_types(tmap: TensorMap, spec: MixSpec, *, imatrix: bool = True) -> dict[str, str]:
    """Per-tensor types llama-quantize writes for ``spec`` (tensors it keeps in their source type are left out).

    Raises:
        RecipeError / UnknownQuantTypeError: the recipe does not parse or names an unknown type.
    """
    from planner.quants import catalogue  # noqa: PLC0415
    from planner.quantize import QuantizeSpec, is_quantizable, parse_custom_q, quantize  # noqa: PLC0415

    if spec.unquantized:
        return {}
    if spec.qtype is not None:
        cat = catalogue()
        qt = cat.get(spec.qtype, engine=spec.engine)
        probe = QuantizeSpec(base_type="Q8_0", pure=True, engine=spec.engine, has_imatrix=imatrix)
        out = {}
        for t in tmap.tensors:
            if t.n_dims < 2 or not is_quantizable(t, probe):
                continue
            fb, _ = cat.row_fallback(qt, t.ne0, spec.engine)
            out[t.name] = fb.name
        return out
    qs = QuantizeSpec(base_type=spec.ftype or "Q8_0", custom_q=parse_custom_q(list(spec.custom_q), spec.engine)
                      if spec.custom_q else (), engine=spec.engine, pure=spec.pure, has_imatrix=imatrix,
                      ignore_imatrix_rules=True if spec.engine == "ik" else False)
    fp = quantize(tmap, qs)
    return {r.name: r.type_name for r in fp.tensors if r.type_name != r.src_type}


# ------------------------------------------------------------------------------------------ statistics

def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (ties get their average rank); nan for fewer than 3 pairs or a constant side."""
    if len(a) != len(b):
        raise ValueError("spearman needs two sequences of the same length")
    if len(a) < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    den = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return num / den if den > 0 else math.nan


@dataclass(frozen=True, slots=True)
class PointResult:
    name: str
    measured_ratio: float       # PPL(point) / PPL(reference)
    predicted_ratio: float
    loss_difference: float      # loss(point) - loss(reference) under the model


@dataclass(frozen=True, slots=True)
class LadderEvaluation:
    """How well a quality model predicts one ladder (ratios against the ladder's reference point)."""

    ladder: str
    model: str
    corpus: str
    points: tuple[PointResult, ...]
    spearman: float
    median_abs_error: float     # median |predicted - measured| of the PPL ratio
    scale: float                # the k that was used


def ladder_losses(ladder: Ladder, loss_of: Callable[[Mapping[str, str]], float]) -> list[tuple[LadderPoint, float]]:
    """(point, loss(point) - loss(reference)) for every non-reference point, ``loss_of`` a mix -> loss function."""
    tmap = ladder_tmap(ladder)
    ref = loss_of(mix_types(tmap, ladder.reference.mix, imatrix=ladder.imatrix))
    return [(p, loss_of(mix_types(tmap, p.mix, imatrix=ladder.imatrix)) - ref) for p in ladder.points[1:]]


def evaluate_ladder(ladder: Ladder, diffs: Sequence[tuple[LadderPoint, float]], scale: float) -> LadderEvaluation:
    """Score predicted ratios exp(scale * loss difference) against the ladder's measured ratios."""
    ref = ladder.reference.ppl
    res = tuple(PointResult(p.name, p.ppl / ref, math.exp(scale * d), d) for p, d in diffs)
    meas = [r.measured_ratio for r in res]
    pred = [r.predicted_ratio for r in res]
    return LadderEvaluation(ladder.id, ladder.model, ladder.corpus, res, spearman(meas, pred),
                            statistics.median(abs(a - b) for a, b in zip(meas, pred, strict=True)), scale)


# ------------------------------------------------------------------------------------------ Thireus CSVs

@dataclass(frozen=True, slots=True)
class SensitivityTable:
    """One Thireus results CSV: ``values[qtype][column]``; columns are tensor names or ``group0``."""

    metric: str                                  # "ppl" | "kld" | "unknown"
    columns: tuple[str, ...]
    values: Mapping[str, Mapping[str, float]]    # qtype -> column -> value (missing measurements absent)
    source: str

    @property
    def is_curve(self) -> bool:
        """True for a group0 file: one column, the whole model at each type."""
        return self.columns == ("group0",)

    def curve(self) -> dict[str, float]:
        """qtype -> value of a group0 file.

        Raises:
            UsageError: the table is a per-tensor table.
        """
        if not self.is_curve:
            raise UsageError(f"{self.source} is a per-tensor table, not a group0 degradation curve")
        return {q: row["group0"] for q, row in self.values.items() if "group0" in row}


_TENSOR_COLUMN = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def read_sensitivity(path: str | os.PathLike[str], metric: str | None = None) -> SensitivityTable:
    """Parse a Thireus GGUF-Tool-Suite results CSV (``kld_results.csv``, ``ppl_results.csv``, ``group0/*.csv``).

    Format: header ``QTYPE,<col>,<col>...``, then one row per qtype with one number per column; 404 marks a
    missing measurement.  ``metric`` defaults to "kld"/"ppl" from the file name.

    Raises:
        UsageError: unreadable or oversized file, no QTYPE header, a bad column name, a row of the wrong
            width, a non-numeric or negative value, or an unknown qtype.
    """
    from planner.errors import UnknownQuantTypeError  # noqa: PLC0415
    from planner.quants import catalogue  # noqa: PLC0415

    p = Path(path)
    where = str(p)
    try:
        if p.stat().st_size > MAX_SENSITIVITY_BYTES:
            raise UsageError(f"{where}: {p.stat().st_size} bytes is too large for a sensitivity table")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read sensitivity file {where}: {exc}") from exc
    if metric is None:
        low = p.name.lower()
        metric = "kld" if "kld" in low else "ppl" if "ppl" in low else "unknown"
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows or rows[0][0].strip().upper() != "QTYPE":
        raise UsageError(f"{where}: not a Thireus results table (first header cell must be QTYPE)")
    cols = tuple(c.strip() for c in rows[0][1:])
    if not cols:
        raise UsageError(f"{where}: no measurement columns")
    bad = next((c for c in cols if not _TENSOR_COLUMN.match(c)), None)
    if bad is not None:
        raise UsageError(f"{where}: column {bad[:60]!r} is not a tensor name")
    if len(set(cols)) != len(cols):
        raise UsageError(f"{where}: duplicate columns")
    values: dict[str, dict[str, float]] = {}
    cat = catalogue()
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(cols) + 1:
            raise UsageError(f"{where}:{lineno}: {len(row) - 1} values, the header has {len(cols)}")
        q = row[0].strip()
        try:
            q = cat.get(q, context="sensitivity table").name
        except UnknownQuantTypeError as exc:
            raise UsageError(f"{where}:{lineno}: {exc}") from None
        out: dict[str, float] = {}
        for c, cell in zip(cols, row[1:], strict=True):
            try:
                v = float(cell)
            except ValueError:
                raise UsageError(f"{where}:{lineno}: {c}: {cell.strip()[:30]!r} is not a number") from None
            if not math.isfinite(v) or v < 0:
                raise UsageError(f"{where}:{lineno}: {c}: value {v} is not a PPL or KLD")
            if v == MISSING_MARK:
                continue
            out[c] = v
        values[q] = out
    return SensitivityTable(metric, cols, values, where)


# ------------------------------------------------------------------------------------------ llama-perplexity

@dataclass(frozen=True, slots=True)
class PerplexityResult:
    """The final figures of one llama-perplexity run (None where the output has no such line)."""

    ppl: float | None
    ppl_se: float | None
    chunks: int | None
    kld_mean: float | None
    kld_se: float | None
    same_top_p: float | None     # percent
    ppl_ratio: float | None = None      # "Mean PPL(Q)/PPL(base)" of a --kl-divergence run
    ppl_ratio_se: float | None = None


_FINAL = re.compile(r"Final estimate: PPL(?: over (\d+) chunks for n_ctx=\d+)? = ([0-9.]+) \+/- ([0-9.]+)")
_KLD = re.compile(r"^Mean\s+KLD:\s+([-0-9.eE]+)\s+(?:±|\+/-)\s+([0-9.eE]+)", re.M)
_TOP = re.compile(r"^Same top p:\s+([0-9.]+)\s+(?:±|\+/-)", re.M)
_CHUNKS = re.compile(r"calculating perplexity over (\d+) chunks")
_PPL_Q = re.compile(r"^Mean PPL\(Q\)\s+:\s+([0-9.]+)\s+(?:±|\+/-)\s+([0-9.]+)", re.M)
_RATIO = re.compile(r"^Mean PPL\(Q\)/PPL\(base\)\s+:\s+([0-9.]+)\s+(?:±|\+/-)\s+([0-9.]+)", re.M)


def parse_perplexity_output(text: str) -> PerplexityResult:
    """Read ``llama-perplexity``'s final lines (ik_llama.cpp and llama.cpp ``examples/perplexity``).

    ``Final estimate: PPL = 5.4403 +/- 0.03421`` (or ik's ``PPL over 250 chunks for n_ctx=512 = ...``) and the
    ``--kl-divergence`` summary (``Mean    KLD:   0.014594 ±   0.000..``, ``Same top p: ...``).

    Raises:
        UsageError: the text has neither a final PPL estimate nor a KLD summary.
    """
    m = _FINAL.search(text)
    k = _KLD.search(text)
    if m is None and k is None and _PPL_Q.search(text) is None:
        raise UsageError("no 'Final estimate: PPL = ...' or 'Mean KLD:' line in the llama-perplexity output",
                         hint="pass the complete output of llama-perplexity (stdout and stderr)")
    chunks = None
    if m and m.group(1):
        chunks = int(m.group(1))
    else:
        c = _CHUNKS.search(text)
        chunks = int(c.group(1)) if c else None
    t = _TOP.search(text)
    q = _PPL_Q.search(text)
    ratio = _RATIO.search(text)
    ppl = float(m.group(2)) if m else float(q.group(1)) if q else None
    se = float(m.group(3)) if m else float(q.group(2)) if q else None
    return PerplexityResult(ppl=ppl, ppl_se=se, chunks=chunks, kld_mean=float(k.group(1)) if k else None,
                            kld_se=float(k.group(2)) if k else None, same_top_p=float(t.group(1)) if t else None,
                            ppl_ratio=float(ratio.group(1)) if ratio else None,
                            ppl_ratio_se=float(ratio.group(2)) if ratio else None)


__all__ = ["Ladder", "LadderEvaluation", "LadderPoint", "MixSpec", "PerplexityResult", "PointResult",
           "SensitivityTable", "evaluate_ladder", "ladder_losses", "ladder_tmap", "load_ladders", "mix_types",
           "parse_perplexity_output", "read_ladders", "read_sensitivity", "spearman"]
