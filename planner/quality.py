"""Quality model: the predicted perplexity cost of a quant mix relative to the unquantized model.

    loss(mix)        = sum over tensors t of importance(t) * rel_mse(type_t)
    ln(PPL ratio)    = k * loss

``rel_mse`` is the squared relative RMS error of a ggml type measured with ik_llama.cpp's quantizers on synthetic
heavy-tailed weights (``data/quant_error.csv``); ``importance`` is a stated prior from role and layer position
(``data/quality_prior.toml``), optionally sharpened by an imatrix and overridden by user measurements; ``k`` is
one scale calibrated on published perplexities.  Everything here is an estimate and says so: each
:class:`QualityEstimate` carries a band and its assumptions.  docs/quality.md documents every constant.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import re
import statistics
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import UnknownQuantTypeError, UsageError
from planner.imatrix import Imatrix, read_imatrix
from planner.quants import catalogue
from planner.tensors import TensorInfo, TensorMap, builtin
from planner.roles import active_fraction
from planner.tables import DATA, read_csv_table

DISTRIBUTIONS = ("student_t5", "gaussian", "outlier_cols")   # first = default: LLM weights are heavy-tailed
FLOAT_SOURCES = ("bf16", "f16", "f32")


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    """Predicted cost of a mix; ``ppl_ratio`` is PPL(mix) / PPL(unquantized) with an uncertainty band."""

    loss: float
    ppl_ratio: float
    ppl_ratio_low: float
    ppl_ratio_high: float
    assumptions: tuple[str, ...]
    label: str = "estimate"
    constants: str = "prior only"      # "measured for M" | "transferred from family F (...)" | "prior only"
    constants_kind: str = "prior"      # "measured" | "transferred" | "prior"

    def overlaps(self, other: QualityEstimate) -> bool:
        """Whether the two bands overlap: the difference between the mixes is inside the model's uncertainty."""
        return difference_inside_band(self, other)


def difference_inside_band(a: QualityEstimate, b: QualityEstimate) -> bool:
    """True when the predicted PPL ratios of ``a`` and ``b`` differ by less than the uncertainty of either band
    (each point estimate lies inside the other's band): the model cannot tell which mix is better."""
    return (b.ppl_ratio_low <= a.ppl_ratio <= b.ppl_ratio_high) or (a.ppl_ratio_low <= b.ppl_ratio <= a.ppl_ratio_high)


# ------------------------------------------------------------------------------------------ data tables

@functools.cache
def _prior() -> dict:
    return tomllib.loads((DATA / "quality_prior.toml").read_text())


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
    for key, pts in points.items():
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        my = sum(y for _, y in pts) / n
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        a = my - b * mx
        sd = math.sqrt(sum((y - a - b * x) ** 2 for x, y in pts) / (n - 2))
        fits[key] = ErrorFit(a, b, sd, n)
    return table, fits


def error_fit(distribution: str = DISTRIBUTIONS[0], imatrix: bool = True) -> ErrorFit:
    """The fitted error-vs-bits line of quant_error.md for one distribution and imatrix setting."""
    return _error_table()[1][(distribution, imatrix)]


@functools.lru_cache(maxsize=None)
def _canonical(type_name: str) -> str:
    return catalogue().get(type_name, context="quality model").name


@functools.lru_cache(maxsize=None)
def canonical_base(type_name: str) -> str:
    """The catalogue name of a type, repacked variants mapped to the type they repack (iq3_k_r4 -> iq3_k)."""
    qt = catalogue().get(type_name, context="quality model")
    return qt.repack_base or qt.name


@functools.cache
def _measured() -> dict:
    path = DATA / "quality_measured.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def measured_type_corrections() -> dict[str, float]:
    """c(type) of data/quality_measured.toml: real / synthetic error, by base type (absent = 1)."""
    return {t: float(v["c"]) for t, v in _measured().get("type_correction", {}).items()}


