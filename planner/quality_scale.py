"""Quality model, the scale k (ln PPL ratio per unit of loss): fitted through the published calibration points of
data/quality_prior.toml, and per model measured, pooled over models of the same shapes, transferred from the same
architecture, or the prior (data/quality_measured.toml).
"""

from __future__ import annotations

import functools
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.quality_error import (DISTRIBUTIONS, FLOAT_SOURCES, _canonical, _measured, _prior, canonical_base,
                                   measured_type_corrections, rel_mse)
from planner.quality_prior import _norm_name, _shape_key, prior_importance, quantizable
from planner.quants import catalogue
from planner.tensors import TensorMap, builtin

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
        if t.dtype in FLOAT_SOURCES or catalogue().get(t.dtype).kind == "index":
            src[t.name] = t.dtype          # (an integer table is no weight: kept as stored, it costs nothing)
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


@functools.cache
def _calibration_shapes() -> frozenset[tuple]:
    return frozenset(_shape_key(builtin(p["model"])) for p in _prior()["calibration"])


def is_calibration_model(tmap: TensorMap) -> bool:
    """Whether ``tmap`` has the architecture numbers of a model with published calibration points."""
    return _shape_key(tmap) in _calibration_shapes()


@dataclass(frozen=True, slots=True)
class ScaleSource:
    """Where a model's scale k comes from, and how uncertain it is (log standard deviation)."""

    kind: str                 # "measured" | "transferred" | "prior"
    k: float
    log_sigma: float
    detail: str
    loss_range: tuple[float, float] | None = None   # losses of the measured points (the band widens outside)


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
    entries = _measured_models()
    name = _norm_name(tmap.name)
    shape = _shape_key(tmap)

    def rng(ms: Sequence[Mapping]) -> tuple[float, float] | None:
        los = [m["loss_min"] for m in ms if "loss_min" in m]
        his = [m["loss_max"] for m in ms if "loss_max" in m]
        return (min(los), max(his)) if los and his else None

    exact = [m for m, _, _ in entries if _norm_name(m["name"]) == name]
    if exact:
        m = exact[0]
        return ScaleSource("measured", m["k"], math.hypot(m["log_se"], m.get("point_log_sd", 0.0)),
                           f"measured for {m['name']} ({m['points']} points: {', '.join(m['ladders'])}"
                           + ("" if m["corpus"] == _measured()["corpus"]["reference"] else
                              f"; {m['corpus']} converted to {_measured()['corpus']['reference']}") + ")",
                           rng(exact))
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
