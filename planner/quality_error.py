"""Quality model, per-type error: how much a ggml type perturbs a weight (relative MSE), from data/quant_error.csv
(ik_llama.cpp's quantizers at 8337e4cd on synthetic heavy-tailed weights), with the fitted error-vs-bits line for
types the table lacks and the per-type corrections measured on whole models (data/quality_measured.toml).  Also the
loaders of the quality model's two data files, read once here.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass

from planner.errors import UnknownQuantTypeError
from planner.quants import catalogue
from planner.tables import DATA, read_csv_table

DISTRIBUTIONS = ("student_t5", "gaussian", "outlier_cols")   # first = default: LLM weights are heavy-tailed
FLOAT_SOURCES = ("bf16", "f16", "f32")


# ------------------------------------------------------------------------------------------ data tables

@functools.cache
def _prior() -> dict:
    return tomllib.loads((DATA / "quality_prior.toml").read_text())


@functools.cache
def _measured() -> dict:
    path = DATA / "quality_measured.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def measured_type_corrections() -> dict[str, float]:
    """c(type) of data/quality_measured.toml: real / synthetic error, by base type (absent = 1)."""
    return {t: float(v["c"]) for t, v in _measured().get("type_correction", {}).items()}


@dataclass(frozen=True, slots=True)
class ErrorFit:
    """log2(rel_mse) = a + b * bpw over the measured base types of one (distribution, imatrix) setting."""

    a: float
    b: float
    resid_sd: float
    n: int


@functools.cache
def _error_table() -> tuple[dict[tuple[str, str, bool], float], dict[tuple[str, bool], ErrorFit]]:
    table: dict[tuple[str, str, bool], float] = {}
    points: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    exclude = set(_prior()["fit"]["exclude"])
    for row in read_csv_table("quant_error.csv"):
        imx = row["imatrix_weighted"] == "yes"
        rel = float(row["rel_rmse_importance_weighted"] if imx else row["rel_rmse"])
        key = (row["type"], row["distribution"], imx)
        table[key] = rel * rel
        if not row["same_as_base_type"] and row["type"] not in exclude:
            points.setdefault((row["distribution"], imx), []).append(
                (float(row["bits_per_weight"]), math.log2(rel * rel)))
    fits: dict[tuple[str, bool], ErrorFit] = {}
    for setting, pts in points.items():
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        my = sum(y for _, y in pts) / n
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        a = my - b * mx
        sd = math.sqrt(sum((y - a - b * x) ** 2 for x, y in pts) / (n - 2))
        fits[setting] = ErrorFit(a, b, sd, n)
    return table, fits


def error_fit(distribution: str = DISTRIBUTIONS[0], imatrix: bool = True) -> ErrorFit:
    """The fitted error-vs-bits line of quant_error.md for one distribution and imatrix setting."""
    return _error_table()[1][(distribution, imatrix)]


@functools.cache
def _canonical(type_name: str) -> str:
    return catalogue().get(type_name, context="quality model").name


@functools.cache
def canonical_base(type_name: str) -> str:
    """The catalogue name of a type, repacked variants mapped to the type they repack (iq3_k_r4 -> iq3_k)."""
    qt = catalogue().get(type_name, context="quality model")
    return qt.repack_base or qt.name


@functools.cache
def rel_mse(type_name: str, distribution: str = DISTRIBUTIONS[0], imatrix: bool = True,
            source_dtype: str = "bf16") -> tuple[float, str]:
    """Relative MSE (rel_rmse squared) of storing a ``source_dtype`` weight as ``type_name``, and how it was found.

    ``how`` is "measured", "measured (as <base>)" for repacks, "lossless" for float types that keep the source's
    precision, or "fitted" (the 2^(a+b*bpw) line) for types the table lacks.

    Raises:
        UnknownQuantTypeError: unknown type, or an integer type asked to hold weights (one kept as stored
            costs nothing).
    """
    qt = catalogue().get(type_name, context="quality model")
    table, fits = _error_table()
    if source_dtype == type_name:
        # kept as stored: an integer table (DeepSeek-V4's ffn_gate_tid2eid), a float, or a source's own quantized
        # tensor (gpt-oss's MXFP4 experts as released), which llama-quantize copies
        return 0.0, "lossless"
    if qt.kind == "index":
        raise UnknownQuantTypeError(type_name, context="integer type, not a weight type")
    if qt.kind == "float":
        base = qt.repack_base or qt.name
        if base == "f32" or source_dtype != "f32":
            return 0.0, "lossless"        # f32 keeps anything; bf16/f16 keep a bf16/f16 source (weights << 65504)
        return table[(base, distribution, imatrix)], "measured"
    if (qt.name, distribution, imatrix) in table:
        return table[(qt.name, distribution, imatrix)], "measured"
    if qt.repack_base and (qt.repack_base, distribution, imatrix) in table:
        return table[(qt.repack_base, distribution, imatrix)], f"measured (as {qt.repack_base})"
    fit = fits[(distribution, imatrix)]
    shape = (4096, 256)                    # the table's row width; bits include per-row metadata
    try:
        bpw = 8.0 * qt.tensor_bytes(shape) / math.prod(shape)
    except Exception:                       # noqa: BLE001  (block size not dividing 4096: use the nominal bpw)
        bpw = qt.bpw
    return 2.0 ** (fit.a + fit.b * bpw), "fitted"