@dataclass(frozen=True, slots=True)
class ScaleSource:
    """Where a model's scale k comes from, and how uncertain it is (log standard deviation)."""

    kind: str                 # "measured" | "transferred" | "prior"
    k: float
    log_sigma: float
    detail: str
    loss_range: tuple[float, float] | None = None   # losses of the measured points (the band widens outside)


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@functools.cache
def _measured_models() -> tuple[tuple[dict, tuple, str], ...]:
    from planner.measurements import ladder_tmap, load_ladders  # noqa: PLC0415
    ladders = {lad.id: lad for lad in load_ladders()}
    out = []
    for m in _measured().get("model", ()):
        tm = ladder_tmap(ladders[m["ladders"][0]])
        out.append((m, _shape_key(tm), tm.params.arch))
    return tuple(out)


def _pool_k(models: Sequence[dict]) -> tuple[float, float]:
    logs = [math.log(m["k"]) for m in models]
    mean = statistics.fmean(logs)
    se = math.sqrt(sum(m["log_se"] ** 2 for m in models)) / len(models)
    spread = statistics.stdev(logs) if len(logs) > 1 else 0.0
    return math.exp(mean), math.hypot(se, spread)


def scale_source(tmap: TensorMap) -> ScaleSource:
    """k for ``tmap``: measured for this model, else for models of the same shapes, else transferred from the
    same architecture, else the prior (seed calibration with the transfer band)."""
    cfg = _prior()
    name = _norm_name(tmap.name)

    def rng(ms: Sequence[Mapping]) -> tuple[float, float] | None:
        los = [m["loss_min"] for m in ms if "loss_min" in m]
        his = [m["loss_max"] for m in ms if "loss_max" in m]
        return (min(los), max(his)) if los and his else None

    # a name match needs no shapes: the ladders' tensor maps (0.2 CPU s to build) are only read below it
    exact = [m for m in _measured().get("model", ()) if _norm_name(m["name"]) == name]
    if exact:
        m = exact[0]
        return ScaleSource("measured", m["k"], math.hypot(m["log_se"], m.get("point_log_sd", 0.0)),
                           f"measured for {m['name']} ({m['points']} points: {', '.join(m['ladders'])}"
                           + ("" if m["corpus"] == _measured()["corpus"]["reference"] else
                              f"; {m['corpus']} converted to {_measured()['corpus']['reference']}") + ")",
                           rng(exact))
    entries = _measured_models()
    shape = _shape_key(tmap)
    same = [m for m, key, _ in entries if key == shape]
    if same:
        k, s = _pool_k(same)
        pt = max(m.get("point_log_sd", 0.0) for m in same)
        return ScaleSource("measured", k, math.hypot(s, pt), "measured for models of the same shapes: "
                           + ", ".join(m["name"] for m in same), rng(same))
    family = [m for m, _, arch in entries if arch == tmap.params.arch]
    if family:
        k, s = _pool_k(family)
        fam_sd = float(_measured()["pooled"]["log_sd"])
        return ScaleSource("transferred", k, math.hypot(s, fam_sd),
                           f"transferred from family {tmap.params.arch} ({', '.join(m['name'] for m in family)})",
                           rng(family))
    fit = calibration_fit()
    pooled = _measured().get("pooled")
    k = float(pooled["k"]) if pooled else fit.k
    return ScaleSource("prior", k, cfg["uncertainty"]["transfer_sigma"],
                       "prior only: k pooled over the measured models"
                       + (f" ({len(entries)})" if entries else "") + ", band from held-out LLaMA points")


@dataclass(frozen=True, slots=True)
class PredictedVsMeasured:
    """A mix's predicted PPL ratio next to a measurement of it (both against the unquantized model)."""

    predicted: float
    low: float
    high: float
    measured: float
    measured_se: float | None
    inside_band: bool          # the measurement (within 2 standard errors) lies inside the predicted band


