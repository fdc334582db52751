"""Quality model, the prediction band: its width from the model's own leave-one-family-out residuals on the dev
ladders (``data/measured``), at a stated nominal coverage (``quality_prior.toml [measured].band_coverage``).

For each architecture F of the dev ladders, every constant is refitted without F's ladders (per-type corrections,
per-model scales, corpus factor, depth law: :func:`planner.quality_fit.fit_constants` on the others), and F's points
are predicted with k from that depth law at F's depth.  The score of a point is |ln(ln r_measured / ln r_predicted)|
(points whose measured ratio is below ``min_ratio`` are measurement noise, as in the scale fits, and are left out);
the band's log half-width is the split-conformal quantile of the scores at the nominal coverage (the
ceil((n+1)·p)-th smallest), so a new point exchangeable with the dev points falls inside with probability >= p.
``tests/test_quality_heldout.py`` measures the coverage on the held-out cards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from planner.measurements import Ladder, evaluate_ladder, ladder_tmap, load_ladders


@dataclass(frozen=True, slots=True)
class BandFit:
    """The band's log half-width on ln r and where it comes from."""

    coverage: float           # nominal: the fraction of dev residual scores at or below log_q
    log_q: float
    points: int               # dev points scored
    ladders: int              # dev ladders they come from


def lofo_residuals(ladders: Sequence[Ladder] | None = None) -> list[tuple[str, str, float, float]]:
    """(ladder id, point, measured ln r, predicted ln r) for every dev point, each family predicted by constants
    fitted on the other families only."""
    from planner.quality_fit import _cfg, _diffs, _rw_for, fit_constants, fit_depth_law  # noqa: PLC0415
    from planner.quality_scale import model_depth  # noqa: PLC0415

    lads = tuple(load_ladders() if ladders is None else ladders)
    arch = {lad.id: ladder_tmap(lad).params.arch for lad in lads}
    out: list[tuple[str, str, float, float]] = []
    for fam in sorted(set(arch.values())):
        rest = [lad for lad in lads if arch[lad.id] != fam]
        c = fit_constants(rest)
        law = fit_depth_law(c.models)
        if law is None:
            continue
        cmap = {t: v for t, (v, _) in c.corrections.items()}
        for lad in lads:
            if arch[lad.id] != fam:
                continue
            k = law.k(model_depth(ladder_tmap(lad)))
            if lad.corpus != _cfg()["reference_corpus"]:
                k /= c.corpus_factor
            ev = evaluate_ladder(lad, _diffs(lad, cmap, _rw_for(lad, c.role_weights)), k)
            out.extend((lad.id, p.name, math.log(p.measured_ratio), math.log(p.predicted_ratio)) for p in ev.points)
    return out


def scores(rows: Sequence[tuple[str, str, float, float]], min_ratio: float) -> list[float]:
    """|ln(measured ln r / predicted ln r)| of the rows above the noise threshold."""
    floor = math.log(min_ratio)
    return [abs(math.log(lm / lp)) for _, _, lm, lp in rows if lm >= floor and lp > 0]


def conformal_quantile(values: Sequence[float], coverage: float) -> float:
    """The ceil((n+1)·coverage)-th smallest value (split conformal; the largest when n is too small)."""
    if not values or not 0 < coverage < 1:
        raise ValueError("conformal_quantile needs values and a coverage in (0, 1)")
    xs = sorted(values)
    return xs[min(len(xs), math.ceil((len(xs) + 1) * coverage)) - 1]


def fit_band(ladders: Sequence[Ladder] | None = None) -> BandFit:
    """The band of the shipped dev ladders (or ``ladders``) at the configured nominal coverage."""
    from planner.quality_fit import _cfg  # noqa: PLC0415

    rows = lofo_residuals(ladders)
    cov = float(_cfg()["band_coverage"])
    s = scores(rows, float(_cfg()["min_ratio"]))
    return BandFit(cov, conformal_quantile(s, cov), len(s), len({r[0] for r in rows}))


def band_log_q() -> tuple[float, float] | None:
    """(nominal coverage, log half-width) of data/quality_measured.toml ``[band]``, or None when it has none."""
    from planner.quality_error import _measured  # noqa: PLC0415

    b = _measured().get("band")
    return (float(b["coverage"]), float(b["log_q"])) if b else None
