"""The quality model on published ladders it was not fitted to (``tests/fixtures/published/heldout_ladders.toml``:
ubergarm's Qwen3-Coder-480B, GLM-4.6 and DeepSeek-V3.1 cards, whole mixes from IQ1_KT to Q8_0 with the PPL each
card prints).  ``planner/quality_fit.py`` fits only ``planner/data/measured``; these rows never enter a constant.

Issue 12's acceptance on families the model was not fitted to: Spearman >= 0.9 and median |predicted - measured
PPL ratio| <= 0.01, k from the other families only (the depth law fitted on the models of other architectures, read
at this model's depth).  The ranks hold on all three; the size of the loss does on DeepSeek-V3.1 only.  Measured:
Qwen3-Coder 0.0129 (0.0187 with the pooled k before the depth law), GLM-4.6 0.0170 (0.0208; 0.0131 with GLM-4.6's
own Thireus-measured k), DeepSeek-V3.1 0.0045 (0.0042).  The misses are the models' scale, not the shape of the
per-type curve: within each card the implied k = ln r / loss is flat from IQ4_KSS down to IQ2_KS (Qwen3-Coder
3.2-3.6, GLM-4.6 8.0-13.3) while the families the model was fitted to give 4.1-6.4, and no link between loss and
ln PPL fitted on the dev ladders (power, convex, saturating) moves both cards the right way (docs/quality.md).
GLM-4.6's card also disagrees with a second published wiki.test.raw measurement of GLM-4.6 and with GLM-4.6's own
sweep on the order and spacing of the types (the last test here; docs/quality.md, "GLM-4.6 against primary sources").
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from planner.measurements import read_ladders
from planner.quality_fit import accuracy_report

FIXTURE = Path(__file__).parent / "fixtures" / "published" / "heldout_ladders.toml"


@pytest.fixture(scope="module")
def report():
    return {(lid, how): ev for lid, how, ev in accuracy_report(ladders=read_ladders(FIXTURE))}


def test_the_fixture_is_not_part_of_the_fit():
    from planner.measurements import load_ladders

    shipped = {lad.id for lad in load_ladders()}
    assert not shipped & {lad.id for lad in read_ladders(FIXTURE)}
    assert all(len(lad.points) >= 9 for lad in read_ladders(FIXTURE))


@pytest.mark.parametrize("lid", ["heldout-qwen3-coder-480b-a35b-ubergarm", "heldout-glm-4.6-ubergarm",
                                 "heldout-deepseek-v3.1-ubergarm"])
def test_ranks_on_held_out_cards(report, lid):
    ev = report[(lid, "other families")]
    assert ev.spearman >= 0.9, ev.spearman


@pytest.mark.parametrize("lid", [
    pytest.param("heldout-qwen3-coder-480b-a35b-ubergarm", marks=pytest.mark.xfail(
        strict=True, reason="median |d ratio| 0.013: k transferred 5.2, the card implies 3.2-3.6 from IQ4_KSS to IQ2_KS "
                            "(IQ2 mixes 1.090-1.188 vs 1.062-1.112)")),
    pytest.param("heldout-glm-4.6-ubergarm", marks=pytest.mark.xfail(
        strict=True, reason="median |d ratio| 0.017: k transferred 5.7, the card implies 8-13 (x1.7 its own "
                            "Thireus sweep's k); IQ4_KS..IQ3_KS 1.011-1.040 vs 1.025-1.057, IQ2_KL 1.084 vs 1.203")),
    "heldout-deepseek-v3.1-ubergarm",
])
def test_loss_size_on_held_out_cards(report, lid):
    ev = report[(lid, "other families")]
    assert ev.median_abs_error <= 0.01, ev.median_abs_error


@pytest.fixture(scope="module")
def as_planned():
    """Each card scored with the k the planner itself uses for that model (``scale_source``: measured, same shapes,
    transferred from the same architecture by the depth law, or prior) and the shipped corrections."""
    from planner.measurements import evaluate_ladder, ladder_tmap
    from planner.quality_fit import _diffs, _rw_for, fit_constants
    from planner.quality_scale import scale_source
    c = fit_constants()
    cmap = {t: v for t, (v, _) in c.corrections.items()}
    out = {}
    for lad in read_ladders(FIXTURE):
        src = scale_source(ladder_tmap(lad))
        out[lad.id] = (src, evaluate_ladder(lad, _diffs(lad, cmap, _rw_for(lad, c.role_weights)), src.k))
    return out


@pytest.mark.parametrize("lid, kind", [
    # transferred from Qwen3-235B / 30B / VL (94 and 48 layers) to 62 layers: 0.0056 (0.0182 before the depth law)
    ("heldout-qwen3-coder-480b-a35b-ubergarm", "transferred"),
    pytest.param("heldout-glm-4.6-ubergarm", "measured", marks=pytest.mark.xfail(
        strict=True, reason="median |d ratio| 0.013: GLM-4.6's own Thireus sweep (calibration corpus, x1.84 to "
                            "wiki.test.raw) gives k 6.3, the card implies 8-13")),
    ("heldout-deepseek-v3.1-ubergarm", "measured"),        # R1-0528 and V3.1-Terminus have its shapes: 0.0040
])
def test_loss_size_as_the_planner_predicts_it(as_planned, lid, kind):
    """The same acceptance with the constants a plan for that model prints (no card row enters them)."""
    src, ev = as_planned[lid]
    assert src.kind == kind, src.detail
    assert ev.spearman >= 0.9 and ev.median_abs_error <= 0.01, (ev.spearman, ev.median_abs_error)


def test_band_reaches_its_nominal_coverage_on_held_out_cards():
    """Issue 12 item 5, the band: its width comes from the dev ladders only (``[band]`` of quality_measured.toml:
    the 80 % split-conformal quantile of |ln(ln r_meas / ln r_pred)| over 196 dev points, each family predicted by
    constants refitted without it, planner/quality_band.py), and on the held-out cards, scored with the band a plan
    prints for that model (``QualityModel.estimate``), at least that fraction of the measured ratios lies inside.
    A measurement counts as inside when it is within 2 standard errors of the band, the rule of ``compare
    --measured``; the error of a ratio is the cards' two printed errors combined with the correlation of
    quality_prior.toml [uncertainty] (0.985; ``quality.ratio_se``).  Measured: 25 of 29 (86 %; Qwen3-Coder 8/8, GLM-4.6 5/9,
    DeepSeek-V3.1 12/12); 22 of 29 without the measurement error; 13 of 29 with the band before (variants and the
    scale's log-sigma only).  The four misses are GLM-4.6's IQ4_KS, IQ2_KL, smol-IQ2_KS and smol-IQ1_KT."""
    from planner.measurements import ladder_tmap, mix_types
    from planner.quality import QualityModel, ratio_se
    from planner.quality_band import band_log_q

    coverage, _ = band_log_q()
    inside = total = 0
    for lad in read_ladders(FIXTURE):
        tmap = ladder_tmap(lad)
        qm = QualityModel.build(tmap)
        ref = lad.reference
        e0 = qm.estimate(mix_types(tmap, ref.mix, imatrix=lad.imatrix)).ppl_ratio
        for p in lad.points[1:]:
            e = qm.estimate(mix_types(tmap, p.mix, imatrix=lad.imatrix))
            r = p.ppl / ref.ppl
            se = ratio_se(p.ppl, p.ppl_se, ref.ppl, ref.ppl_se)
            inside += e.ppl_ratio_low / e0 - 2 * se <= r <= e.ppl_ratio_high / e0 + 2 * se
            total += 1
    assert total == 29 and coverage == 0.8
    assert inside / total >= coverage, (inside, total)


OTHER_GLM46 = Path(__file__).parent / "fixtures" / "published" / "glm46_thireus_wiki.toml"


def test_glm46_two_wiki_sources_order_two_mixes_against_the_models_own_sweep():
    """GLM-4.6's miss is a disagreement between published measurements, not a structure the model lacks.

    A second wiki.test.raw measurement of GLM-4.6 (``glm46_thireus_wiki.toml``: Thireus' 4.1725 bpw recipe, routed
    experts iq4_kt / iq3_kt / iq5_ks_r4, PPL 3.4809) measures 1.0103 over the card's BF16, below the card's own
    IQ4_KS (1.0248 at 4.646 bpw: experts iq4_ks / iq5_ks).  GLM-4.6's whole-model sweep (Thireus group0,
    planner/data/measured/thireus_group0.toml; same imatrix as both files) ranks the types the other way (ln r
    iq4_kt 0.0191 > iq4_ks 0.0163, iq3_kt 0.0792 > iq5_ks 0.0052): scored with the sweep's own per-type ln r instead
    of our error table, and with the planner's loss, the recipe costs more than IQ4_KS.  One of the two wiki sources
    is therefore off by >= 1.4 % PPL against the other for this model (the ratio crosses two measurement setups:
    the recipe's publisher has no BF16 run of his own), and no per-model k or per-type curve fits both: the card
    implies k 8-13 (docs/quality.md), this point 2.7, the sweep 6.3."""
    from planner.measurements import ladder_tmap, load_ladders, mix_types
    from planner.quality import QualityModel, canonical_base

    card = next(lad for lad in read_ladders(FIXTURE) if lad.id == "heldout-glm-4.6-ubergarm")
    other = read_ladders(OTHER_GLM46)[0]
    iq4ks = next(p for p in card.points if p.name == "IQ4_KS")
    recipe = other.points[1]
    tmap = ladder_tmap(card)
    qm = QualityModel.build(tmap)
    card_types = mix_types(tmap, iq4ks.mix, imatrix=True)
    recipe_types = mix_types(tmap, recipe.mix, imatrix=True)
    assert len(recipe_types) == 924          # every tensor named: the recipe's own count (835 f32 + 924 quantized)

    sweep = next(lad for lad in load_ladders() if lad.id == "thireus-group0-glm-4.6")
    lnr = {canonical_base(p.name): math.log(p.ppl / sweep.reference.ppl) for p in sweep.points[1:]}
    lnr[canonical_base(sweep.reference.name)] = lnr["q8_0"] = 0.0   # the iq6_k baseline; q8_0 was not measured

    def sweep_cost(types):
        return sum(qm.importance[n] * lnr[canonical_base(t)] for n, t in types.items())

    assert sweep_cost(recipe_types) > 1.5 * sweep_cost(card_types)
    assert qm.loss(recipe_types) > 1.5 * qm.loss(card_types)
    assert recipe.ppl / other.reference.ppl < iq4ks.ppl / card.reference.ppl - 0.01