def predicted_vs_measured(estimate: QualityEstimate, measured_ppl: float, reference_ppl: float,
                          measured_se: float | None = None) -> PredictedVsMeasured:
    """Compare an estimate with a measured PPL of the same mix and the PPL of the unquantized model (or of a Q8_0,
    which the model predicts at ~1.0002) on the same text.

    Raises:
        UsageError: a non-positive or non-finite perplexity.
    """
    for v, what in ((measured_ppl, "measured PPL"), (reference_ppl, "reference PPL")):
        if not (v > 0 and math.isfinite(v)):
            raise UsageError(f"{what} {v} is not a perplexity")
    r = measured_ppl / reference_ppl
    se = measured_se / reference_ppl if measured_se is not None else None
    slack = 2 * se if se is not None else 0.0
    inside = estimate.ppl_ratio_low - slack <= r <= estimate.ppl_ratio_high + slack
    return PredictedVsMeasured(estimate.ppl_ratio, estimate.ppl_ratio_low, estimate.ppl_ratio_high, r, se, inside)


@functools.lru_cache(maxsize=None)
def rel_mse(type_name: str, distribution: str = DISTRIBUTIONS[0], imatrix: bool = True,
            source_dtype: str = "bf16") -> tuple[float, str]:
    """Relative MSE (rel_rmse squared) of storing a ``source_dtype`` weight as ``type_name``, and how it was found.

    ``how`` is "measured", "measured (as <base>)" for repacks, "lossless" for float types that keep the source's
    precision, or "fitted" (the 2^(a+b*bpw) line) for types the table lacks.

    Raises:
        UnknownQuantTypeError: unknown type, or an integer type that cannot hold weights.
    """
    qt = catalogue().get(type_name, context="quality model")
    table, fits = _error_table()
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


# ------------------------------------------------------------------------------------------ the prior

@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    group: str
    factor: float


@functools.cache
def _rules() -> tuple[_Rule, ...]:
    return tuple(_Rule(re.compile(r["match"]), r["group"], float(r["factor"])) for r in _prior()["roles"])


@functools.lru_cache(maxsize=4096)
def _role_rule(role: str) -> tuple[str, float, bool]:
    for rule in _rules():
        if rule.pattern.search(role):
            return rule.group, rule.factor, True
    return "other", 1.0, False


def quantizable(t: TensorInfo) -> bool:
    """Whether the prior gives the tensor any weight: a 2-D+ ``.weight`` that is not a norm."""
    if not t.name.endswith(".weight") or t.n_dims < 2:
        return False
    if t.layer is None:
        return True
    return _role_rule(t.role)[1] > 0


def _branch(role: str) -> str:
    if role.startswith("ffn_gate_inp"):
        return "router"
    if role.endswith("_exps") or role.endswith("_chexps"):
        return "routed"
    if role.endswith("_shexp"):
        return "shared"
    return "dense"


def _active_fraction(t: TensorInfo, tmap: TensorMap) -> float:
    """Fraction of the tensor's weights one token touches (the one rule: :func:`planner.roles.active_fraction`)."""
    return active_fraction(t, tmap.params.n_expert_used)


def _layer_factor(layer: int, n_layer: int) -> float:
    cfg = _prior()["layers"]
    edge = cfg["edge_fraction"] * n_layer
    return cfg["edge_factor"] if layer < edge or layer >= n_layer - edge else 1.0


@functools.cache
def _role_weight_entries() -> tuple[tuple[str, tuple, str, dict[str, float]], ...]:
    out = []
    for e in _measured().get("role_weights", ()):
        tm = builtin(e["builtin"])
        out.append((e["model"], _shape_key(tm), tm.params.arch, {r: float(w) for r, w in e["w"].items()}))
    return tuple(out)


