"""The quality model on published ladders it was not fitted to (``tests/fixtures/published/heldout_ladders.toml``:
ubergarm's Qwen3-Coder-480B, GLM-4.6 and DeepSeek-V3.1 cards, whole mixes from IQ1_KT to Q8_0 with the PPL each
card prints).  ``planner/quality_fit.py`` fits only ``planner/data/measured``; these rows never enter a constant.

Issue 12's acceptance on families the model was not fitted to: Spearman >= 0.9 and median |predicted - measured
PPL ratio| <= 0.01.  The ranks hold on all three; the size of the loss does on DeepSeek-V3.1 only (measured:
Qwen3-Coder 0.019, GLM-4.6 0.021 with the transferred k and 0.013 with GLM-4.6's own Thireus-measured k): the
model over-predicts Qwen3-Coder's IQ2 mixes (1.169-1.196 vs 1.110-1.112) and under-predicts GLM-4.6's (IQ2_KL
1.076 vs 1.203, smol-IQ2_KS 1.227 vs 1.531).  Those two are strict xfails naming the numbers.
"""

from __future__ import annotations

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
        strict=True, reason="median |d ratio| 0.019: IQ2 mixes over-predicted (1.169-1.196 vs 1.110-1.112)")),
    pytest.param("heldout-glm-4.6-ubergarm", marks=pytest.mark.xfail(
        strict=True, reason="median |d ratio| 0.021: IQ2/IQ1 mixes under-predicted (1.076 vs 1.203, 1.227 vs 1.531)")),
    "heldout-deepseek-v3.1-ubergarm",
])
def test_loss_size_on_held_out_cards(report, lid):
    ev = report[(lid, "other families")]
    assert ev.median_abs_error <= 0.01, ev.median_abs_error
