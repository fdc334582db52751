"""Fit the quality model's measured constants from the shipped measurements; writes ``data/quality_measured.toml``.

Two kinds of constant come out of the ladders in ``data/measured/`` (:mod:`planner.measurements`):

1. **Per-type corrections** ``c(type)``: how much worse (>1) or better (<1) a ggml type does on real weights than
   on the synthetic weights of ``data/quant_error.csv``.  From the whole-model sweeps of one type (Thireus group0
   ladders) of the families named in ``quality_prior.toml`` ``[measured].type_correction_ladders`` only, so the
   other families stay held out: for each sweep the model's scale is fitted (median of ln r / loss over the
   mid-range points), then c(type) = ln r / (k * loss) per mid-range point, pooled over sweeps by geometric mean
   (repacked types pool with their base type).  Types with fewer than ``min_curves`` sweeps keep c = 1.
2. **Per-model scales** ``k`` (ln PPL ratio per unit of loss) with a log standard error, one per (model, corpus):
   the median over the ladder's points of ln r / loss (points whose measured ratio is below ``min_ratio`` are
   measurement noise and left out); ladders of one model and corpus are pooled.  Scales measured on another corpus
   are converted to the reference corpus (wiki.test.raw, what published ladders use) by the factor measured on
   the families that have ladders on both.

Run ``python3 -m planner.quality_fit`` to print the TOML and the accuracy report (Spearman and median |predicted -
measured PPL ratio| per ladder, in-sample and transferred); ``--write`` replaces the data file.
``tests/test_quality_fit.py`` recomputes the file and checks it matches.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.measurements import (Ladder, LadderEvaluation, evaluate_ladder, ladder_losses, ladder_tmap,
                                  load_ladders)
from planner.quality import DATA, QualityModel, ScaleSource, _prior, canonical_base
from planner.quality_scale import DepthLaw, model_depth

if TYPE_CHECKING:
    from planner.quality_band import BandFit
from planner.tensors import TensorMap


@dataclass(frozen=True, slots=True)
class ScaleFit:
    ladder: str
    model: str
    builtin: str
    corpus: str
    k: float
    log_se: float
    n: int
    point_log_sd: float          # scatter of single points' implied log k (what one prediction can be off by)
    loss_min: float
    loss_max: float


def _cfg() -> Mapping:
    return _prior()["measured"]


def _diffs(ladder: Ladder, corrections: Mapping[str, float], role_weights: Mapping[str, float]) -> list[tuple]:
    qm = QualityModel.build(ladder_tmap(ladder), type_corrections=corrections, role_weights=role_weights)
    return ladder_losses(ladder, qm.loss)


def _implied(ladder: Ladder, diffs: Sequence[tuple], lo: float, hi: float = math.inf) -> list[tuple[str, float, float]]:
    ref = ladder.reference.ppl
    out = []
    for p, d in diffs:
        r = p.ppl / ref
        if lo < r < hi and d > 0:
            out.append((p.name, math.log(r), d))
    return out


def fit_scale(ladder: Ladder, diffs: Sequence[tuple]) -> ScaleFit | None:
    """Median implied k of one ladder and its log standard error (1.2533 * MAD-sd / sqrt(n)); None if no point."""
    pts = _implied(ladder, diffs, _cfg()["min_ratio"])
    if not pts:
        return None
    logs = [math.log(lr / d) for _, lr, d in pts]
    med = statistics.median(logs)
    n = len(logs)
    if n >= 3:
        sd = 1.4826 * statistics.median(abs(x - med) for x in logs)
        se = 1.2533 * sd / math.sqrt(n)
    else:
        sd = se = _cfg()["single_point_log_se"]
    return ScaleFit(ladder.id, ladder.model, ladder.builtin, ladder.corpus, math.exp(med), se, n, sd,
                    min(d for _, _, d in pts), max(d for _, _, d in pts))


def fit_type_corrections(ladders: Sequence[Ladder]) -> dict[str, tuple[float, int]]:
    """c(type) and the number of sweeps it pools, from whole-model one-type sweeps (uncorrected model)."""
    cfg = _cfg()
    lo, hi = cfg["mid_range"]
    per_type: dict[str, list[float]] = {}
    sweeps: dict[str, set[str]] = {}
    for lad in ladders:
        diffs = _diffs(lad, {}, {})
        pts = _implied(lad, diffs, cfg["min_ratio"], hi)
        if not pts:
            continue
        k = math.exp(statistics.median(math.log(lr / d) for _, lr, d in pts))
        qtypes = {p.name: p.mix.qtype for p, _ in diffs}
        for name, lr, d in _implied(lad, diffs, lo, hi):
            base = canonical_base(qtypes[name])
            per_type.setdefault(base, []).append(math.log(lr / (k * d)))
            sweeps.setdefault(base, set()).add(lad.id)
    c_lo, c_hi = cfg["clip"]
    out = {}
    for base, logs in sorted(per_type.items()):
        n = len(sweeps[base])
        if n >= cfg["min_curves"]:
            out[base] = (min(c_hi, max(c_lo, math.exp(statistics.fmean(logs)))), n)
    return out


def _sensitivity_terms(entry: Mapping, corrections: Mapping[str, float], role_weights: Mapping[str, float]
                       ) -> list[tuple[str, str, float, float]]:
    """(tensor, role, measured KLD, predicted importance x error difference) for one per-tensor KLD file."""
    from planner.measurements import DATA as MEASURED, read_sensitivity  # noqa: PLC0415
    from planner.quality import prior_importance, rel_mse  # noqa: PLC0415
    from planner.quants import catalogue  # noqa: PLC0415
    from planner.tensors import builtin  # noqa: PLC0415

    table = read_sensitivity(MEASURED / entry["file"])
    tmap = builtin(entry["builtin"])
    by_name = tmap.by_name()
    imp, _ = prior_importance(tmap, "matrix", role_weights)
    cat = catalogue()

    def err(t: str | None) -> float:
        return 0.0 if t is None else rel_mse(t)[0] * corrections.get(canonical_base(t), 1.0)

    out = []
    for qtype, row in table.values.items():
        for name, kld in row.items():
            t = by_name.get(name)
            if t is None or imp.get(name, 0.0) <= 0:
                continue
            q, _ = cat.row_fallback(cat.get(qtype), t.ne0, "ik")
            b = None if entry["baseline"] in ("bf16", "f16", "f32") else cat.row_fallback(
                cat.get(entry["baseline"]), t.ne0, "ik")[0].name
            p = imp[name] * (err(q.name) - err(b))
            if p > 0:
                out.append((name, t.role, kld, p))
    return out


def fit_role_weights(corrections: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Role multipliers per model with a per-tensor KLD file (``[[measured.sensitivity]]``).

    Per file, each tensor's measured KLD / predicted (prior importance x error difference), divided by the file's
    median ratio; per role the median.  A role is kept only where every file that has it agrees on the direction
    by more than ``role_weight_agree`` (and at least two files have it): the structure the families share, not
    one file's noise.  Kept roles get w ** ``role_weight_shrink``, clipped; weights are used for the model, its
    shapes and its architecture only.
    """
    cfg = _cfg()
    lo, hi = cfg["role_weight_clip"]
    raw: dict[str, dict[str, float]] = {}
    for entry in cfg["sensitivity"]:
        terms = _sensitivity_terms(entry, corrections, {})
        g = statistics.median(k / p for _, _, k, p in terms)
        roles: dict[str, list[float]] = {}
        for _, role, k, p in terms:
            roles.setdefault(role, []).append(k / p / g)
        raw[entry["model"]] = {r: statistics.median(ws) for r, ws in sorted(roles.items())}
    agree = math.log(cfg["role_weight_agree"])
    kept = set()
    for role in {r for w in raw.values() for r in w}:
        logs = [math.log(w[role]) for w in raw.values() if role in w]
        if len(logs) >= 2 and (all(x > agree for x in logs) or all(x < -agree for x in logs)):
            kept.add(role)
    a = cfg["role_weight_shrink"]
    return {m: {r: min(hi, max(lo, w[r] ** a)) for r in sorted(kept) if r in w} for m, w in raw.items()}