def role_weights_for(tmap: TensorMap, entries: Sequence[tuple[str, tuple, str, Mapping[str, float]]] | None = None
                     ) -> tuple[dict[str, float], str]:
    """Measured role multipliers for ``tmap`` and where they come from: the model's own per-tensor KLD file, else
    a model of the same shapes, else one of the same architecture; none otherwise (they do not transfer across
    families: GLM's per-tensor ranks get worse with Qwen3/DeepSeek weights, docs/quality.md)."""
    entries = _role_weight_entries() if entries is None else entries
    name, shape = _norm_name(tmap.name), _shape_key(tmap)
    for test, label in ((lambda e: _norm_name(e[0]) == name, "measured for {}"),
                        (lambda e: e[1] == shape, "measured for {} (same shapes)"),
                        (lambda e: e[2] == tmap.params.arch, "transferred from {} (same architecture)")):
        hit = [e for e in entries if test(e)]
        if hit:
            return dict(hit[0][3]), label.format(hit[0][0])
    return {}, "prior only"


def prior_importance(tmap: TensorMap, variant: str = "matrix", role_weights: Mapping[str, float] | None = None
                     ) -> tuple[dict[str, float], tuple[str, ...]]:
    """Normalised importance (sums to 1 over quantizable tensors) and notes on guesses it had to make.

    ``variant`` "matrix" (default prior: each matrix on a residual write path counts) or "active_weight"
    (importance proportional to the weights a token touches). Both apply the layer-edge factor, then the measured
    role multipliers (``role_weights``; None: those of data/quality_measured.toml, {}: none).
    """
    rw = role_weights_for(tmap)[0] if role_weights is None else role_weights
    cfg = _prior()
    raw: dict[str, float] = {t.name: 0.0 for t in tmap.tensors}
    unknown_roles: set[str] = set()
    # NextN/MTP blocks (the last n_nextn layers) are in the file but never loaded by the engines: no importance
    n_layer = tmap.params.n_layer - tmap.params.n_nextn
    if variant == "active_weight":
        for t in tmap.tensors:
            if quantizable(t) and (t.layer is None or t.layer < n_layer):
                lf = _layer_factor(t.layer, n_layer) if t.layer is not None else 1.0
                raw[t.name] = t.n_elements * _active_fraction(t, tmap) * lf
    elif variant == "matrix":
        groups: dict[tuple[int, str], list[TensorInfo]] = {}
        for t in tmap.tensors:
            if not quantizable(t) or (t.layer is not None and t.layer >= n_layer):
                continue
            if t.layer is None:
                share = cfg["globals"].get(t.role)
                if share is None:
                    share = cfg["globals"]["other"]
                    unknown_roles.add(t.role)
                raw[t.name] = float(share)
                continue
            group, _, known = _role_rule(t.role)
            if not known:
                unknown_roles.add(t.role)
            groups.setdefault((t.layer, group), []).append(t)
        for (layer, group), members in groups.items():
            active: dict[str, float] = {}
            for t in members:
                b = _branch(t.role)
                if b != "router":
                    active[b] = active.get(b, 0.0) + t.n_elements * _active_fraction(t, tmap)
            total_active = sum(active.values()) or 1.0
            weights = {t.name: _role_rule(t.role)[1] * (1.0 if _branch(t.role) == "router"
                                                         else active[_branch(t.role)] / total_active)
                       for t in members}
            norm = sum(weights.values()) or 1.0
            scale = _layer_factor(layer, n_layer) * cfg["sublayer"].get(group, cfg["sublayer"]["other"])
            for name, w in weights.items():
                raw[name] = scale * w / norm
    else:
        raise ValueError(f"unknown prior variant {variant!r}")
    if rw:
        for t in tmap.tensors:
            if raw[t.name] > 0:
                raw[t.name] *= rw.get(t.role, 1.0)
    total = sum(raw.values())
    imp = {k: (v / total if total > 0 else 0.0) for k, v in raw.items()}
    notes: tuple[str, ...] = ()
    if unknown_roles:
        notes = (f"roles not in the prior table, treated as generic matrices: {', '.join(sorted(unknown_roles))}",)
    return imp, notes


