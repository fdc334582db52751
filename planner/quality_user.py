"""Quality model, the user's own measurements: a calibration CSV of per-tensor KLD or delta-PPL rows
(``QualityModel.build(calibration=...)``), read and validated here, and turned into per-(tensor, type) terms that
replace the model's prediction for those tensors.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from planner.errors import UnknownQuantTypeError, UsageError
from planner.quality_error import _canonical
from planner.tensors import TensorMap

@dataclass(frozen=True, slots=True)
class CalibrationRow:
    """One measured row: quantizing the matching tensors to ``type_name`` costs ``ln_ratio`` in ln PPL."""

    line: int
    tensor: str
    type_name: str
    ln_ratio: float
    measure: str            # "kld" or "delta_ppl"


@dataclass(frozen=True, slots=True)
class Calibration:
    rows: tuple[CalibrationRow, ...]
    source: str
    notes: tuple[str, ...] = ()


def _number(cells: Mapping[str, str], name: str, at: str, hint: str) -> float | None:
    """The finite number in column ``name`` of one row (None when the cell is empty or the column absent)."""
    raw = cells.get(name, "")
    if raw == "":
        return None
    try:
        v = float(raw)
    except ValueError:
        raise UsageError(f"{at}: {name} {raw!r} is not a number", hint=hint) from None
    if not math.isfinite(v):
        raise UsageError(f"{at}: {name} is {raw}", hint=hint)
    return v


def read_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a user calibration CSV: ``tensor`` (exact name or regex), ``type``, and ``kld`` or ``delta_ppl``.

    ``kld`` is the mean KL divergence (taken as the ln PPL ratio it causes); ``delta_ppl`` is the PPL increase and
    needs a ``ppl_base`` column (the PPL it was measured against).  A row covers all tensors it matches together.
    Lines starting with ``#`` are comments.

    Raises:
        UsageError: unreadable file, missing columns, bad regex, unknown type or a non-numeric value.
    """
    p = Path(path)
    where = str(p)
    hint = "columns: tensor,type,kld  or  tensor,type,delta_ppl,ppl_base"
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read calibration file {where}: {exc}", hint=hint) from exc
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise UsageError(f"calibration file {where} is empty", hint=hint)
    try:
        parsed = list(csv.reader([ln for _, ln in lines]))
    except csv.Error as exc:
        raise UsageError(f"calibration file {where} is not valid CSV: {exc}", hint=hint) from exc
    header = [h.strip().lower() for h in parsed[0]]
    missing = [c for c in ("tensor", "type") if c not in header]
    if missing or not ({"kld", "delta_ppl"} & set(header)):
        raise UsageError(f"calibration file {where}: header {parsed[0]} lacks "
                         f"{', '.join(missing) or 'a kld or delta_ppl column'}", hint=hint)
    col = {h: i for i, h in enumerate(header)}
    rows: list[CalibrationRow] = []
    notes: list[str] = []
    for (lineno, _), cells in zip(lines[1:], parsed[1:], strict=True):
        at = f"{where}:{lineno}"
        if len(cells) != len(header):
            raise UsageError(f"{at}: {len(cells)} fields, the header has {len(header)}", hint=hint)
        get = {h: cells[i].strip() for h, i in col.items()}
        tensor, type_name = get["tensor"], get["type"]
        if not tensor:
            raise UsageError(f"{at}: empty tensor field", hint=hint)
        try:
            re.compile(tensor)
        except re.error as exc:
            raise UsageError(f"{at}: tensor pattern {tensor!r} is not a valid regex: {exc}", hint=hint) from exc
        try:
            type_name = _canonical(type_name)
        except UnknownQuantTypeError as exc:
            raise UsageError(f"{at}: {exc}", hint=hint) from exc

        kld, dppl, base = (_number(get, name, at, hint) for name in ("kld", "delta_ppl", "ppl_base"))
        if kld is not None:
            r, measure = kld, "kld"
        elif dppl is not None:
            if base is None or base <= 0:
                raise UsageError(f"{at}: delta_ppl needs a positive ppl_base (the PPL it was measured against)",
                                 hint=hint)
            if base + dppl <= 0:
                raise UsageError(f"{at}: ppl_base + delta_ppl = {base + dppl} is not a perplexity", hint=hint)
            r, measure = math.log((base + dppl) / base), "delta_ppl"
        else:
            raise UsageError(f"{at}: neither kld nor delta_ppl is given", hint=hint)
        if r < 0:
            notes.append(f"{at}: negative {measure} taken as 0 (measurement noise)")
            r = 0.0
        rows.append(CalibrationRow(lineno, tensor, type_name, r, measure))
    return Calibration(tuple(rows), where, tuple(notes))


def _overrides(tmap: TensorMap, imp: Mapping[str, float], cal: Calibration
               ) -> tuple[dict[tuple[str, str], float], list[str]]:
    names = [t.name for t in tmap.tensors]
    exact = set(names)
    out: dict[tuple[str, str], float] = {}
    notes = list(cal.notes)
    unmatched = []
    for row in cal.rows:
        if row.tensor in exact:
            targets = [row.tensor]
        else:
            pattern = re.compile(row.tensor)
            targets = [n for n in names if imp[n] > 0 and pattern.search(n)]
        targets = [n for n in targets if (n, row.type_name) not in out]
        if not targets:
            unmatched.append(str(row.line))
            continue
        total = sum(imp[n] for n in targets)
        for n in targets:
            share = imp[n] / total if total > 0 else 1.0 / len(targets)
            out[(n, row.type_name)] = row.ln_ratio * share
    if unmatched:
        notes.append(f"calibration rows matching no tensor of {tmap.name}: lines {', '.join(unmatched)}")
    return out, notes
