"""Measured quality data: Thireus results CSVs, llama-perplexity output, the shipped ladders, ladder scoring."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from planner.errors import UsageError
from planner.measurements import (evaluate_ladder, ladder_tmap, load_ladders, mix_types, parse_perplexity_output,
                                  read_ladders, read_sensitivity, spearman)

FIX = Path(__file__).parent / "fixtures" / "measured"


# ------------------------------------------------------------------------------------------ Thireus CSVs

def test_group0_curve_is_read_with_missing_and_values():
    t = read_sensitivity(FIX / "glm-4.5-air-group0-ppl_results_partial.csv")
    assert t.metric == "ppl" and t.is_curve
    c = t.curve()
    # values as in the file (Thireus GGUF-Tool-Suite models/GLM-4.5-Air/group0/ppl_results_partial.csv)
    assert c["bf16"] == 4.7233 and c["iq4_k"] == pytest.approx(4.755216) and c["q8_0"] == pytest.approx(4.720398)
    assert c["iq1_m_r4"] == pytest.approx(11.787234)
    kld = read_sensitivity(FIX / "glm-4.5-air-group0-kld_results_partial.csv").curve()
    assert kld["bf16"] == 0 and kld["iq3_k"] == pytest.approx(0.0605)


def test_per_tensor_table():
    t = read_sensitivity(FIX / "deepseek-r1-0528-ppl_results-first12.csv")
    assert not t.is_curve and t.columns[0] == "blk.0.ffn_down.weight" and len(t.columns) == 12
    assert list(t.values) == ["iq1_m_r4"]
    assert t.values["iq1_m_r4"]["blk.3.ffn_down_exps.weight"] == pytest.approx(3.1998)
    with pytest.raises(UsageError, match="per-tensor"):
        t.curve()


def test_missing_mark_is_dropped(tmp_path):
    p = tmp_path / "kld_results.csv"
    p.write_text("QTYPE,group0\nbf16,404\niq2_k,0.25\n")
    t = read_sensitivity(p)
    assert t.metric == "kld" and t.curve() == {"iq2_k": 0.25}


@pytest.mark.parametrize("text, fragment", [
    ("", "QTYPE"),                                       # empty file
    ("TYPE,group0\niq2_k,1\n", "QTYPE"),                 # wrong first header cell
    ("QTYPE\niq2_k\n", "no measurement columns"),         # no columns
    ("QTYPE,a b\niq2_k,1\n", "not a tensor name"),       # space in a column name
    ("QTYPE,x,x\niq2_k,1,2\n", "duplicate"),             # duplicate column
    ("QTYPE,group0\niq2_k,1,2\n", "2 values"),            # row too wide
    ("QTYPE,group0\niq9_zz,1\n", "iq9_zz"),              # unknown type
    ("QTYPE,group0\niq2_k,abc\n", "not a number"),       # non-numeric
    ("QTYPE,group0\niq2_k,-1\n", "not a PPL or KLD"),    # negative
    ("QTYPE,group0\niq2_k,nan\n", "not a PPL or KLD"),   # NaN
])
def test_malformed_sensitivity(tmp_path, text, fragment):
    p = tmp_path / "ppl_results.csv"
    p.write_text(text)
    with pytest.raises(UsageError, match=fragment):
        read_sensitivity(p)


def test_unreadable_sensitivity(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        read_sensitivity(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="cannot read"):
        read_sensitivity(p)


# ------------------------------------------------------------------------------------------ llama-perplexity

def test_ik_final_estimate_with_chunks():
    r = parse_perplexity_output((FIX / "glm-4.5-air-baseline-perplexity-tail.txt").read_text())
    assert (r.ppl, r.ppl_se, r.chunks) == (4.7233, 0.04619, 250)     # the log's own final line
    assert r.kld_mean is None


def test_mainline_final_estimate():
    r = parse_perplexity_output("perplexity: calculating perplexity over 584 chunks, n_ctx=512\n"
                                "Final estimate: PPL = 5.4403 +/- 0.03421\n")   # the seed card's line
    assert (r.ppl, r.ppl_se, r.chunks) == (5.4403, 0.03421, 584)


def test_kld_summary():
    r = parse_perplexity_output((FIX / "llama-perplexity-kld-q4_k_m.txt").read_text())
    assert (r.kld_mean, r.kld_se, r.same_top_p) == (0.025471, 0.000244, 91.110)
    assert (r.ppl, r.ppl_se) == (14.268128, 0.256326)
    assert (r.ppl_ratio, r.ppl_ratio_se) == (1.023349, 0.001673)


def test_no_final_line():
    with pytest.raises(UsageError, match="Final estimate"):
        parse_perplexity_output("[1]4.1,[2]4.3,\nllama_print_timings: load time = 1 ms\n")


# ------------------------------------------------------------------------------------------ ladders

PUBLISHED = {  # (model, PPL) of the dev records: seed card, ik discussions 357/359/477, ubergarm's R1-0528 card
    ("Qwen3-235B-A22B", 5.3141), ("Qwen3-235B-A22B", 5.4403), ("Qwen3-30B-A3B", 9.0703), ("Qwen3-30B-A3B", 9.074),
    ("Qwen3-30B-A3B", 9.1184), ("Qwen3-30B-A3B", 8.9862), ("Qwen3-30B-A3B", 9.2092), ("Qwen3-30B-A3B", 9.2232),
    ("DeepSeek-R1-0528", 3.213), ("DeepSeek-R1-0528", 3.2286), ("DeepSeek-R1-0528", 3.273),
    ("DeepSeek-R1-0528", 3.5069), ("DeepSeek-R1-0528", 4.8805), ("DeepSeek-R1-0528", 3.2895),
    ("DeepSeek-R1-0528", 3.2688), ("DeepSeek-R1-0528", 3.2713), ("DeepSeek-R1-0528", 3.2676),
    ("DeepSeek-R1-0528", 3.2832), ("DeepSeek-R1-0528", 3.2565), ("DeepSeek-R1-0528", 3.2555),
    ("DeepSeek-R1-0528", 3.2541), ("DeepSeek-R1-0528", 3.2553), ("DeepSeek-R1-0528", 3.2577),
    ("DeepSeek-R1-0528", 3.2485),
    # ik_llama.cpp PR 642, ubergarm's Qwen3-235B-A22B-Instruct-2507 table
    *(("Qwen3-235B-A22B-Instruct-2507", x) for x in (4.3079, 4.3139, 4.3351, 4.3923, 4.4017, 4.4156, 4.4561,
                                                    4.4915, 4.5078, 4.5275, 4.7912)),
}


def test_shipped_ladders_match_the_published_records():
    """Every published-ladder PPL in the data files is the published figure."""
    n = 0
    for lad in load_ladders():
        if lad.id.startswith("thireus"):
            continue
        for p in lad.points:
            assert (lad.model, p.ppl) in PUBLISHED, (lad.id, p.name)
            n += 1
    assert n == 36


def test_seed_point_reproduces_the_card_counts():
    lad = next(lad for lad in load_ladders() if lad.id == "qwen3-235b-a22b-seed")
    types = mix_types(ladder_tmap(lad), lad.points[1].mix)
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    assert counts == {"q8_0": 2, "iq3_k": 188, "iq4_k": 94, "iq6_k": 376}   # the card's type counts


def test_group0_point_is_a_pure_mix_with_row_fallbacks():
    lad = next(lad for lad in load_ladders() if lad.id == "thireus-group0-glm-4.5-air")
    p = next(p for p in lad.points if p.name == "iq3_k")
    types = mix_types(ladder_tmap(lad), p.mix)
    # Thireus' tensors.iq3_k.map for GLM-4.5-Air: token_embd iq3_k, blk.0.ffn_down (ne0 10944) iq4_nl
    assert types["token_embd.weight"] == "iq3_k" and types["blk.0.ffn_down.weight"] == "iq4_nl"
    assert types["blk.5.ffn_up_exps.weight"] == "iq3_k"


def test_ladder_with_params_builds_other_shapes():
    lad = next(lad for lad in load_ladders() if lad.id == "thireus-group0-glm-4.5")
    tm = ladder_tmap(lad)
    assert tm.params.n_layer == 93 and tm.params.n_expert == 160 and tm.params.n_embd == 5120


def test_bad_ladder_file(tmp_path):
    p = tmp_path / "l.toml"
    p.write_text('[[ladder]]\nid = "x"\nmodel = "m"\nbuiltin = "qwen3-30b-a3b"\ncorpus = "c"\nsource = "s"\n'
                 '[[ladder.point]]\nname = "a"\nppl = 5.0\nftype = "Q8_0"\n')
    with pytest.raises(UsageError, match="at least one point"):
        read_ladders(p)
    p.write_text('[[ladder]]\nid = "x"\nmodel = "m"\nbuiltin = "b"\ncorpus = "c"\nsource = "s"\n'
                 '[[ladder.point]]\nname = "a"\nppl = -1\nftype = "Q8_0"\n[[ladder.point]]\nname = "b"\nppl = 1\n'
                 'ftype = "Q8_0"\n')
    with pytest.raises(UsageError, match="ppl -1"):
        read_ladders(p)
    p.write_text("not toml [")
    with pytest.raises(UsageError, match="cannot read"):
        read_ladders(p)


# ------------------------------------------------------------------------------------------ statistics

def test_spearman_against_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # textbook example with ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) -> 0.9487
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert math.isnan(spearman([1, 2], [1, 2]))


def test_evaluate_ladder_uses_ratios_to_the_reference():
    lad = next(lad for lad in load_ladders() if lad.id == "deepseek-r1-0528-ubergarm")
    diffs = [(p, 0.01 * i) for i, p in enumerate(lad.points[1:], start=1)]
    ev = evaluate_ladder(lad, diffs, 2.0)
    assert ev.points[0].measured_ratio == pytest.approx(3.2286 / 3.2130)     # IQ4_KS_R4 vs the card's Q8_0
    assert ev.points[0].predicted_ratio == pytest.approx(math.exp(0.02))
    assert ev.spearman == pytest.approx(1.0)


def test_group0_ladder_matches_the_thireus_file():
    """The shipped GLM-4.5-Air sweep is the fixture CSV (measured rows, *_bn left out)."""
    curve = read_sensitivity(FIX / "glm-4.5-air-group0-ppl_results_partial.csv").curve()
    lad = next(lad for lad in load_ladders() if lad.id == "thireus-group0-glm-4.5-air")
    shipped = {p.name: p.ppl for p in lad.points}
    assert shipped == {q: v for q, v in curve.items() if "_bn" not in q}
    assert lad.reference.name == "bf16" and lad.reference.mix.unquantized