def _sharpen(imp: dict[str, float], tmap: TensorMap, imatrix: Imatrix) -> tuple[dict[str, float], int]:
    """Move importance between tensors of one role by imatrix mean importance / role median (role totals kept)."""
    cfg = _prior()["imatrix"]
    lo, hi = cfg["ratio_min"], cfg["ratio_max"]
    by_role: dict[str, list[tuple[str, float]]] = {}
    for t in tmap.tensors:
        if imp.get(t.name, 0.0) > 0 and t.name in imatrix.entries:
            by_role.setdefault(t.role, []).append((t.name, imatrix.tensor_importance(t.name)))
    out = dict(imp)
    used = 0
    for items in by_role.values():
        ref = statistics.median(m for _, m in items)     # the role's typical layer; robust to outlier layers
        if ref <= 0:
            continue
        before = sum(imp[n] for n, _ in items)
        scaled = {n: imp[n] * min(hi, max(lo, m / ref)) for n, m in items}
        after = sum(scaled.values())
        for n, v in scaled.items():
            out[n] = v * before / after
        used += len(items)
    return out, used


# ------------------------------------------------------------------------------------------ calibration

def apply_rules(tmap: TensorMap, rules: Sequence[Sequence[str]]) -> dict[str, str]:
    """Types from ``[regex, type]`` rules (re.search, first match wins) for quantizable tensors; others absent."""
    compiled = [(re.compile(p), _canonical(ty)) for p, ty in rules]
    out: dict[str, str] = {}
    for t in tmap.tensors:
        if not quantizable(t):
            continue
        for pattern, ty in compiled:
            if pattern.search(t.name):
                out[t.name] = ty
                break
    return out


def _loss(imp: Mapping[str, float], src: Mapping[str, str], types: Mapping[str, str], distribution: str,
          imatrix: bool, corrections: Mapping[str, float] | None = None) -> float:
    c = measured_type_corrections() if corrections is None else corrections
    return sum(imp[n] * rel_mse(ty, distribution, imatrix, src[n])[0] * c.get(canonical_base(ty), 1.0)
               for n, ty in types.items() if imp[n] > 0)


def _source_dtypes(tmap: TensorMap) -> tuple[dict[str, str], int]:
    src, assumed = {}, 0
    for t in tmap.tensors:
        if t.dtype in FLOAT_SOURCES:
            src[t.name] = t.dtype
        else:
            src[t.name] = "bf16"
            assumed += quantizable(t)
    return src, assumed


@dataclass(frozen=True, slots=True)
class CalibrationFit:
    """The scale k of one (prior, distribution) variant and the points it came from."""

    variant: str
    distribution: str
    k: float
    points: tuple[tuple[str, float, float], ...]   # (name, published ln ratio, loss difference)
    ln_ratio_se: float                              # standard error of the published ln ratios (pooled)
    calibration_loss: float                         # loss(mix) of the first point, for the shape term


@functools.cache
def calibration_fit(variant: str = "matrix", distribution: str = DISTRIBUTIONS[0]) -> CalibrationFit:
    """k of one (prior, distribution) variant: least squares through the origin over the published points of
    quality_prior.toml (exact for a single point)."""
    cfg = _prior()
    rho = cfg["uncertainty"]["ppl_correlation"]
    pts, sxy, sxx, var_terms = [], 0.0, 0.0, []
    first_loss = None
    for p in cfg["calibration"]:
        tmap = builtin(p["model"])
        imp, _ = prior_importance(tmap, variant)
        src, _ = _source_dtypes(tmap)
        mix = apply_rules(tmap, p["mix"])
        ref = apply_rules(tmap, p["ref_mix"])
        loss_mix = _loss(imp, src, mix, distribution, p["imatrix"])
        d = loss_mix - _loss(imp, src, ref, distribution, p["imatrix"])
        r = math.log(p["ppl"] / p["ppl_ref"])
        s1, s2 = p["ppl_se"] / p["ppl"], p["ppl_ref_se"] / p["ppl_ref"]
        var_terms.append(max(0.0, s1 * s1 + s2 * s2 - 2 * rho * s1 * s2))
        pts.append((p["name"], r, d))
        sxy += r * d
        sxx += d * d
        if first_loss is None:
            first_loss = loss_mix
    se = math.sqrt(sum(var_terms)) / len(var_terms)
    return CalibrationFit(variant, distribution, sxy / sxx, tuple(pts), se, first_loss or 0.0)


