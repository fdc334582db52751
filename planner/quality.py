"""Quality model: the predicted perplexity cost of a quant mix relative to the unquantized model.

    loss(mix)        = sum over tensors t of importance(t) * rel_mse(type_t)
    ln(PPL ratio)    = k * loss

``rel_mse`` is the squared relative RMS error of a ggml type measured with ik_llama.cpp's quantizers on synthetic
heavy-tailed weights (``data/quant_error.csv``); ``importance`` is a stated prior from role and layer position
(``data/quality_prior.toml``), optionally sharpened by an imatrix and overridden by user measurements; ``k`` is
one scale calibrated on published perplexities.  Everything here is an estimate and says so: each
:class:`QualityEstimate` carries a band and its assumptions.  docs/quality.md documents every constant.

The stages live in their own modules: ``quality_error`` (per-type error), ``quality_prior`` (per-tensor importance),
``quality_scale`` (the scale k), ``quality_user`` (the user's calibration file); this module combines them into a
:class:`QualityModel` and its :class:`QualityEstimate`, and re-exports their public names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from planner.errors import UsageError
from planner.quality_band import band_log_q
from planner.quality_error import (DISTRIBUTIONS, FLOAT_SOURCES, ErrorFit, _canonical, _prior, canonical_base,
                                   error_fit, measured_type_corrections, rel_mse)
from planner.quality_prior import _sharpen, prior_importance, quantizable, role_weights_for
from planner.quality_scale import (CalibrationFit, ScaleSource, _source_dtypes, apply_rules, calibration_fit,
                                   is_calibration_model, scale_source)
from planner.quality_user import Calibration, CalibrationRow, _overrides, read_calibration
from planner.quants import catalogue
from planner.tables import DATA
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from planner.imatrix import Imatrix


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


@dataclass(frozen=True, slots=True)
class PredictedVsMeasured:
    """A mix's predicted PPL ratio next to a measurement of it (both against the unquantized model)."""

    predicted: float
    low: float
    high: float
    measured: float
    measured_se: float | None
    inside_band: bool          # the measurement (within 2 standard errors) lies inside the predicted band


def ratio_se(ppl: float, ppl_se: float, ref_ppl: float, ref_se: float, correlation: float | None = None) -> float:
    """Standard error of PPL / reference PPL measured on the same text: the two relative errors combined with
    the correlation of ln PPL over the same chunks (llama.cpp ``tools/perplexity/perplexity.cpp`` prints
    ``Cor(ln(PPL(Q)), ln(PPL(base)))`` and this error for ``Mean PPL(Q)/PPL(base)``); ``correlation`` defaults to
    quality_prior.toml ``[uncertainty].ppl_correlation`` (a plain PPL run does not print it)."""
    rho = _prior()["uncertainty"]["ppl_correlation"] if correlation is None else correlation
    s1, s2 = ppl_se / ppl, ref_se / ref_ppl
    return ppl / ref_ppl * math.sqrt(max(0.0, s1 * s1 + s2 * s2 - 2 * rho * s1 * s2))


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
    # (tensor, type) -> tensor_loss, filled as asked: the planner asks the same pairs from the groups, the
    # recipe simplification and the explanation
    _losses: dict[tuple[str, str], float] = field(default_factory=dict, init=False, repr=False, compare=False,
                                                  metadata={"json": False})

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
        if isinstance(imatrix, (str, os.PathLike)):
            from planner.imatrix import read_imatrix      # numpy, only when an imatrix is read

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
        native = sum(1 for t in tmap.tensors if src.get(t.name) not in (None, *FLOAT_SOURCES)
                     and catalogue().get(t.dtype).kind != "index") if tmap.converter_types else 0
        notes.append("PPL ratio is relative to the unquantized (bf16) model on wiki.test.raw-like text" if not native
                     else f"PPL ratio is relative to the original model as released on wiki.test.raw-like text (its "
                          f"{native} tensors stored quantized there, kept as stored, cost nothing)")
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
        key = (name, type_name)
        loss = self._losses.get(key)
        if loss is None:
            loss = self._losses[key] = self._tensor_loss(name, type_name)
        return loss

    def _tensor_loss(self, name: str, type_name: str) -> float:
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
        band = band_log_q()
        floor = band is not None and band[1] > s
        if band is not None:      # at least the width the dev residuals give at the nominal coverage (quality_band)
            s = max(s, band[1])
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
        notes.append(f"band: spread of {len(self.variants)} prior/distribution variants, widened by log-sigma {s:.2f}"
                     + (f" (nominal {band[0]:.0%} coverage from leave-one-family-out residuals on the dev ladders)"
                        if band is not None and floor else ""))
        kind = self.scale.kind if self.scale else "prior"
        detail = self.scale.detail if self.scale else "prior only"
        return QualityEstimate(loss=loss0, ppl_ratio=math.exp(r0), ppl_ratio_low=math.exp(min(lo, r0)),
                               ppl_ratio_high=math.exp(max(hi, r0)), assumptions=tuple(notes),
                               constants=detail, constants_kind=kind)


__all__ = ["Calibration", "CalibrationRow", "PredictedVsMeasured", "QualityEstimate", "QualityModel", "ScaleSource",
           "apply_rules", "predicted_vs_measured", "ratio_se",
           "calibration_fit", "canonical_base", "difference_inside_band", "measured_type_corrections",
           "role_weights_for", "scale_source",
           "error_fit", "CalibrationFit", "DATA", "DISTRIBUTIONS", "ErrorFit", "FLOAT_SOURCES", "is_calibration_model", "prior_importance", "quantizable", "read_calibration", "rel_mse"]
