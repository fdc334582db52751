"""llama-quantize emulation: real ik outputs, the seed card, per-ftype rules, parsing and errors."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.errors import (
    RecipeError,
    RegexDialectError,
    UnknownQuantTypeError,
    UnsupportedTensorSizeError,
    UsageError,
)
from planner.quantize import (
    QuantizeSpec,
    QuantizeState,
    Rule,
    format_size_line,
    format_type_counts,
    ftype_names,
    get_ftype,
    is_quantizable,
    parse_custom_q,
    parse_recipe_text,
    quantize,
    target_type,
)
from planner.quants import catalogue, pad
from planner.regexes import compile_user_regex
from planner.tensors import ModelParams, TensorInfo, TensorMap, build, builtin

SEED_CARD = Path(__file__).resolve().parent / "fixtures" / "seed" / "000_350d834170176196.txt"   # copy of ../shared/seed
QUANTIZED_FIXTURES = ["tiny-a-seed-mix-IQ3_K.gguf", "tiny-a-IQ4_KS.gguf", "tiny-a-Q4_K_M.gguf",
                      "tiny-b-seed-mix-IQ3_K.gguf", "tiny-a-kt-ks-r8.gguf"]


# ---------------------------------------------------------------------------- helpers

def source_map(manifest: dict, key: str) -> TensorMap:
    """The bf16 source model of a fixture, from the manifest (no GGUF reader needed)."""
    s = manifest["sources"][key]
    params = ModelParams(arch="qwen3moe", n_layer=s["layers"], n_embd=s["hidden"], n_vocab=s["vocab"],
                         n_head=s["heads"], n_head_kv=s["kv_heads"], head_dim=s["head_dim"],
                         n_expert=s["experts"], n_expert_used=s["experts_used"], n_ff_exp=s["expert_ffn"])
    tensors = tuple(TensorInfo(t["name"], tuple(t["shape"]), t["type"])
                    for t in manifest["files"][s["file"]]["tensors"])
    return TensorMap(name=key, params=params, tensors=tensors, source=s["file"])


@functools.cache
def model(name: str) -> TensorMap:
    if name == "moe8":   # a Mixtral-like 8-expert qwen3moe: mainline's n_expert == 8 rules fire here
        params = ModelParams(arch="qwen3moe", n_layer=16, n_embd=2048, n_vocab=32000, n_head=32, n_head_kv=4,
                             head_dim=64, n_expert=8, n_expert_used=2, n_ff_exp=1024)
        return build(params, "moe8", "test")
    return builtin(name)


@functools.cache
def types_of(model_name: str, spec: QuantizeSpec) -> dict[str, str]:
    return {r.name: r.type_name for r in quantize(model(model_name), spec).tensors}


def seed_recipe_block() -> str:
    return re.search(r'custom="\n(.*?)"\n', SEED_CARD.read_text(), re.S).group(1)


# ---------------------------------------------------------------------------- real llama-quantize outputs

@pytest.mark.parametrize("fixture", QUANTIZED_FIXTURES)
def test_ik_fixture_every_tensor(ik_manifest, fixture):
    f = ik_manifest["files"][fixture]
    rules = parse_custom_q(f["custom_q"]) if f["custom_q"] else ()
    fp = quantize(source_map(ik_manifest, f["source"]), QuantizeSpec(base_type=f["base_type"], custom_q=rules))
    got = [(r.name, r.type_name, list(r.shape), r.nbytes) for r in fp.tensors]
    want = [(t["name"], t["type"], t["shape"], t["nbytes"]) for t in f["tensors"]]
    assert got == want
    assert fp.type_counts == f["type_counts"]
    # the data section: every tensor padded to 32 bytes, right after the (padded) header
    assert f["data_start"] + fp.data_bytes == f["file_size_bytes"]


def test_ik_fixture_row_size_fallbacks_are_explained(ik_manifest):
    # tiny-b: 320-wide rows; iq6_k -> q8_0, iq3_k -> iq4_nl, and 192-wide ffn_down iq4_k -> q5_0
    f = ik_manifest["files"]["tiny-b-seed-mix-IQ3_K.gguf"]
    fp = quantize(source_map(ik_manifest, "tiny-b-bf16"),
                  QuantizeSpec(base_type="IQ3_K", custom_q=parse_custom_q(f["custom_q"])))
    by = {r.name: r for r in fp.fallbacks}
    assert "iq6_k -> q8_0" in by["blk.0.attn_q.weight"].fallback
    assert "iq3_k -> iq4_nl" in by["blk.1.ffn_up_exps.weight"].fallback
    assert "ne0=192" in by["blk.0.ffn_down_exps.weight"].fallback
    assert by["blk.0.ffn_down_exps.weight"].reason.startswith("custom rule 4 (")
    assert "token_embd.weight" not in by   # q8_0 fits 320-wide rows


def test_ik_fixture_repacked_and_short_rules(ik_manifest):
    # kt-ks-r8: the unanchored 'attn' rule is last, so attn_v keeps iq5_ks (rule 3) and norms stay f32
    f = ik_manifest["files"]["tiny-a-kt-ks-r8.gguf"]
    fp = quantize(source_map(ik_manifest, "tiny-a-bf16"),
                  QuantizeSpec(base_type=f["base_type"], custom_q=parse_custom_q(f["custom_q"])))
    by = {r.name: r for r in fp.tensors}
    assert by["blk.0.attn_v.weight"].reason == "custom rule 3 (attn_v=iq5_ks)"
    assert by["blk.0.attn_q_norm.weight"].reason == "not quantized: 1-D"
    assert by["token_embd.weight"].reason == "ftype IQ4_K default"
    assert by["output.weight"].reason == "ftype rule: output -> q6_K"


# ---------------------------------------------------------------------------- the seed card

def test_seed_card_footprint():
    rules = parse_custom_q(parse_recipe_text(seed_recipe_block()))
    fp = quantize(builtin("qwen3-235b-a22b"), QuantizeSpec(base_type="IQ3_K", custom_q=rules, has_imatrix=True))
    assert f"{fp.total_bytes / 2**30:.3f}" == "106.830"
    assert f"{fp.bpw:.3f}" == "3.903"
    assert fp.type_counts == {"f32": 471, "q8_0": 2, "iq3_k": 188, "iq4_k": 94, "iq6_k": 376}
    assert format_size_line(fp) == "106.830 GiB (3.903 BPW)"
    card = SEED_CARD.read_text()
    block = card[card.index("  f32:"):card.index("\n\nFinal estimate")]
    assert format_type_counts(fp.type_counts) == block
    assert fp.data_bytes >= fp.total_bytes and not fp.fallbacks


def test_seed_recipe_items():
    assert parse_recipe_text(seed_recipe_block()) == [
        r"blk\..*\.attn_k.*=iq6_k", r"blk\..*\.attn_q.*=iq6_k", r"blk\..*\.attn_v.*=iq6_k",
        r"blk\..*\.attn_output.*=iq6_k", r"token_embd\.weight=q8_0", r"output\.weight=q8_0",
        r"blk\..*\.ffn_down_exps\.weight=iq4_k", r"blk\..*\.ffn_(gate|up)_exps\.weight=iq3_k"]


def test_parse_recipe_text_mirrors_grep_and_sed():
    text = "\n# heading\nA=q8_0\n\n\n  # indented: grep -v '^#' keeps it\nB=q4_K,C=q5_K\n   \n"
    assert parse_recipe_text(text) == ["A=q8_0", "  # indented: grep -v '^#' keeps it", "B=q4_K", "C=q5_K"]
    assert parse_recipe_text("# only comments\n\n") == []


def test_format_type_counts_short_names_use_llama_cpp_width():
    assert format_type_counts({"q8_0": 3, "f32": 12}) == " f32:   12 tensors\nq8_0:    3 tensors"


# ---------------------------------------------------------------------------- ftypes

FACTS_IK = """Q4_0 2 q4_0|Q4_1 3 q4_1|Q5_0 8 q5_0|Q5_1 9 q5_1|Q6_0 135 q6_0|Q8_0 7 q8_0|Q8_KV 149 q8_KV|MXFP4 38 mxfp4|
MXFP4_R8 351 mxfp4_r8|F16 1 f16|BF16 32 bf16|BF16_R16 232 bf16_r16|F32 0 f32|Q2_K 10 q2_K|Q2_K_S 21 q2_K|
Q2_K_R4 210 q2_k_r4|Q3_K 12 q3_K|Q3_K_S 11 q3_K|Q3_K_M 12 q3_K|Q3_K_L 13 q3_K|Q3_K_R4 211 q3_k_r4|Q4_K 15 q4_K|
Q4_K_S 14 q4_K|Q4_K_M 15 q4_K|Q4_K_R4 214 q4_k_r4|Q5_K 17 q5_K|Q5_K_S 16 q5_K|Q5_K_M 17 q5_K|Q5_K_R4 216 q5_k_r4|
Q6_K 18 q6_K|Q6_K_R4 218 q6_k_r4|Q8_K_R8 399 q8_k_r8|Q8_KV_R8 398 q8_KV_r8|IQ1_S 24 iq1_s|IQ1_S_R4 224 iq1_s_r4|
IQ1_M 31 iq1_m|IQ1_M_R4 231 iq1_m_r4|IQ1_BN 136 iq1_bn|IQ2_BN 137 iq2_bn|IQ2_BN_R4 337 iq2_bn_r4|
IQ2_XXS 19 iq2_xxs|IQ2_XXS_R4 219 iq2_xxs_r4|IQ2_XS 20 iq2_xs|IQ2_XS_R4 220 iq2_xs_r4|IQ2_S 28 iq2_xs|
IQ2_M 29 iq2_s|IQ2_M_R4 229 iq2_s_r4|IQ3_XXS 23 iq3_xxs|IQ3_XXS_R4 223 iq3_xxs_r4|IQ3_XS 22 iq3_s|
IQ3_S 26 iq3_s|IQ3_S_R4 226 iq3_s_r4|IQ3_M 27 iq3_s|IQ4_NL 25 iq4_nl|IQ4_NL_R4 225 iq4_nl_r4|IQ4_XS 30 iq4_xs|
IQ4_XS_R8 230 iq4_xs_r8|Q4_0_R8 202 q4_0_r8|Q5_0_R4 208 q5_0_r4|Q6_0_R4 335 q6_0_r4|Q8_0_R8 207 q8_0_r8|
IQ2_K 138 iq2_k|IQ2_K_R4 338 iq2_k_r4|IQ2_KS 147 iq2_ks|IQ2_KL 155 iq2_kl|IQ3_K 139 iq3_k|IQ3_K_R4 339 iq3_k_r4|
IQ3_KS 154 iq3_ks|IQ3_KL 146 iq3_k|IQ4_K 140 iq4_k|IQ4_K_R4 340 iq4_k_r4|IQ4_KS 145 iq4_ks|
IQ4_KS_R4 345 iq4_ks_r4|IQ4_KSS 148 iq4_kss|IQ5_K 141 iq5_k|IQ5_K_R4 341 iq5_k_r4|IQ5_KS 150 iq5_ks|
IQ5_KS_R4 350 iq5_ks_r4|IQ6_K 142 iq6_k|IQ1_KT 156 iq1_kt|IQ2_KT 151 iq2_kt|IQ3_KT 152 iq3_kt|IQ4_KT 153 iq4_kt|
Q4_0_4_4 33 q4_0_4x4|Q4_0_4_8 34 q4_0_4x8|Q4_0_8_8 35 q4_0_8x8"""


def _facts(text: str) -> list[tuple[str, int, str]]:
    return [(n, int(i), d) for n, i, d in (e.split() for e in text.replace("\n", "").split("|"))]


@pytest.mark.parametrize("name,fid,default", _facts(FACTS_IK))
def test_every_ik_ftype_of_the_facts_table(name, fid, default):
    f = get_ftype(name, "ik")
    assert (f.id, f.default_type) == (fid, default)
    assert "ik" in catalogue().get(default).engines


@pytest.mark.parametrize("name,fid,default", _facts(
    "Q4_0 2 q4_0|Q8_0 7 q8_0|Q4_K_M 15 q4_K|Q5_K_S 16 q5_K|IQ2_S 28 iq2_xs|IQ3_XS 22 iq3_s|MXFP4_MOE 38 mxfp4|"
    "TQ1_0 36 tq1_0|TQ2_0 37 tq2_0|Q1_0 40 q1_0_g128|Q2_0 41 q2_0|BF16 32 bf16"))
def test_mainline_ftypes(name, fid, default):
    f = get_ftype(name, "mainline")
    assert (f.id, f.default_type) == (fid, default)
    assert "mainline" in catalogue().get(default).engines


def test_every_ftype_default_is_storable_by_its_engine():
    for engine in ("ik", "mainline"):
        for name in ftype_names(engine):
            assert engine in catalogue().get(get_ftype(name, engine).default_type).engines, (engine, name)


@pytest.mark.parametrize("arg,engine,name", [
    ("q4_k_m", "ik", "Q4_K_M"),     # upper-cased like try_parse_ftype
    ("iq3_k", "ik", "IQ3_K"),
    ("12", "ik", "Q3_K"),           # numeric id: the first QUANT_OPTIONS entry with that id (the alias)
    ("15", "mainline", "Q4_K"),
    (0, "ik", "F32"),               # F32 comes before COPY for id 0
    ("139", "ik", "IQ3_K"),
    ("copy", "mainline", "COPY"),
])
def test_get_ftype_resolution(arg, engine, name):
    assert get_ftype(arg, engine).name == name


@pytest.mark.parametrize("arg,engine,needle", [
    ("Q4_K_X", "ik", "Q4_K"),            # close match
    ("IQ4_KS", "mainline", "ik"),         # an ik-only ftype named for mainline
    ("MXFP4_MOE", "ik", "mainline"),      # a mainline-only ftype named for ik
    ("nonsense", "ik", "known:"),
])
def test_bad_ftype_names(arg, engine, needle):
    with pytest.raises(UnknownQuantTypeError) as ei:
        get_ftype(arg, engine)
    assert needle in str(ei.value)


def test_unknown_engine():
    with pytest.raises(UsageError):
        get_ftype("Q4_0", "vllm")


# ---------------------------------------------------------------------------- default rules per ftype

B, D, M8, TB = "qwen3-235b-a22b", "qwen3-32b", "moe8", "tiny-b"
IK, ML = "ik", "mainline"

RULE_CASES = [
    # engine, model, ftype, has_imatrix, tensor, expected
    # -- Q4_K_M on a 128-expert MoE
    (IK, B, "Q4_K_M", False, "blk.0.attn_v.weight", "q8_0"),           # ik: n_expert >= 4 -> q8_0
    (IK, B, "Q4_K_M", False, "blk.0.attn_k.weight", "q8_0"),           # ik: attn_k gets the same bump
    (IK, B, "Q4_K_M", False, "blk.0.attn_q.weight", "q4_K"),           # no rule: the default
    (IK, B, "Q4_K_M", False, "blk.0.attn_output.weight", "q5_K"),      # MoE attn_output -> q5_K
    (IK, B, "Q4_K_M", False, "blk.0.ffn_down_exps.weight", "q6_K"),    # use_more_bits: layer < n/8 (11)
    (IK, B, "Q4_K_M", False, "blk.11.ffn_down_exps.weight", "q4_K"),   # (11-11) % 3 != 2
    (IK, B, "Q4_K_M", False, "blk.13.ffn_down_exps.weight", "q6_K"),   # (13-11) % 3 == 2
    (IK, B, "Q4_K_M", False, "blk.81.ffn_down_exps.weight", "q4_K"),   # (81-11) % 3 == 1
    (IK, B, "Q4_K_M", False, "blk.82.ffn_down_exps.weight", "q6_K"),   # layer >= 7n/8 (82)
    (IK, B, "Q4_K_M", False, "blk.5.ffn_gate_exps.weight", "q4_K"),    # gate/up untouched
    (IK, B, "Q4_K_M", False, "output.weight", "q6_K"),                 # output bump
    (IK, B, "Q4_K_M", False, "token_embd.weight", "q4_K"),             # token_embd keeps the default
    # -- the same ftype in mainline
    (ML, B, "Q4_K_M", False, "blk.0.attn_v.weight", "q6_K"),           # mainline bumps only n_expert == 8
    (ML, B, "Q4_K_M", False, "blk.12.attn_v.weight", "q4_K"),          # more_bits on i_attention_wv = 12
    (ML, B, "Q4_K_M", False, "blk.0.attn_k.weight", "q4_K"),           # no attn_k bump for 128 experts
    (ML, B, "Q4_K_M", False, "blk.0.attn_output.weight", "q4_K"),      # MoE attn_output only for 8 experts
    (ML, B, "Q4_K_M", False, "blk.13.ffn_down_exps.weight", "q6_K"),   # ffn_down use_more_bits as in ik
    (ML, M8, "Q4_K_M", False, "blk.3.attn_v.weight", "q8_0"),          # mainline n_expert == 8 -> q8_0
    (ML, M8, "Q4_K_M", False, "blk.3.attn_k.weight", "q8_0"),
    (ML, M8, "Q4_K_M", False, "blk.3.attn_output.weight", "q5_K"),
    # -- dense Qwen3-32B (gqa 8, 64 layers)
    (IK, D, "Q4_K_M", False, "blk.0.attn_v.weight", "q6_K"),           # more_bits_wv on a dense model
    (IK, D, "Q4_K_M", False, "blk.9.attn_v.weight", "q5_K"),           # not more_bits: gqa >= 4 bump
    (IK, D, "Q4_K_M", False, "blk.0.attn_output.weight", "q4_K"),      # dense attn_output: no Q4_K_M rule
    (IK, D, "Q3_K_M", False, "blk.1.attn_v.weight", "q5_K"),           # Q3_K_M: first two attn_v
    (IK, D, "Q3_K_M", False, "blk.2.attn_v.weight", "q4_K"),
    (IK, D, "Q3_K_M", False, "blk.3.ffn_down.weight", "q5_K"),         # layer < n/16 (4)
    (IK, D, "Q3_K_M", False, "blk.4.ffn_down.weight", "q4_K"),
    (IK, D, "Q3_K_M", False, "blk.0.attn_output.weight", "q4_K"),
    (IK, D, "Q3_K_M", False, "blk.0.ffn_up.weight", "q3_K"),
    (IK, D, "Q3_K_L", False, "blk.5.attn_v.weight", "q5_K"),
    (IK, D, "Q3_K_L", False, "blk.40.ffn_down.weight", "q5_K"),
    (IK, D, "Q3_K_L", False, "blk.0.attn_output.weight", "q5_K"),
    (IK, D, "Q2_K", False, "blk.0.attn_v.weight", "q4_K"),             # Q2_K: gqa >= 4
    (IK, D, "Q2_K", False, "blk.30.ffn_down.weight", "q3_K"),
    (IK, D, "Q2_K", False, "blk.0.attn_output.weight", "q3_K"),
    (IK, D, "Q2_K", False, "token_embd.weight", "q2_K"),
    (IK, D, "Q2_K_S", True, "blk.7.ffn_down.weight", "q4_K"),          # Q2_K_S: first n/8 ffn_down
    (IK, D, "Q2_K_S", True, "blk.8.ffn_down.weight", "q2_K"),
    (IK, D, "Q4_K_S", False, "blk.3.attn_v.weight", "q5_K"),           # first 4 attn_v
    (IK, D, "Q4_K_S", False, "blk.4.attn_v.weight", "q5_K"),           # ... and the gqa >= 4 bump after that
    (IK, D, "Q4_K_S", False, "blk.7.ffn_down.weight", "q5_K"),
    (IK, D, "Q4_K_S", False, "blk.8.ffn_down.weight", "q4_K"),
    (IK, D, "Q5_K_S", False, "blk.0.attn_v.weight", "q5_K"),           # Q5_K_S stops the chain: no gqa bump
    (IK, D, "Q5_K_M", False, "blk.0.ffn_down.weight", "q6_K"),
    (IK, D, "Q6_K", False, "blk.0.attn_v.weight", "q6_K"),             # q6_K is not in the bump map
    (IK, D, "Q8_0", False, "output.weight", "q8_0"),                   # q8_0 output is kept
    (IK, B, "Q8_0", False, "blk.0.ffn_down_exps.weight", "q8_0"),
    (IK, D, "IQ4_XS", False, "blk.0.attn_v.weight", "iq5_k"),          # IQ4 family: gqa >= 2 -> iq5_k
    (IK, D, "IQ4_XS", False, "blk.7.ffn_down.weight", "q5_K"),         # no imatrix: first n/8 ffn_down
    (IK, D, "IQ4_XS", True, "blk.7.ffn_down.weight", "iq4_xs"),        # ... not with an imatrix
    (IK, D, "IQ4_XS", False, "blk.0.attn_output.weight", "iq4_xs"),
    (IK, D, "IQ4_NL", False, "blk.0.ffn_down.weight", "q5_K"),
    (IK, D, "IQ4_KS", False, "blk.1.attn_v.weight", "iq5_k"),
    (IK, D, "IQ4_KS", False, "output.weight", "q6_K"),
    (IK, D, "IQ5_K", False, "blk.0.attn_v.weight", "iq5_k"),           # 8B/70B-only rule: chain stops
    (IK, D, "IQ6_K", False, "output.weight", "iq6_k"),                 # iq6_k output is kept
    (IK, D, "IQ2_K", False, "blk.0.attn_v.weight", "iq4_k"),           # IQ2_K: gqa >= 2 -> iq4_k
    (IK, D, "IQ2_K", False, "blk.0.attn_output.weight", "iq3_k"),      # dense attn_output -> iq3_k
    (IK, D, "IQ2_K", False, "output.weight", "q5_K"),                  # IQ2_K/IQ3_K family output q5_K
    (IK, D, "IQ2_K", False, "blk.0.ffn_down.weight", "iq2_k"),         # no ffn_down bump for IQ*_K
    (IK, D, "IQ3_M", False, "blk.0.attn_v.weight", "iq5_k"),
    (IK, D, "IQ3_M", False, "blk.7.ffn_down.weight", "iq4_k"),
    (IK, D, "IQ3_M", False, "blk.8.ffn_down.weight", "iq3_s"),
    (IK, D, "IQ3_M", False, "output.weight", "q6_K"),                  # iq5_k only when tied
    (IK, D, "IQ3_XXS", True, "blk.0.attn_v.weight", "q4_K"),
    (IK, D, "IQ3_XXS", True, "blk.0.attn_k.weight", "iq2_s"),
    (IK, D, "IQ3_XXS", True, "blk.0.attn_q.weight", "iq2_s"),
    (IK, D, "IQ3_XXS", True, "blk.0.ffn_down.weight", "iq3_xxs"),      # with imatrix: no ffn_down rule
    (IK, D, "IQ3_XXS", True, "blk.0.attn_output.weight", "iq3_s"),
    (IK, D, "IQ3_XXS", True, "token_embd.weight", "iq3_s"),
    (IK, D, "IQ3_XXS", True, "output.weight", "q5_K"),
    (IK, B, "IQ3_K", False, "output.weight", "q5_K"),                  # IQ3_K default output
    (IK, B, "IQ3_K", False, "blk.0.attn_output.weight", "q5_K"),
    (IK, B, "IQ3_KL", False, "blk.0.attn_v.weight", "q8_0"),
    (IK, B, "IQ3_KL", False, "blk.0.ffn_down_exps.weight", "iq4_ks"),  # IQ3_KL: use_more_bits -> iq4_ks
    (IK, B, "IQ3_KL", False, "blk.11.ffn_down_exps.weight", "iq3_k"),
    (IK, B, "IQ3_KL", False, "blk.13.ffn_gate_exps.weight", "iq4_ks"),
    (IK, B, "IQ3_KL", False, "blk.12.ffn_up_exps.weight", "iq3_k"),
    (IK, B, "IQ3_KL", False, "output.weight", "q6_K"),                 # not tied: no iq5_k
    (IK, B, "IQ2_KS", False, "blk.0.attn_v.weight", "iq4_k"),          # low-bit group
    (IK, B, "IQ2_KS", False, "blk.0.attn_k.weight", "q4_K"),           # n_expert >= 8
    (IK, B, "IQ2_KS", False, "blk.0.attn_q.weight", "q4_K"),
    (IK, B, "IQ2_KS", False, "blk.10.ffn_down_exps.weight", "q2_K"),   # raw counter < n/8
    (IK, B, "IQ2_KS", False, "blk.11.ffn_down_exps.weight", "iq2_ks"),
    (IK, B, "IQ2_KS", False, "blk.0.attn_output.weight", "q5_K"),
    (IK, B, "IQ2_KS", False, "output.weight", "q5_K"),
    (IK, B, "IQ2_KS", False, "token_embd.weight", "iq2_ks"),
    (IK, B, "IQ1_S_R4", True, "blk.0.attn_v.weight", "iq4_k_r4"),      # IQ1_S_R4's own table
    (IK, B, "IQ1_S_R4", True, "blk.0.attn_k.weight", "q4_k_r4"),
    (IK, B, "IQ1_S_R4", True, "blk.0.ffn_down_exps.weight", "iq3_k_r4"),  # blk.0 ffn for >= 8 experts
    (IK, B, "IQ1_S_R4", True, "blk.0.ffn_gate_exps.weight", "iq3_k_r4"),
    (IK, B, "IQ1_S_R4", True, "blk.1.ffn_gate_exps.weight", "iq1_s_r4"),
    (IK, B, "IQ1_S_R4", True, "blk.1.ffn_down_exps.weight", "q2_k_r4"),   # layer < n/8
    (IK, B, "IQ1_S_R4", True, "blk.20.ffn_down_exps.weight", "iq1_s_r4"),
    (IK, B, "IQ1_S_R4", True, "blk.0.attn_output.weight", "q5_k_r4"),
    (IK, B, "IQ1_S_R4", True, "token_embd.weight", "q2_K"),
    (IK, B, "IQ1_S_R4", True, "output.weight", "q5_K"),
    (IK, B, "IQ2_KT", True, "blk.0.attn_v.weight", "iq4_k"),           # IQ2_KT table
    (IK, B, "IQ2_KT", True, "blk.0.ffn_up_exps.weight", "iq3_k"),
    (IK, B, "IQ2_KT", True, "blk.5.ffn_down_exps.weight", "iq3_k"),
    (IK, B, "IQ2_KT", True, "blk.50.ffn_down_exps.weight", "iq2_kt"),
    (IK, B, "IQ2_KT", True, "blk.0.attn_output.weight", "q5_K"),
    (IK, B, "IQ2_KT", True, "output.weight", "q5_K"),
    (IK, B, "IQ4_K_R4", False, "token_embd.weight", "iq4_k"),          # token_embd is never interleaved
    (IK, B, "IQ4_K_R4", False, "blk.0.ffn_up_exps.weight", "iq4_k_r4"),
    (IK, B, "IQ4_K_R4", False, "blk.0.attn_output.weight", "q5_K"),
    (IK, B, "Q8_0_R8", False, "token_embd.weight", "q8_0"),
    (IK, B, "Q8_0_R8", False, "output.weight", "q8_0_r8"),             # kept, 151936 rows % 8 == 0
    (IK, B, "Q8_0_R8", False, "blk.0.attn_v.weight", "q8_0"),          # the MoE bump names plain q8_0
    (IK, B, "Q8_0_R8", False, "blk.0.attn_q.weight", "q8_0_r8"),
    # -- mainline ftypes
    (ML, B, "IQ2_XXS", True, "blk.0.attn_v.weight", "q4_K"),           # mainline low-bit attn_v -> q4_K
    (ML, B, "IQ2_XXS", True, "blk.0.attn_k.weight", "iq2_xxs"),        # attn_k bump only for 8 experts
    (ML, B, "IQ2_XXS", True, "blk.10.ffn_down_exps.weight", "q2_K"),
    (ML, B, "IQ2_XXS", True, "blk.0.attn_output.weight", "iq2_xxs"),
    (ML, B, "IQ2_XXS", True, "output.weight", "q5_K"),
    (ML, B, "IQ2_XXS", True, "token_embd.weight", "q2_K"),
    (ML, D, "Q3_K_M", False, "blk.1.attn_v.weight", "q5_K"),
    (ML, D, "Q3_K_M", False, "blk.2.attn_v.weight", "q4_K"),
    (ML, D, "Q3_K_M", False, "blk.3.ffn_down.weight", "q5_K"),
    (ML, D, "IQ4_XS", False, "blk.0.attn_v.weight", "q5_K"),           # mainline IQ4_XS: gqa >= 4 -> q5_K
    (ML, D, "Q4_K_M", False, "blk.9.attn_v.weight", "q4_K"),           # no gqa bump in mainline
    (ML, B, "MXFP4_MOE", False, "blk.0.ffn_up_exps.weight", "mxfp4"),  # experts mxfp4, the rest q8_0
    (ML, B, "MXFP4_MOE", False, "blk.0.attn_q.weight", "q8_0"),
    (ML, B, "MXFP4_MOE", False, "output.weight", "q8_0"),
]


@pytest.mark.parametrize("engine,model_name,ftype,imatrix,tensor,expected", RULE_CASES)
def test_default_rules(engine, model_name, ftype, imatrix, tensor, expected):
    spec = QuantizeSpec(base_type=ftype, engine=engine, has_imatrix=imatrix)
    assert types_of(model_name, spec)[tensor] == expected


def test_rule_reasons_name_the_rule():
    fp = quantize(builtin(B), QuantizeSpec(base_type="Q4_K_M"))
    by = {r.name: r for r in fp.tensors}
    assert by["blk.0.attn_v.weight"].reason == "ftype rule: attn_v with n_expert>=4 -> q8_0"
    assert by["blk.13.ffn_down_exps.weight"].reason == "ftype rule: ffn_down with more_bits (Q4_K_M) -> q6_K"
    assert by["blk.0.ffn_gate_inp.weight"].reason == "not quantized: ffn_gate_inp"
    assert by["blk.0.attn_norm.weight"].reason == "not quantized: 1-D"
    assert by["blk.0.attn_q.weight"].reason == "ftype Q4_K_M default"


def test_mainline_writes_in_loader_order():
    # llama_model_loader sorts by block number (globals first), then by name
    names = [r.name for r in quantize(builtin(D), QuantizeSpec(base_type="Q4_K_M", engine=ML)).tensors]
    assert names[:4] == ["output.weight", "output_norm.weight", "token_embd.weight", "blk.0.attn_k.weight"]
    assert names.index("blk.9.ffn_up.weight") < names.index("blk.10.attn_k.weight")


def test_mainline_and_ik_fallback_tables_differ(ik_manifest):
    # 320-wide rows: q5_K falls back to q6_0 in ik but q5_1 in mainline
    tmap = source_map(ik_manifest, "tiny-b-bf16")
    ik = {r.name: r.type_name for r in quantize(tmap, QuantizeSpec(base_type="Q5_K_M")).tensors}
    ml = {r.name: r.type_name for r in quantize(tmap, QuantizeSpec(base_type="Q5_K_M", engine=ML)).tensors}
    assert (ik["blk.0.attn_q.weight"], ml["blk.0.attn_q.weight"]) == ("q6_0", "q5_1")
    assert ik["output.weight"] == ml["output.weight"] == "q8_0"   # output: ne0 % 256 -> q8_0


def test_target_type_alone_matches_a_whole_run():
    for engine in (IK, ML):
        spec = QuantizeSpec(base_type="Q3_K_M", engine=engine)
        tmap = builtin(D)
        whole = {r.name: (r.type_name, r.reason, r.fallback) for r in quantize(tmap, spec).tensors}
        for t in tmap.tensors:
            assert target_type(t, tmap.params, spec) == whole[t.name], t.name


def test_state_threads_counters():
    tmap = builtin(D)
    state = QuantizeState.for_tensors(tmap.tensors)
    assert (state.has_output, state.n_attention_wv) == (True, 64)
    spec = QuantizeSpec(base_type="Q3_K_M")
    got = [target_type(t, tmap.params, spec, state=state)[0] for t in tmap.tensors if "attn_v" in t.name]
    assert got[:3] == ["q5_K", "q5_K", "q4_K"] and state.counters["attention_wv"] == 64


# ---------------------------------------------------------------------------- options and pipeline order

def test_pure_and_float_ftypes_ignore_custom_q():
    rules = parse_custom_q(r"attn_q=q8_0")
    pure = types_of(D, QuantizeSpec(base_type="Q4_K_M", custom_q=rules, pure=True))
    assert pure["blk.0.attn_q.weight"] == pure["output.weight"] == pure["blk.0.attn_v.weight"] == "q4_K"
    f16 = quantize(builtin(D), QuantizeSpec(base_type="F16", custom_q=rules))
    assert f16.type_counts == {"f32": 64 * 4 + 1, "f16": 64 * 7 + 2}   # norms stay f32, every matrix f16


def test_overrides_beat_custom_q_and_skip_the_fallback_check(ik_manifest):
    tmap = source_map(ik_manifest, "tiny-a-bf16")
    spec = QuantizeSpec(base_type="IQ3_K", custom_q=parse_custom_q(r"token_embd\.weight=q8_0,output=q8_0"),
                        token_embedding_type="iq4_ks", output_tensor_type="q6_K")
    by = {r.name: r for r in quantize(tmap, spec).tensors}
    assert (by["token_embd.weight"].type_name, by["token_embd.weight"].reason) == ("iq4_ks", "--token-embedding-type")
    assert by["output.weight"].type_name == "q6_K"


def test_interleaved_types_fall_back_on_rows_and_for_token_embd(ik_manifest):
    tmap = source_map(ik_manifest, "tiny-a-bf16")   # output.weight has 300 rows: 300 % 8 != 0
    spec = QuantizeSpec(base_type="IQ3_K", custom_q=parse_custom_q("output=q8_0_r8,token_embd=iq4_k_r4"))
    by = {r.name: r for r in quantize(tmap, spec).tensors}
    assert by["output.weight"].type_name == "q8_0" and "ne1=300" in by["output.weight"].fallback
    assert by["token_embd.weight"].type_name == "iq4_k"
    assert "row-interleaved" in by["token_embd.weight"].fallback


def test_leave_output_tensor_and_ffn_gate_inp_type():
    spec = QuantizeSpec(base_type="Q4_K_M", leave_output_tensor=True, ffn_gate_inp_type="q8_0")
    got = types_of(B, spec)
    assert got["output.weight"] == "bf16" and got["blk.0.ffn_gate_inp.weight"] == "q8_0"
    t = next(t for t in builtin(B).tensors if t.name == "blk.0.ffn_gate_inp.weight")
    assert is_quantizable(t, spec) and not is_quantizable(t, QuantizeSpec(base_type="Q4_K_M"))
    with pytest.raises(UsageError, match="ik_llama.cpp option"):
        quantize(builtin(B), QuantizeSpec(base_type="Q4_K_M", engine=ML, ffn_gate_inp_type="q8_0"))


def test_copy_keeps_everything():
    fp = quantize(builtin(D), QuantizeSpec(base_type="COPY"))
    assert {r.type_name for r in fp.tensors} == {"bf16", "f32"}


def test_imatrix_refusals():
    with pytest.raises(RecipeError, match="refuses IQ2_XXS without an importance matrix"):
        quantize(builtin(D), QuantizeSpec(base_type="IQ2_XXS"))
    assert types_of(D, QuantizeSpec(base_type="IQ2_XXS", ignore_imatrix_rules=True))["blk.0.attn_q.weight"] \
        == "iq2_xxs"
    # per tensor: a very-low-bit custom type needs imatrix data; token_embd and output are exempt
    with pytest.raises(RecipeError, match="blk.0.ffn_up.weight"):
        quantize(builtin(D), QuantizeSpec(base_type="IQ4_K", custom_q=parse_custom_q("ffn_up=iq2_kt")))
    ok = types_of(D, QuantizeSpec(base_type="IQ4_K", custom_q=parse_custom_q("token_embd=iq2_xxs")))
    assert ok["token_embd.weight"] == "iq2_xxs"


def test_requantize_refused_unless_allowed():
    params = builtin(D).params
    t = TensorInfo("blk.0.attn_q.weight", (5120, 8192), "q8_0")
    with pytest.raises(RecipeError, match="requantizing from type q8_0"):
        target_type(t, params, QuantizeSpec(base_type="Q4_K_M"))
    assert target_type(t, params, QuantizeSpec(base_type="Q4_K_M", allow_requantize=True))[0] == "q4_K"
    assert target_type(t, params, QuantizeSpec(base_type="Q8_0"))[0] == "q8_0"   # same type: copied


def test_unsupported_row_size_names_the_tensor():
    params = builtin(D).params
    t = TensorInfo("blk.0.ffn_down.weight", (100, 64), "bf16")   # 100 fits neither iq4_k nor q5_0
    with pytest.raises(UnsupportedTensorSizeError, match="blk.0.ffn_down.weight"):
        target_type(t, params, QuantizeSpec(base_type="IQ4_K"))
    assert target_type(t, params, QuantizeSpec(base_type="Q4_K_M", engine=ML, custom_q=parse_custom_q(
        "ffn_down=q4_K", ML)))[0] == "f16"   # mainline: fallback does not fit either -> f16


# ---------------------------------------------------------------------------- custom-q parsing

def test_parse_custom_q_ik():
    rules = parse_custom_q([r"blk\.1[0-9]\.ffn=iq4_ks,attn=q8_KV", "out=bf16"])   # arguments append
    assert rules == (Rule(r"blk\.1[0-9]\.ffn", "iq4_ks", 1), Rule("attn", "q8_KV", 2), Rule("out", "bf16", 3))


def test_parse_custom_q_splits_on_the_first_equals():
    with pytest.raises(UnknownQuantTypeError, match="'q8_0=x'"):
        parse_custom_q("a=q8_0=x")


def test_ik_type_names_are_case_sensitive():
    with pytest.raises(UnknownQuantTypeError) as ei:
        parse_custom_q(r"ffn_down=q4_k")
    assert "q4_K" in str(ei.value) and "custom rule 1" in str(ei.value)


def test_mainline_type_in_ik_and_ik_type_in_mainline():
    with pytest.raises(UnknownQuantTypeError, match="only in mainline"):
        parse_custom_q("attn=tq1_0", "ik")
    with pytest.raises(UnknownQuantTypeError, match="only in ik"):
        parse_custom_q("attn=iq4_ks", "mainline")
    with pytest.raises(UnknownQuantTypeError, match="q1_0_g128"):
        parse_custom_q("attn=q1_0", "ik")   # ik spells type 41 q1_0_g128


def test_parse_tensor_type_mainline():
    # NAME lower-cased, TYPE case-insensitive; one item per argument (no comma split)
    assert parse_custom_q(["ATTN_Q=Q4_K", "ffn_down=IQ4_NL"], ML) == (
        Rule("attn_q", "q4_K", 1), Rule("ffn_down", "iq4_nl", 2))
    with pytest.raises(UnknownQuantTypeError):
        parse_custom_q("attn_q=q4_K,ffn=q8_0", ML)


@pytest.mark.parametrize("items,message", [
    ("attn=i32", "not a quantization target"),
    ("=q8_0", "empty pattern"),
    ("attn=", "empty type"),
    ("attn", "has no '='"),
    ("attn=q8_0,", "has no '='"),   # stray comma: an empty rule
])
def test_malformed_rules(items, message):
    with pytest.raises(RecipeError, match=message):
        parse_custom_q(items)


def test_first_matching_rule_wins_unanchored():
    rules = parse_custom_q("attn=q8_0,attn_v=q4_0")
    assert types_of(D, QuantizeSpec(base_type="Q4_K_M", custom_q=rules))["blk.0.attn_v.weight"] == "q8_0"


def test_mainline_manual_override_skips_counters():
    # a --tensor-type match skips the mixture rules, so attn_v counting restarts after it
    spec = QuantizeSpec(base_type="Q3_K_M", engine=ML, custom_q=parse_custom_q([r"blk\.0\.attn_v=q8_0"], ML))
    got = types_of(D, spec)
    assert [got[f"blk.{i}.attn_v.weight"] for i in range(4)] == ["q8_0", "q5_K", "q5_K", "q4_K"]


# ---------------------------------------------------------------------------- regex dialect

@pytest.mark.parametrize("pattern", [
    r"(?<=blk\.)1",          # lookbehind
    r"(?<!x)attn",
    r"(?P<n>attn)",          # Python named group
    r"(?<n>attn)",           # ECMAScript-2018 named group, not in std::regex
    r"(?i)ATTN",             # inline flag
    r"\Aattn",               # Python anchors
    r"attn\Z",
    r"attn\z",
    r"(?>at)tn",             # atomic group
    r"at*+n",                # possessive
    r"[[:digit:]]+",         # POSIX class
    r"(?#c)attn",            # comment
    r"blk\.{,2}",            # {,n}
    r"a{",                   # unescaped brace
    r"[]a]",                 # ']' first in a class
])
def test_regex_dialect_differences_are_refused(pattern):
    with pytest.raises(RegexDialectError):
        compile_user_regex(pattern)
    if "=" not in pattern:   # mainline --tensor-type: one item, split at the first '='
        with pytest.raises(RegexDialectError):
            parse_custom_q(f"{pattern}=q8_0", ML)


@pytest.mark.parametrize("pattern", [
    r"blk\.[0-9]+\.ffn_(up|down)_exps", r"^token_embd\.weight$", r"attn_.*\.weight", r"blk\.(1[0-9]|2[0-3])\.",
    r"ffn_down_exps.*?", r"blk\.\d{2}\.", r"[^a-z]attn", r"(?:attn|ffn)_q", r"attn(?=_q)", r"x\{y\}",
])
def test_shared_dialect_compiles(pattern):
    assert compile_user_regex(pattern).pattern == pattern


def test_python_compile_errors_are_recipe_errors():
    with pytest.raises(RecipeError) as ei:
        compile_user_regex(r"blk\.(1")
    assert not isinstance(ei.value, RegexDialectError)


def test_lookbehind_in_a_rule_names_the_rule():
    # the '=' of (?<= is where llama-quantize splits the rule: refused, with both reasons
    with pytest.raises(RegexDialectError, match=r"custom rule 2 .*lookbehind.*splits"):
        parse_custom_q(r"attn=q8_0,(?<=blk\.1)\.ffn=q4_K")
    with pytest.raises(RegexDialectError, match="lookbehind"):
        parse_custom_q(r"(?<!blk\.1)\.ffn=q4_K")
    with pytest.raises(RecipeError, match="lookahead"):
        parse_custom_q(r"attn(?=_q)=q8_0")


def test_commas_cannot_appear_in_ik_rules():
    with pytest.raises(RecipeError, match="cannot contain one"):
        parse_custom_q(r"blk\.{1,2}\.ffn=q8_0")
    assert parse_custom_q(r"blk\.[0-9]{1,2}\.ffn=q8_0", ML)[0].type_name == "q8_0"   # mainline: no comma split


# ---------------------------------------------------------------------------- properties

_TINY = ModelParams(arch="qwen3moe", n_layer=3, n_embd=256, n_vocab=300, n_head=4, n_head_kv=2, head_dim=64,
                    n_expert=4, n_expert_used=2, n_ff_exp=256)


@settings(max_examples=60, deadline=None)
@given(engine=st.sampled_from(["ik", "mainline"]), data=st.data())
def test_every_ftype_runs_and_sizes_add_up(engine, data):
    name = data.draw(st.sampled_from(ftype_names(engine)))
    spec = QuantizeSpec(base_type=name, engine=engine, has_imatrix=True)
    tmap = build(_TINY, "tiny", "test")   # 256-wide rows fit every block size
    fp = quantize(tmap, spec)
    cat = catalogue()
    for r in fp.tensors:
        qt = cat.get(r.type_name)
        assert engine in qt.engines
        assert r.nbytes == qt.tensor_bytes(r.shape)
    assert fp.total_bytes == sum(r.nbytes for r in fp.tensors)
    assert fp.data_bytes == sum(pad(r.nbytes) for r in fp.tensors)
    assert sum(fp.type_counts.values()) == len(tmap.tensors)
