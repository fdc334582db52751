"""Quality model: error table and fit, prior, calibration against the seed card, imatrix, user calibration."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from planner.errors import PlannerError, UnknownQuantTypeError, UsageError
from planner.imatrix import Imatrix, ImatrixEntry, write_imatrix_gguf
from planner.quality import (QualityModel, apply_rules, calibration_fit, error_fit, prior_importance, read_calibration, rel_mse)
from planner.tensors import ModelParams, TensorInfo, build, builtin, with_tensors

DOCS = Path(__file__).parent.parent / "docs" / "quality.md"
SEED_RATIO = 5.4403 / 5.3141          # seed card: mix-IQ3_K vs Q8_0, wiki.test.raw


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits with C++ integer division."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_by_role(tmap, choose) -> dict[str, str]:
    """Types for the tensors llama-quantize quantizes (2-D+, not norms, not the router)."""
    out = {}
    for t in tmap.tensors:
        if t.n_dims < 2 or t.role.endswith("norm") or t.role == "ffn_gate_inp":
            continue
        ty = choose(t)
        if ty:
            out[t.name] = ty
    return out


SEED = {"attn_q": "iq6_k", "attn_k": "iq6_k", "attn_v": "iq6_k", "attn_output": "iq6_k", "token_embd": "q8_0",
        "output": "q8_0", "ffn_down_exps": "iq4_k", "ffn_gate_exps": "iq3_k", "ffn_up_exps": "iq3_k"}


def ftype_mixes(tmap) -> dict[str, dict[str, str]]:
    """ik ftype defaults for a qwen3moe map (ik_llama_facts.md section 3a rules, n_expert >= 4)."""
    n = tmap.params.n_layer

    def q4_k_m(t):
        return {"output": "q6_K", "attn_k": "q8_0", "attn_v": "q8_0", "attn_output": "q5_K"}.get(
            t.role, "q6_K" if t.role == "ffn_down_exps" and use_more_bits(t.layer, n) else "q4_K")

    def iq2_ks(t):
        if t.role == "ffn_down_exps" and t.layer < n // 8:
            return "q2_K"
        return {"output": "q5_K", "attn_v": "iq4_k", "attn_k": "q4_K", "attn_q": "q4_K",
                "attn_output": "q5_K"}.get(t.role, "iq2_ks")

    return {
        "Q8_0": mix_by_role(tmap, lambda t: "q8_0"),
        "Q6_K": mix_by_role(tmap, lambda t: "q8_0" if t.role in ("attn_k", "attn_v") else "q6_K"),
        "Q4_K_M": mix_by_role(tmap, q4_k_m),
        "seed": mix_by_role(tmap, lambda t: SEED[t.role]),
        "IQ2_KS": mix_by_role(tmap, iq2_ks),
    }


@pytest.fixture(scope="module")
def qwen():
    return builtin("qwen3-235b-a22b")


@pytest.fixture(scope="module")
def model(qwen):
    return QualityModel.build(qwen)


@pytest.fixture(scope="module")
def mixes(qwen):
    return ftype_mixes(qwen)


# ------------------------------------------------------------------------------------------ error table

@pytest.mark.parametrize("dist, imx, b, a, sd", [
    # quant_error.md "Error versus bits" table, reproduced from the CSV
    ("gaussian", False, -1.900, 1.026, 0.39), ("gaussian", True, -1.815, 0.181, 0.36),
    ("student_t5", False, -1.857, 1.279, 0.41), ("student_t5", True, -1.762, 0.398, 0.43),
    ("outlier_cols", False, -1.845, 1.586, 0.43), ("outlier_cols", True, -1.751, 0.792, 0.44),
])
def test_fit_matches_reference(dist, imx, b, a, sd):
    fit = error_fit(dist, imx)
    assert (fit.n, round(fit.b, 3), round(fit.a, 3), round(fit.resid_sd, 2)) == (35, b, a, sd)


def test_rel_mse_sources():
    assert rel_mse("q8_0", "student_t5", False) == (pytest.approx(0.006765 ** 2), "measured")
    assert rel_mse("iq3_k", "student_t5", True)[0] == pytest.approx(0.130829 ** 2, rel=1e-3)
    assert rel_mse("q4_k_r4")[1] == "measured"               # listed repack row
    assert rel_mse("q4_0_4x4")[1] == "measured (as q4_0)"    # repack without a row
    value, how = rel_mse("tq1_0")                           # mainline-only ternary type: the fitted line
    assert how == "fitted" and 0.1 < value < 1.0
    assert rel_mse("Q4_K")[0] == rel_mse("q4_K")[0]          # spelling is case-insensitive here
    with pytest.raises(UnknownQuantTypeError):
        rel_mse("q4_kk")
    with pytest.raises(UnknownQuantTypeError):
        rel_mse("i32")                                      # not a weight type


@pytest.mark.parametrize("ty, src, zero", [
    ("f32", "bf16", True), ("bf16", "bf16", True), ("f16", "bf16", True),   # nothing lost from a bf16 source
    ("bf16_r16", "bf16", True), ("f32", "f32", True),
    ("bf16", "f32", False), ("f16", "f32", False),                          # rounding an f32 source costs
])
def test_float_types(ty, src, zero):
    assert (rel_mse(ty, source_dtype=src)[0] == 0.0) is zero


# ------------------------------------------------------------------------------------------ prior

@pytest.mark.parametrize("variant", ["matrix", "active_weight"])
def test_prior_normalised(qwen, variant):
    imp, notes = prior_importance(qwen, variant)
    assert sum(imp.values()) == pytest.approx(1.0)
    assert notes == ()
    by = qwen.by_name()
    assert all(v == 0 for n, v in imp.items() if by[n].n_dims < 2)               # norms never quantized
    assert imp["blk.0.attn_v.weight"] > imp["blk.40.attn_v.weight"]               # first-eighth bump
    assert imp["blk.93.ffn_down_exps.weight"] > imp["blk.40.ffn_down_exps.weight"]


def test_matrix_prior_structure(qwen):
    imp, _ = prior_importance(qwen, "matrix")
    layer = {n.split(".", 2)[2]: v for n, v in imp.items() if n.startswith("blk.40.")}
    attn = sum(v for k, v in layer.items() if k.startswith("attn"))
    ffn = sum(v for k, v in layer.items() if k.startswith("ffn"))
    assert attn == pytest.approx(ffn)                                       # two residual writes, equal weight
    assert layer["attn_v.weight"] == pytest.approx(2 * layer["attn_q.weight"])
    assert layer["ffn_down_exps.weight"] == pytest.approx(1.5 * layer["ffn_up_exps.weight"])


def test_unknown_roles_are_noted():
    params = ModelParams(arch="llama", n_layer=2, n_embd=256, n_vocab=512, n_head=4, n_head_kv=4, head_dim=64,
                         n_ff=512)
    tmap = build(params, "odd", "test")
    extra = TensorInfo("blk.0.ssm_out.weight", (256, 256), "bf16")
    imp, notes = prior_importance(with_tensors(tmap, tmap.tensors + (extra,)))
    assert imp["blk.0.ssm_out.weight"] > 0 and "ssm_out" in notes[0]


# ------------------------------------------------------------------------------------------ acceptance

def test_ranking_of_ftypes(model, mixes):
    losses = {k: model.estimate(m).loss for k, m in mixes.items()}
    assert losses["Q8_0"] < losses["Q6_K"] < losses["Q4_K_M"] < losses["seed"] < losses["IQ2_KS"], losses


SEED_CUSTOM_Q = (  # the seed card's recipe, as its script passes it to --custom-q
    r"blk\..*\.attn_k.*=iq6_k,blk\..*\.attn_q.*=iq6_k,blk\..*\.attn_v.*=iq6_k,blk\..*\.attn_output.*=iq6_k,"
    r"token_embd\.weight=q8_0,output\.weight=q8_0,"
    r"blk\..*\.ffn_down_exps\.weight=iq4_k,blk\..*\.ffn_(gate|up)_exps\.weight=iq3_k")


def test_ranking_with_quantize_module(qwen, model):
    # the project's llama-quantize emulation gives the per-tensor types of the named ftypes and of the seed recipe
    from planner.quantize import QuantizeSpec, parse_custom_q, quantize

    def loss(spec):
        return model.estimate({r.name: r.type_name for r in quantize(qwen, spec).tensors}).loss

    ftypes = [loss(QuantizeSpec(base_type=f, has_imatrix=True)) for f in ("Q8_0", "Q6_K", "Q4_K_M", "IQ2_KS")]
    seed = loss(QuantizeSpec(base_type="IQ3_K", custom_q=parse_custom_q(SEED_CUSTOM_Q), has_imatrix=True))
    assert ftypes[0] < ftypes[1] < ftypes[2] < seed < ftypes[3]
    assert seed == pytest.approx(model.estimate(ftype_mixes(qwen)["seed"]).loss)


def test_consistency_seed_mix_reproduces_its_calibration_point(model, mixes):
    """A consistency check, not a validation: k is solved on exactly the seed card's published ratio, so this only
    shows the fitted scale is applied the same way by ``estimate`` (ratio to Q8_0, band, label)."""
    seed, q8 = model.estimate(mixes["seed"]), model.estimate(mixes["Q8_0"])
    predicted = seed.ppl_ratio / q8.ppl_ratio         # the card compares with Q8_0, which is not lossless
    assert predicted == pytest.approx(SEED_RATIO, rel=1e-4)      # k is solved on exactly this point
    assert q8.ppl_ratio > 1.0                                      # Q8_0 itself costs something
    assert seed.ppl_ratio_low < seed.ppl_ratio < seed.ppl_ratio_high
    assert seed.label == "estimate"


def test_calibration_mix_rules_match_the_card(qwen):
    # the TOML recipe reproduces the card's per-type tensor counts (q8_0 2, iq3_k 188, iq4_k 94, iq6_k 376)
    from planner.quality import _prior
    mix = apply_rules(qwen, _prior()["calibration"][0]["mix"])
    counts = {ty: sum(1 for v in mix.values() if v == ty) for ty in set(mix.values())}
    assert counts == {"q8_0": 2, "iq3_k": 188, "iq4_k": 94, "iq6_k": 376}
    assert mix == ftype_mixes(qwen)["seed"]


def test_float_types_cost_nothing_on_bf16_source(model, qwen):
    for t in qwen.tensors:
        for ty in ("f32", "bf16", "f16"):
            if t.dtype == "bf16" or ty == "f32":
                assert model.tensor_loss(t.name, ty) == 0.0
    # the f32 router rounded to bf16 is not free (bf16 rounding error of quant_error.csv)
    assert model.tensor_loss("blk.0.ffn_gate_inp.weight", "bf16") > 0
    assert model.estimate({}).ppl_ratio == 1.0


@pytest.mark.parametrize("name", ["gpt-oss-20b", "deepseek-v4-flash"])
def test_a_sources_own_quantized_tensors_kept_as_stored_cost_nothing(name):
    # gpt-oss's and DeepSeek-V4's experts are released in MXFP4 (the converter writes them as stored); llama-quantize
    # copies a tensor whose rule names its own type (ik src/llama-quantize.cpp:1614 @8337e4cd, `quantize &=
    # tensor->type != new_type`) and never requantizes one (:1724): those bytes are the original weights, the
    # reference a PPL ratio is measured against, so they add no loss; the mix's loss is that of the rest alone
    from planner.quantize import keep_prequantized_items

    tmap = builtin(name)
    m = QualityModel.build(tmap)
    kept = sorted(tmap.prequantized)
    assert kept and keep_prequantized_items(tmap)
    assert all(m.tensor_loss(n, tmap.by_name()[n].dtype) == 0.0 for n in kept)
    mix = {t.name: t.dtype if t.name in kept else "q4_0" for t in tmap.tensors if t.n_dims >= 2}
    rest = {n: ty for n, ty in mix.items() if n not in kept}
    assert m.estimate(mix).ppl_ratio == pytest.approx(m.estimate(rest).ppl_ratio, rel=1e-12)
    assert m.estimate(mix).ppl_ratio > 1.0
    assert any("as released" in a for a in m.assumptions)


def test_a_quantized_gguf_is_still_measured_against_an_assumed_bf16_original():
    # a llama-quantize output (no converter types) re-planned: its quantized tensors are not the original, so
    # keeping them costs their error against the assumed bf16 weights
    tmap = dataclasses.replace(builtin("gpt-oss-20b"), converter_types=False)
    m = QualityModel.build(tmap)
    n = next(iter(sorted(tmap.prequantized)))
    assert m.tensor_loss(n, "mxfp4") > 0.0
    assert any("assumed bf16 original" in a for a in m.assumptions)


def test_float_rounding_costs_on_f32_source(qwen):
    f32 = with_tensors(qwen, tuple(dataclasses.replace(t, dtype="f32") if t.n_dims >= 2 else t
                                   for t in qwen.tensors))
    m = QualityModel.build(f32)
    assert m.tensor_loss("blk.3.attn_q.weight", "bf16") > 0
    assert m.tensor_loss("blk.3.attn_q.weight", "f32") == 0


def test_imatrix_lowers_the_loss(qwen, model, mixes):
    without = QualityModel.build(qwen, has_imatrix=False)
    for name in ("Q4_K_M", "seed", "IQ2_KS"):
        assert model.estimate(mixes[name]).loss < without.estimate(mixes[name]).loss
    # q8_0 ignores the imatrix (quant_error.md)
    assert model.tensor_loss("output.weight", "q8_0") == pytest.approx(without.tensor_loss("output.weight", "q8_0"),
                                                                       rel=2e-3)


def test_estimate_is_the_sum_of_tensor_losses(model, mixes):
    mix = mixes["Q4_K_M"]
    assert model.estimate(mix).loss == pytest.approx(sum(model.tensor_loss(n, t) for n, t in mix.items()))


def test_tensor_loss_is_cheap(model, qwen):
    names = [t.name for t in qwen.tensors]
    types = ["q8_0", "q6_K", "q5_K", "q4_K", "iq4_k", "iq4_ks", "iq3_k", "iq3_ks", "iq2_ks", "iq2_k", "q2_K",
             "iq6_k", "iq5_k", "iq4_xs", "bf16"]
    start = time.process_time()
    for n in names:
        for ty in types:
            model.tensor_loss(n, ty)
    assert time.process_time() - start < 1.0          # ~17k calls; about 20 ms here


def test_errors_from_estimate(model):
    with pytest.raises(UsageError, match="not in model"):
        model.estimate({"blk.999.attn_q.weight": "q8_0"})
    with pytest.raises(UsageError):
        model.tensor_loss("nope", "q8_0")
    with pytest.raises(UnknownQuantTypeError):
        model.tensor_loss("blk.0.attn_q.weight", "q9_0")


def test_fitted_types_are_labelled(model, mixes):
    mix = dict(mixes["Q8_0"], **{"blk.5.ffn_up_exps.weight": "tq2_0"})
    e = model.estimate(mix)
    assert any("fitted error line: tq2_0" in a for a in e.assumptions)
    assert "fitted" not in " ".join(model.estimate(mixes["Q8_0"]).assumptions)


def test_band_widens_away_from_calibration_and_off_model(model, mixes):
    seed, iq2 = model.estimate(mixes["seed"]), model.estimate(mixes["IQ2_KS"])
    width = lambda e: math.log(e.ppl_ratio_high) / math.log(e.ppl_ratio_low)   # noqa: E731
    assert width(iq2) > width(seed)
    assert seed.constants_kind == "measured" and "Qwen3-235B-A22B" in seed.constants
    llama = llama_models()["LLaMA-3-8B"]            # no measurement for a dense llama: the prior and its band
    off = QualityModel.build(llama).estimate(llama_mix(llama, "Q4_K_M"))
    assert off.constants_kind == "prior" and off.constants.startswith("prior only")
    assert width(off) > width(seed)


# ------------------------------------------------------------------------------------------ imatrix sharpening

def tiny_moe():
    params = ModelParams(arch="qwen3moe", n_layer=8, n_embd=256, n_vocab=512, n_head=4, n_head_kv=2, head_dim=64,
                         n_expert=4, n_expert_used=2, n_ff_exp=128)
    return build(params, "tiny-moe", "test")


def imatrix_for(tmap, scale_of) -> Imatrix:
    entries = {}
    for t in tmap.tensors:
        if t.n_dims >= 2 and not t.role.endswith("norm"):
            v = np.full(t.ne0 * t.n_expert, scale_of(t), np.float32)
            entries[t.name] = ImatrixEntry(t.name, 1, v, t.n_expert)
    return Imatrix(entries, 10, "test", "dat")


def test_imatrix_sharpens_within_roles():
    tmap = tiny_moe()
    base = QualityModel.build(tmap)
    sharp = QualityModel.build(tmap, imatrix=imatrix_for(tmap, lambda t: 3.0 if t.layer == 4 else 1.0))
    q = [f"blk.{i}.attn_q.weight" for i in range(8)]
    assert sharp.importance[q[4]] > base.importance[q[4]]
    assert sharp.importance[q[3]] < base.importance[q[3]]
    assert sum(sharp.importance[n] for n in q) == pytest.approx(sum(base.importance[n] for n in q))
    # a uniform imatrix changes nothing
    flat = QualityModel.build(tmap, imatrix=imatrix_for(tmap, lambda t: 7.0))
    assert all(flat.importance[n] == pytest.approx(v) for n, v in base.importance.items())
    assert any("sharpened by imatrix" in a for a in sharp.assumptions)


def test_imatrix_ratio_is_clamped():
    tmap = tiny_moe()
    base = QualityModel.build(tmap)
    sharp = QualityModel.build(tmap, imatrix=imatrix_for(tmap, lambda t: 1000.0 if t.layer == 4 else 1.0))
    boost = lambda i: sharp.importance[f"blk.{i}.attn_q.weight"] / base.importance[f"blk.{i}.attn_q.weight"]  # noqa: E731
    # the outlier layer is capped at 4x the role median; the other layers keep their relative weights
    assert boost(4) / boost(3) == pytest.approx(4.0)
    assert boost(3) == pytest.approx(boost(5))


def test_imatrix_path_and_wrong_model(tmp_path):
    tmap = tiny_moe()
    p = tmp_path / "i.gguf"
    write_imatrix_gguf(p, imatrix_for(tmap, lambda t: 2.0).entries)
    assert QualityModel.build(tmap, imatrix=p).importance
    bad = Imatrix({"blk.0.attn_q.weight": ImatrixEntry("blk.0.attn_q.weight", 1, np.ones(3, np.float32))},
                  None, None, "dat")
    with pytest.raises(PlannerError, match="needs"):
        QualityModel.build(tmap, imatrix=bad)


# ------------------------------------------------------------------------------------------ user calibration

def test_calibration_row_overrides_a_tensor(tmp_path, model, mixes):
    p = tmp_path / "cal.csv"
    p.write_text("# measured with llama-perplexity --kl-divergence\n"
                 "tensor,type,kld,delta_ppl,ppl_base\n"
                 "blk.10.ffn_down_exps.weight,iq4_k,0.0123,,\n")
    m = QualityModel.build(builtin("qwen3-235b-a22b"), calibration=p)
    assert m.tensor_loss("blk.10.ffn_down_exps.weight", "iq4_k") == pytest.approx(0.0123 / m.k)
    assert m.tensor_loss("blk.10.ffn_down_exps.weight", "iq3_k") == model.tensor_loss(
        "blk.10.ffn_down_exps.weight", "iq3_k")                                   # other types predicted
    assert m.tensor_loss("blk.11.ffn_down_exps.weight", "iq4_k") == model.tensor_loss(
        "blk.11.ffn_down_exps.weight", "iq4_k")                                   # other tensors predicted
    seed = mixes["seed"]
    delta = m.estimate(seed).loss - model.estimate(seed).loss
    assert delta == pytest.approx(0.0123 / m.k - model.tensor_loss("blk.10.ffn_down_exps.weight", "iq4_k"))
    assert any("user calibration" in a for a in m.estimate(seed).assumptions)


def test_calibration_regex_row_shares_one_measurement(tmp_path):
    p = tmp_path / "cal.csv"
    p.write_text("tensor,type,delta_ppl,ppl_base\n"
                 r"ffn_(gate|up)_exps,IQ3_K,0.10,5.3141" "\n")
    tmap = builtin("qwen3-235b-a22b")
    m = QualityModel.build(tmap, calibration=p)
    names = [t.name for t in tmap.tensors if re.search(r"ffn_(gate|up)_exps", t.name)]
    total = sum(m.tensor_loss(n, "iq3_k") for n in names) * m.k
    assert total == pytest.approx(math.log(5.4141 / 5.3141))
    # shared in proportion to the prior: the first-eighth layers take more
    assert m.tensor_loss(names[0], "iq3_k") > m.tensor_loss(names[100], "iq3_k")


def test_calibration_first_row_wins_and_unmatched_rows_are_noted(tmp_path):
    p = tmp_path / "cal.csv"
    p.write_text("tensor,type,kld\nblk.0.attn_q.weight,q4_K,0.01\nattn_q,q4_K,0.5\nno_such_tensor,q4_K,0.2\n")
    tmap = builtin("qwen3-235b-a22b")
    m = QualityModel.build(tmap, calibration=p)
    assert m.tensor_loss("blk.0.attn_q.weight", "q4_K") * m.k == pytest.approx(0.01)
    assert any("lines 4" in a for a in m.assumptions)


@pytest.mark.parametrize("text, fragment", [
    pytest.param("", "empty", id="empty-file"),
    pytest.param("tensor,kld\nx,0.1\n", "lacks type", id="no-type-column"),
    pytest.param("tensor,type,ppl\nx,q4_K,5\n", "kld or delta_ppl", id="no-measure-column"),
    pytest.param("tensor,type,kld\nattn_q,q4_K,0.1,extra\n", "fields", id="extra-field"),
    pytest.param("tensor,type,kld\n\"ffn_(up\",q4_K,0.1\n", "regex", id="bad-regex"),
    pytest.param("tensor,type,kld\nattn_q,q4_kk,0.1\n", "unknown quant type", id="unknown-type"),
    pytest.param("tensor,type,kld\nattn_q,q4_K,abc\n", "not a number", id="non-numeric"),
    pytest.param("tensor,type,kld\nattn_q,q4_K,nan\n", "nan", id="nan-value"),
    pytest.param("tensor,type,delta_ppl\nattn_q,q4_K,0.1\n", "ppl_base", id="delta-without-base"),
    pytest.param("tensor,type,kld,delta_ppl\nattn_q,q4_K,,\n", "neither", id="no-value"),
    pytest.param("tensor,type,kld\n,q4_K,0.1\n", "empty tensor", id="empty-tensor"),
    pytest.param("tensor,type,delta_ppl,ppl_base\nattn_q,q4_K,-6,5\n", "not a perplexity", id="negative-ppl"),
])
def test_malformed_calibration(tmp_path, text, fragment):
    p = tmp_path / "cal.csv"
    p.write_text(text)
    with pytest.raises(UsageError) as info:
        read_calibration(p)
    assert fragment.lower() in str(info.value).lower()
    assert str(p) in str(info.value)


def test_missing_calibration_file(tmp_path):
    with pytest.raises(PlannerError, match="cannot read"):
        QualityModel.build(builtin("qwen3-235b-a22b"), calibration=tmp_path / "none.csv")


def test_negative_measurement_is_clamped(tmp_path):
    p = tmp_path / "cal.csv"
    p.write_text("tensor,type,kld\nattn_q,q4_K,-0.00002\n")
    cal = read_calibration(p)
    assert cal.rows[0].ln_ratio == 0.0 and "negative" in cal.notes[0]


# ------------------------------------------------------------------------------------------ validation, docs

LLAMA_POINTS = {  # llama.cpp PR 6936 "LLaMA 2 vs. LLaMA 3 comparison": Mean PPL ratio vs FP16, no imatrix
    ("LLaMA-2-7B", "Q8_0"): 1.000689, ("LLaMA-2-7B", "Q6_K"): 1.002406, ("LLaMA-2-7B", "Q4_K_M"): 1.014242,
    ("LLaMA-2-7B", "Q2_K"): 1.107955, ("LLaMA-3-8B", "Q8_0"): 1.000425, ("LLaMA-3-8B", "Q6_K"): 1.003490,
    ("LLaMA-3-8B", "Q4_K_M"): 1.028160, ("LLaMA-3-8B", "Q2_K"): 1.564849,
}


def llama_models():
    def make(name, vocab, kv, ff):
        return build(ModelParams(arch="llama", n_layer=32, n_embd=4096, n_vocab=vocab, n_head=32, n_head_kv=kv,
                                 head_dim=128, n_ff=ff), name, "test")
    return {"LLaMA-2-7B": make("LLaMA-2-7B", 32000, 32, 11008), "LLaMA-3-8B": make("LLaMA-3-8B", 128256, 8, 14336)}


def llama_mix(tmap, ftype):
    """Mainline llama_tensor_get_type for a dense LLaMA (no imatrix)."""
    n, gqa = tmap.params.n_layer, tmap.params.n_gqa

    def choose(t):
        if ftype in ("Q8_0", "Q6_K"):
            return ftype.lower().replace("_k", "_K")
        if t.role == "output":
            return "q6_K"
        if ftype == "Q4_K_M":
            return "q6_K" if t.role in ("attn_v", "ffn_down") and use_more_bits(t.layer, n) else "q4_K"
        if t.role == "attn_v":
            return "q4_K" if gqa >= 4 else "q3_K"
        return "q3_K" if t.role in ("ffn_down", "attn_output") else "q2_K"
    return mix_by_role(tmap, choose)


def test_llama_validation_points():
    """Held-out published ratios: inside the transferred band; the TOML's uncertainty constants recomputed."""
    from planner.quality import _prior
    k0 = calibration_fit().k
    log_k, by_model = [], {}
    for name, tmap in llama_models().items():
        m = QualityModel.build(tmap, has_imatrix=False)
        for ftype in ("Q8_0", "Q6_K", "Q4_K_M", "Q2_K"):
            e = m.estimate(llama_mix(tmap, ftype))
            published = LLAMA_POINTS[(name, ftype)]
            assert e.ppl_ratio_low <= published <= e.ppl_ratio_high, (name, ftype, e)
            k_implied = math.log(published) / e.loss
            by_model.setdefault(name, []).append((math.log(e.loss), math.log(k_implied)))
            if ftype != "Q8_0":
                log_k.append(math.log(k_implied / k0))
    rms = math.sqrt(sum(x * x for x in log_k) / len(log_k))
    assert rms == pytest.approx(_prior()["uncertainty"]["transfer_sigma"], abs=0.05)
    slopes = [np.polyfit(*zip(*pts[1:], strict=True), 1)[0] for pts in by_model.values()]   # Q8_0 left out
    assert max(abs(s) for s in slopes) == pytest.approx(_prior()["uncertainty"]["shape_per_efold"], abs=0.02)


def test_docs_state_the_calibrated_constants():
    text = DOCS.read_text()
    assert f"k = {calibration_fit().k:.3f}" in text
    for dist in ("gaussian", "outlier_cols"):
        assert f"{calibration_fit('matrix', dist).k:.3f}" in text
    assert f"{calibration_fit('active_weight', 'student_t5').k:.3f}" in text