def _rw_entries(role_weights: Mapping[str, Mapping[str, float]]) -> list[tuple]:
    from planner.quality_prior import _shape_key  # noqa: PLC0415
    from planner.tensors import builtin  # noqa: PLC0415
    out = []
    for e in _cfg()["sensitivity"]:
        tm = builtin(e["builtin"])
        out.append((e["model"], _shape_key(tm), tm.params.arch, role_weights[e["model"]]))
    return out


def _rw_for(ladder: Ladder, role_weights: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    from planner.quality import role_weights_for  # noqa: PLC0415
    return role_weights_for(ladder_tmap(ladder), _rw_entries(role_weights))[0]


def sensitivity_rank(entry_model: str, corrections: Mapping[str, float], role_weights: Mapping[str, float]) -> float:
    """Spearman between measured per-tensor KLD and the model's predicted terms for one shipped file."""
    from planner.measurements import spearman  # noqa: PLC0415
    entry = next(e for e in _cfg()["sensitivity"] if e["model"] == entry_model)
    terms = _sensitivity_terms(entry, corrections, role_weights)
    return spearman([k for _, _, k, _ in terms], [p for _, _, _, p in terms])


@dataclass(frozen=True, slots=True)
class Constants:
    corrections: dict[str, tuple[float, int]]
    role_weights: dict[str, dict[str, float]]      # model -> role -> multiplier
    scales: tuple[ScaleFit, ...]
    models: dict[str, dict]                # model -> {k, log_se, corpus_k, source ...} on the reference corpus
    corpus_factor: float
    corpus_factor_log_se: float
    pooled_k: float
    pooled_log_sd: float
    depth_law: DepthLaw | None = None
    band: BandFit | None = None          # the prediction band (quality_band.py), for the shipped ladders only


DEPTH_REF = 64     # layers at which the depth law states k_ref (a round number inside the measured 46-94)


def fit_depth_law(models: Mapping[str, Mapping]) -> DepthLaw | None:
    """ln k = ln k_ref + alpha * ln(depth / DEPTH_REF), ordinary least squares over the measured models (each
    model one point, k on the reference corpus); None with fewer than three models or a single depth."""
    pts = [(math.log(v["depth"] / DEPTH_REF), math.log(v["k"])) for v in models.values()]
    if len(pts) < 3:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx <= 0:
        return None
    alpha = sum((x - mx) * (y - my) for x, y in pts) / sxx
    res = [y - my - alpha * (x - mx) for x, y in pts]
    sd = math.sqrt(sum(r * r for r in res) / (len(pts) - 2))
    depths = [int(v["depth"]) for v in models.values()]
    return DepthLaw(alpha, math.exp(my - alpha * mx), DEPTH_REF, sd, (min(depths), max(depths)))


def _pool(fits: Sequence[ScaleFit]) -> tuple[float, float]:
    w = [1.0 / max(f.log_se, 1e-3) ** 2 for f in fits]
    m = sum(wi * math.log(f.k) for wi, f in zip(w, fits, strict=True)) / sum(w)
    return math.exp(m), 1.0 / math.sqrt(sum(w))


def fit_constants(ladders: Sequence[Ladder] | None = None, *, band: bool = False) -> Constants:
    """Every measured constant, from the shipped ladders (or ``ladders``); with ``band`` also the prediction band
    (:mod:`planner.quality_band`: it refits everything once per family left out, so it is asked for only where
    the data file is written or checked)."""
    cfg = _cfg()
    ladders = tuple(load_ladders() if ladders is None else ladders)
    by_id = {lad.id: lad for lad in ladders}
    ref_corpus = cfg["reference_corpus"]
    corr_ids = set(cfg["type_correction_ladders"])
    corrections = fit_type_corrections([lad for lad in ladders if lad.id in corr_ids])
    cmap = {t: c for t, (c, _) in corrections.items()}
    role_weights = fit_role_weights(cmap)
    scales = tuple(f for lad in ladders
                   if (f := fit_scale(lad, _diffs(lad, cmap, _rw_for(lad, role_weights)))) is not None)
    by_model: dict[tuple[str, str], list[ScaleFit]] = {}
    for f in scales:
        by_model.setdefault((f.model, f.corpus), []).append(f)
    pooled = {key: _pool(fs) for key, fs in by_model.items()}
    # corpus factor: families with ladders on both corpora ([measured].corpus_pairs: [wiki model, other model])
    logs = []
    for wiki_model, other_model in cfg["corpus_pairs"]:
        a = [v for (m, c), v in pooled.items() if m == wiki_model and c == ref_corpus]
        b = [v for (m, c), v in pooled.items() if m == other_model and c != ref_corpus]
        if a and b:
            logs.append(math.log(a[0][0] / b[0][0]))
    f_log = statistics.fmean(logs)
    f_se = statistics.stdev(logs) if len(logs) > 1 else cfg["single_point_log_se"]
    models: dict[str, dict] = {}
    for (model, corpus), (k, se) in sorted(pooled.items()):
        fits = by_model[(model, corpus)]
        if corpus == ref_corpus:
            kk, s = k, se
        else:
            kk, s = k * math.exp(f_log), math.hypot(se, f_se)
        prev = models.get(model)
        if prev is not None and prev["corpus"] == ref_corpus:
            continue                      # a ladder on the reference corpus wins
        models[model] = {"k": kk, "log_se": s, "corpus": corpus, "k_on_corpus": k, "builtin": fits[0].builtin,
                         "ladders": sorted(f.ladder for f in fits), "points": sum(f.n for f in fits),
                         "depth": model_depth(ladder_tmap(by_id[fits[0].ladder])),
                         "point_log_sd": max(f.point_log_sd for f in fits),
                         "loss_min": min(f.loss_min for f in fits), "loss_max": max(f.loss_max for f in fits)}
    ks = [math.log(v["k"]) for v in models.values()]
    band_fit = None
    if band:
        from planner.quality_band import fit_band  # noqa: PLC0415  (it calls back into this module)
        band_fit = fit_band(ladders)
    return Constants(corrections, role_weights, scales, models, math.exp(f_log), f_se,
                     math.exp(statistics.fmean(ks)), statistics.stdev(ks), _law_with_out_of_family_sd(models),
                     band_fit)


def leave_family_out(models: Mapping[str, Mapping]) -> list[tuple[str, float, float, float]]:
    """(model, ln k measured, ln k from the depth law fitted on the other architectures, ln k pooled over them)
    for every measured model: how well each rule transfers a scale to a family it has never seen."""
    from planner.tensors import builtin  # noqa: PLC0415
    arch = {m: builtin(v["builtin"]).params.arch for m, v in models.items()}
    out = []
    for m, v in models.items():
        others = {o: w for o, w in models.items() if arch[o] != arch[m]}
        law = fit_depth_law(others)
        if law is None:
            continue
        pooled = statistics.fmean(math.log(w["k"]) for w in others.values())
        out.append((m, math.log(v["k"]), math.log(law.k(int(v["depth"]))), pooled))
    return out


def _law_with_out_of_family_sd(models: Mapping[str, Mapping]) -> DepthLaw | None:
    """The depth law over all measured models, its scatter stated as the RMS leave-one-family-out error (what a
    transferred k is off by on a family the law has not seen) rather than the in-sample residual."""
    law = fit_depth_law(models)
    errs = [a - b for _, a, b, _ in leave_family_out(models)]
    if law is None or not errs:
        return law
    return DepthLaw(law.alpha, law.k_ref, law.depth_ref, max(law.log_sd, math.sqrt(statistics.fmean(
        e * e for e in errs))), law.depth_range)


def render_toml(c: Constants) -> str:
    """The data file ``quality_measured.toml`` for ``c``."""
    lines = [
        "# Measured constants of the quality model, fitted by planner/quality_fit.py from the cited ladders in",
        "# planner/data/measured/ (docs/quality.md).  Regenerate with `python3 -m planner.quality_fit --write`;",
        "# tests/test_quality_fit.py recomputes them from the ladders.",
        "",
        "[corpus]",
        f'reference = "{_cfg()["reference_corpus"]}"',
        f"# k(wiki.test.raw) / k(other corpus), from {len(_cfg()['corpus_pairs'])} families measured on both",
        f"factor = {c.corpus_factor:.4f}",
        f"factor_log_se = {c.corpus_factor_log_se:.4f}",
        "",
        "[pooled]",
        "# geometric mean and log-sd of k over the measured models (reference corpus): the prior for other models",
        f"k = {c.pooled_k:.4f}",
        f"log_sd = {c.pooled_log_sd:.4f}",
        "",
    ]
    if c.depth_law is not None:
        d = c.depth_law
        lines += [
            "[depth_law]",
            "# ln k = ln k_ref + alpha * ln(layers / depth_ref), least squares over the measured models (one point",
            "# each, reference corpus); log_sd is the RMS error of ln k when each architecture is predicted by the",
            "# law fitted on the others.  Transferred and prior scales use it, depths clamped to [depth_min, depth_max].",
            f"alpha = {d.alpha:.4f}",
            f"k_ref = {d.k_ref:.4f}",
            f"depth_ref = {d.depth_ref}",
            f"log_sd = {d.log_sd:.4f}",
            f"depth_min = {d.depth_range[0]}",
            f"depth_max = {d.depth_range[1]}",
            f"models = {len(c.models)}",
            "",
        ]
    if c.band is not None:
        b = c.band
        lines += [
            "[band]",
            "# log half-width q of the prediction band on ln(PPL ratio): ln r_pred * exp(+-q) holds the measured ln r of",
            "# a fraction `coverage` of the dev points (split-conformal quantile of |ln(ln r_meas / ln r_pred)|), each",
            "# family predicted by every constant refitted on the other families (planner/quality_band.py)",
            f"coverage = {b.coverage}",
            f"log_q = {b.log_q:.4f}",
            f"points = {b.points}",
            f"ladders = {b.ladders}",
            "",
        ]
    lines += [
        "[type_correction]",
        "# real / synthetic error of a type (geometric mean over whole-model sweeps; repacks use their base)",
    ]
    for t, (cv, n) in c.corrections.items():
        lines.append(f'{t} = {{ c = {cv:.4f}, sweeps = {n} }}')
    for e in _cfg()["sensitivity"]:
        w = c.role_weights[e["model"]]
        lines += ["", "[[role_weights]]",
                  "# measured per-tensor KLD / prior prediction by role (median tensor = 1)",
                  f'model = "{e["model"]}"', f'builtin = "{e["builtin"]}"',
                  "w = { " + ", ".join(f"{r} = {x:.4f}" for r, x in w.items()) + " }"]
    for model, v in c.models.items():
        lines += ["", "[[model]]", f'name = "{model}"', f'builtin = "{v["builtin"]}"', f"k = {v['k']:.4f}",
                  f"log_se = {v['log_se']:.4f}", f'corpus = "{v["corpus"]}"', f"k_on_corpus = {v['k_on_corpus']:.4f}",
                  f"points = {v['points']}", f"depth = {v['depth']}", f"point_log_sd = {v['point_log_sd']:.4f}",
                  f"loss_min = {v['loss_min']:.6f}", f"loss_max = {v['loss_max']:.6f}",
                  "ladders = [" + ", ".join(f'"{x}"' for x in v["ladders"]) + "]"]
    return "\n".join(lines) + "\n"


def accuracy_report(c: Constants | None = None, ladders: Sequence[Ladder] | None = None
                    ) -> list[tuple[str, str, LadderEvaluation]]:
    """(ladder id, how k was chosen, evaluation) for every ladder (the shipped ones, or ``ladders``, e.g. ones
    kept out of the fit): in-sample (its own model's k) and transferred (k from the other families only: the depth
    law fitted on the models of other architectures, read at the ladder's depth, converted to its corpus)."""
    c = c or fit_constants()
    cmap = {t: v for t, (v, _) in c.corrections.items()}
    ref_corpus = _cfg()["reference_corpus"]
    out = []
    for lad in (load_ladders() if ladders is None else ladders):
        diffs = _diffs(lad, cmap, _rw_for(lad, c.role_weights))
        own = c.models.get(lad.model)
        if own is not None:
            k_own = own["k_on_corpus"] if own["corpus"] == lad.corpus else own["k"]
            if lad.corpus != ref_corpus and own["corpus"] == ref_corpus:
                k_own = own["k"] / c.corpus_factor
            out.append((lad.id, "own model", evaluate_ladder(lad, diffs, k_own)))
        tmap = ladder_tmap(lad)
        others = {m: v for m, v in c.models.items() if ladder_tmap_arch(v["builtin"]) != tmap.params.arch}
        if others:
            # the depth law fitted on the other families only, read at this model's depth
            law = fit_depth_law(others)
            k_t = (law.k(model_depth(tmap)) if law is not None
                   else math.exp(statistics.fmean(math.log(v["k"]) for v in others.values())))
            if lad.corpus != ref_corpus:
                k_t /= c.corpus_factor
            out.append((lad.id, "other families", evaluate_ladder(lad, diffs, k_t)))
    return out


def ladder_tmap_arch(builtin_name: str) -> str:
    from planner.tensors import builtin  # noqa: PLC0415
    return builtin(builtin_name).params.arch


def user_scale(tmap: TensorMap, path: str | os.PathLike[str]) -> ScaleSource:
    """k for ``tmap`` from the user's own ladder file (the format of data/measured/ladders.toml; ``builtin`` may be
    left out) as a :class:`planner.quality.ScaleSource`: every ladder in it is fitted on ``tmap`` with the shipped
    corrections and role weights.

    Raises:
        UsageError: unreadable ladder file, no point above the noise threshold, or a recipe that does not parse.
    """
    from planner.errors import UsageError  # noqa: PLC0415
    from planner.measurements import mix_types, read_ladders  # noqa: PLC0415
    qm = QualityModel.build(tmap)
    fits = []
    for lad in read_ladders(path):
        ref = qm.loss(mix_types(tmap, lad.reference.mix, imatrix=lad.imatrix))
        diffs = [(p, qm.loss(mix_types(tmap, p.mix, imatrix=lad.imatrix)) - ref) for p in lad.points[1:]]
        f = fit_scale(lad, diffs)
        if f is not None:
            fits.append(f)
    if not fits:
        raise UsageError(f"{path}: no measured point is more than {(_cfg()['min_ratio'] - 1) * 100:.0f} % above its "
                         "reference: nothing to fit a scale on", hint="add lower-bit mixes to the ladder")
    k, se = _pool(fits)
    n = sum(f.n for f in fits)
    return ScaleSource("measured", k, math.hypot(se, max(f.point_log_sd for f in fits)),
                       f"measured from your ladder {path} ({n} points)",
                       (min(f.loss_min for f in fits), max(f.loss_max for f in fits)))


def main(argv: Sequence[str]) -> int:
    c = fit_constants(band=True)
    text = render_toml(c)
    if "--write" in argv:
        (DATA / "quality_measured.toml").write_text(text)
    else:
        sys.stdout.write(text)
    for lid, how, ev in accuracy_report(c):
        sys.stdout.write(f"{lid:45s} {how:15s} n={len(ev.points):2d} k={ev.scale:.2f} "
                         f"spearman={ev.spearman:.3f} median|d|={ev.median_abs_error:.4f}\n")
    cmap = {t: v for t, (v, _) in c.corrections.items()}
    for e in _cfg()["sensitivity"]:
        own = c.role_weights[e["model"]]
        others = [m for m in c.role_weights if m != e["model"]]
        line = (f"per-tensor KLD {e['model']:30s} spearman prior={sensitivity_rank(e['model'], cmap, {}):.3f} "
                f"own role weights={sensitivity_rank(e['model'], cmap, own):.3f}")
        for m in others:
            line += f" {m} weights={sensitivity_rank(e['model'], cmap, c.role_weights[m]):.3f}"
        sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