_SHAPE_FIELDS = ("arch", "n_layer", "n_embd", "n_vocab", "n_head", "n_head_kv", "head_dim", "n_expert",
                 "n_expert_used", "n_ff", "n_ff_exp")


def _shape_key(tmap: TensorMap) -> tuple:
    return tuple(getattr(tmap.params, f) for f in _SHAPE_FIELDS)


@functools.cache
def _calibration_shapes() -> frozenset[tuple]:
    return frozenset(_shape_key(builtin(p["model"])) for p in _prior()["calibration"])


def is_calibration_model(tmap: TensorMap) -> bool:
    """Whether ``tmap`` has the architecture numbers of a model with published calibration points."""
    return _shape_key(tmap) in _calibration_shapes()


# ------------------------------------------------------------------------------------------ user calibration

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

        def number(name: str) -> float | None:
            raw = get.get(name, "")
            if raw == "":
                return None
            try:
                v = float(raw)
            except ValueError:
                raise UsageError(f"{at}: {name} {raw!r} is not a number", hint=hint) from None
            if not math.isfinite(v):
                raise UsageError(f"{at}: {name} is {raw}", hint=hint)
            return v

        kld, dppl, base = number("kld"), number("delta_ppl"), number("ppl_base")
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


# ------------------------------------------------------------------------------------------ the model

@dataclass(frozen=True, slots=True)
class _Variant:
    prior: str
    distribution: str
    importance: Mapping[str, float]
    k: float


