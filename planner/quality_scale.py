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
        elif tmap.converter_types:
            # the converter's own quantized tensors are the original weights (gpt-oss's and DeepSeek-V4's MXFP4
            # experts as released, V4's FP8 linears as Q8_0): the reference the loss is measured against, which
            # llama-quantize keeps as stored (quantize.keep_prequantized_items)
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


@dataclass(frozen=True, slots=True)
class DepthLaw:
    """ln k = ln k_ref + alpha * ln(depth / depth_ref), fitted over the measured models (quality_fit.fit_depth_law).

    The importance prior sums to 1 over the layers, so a mix's loss is a per-layer average; the ladders say the
    PPL cost of the same average grows with the number of layers that inject it (errors accumulate through the
    layers that follow: arXiv 2504.09629; the exponent is fitted on the ladders, docs/quality.md "Depth law").
    Depths outside the fitted range are clamped to it: the law is not extrapolated.
    """

    alpha: float
    k_ref: float
    depth_ref: int
    log_sd: float                 # residual scatter of ln k about the law (what a transferred k can be off by)
    depth_range: tuple[int, int]

    def factor(self, depth: int, from_depth: int) -> float:
        """k(depth) / k(from_depth) under the law, both clamped to the fitted range."""
        lo, hi = self.depth_range
        return (min(hi, max(lo, depth)) / min(hi, max(lo, from_depth))) ** self.alpha

    def k(self, depth: int) -> float:
        return self.k_ref * self.factor(depth, self.depth_ref)


def model_depth(tmap: TensorMap) -> int:
    """Layers that run on every token: NextN/MTP blocks are not counted (the engines skip them)."""
    return tmap.params.n_loaded_layers


def depth_law() -> DepthLaw | None:
    """The law of data/quality_measured.toml ``[depth_law]``, or None when the file has none."""
    d = _measured().get("depth_law")
    if not d:
        return None
    return DepthLaw(float(d["alpha"]), float(d["k_ref"]), int(d["depth_ref"]), float(d["log_sd"]),
                    (int(d["depth_min"]), int(d["depth_max"])))


def _pool_k(models: Sequence[dict], depth: int | None = None, law: DepthLaw | None = None) -> tuple[float, float]:
    """Geometric mean of the models' k (each moved to ``depth`` by the depth law when given) and its log
    uncertainty: the standard error and the spread between the models, combined."""
    logs = [math.log(m["k"] * (law.factor(depth, int(m["depth"])) if law and depth and "depth" in m else 1.0))
            for m in models]
    mean = statistics.fmean(logs)
    se = math.sqrt(sum(m["log_se"] ** 2 for m in models)) / len(models)
    spread = statistics.stdev(logs) if len(logs) > 1 else 0.0
    return math.exp(mean), math.hypot(se, spread)


def scale_source(tmap: TensorMap) -> ScaleSource:
    """k for ``tmap``: measured for this model, else for models of the same shapes, else transferred from the
    same architecture, else the prior; the last two are moved to the model's depth by the depth law."""
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
    law = depth_law()
    depth = model_depth(tmap)
    family = [m for m, _, arch in entries if arch == tmap.params.arch]
    if family:
        k, s = _pool_k(family, depth, law)
        fam_sd = law.log_sd if law else float(_measured()["pooled"]["log_sd"])
        return ScaleSource("transferred", k, math.hypot(s, fam_sd),
                           f"transferred from family {tmap.params.arch} ({', '.join(m['name'] for m in family)})"
                           + (f", moved to {depth} layers by the depth law (k ~ layers^{law.alpha:.2f})"
                              if law else ""),
                           rng(family))
    pooled = _measured().get("pooled")
    if law is not None:
        return ScaleSource("prior", law.k(depth), cfg["uncertainty"]["transfer_sigma"],
                           f"prior only: k from the depth law over {len(entries)} measured models at {depth} layers"
                           ", band from held-out LLaMA points")
    k = float(pooled["k"]) if pooled else calibration_fit().k
    return ScaleSource("prior", k, cfg["uncertainty"]["transfer_sigma"],
                       "prior only: k pooled over the measured models"
                       + (f" ({len(entries)})" if entries else "") + ", band from held-out LLaMA points")