@dataclass(frozen=True, slots=True)
class QualityModel:
    """Per-tensor importances and the calibrated scale for one model; build once with :meth:`build`."""

    model: str
    importance: Mapping[str, float]            # default variant, sums to 1 over quantizable tensors
    source_dtype: Mapping[str, str]
    has_imatrix: bool
    k: float
    distribution: str
    calibration_loss: float
    uncertainty_fixed: float                   # log-sigma of k for this model (measured / transferred / prior)
    overrides: Mapping[tuple[str, str], float]  # (tensor, type) -> ln PPL contribution from the user's file
    variants: tuple[_Variant, ...]             # variants[0] is the default (prior, distribution)
    assumptions: tuple[str, ...]
    corrections: Mapping[str, float] = field(default_factory=dict)   # base type -> real / synthetic error
    scale: ScaleSource | None = None

    @classmethod
    def build(cls, tmap: TensorMap, *, imatrix: Imatrix | str | os.PathLike[str] | None = None,
              calibration: Calibration | str | os.PathLike[str] | None = None,
              has_imatrix: bool = True, type_corrections: Mapping[str, float] | None = None,
              role_weights: Mapping[str, float] | None = None, scale: ScaleSource | None = None) -> QualityModel:
        """Importances for ``tmap`` (prior, then imatrix, then user calibration) and its scale k.

        ``has_imatrix`` says whether the quantization uses an imatrix (selects the error column); ``imatrix``
        (an :class:`Imatrix` or a path) sharpens the prior.  ``type_corrections`` replaces the measured per-type
        corrections (``{}``: none), ``role_weights`` the measured role multipliers; ``scale`` replaces the model's
        measured / transferred / prior k.

        Raises:
            ImatrixFormatError: the imatrix is malformed or does not fit the model's shapes.
            UsageError: the calibration file is malformed.
        """
        cfg = _prior()
        notes: list[str] = []
        if imatrix is not None and not isinstance(imatrix, Imatrix):
            imatrix = read_imatrix(imatrix)
        if imatrix is not None:
            imatrix = imatrix.with_shapes(tmap)
        if calibration is not None and not isinstance(calibration, Calibration):
            calibration = read_calibration(calibration)
        corr = dict(measured_type_corrections() if type_corrections is None else type_corrections)
        src, assumed = _source_dtypes(tmap)
        if assumed:
            notes.append(f"{assumed} tensors are stored quantized in the source: loss is relative to an assumed "
                         "bf16 original")
        scale = scale or scale_source(tmap)
        fit = calibration_fit(cfg["prior"]["default"], DISTRIBUTIONS[0])
        variants: list[_Variant] = []
        n_sharp = 0
        for prior in sorted(cfg["prior"]["variants"], key=lambda p: p != cfg["prior"]["default"]):
            imp, prior_notes = prior_importance(tmap, prior, role_weights)
            if imatrix is not None:
                imp, n_sharp = _sharpen(imp, tmap, imatrix)
            for dist in DISTRIBUTIONS:
                # each variant keeps its k relative to the default on the seed point: the model's k is measured
                # for the default variant, the others are alternative readings of the same data
                variants.append(_Variant(prior, dist, imp, scale.k * calibration_fit(prior, dist).k / fit.k))
            if prior == cfg["prior"]["default"]:
                notes.extend(prior_notes)
        default = variants[0]
        notes.append(f"per-tensor error: {default.distribution} synthetic weights, "
                     f"{'imatrix-weighted' if has_imatrix else 'no imatrix'} (data/quant_error.csv, "
                     "ik_llama.cpp 8337e4cd)"
                     + (f", corrected per type by {len(corr)} measured whole-model sweeps (data/quality_measured.toml)"
                        if corr else ""))
        rw, rw_src = role_weights_for(tmap) if role_weights is None else (role_weights, "given")
        notes.append(f"importance: '{default.prior}' prior from role and layer (data/quality_prior.toml)"
                     + (f", role weights from per-tensor KLD ({rw_src})" if rw else ""))
        notes.append(f"k = {scale.k:.3f}: {scale.detail}")
        if imatrix is not None:
            notes.append(f"importance sharpened by imatrix {imatrix.source or '(in memory)'} ({imatrix.format}, "
                         f"{n_sharp} tensors)")
            missing = [n for n in imatrix.entries if n not in src]
            if missing:
                notes.append(f"{len(missing)} imatrix entries name no tensor of this model")
        overrides: dict[tuple[str, str], float] = {}
        if calibration is not None:
            overrides, cal_notes = _overrides(tmap, default.importance, calibration)
            notes.extend(cal_notes)
        notes.append("PPL ratio is relative to the unquantized (bf16) model on wiki.test.raw-like text")
        return cls(model=tmap.name, importance=default.importance, source_dtype=src, has_imatrix=has_imatrix,
                   k=scale.k, distribution=default.distribution, calibration_loss=fit.calibration_loss,
                   uncertainty_fixed=scale.log_sigma, overrides=overrides, variants=tuple(variants),
                   assumptions=tuple(notes), corrections=corr, scale=scale)

    @property
    def ppl_scale(self) -> float:
        """k: ln(PPL ratio) per unit of loss (what an objective needs to price loss in PPL terms)."""
        return self.k

    def _err(self, type_name: str, src: str, distribution: str) -> float:
        return (rel_mse(type_name, distribution, self.has_imatrix, src)[0]
                * self.corrections.get(canonical_base(type_name), 1.0))

    # -- the optimizer's inner loop -------------------------------------------------------------
    def tensor_loss(self, name: str, type_name: str) -> float:
        """Loss contribution of tensor ``name`` stored as ``type_name`` (0 for float types that keep the source).

        Raises:
            UsageError: ``name`` is not a tensor of the model.
            UnknownQuantTypeError: unknown type name.
        """
        imp = self.importance.get(name)
        if imp is None:
            raise UsageError(f"tensor {name!r} is not in model {self.model}")
        ty = _canonical(type_name)
        o = self.overrides.get((name, ty))
        if o is not None:
            return o / self.k
        if imp == 0.0:
            return 0.0
        return imp * self._err(ty, self.source_dtype[name], self.distribution)

    def loss(self, types: Mapping[str, str]) -> float:
        """loss(mix) of the default variant (no band, no checks beyond the tensor names): what fits need."""
        return sum(self.tensor_loss(n, t) for n, t in types.items())

    # -- whole mixes ------------------------------------------------------------------------------
    def estimate(self, types: Mapping[str, str]) -> QualityEstimate:
        """Predicted loss and PPL ratio (with band) of a mix: tensor name -> type name.

        Tensors absent from ``types`` are taken as unquantized.

        Raises:
            UsageError: a name in ``types`` is not a tensor of the model.
            UnknownQuantTypeError: unknown type name.
        """
        unknown = [n for n in types if n not in self.importance]
        if unknown:
            raise UsageError(f"{len(unknown)} tensors are not in model {self.model}: {', '.join(unknown[:3])}",
                             hint="the mix was planned for a different model")
        canon = {n: _canonical(t) for n, t in types.items()}
        fitted = sorted({t for n, t in canon.items() if self.importance[n] > 0
                         and rel_mse(t, self.distribution, self.has_imatrix, self.source_dtype[n])[1] == "fitted"})
        n_over = sum((n, t) in self.overrides for n, t in canon.items())
        rs: list[float] = []
        losses: list[float] = []
        for v in self.variants:
            loss = 0.0
            for n, t in canon.items():
                o = self.overrides.get((n, t))
                if o is not None:
                    loss += o / v.k
                elif v.importance[n] > 0:
                    loss += v.importance[n] * self._err(t, self.source_dtype[n], v.distribution)
            rs.append(v.k * loss)
            losses.append(loss)
        loss0, r0 = losses[0], rs[0]
        shape = _prior()["uncertainty"]["shape_per_efold"]
        rng = self.scale.loss_range if self.scale is not None and self.scale.loss_range else None
        if loss0 <= 0:
            s_shape = 0.0
        elif rng is not None:      # inside the measured range the point scatter already holds the shape error
            lo_l, hi_l = rng
            s_shape = shape * max(0.0, math.log(lo_l / loss0), math.log(loss0 / hi_l))
        else:
            s_shape = shape * abs(math.log(loss0 / self.calibration_loss))
        s = math.hypot(self.uncertainty_fixed, s_shape)
        lo = max(0.0, min(rs)) * math.exp(-s)
        hi = max(rs) * math.exp(s)
        notes = list(self.assumptions)
        missing = sum(1 for n, imp in self.importance.items()
                      if imp > 0 and n not in types and self.source_dtype[n] != "f32")
        if missing:
            notes.append(f"{missing} bf16/f16 weights not in the mix: taken as unquantized")
        if fitted:
            notes.append(f"types without a measurement, from the fitted error line: {', '.join(fitted)}")
        if n_over:
            notes.append(f"{n_over} tensor terms from the user calibration file")
        notes.append(f"band: spread of {len(self.variants)} prior/distribution variants, widened by log-sigma {s:.2f}")
        kind = self.scale.kind if self.scale else "prior"
        detail = self.scale.detail if self.scale else "prior only"
        return QualityEstimate(loss=loss0, ppl_ratio=math.exp(r0), ppl_ratio_low=math.exp(min(lo, r0)),
                               ppl_ratio_high=math.exp(max(hi, r0)), assumptions=tuple(notes),
                               constants=detail, constants_kind=kind)


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


__all__ = ["Calibration", "CalibrationRow", "PredictedVsMeasured", "QualityEstimate", "QualityModel", "ScaleSource",
           "apply_rules", "predicted_vs_measured",
           "calibration_fit", "canonical_base", "difference_inside_band", "measured_type_corrections",
           "role_weights_for", "scale_source",
           "error_fit", "is_calibration_model", "prior_importance", "quantizable", "read_calibration", "rel_mse"]
