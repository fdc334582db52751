"""llama-quantize's per-architecture behaviour on the new families, each case a concrete tensor of a built-in checked
against the engine source line that decides it.

ik: ikawrakow/ik_llama.cpp src/llama-quantize.cpp @8337e4cd3861406fc04e0854b1409cd1b027fbc9 (line numbers below).
mainline: ggml-org/llama.cpp src/llama-quant.cpp @007dbbf3fd17eefe9b47fee45f48f7ba5e62b714: tensor_allows_quantization
(ffn_gate_tid2eid never quantized) and llama_tensor_get_type_impl's MXFP4_MOE branch (MoE tensors with ne[2] > 1
-> MXFP4, other tensors -> Q8_0, the output -> Q8_0).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.errors import RecipeError
from planner.mix import mix_from_options
from planner.quantize import QuantizeSpec, default_base_type, keep_prequantized_items, parse_custom_q, quantize
from planner.tensors import TensorInfo, builtin, builtin_names


def _types(name: str, base: str, engine: str = "ik", keep: bool = True, imatrix: bool = False) -> dict[str, str]:
    tm = builtin(name)
    items = keep_prequantized_items(tm) if keep else []
    spec = QuantizeSpec(base_type=base, engine=engine, custom_q=parse_custom_q(items, engine) if items else (),
                        has_imatrix=imatrix)
    return {r.name: r.type_name for r in quantize(tm, spec).tensors}


def test_gpt_oss_mxfp4_experts_are_never_requantized():
    # ik line 1724 (mainline the same): a quantized source tensor with a new type throws unless --allow-requantize
    with pytest.raises(RecipeError, match="blk.0.ffn_gate_exps.weight: requantizing from type mxfp4 is disabled"):
        _types("gpt-oss-20b", "Q4_K_M", keep=False)
    # ... and a rule naming its own type copies it (line 1614: quantize &= tensor->type != new_type)
    ty = _types("gpt-oss-20b", "Q4_K_M")
    assert {ty[f"blk.{i}.ffn_{p}_exps.weight"] for i in range(24) for p in ("gate", "up", "down")} == {"mxfp4"}
    assert ty["blk.0.attn_q.weight"] != "bf16"                       # the bf16 attention is quantized


def test_gpt_oss_keep_rules_are_the_planner_default():
    tm = builtin("gpt-oss-20b")
    assert keep_prequantized_items(tm) == [r"blk\.[0-9]+\.ffn_down_exps\.weight=mxfp4",
                                           r"blk\.[0-9]+\.ffn_gate_exps\.weight=mxfp4",
                                           r"blk\.[0-9]+\.ffn_up_exps\.weight=mxfp4"]
    types, fp = mix_from_options(tm, base_type="IQ4_KS")
    assert fp is not None and types["blk.5.ffn_up_exps.weight"] == "mxfp4"
    assert "custom rule" in next(r.reason for r in fp.tensors if r.name == "blk.5.ffn_up_exps.weight")


def test_gpt_oss_small_tensors_stay_f32():
    ty = _types("gpt-oss-20b", "Q4_K_M")
    assert ty["blk.0.attn_sinks.weight"] == "f32"                    # 1-D: line 1464
    assert ty["blk.0.attn_q.bias"] == "f32"                          # not "...weight": line 1461
    assert ty["blk.0.ffn_down_exps.bias"] == "f32"                   # 2-D, but a bias: line 1461
    assert ty["blk.0.ffn_gate_inp.weight"] == "f32"                  # router: lines 1474-1478


def test_gpt_oss_attn_v_q8_0_for_moe():
    # lines 542-547: attn_v.weight -> Q8_0 when n_expert >= 4
    assert _types("gpt-oss-120b", "IQ4_KS")["blk.3.attn_v.weight"] == "q8_0"


def test_mainline_mxfp4_moe_ftype():
    # mainline MXFP4_MOE: experts (ne2 > 1) MXFP4 (copied, as the source already is), other 2-D Q8_0, output Q8_0
    ty = _types("gpt-oss-20b", "MXFP4_MOE", engine="mainline", keep=False)
    assert _types("deepseek-v4-flash", "Q4_K_M", engine="mainline")["blk.0.ffn_gate_tid2eid.weight"] == "i32"
    assert ty["blk.0.ffn_up_exps.weight"] == "mxfp4"
    assert ty["blk.0.attn_output.weight"] == "q8_0" and ty["output.weight"] == "q8_0"
    assert ty["blk.0.attn_sinks.weight"] == "f32"


def test_mxfp4_moe_size_matches_a_published_file():
    # bartowski/openai_gpt-oss-20b-GGUF README (llama.cpp b6096): gpt-oss-20b-MXFP4.gguf, "Full MXFP4 weights",
    # 12.1GB: experts MXFP4, every other matrix Q8_0 (the MXFP4_MOE ftype)
    fp = quantize(builtin("gpt-oss-20b"), QuantizeSpec(base_type="MXFP4_MOE", engine="mainline"))
    assert abs(fp.total_bytes - 12.1e9) / 12.1e9 < 0.005


def test_deepseek_v4_rules():
    ty = _types("deepseek-v4-flash", "IQ4_KS")
    assert ty["blk.0.ffn_gate_tid2eid.weight"] == "i32"              # integer table: lines 1455-1458
    assert ty["blk.3.exp_probs_b.bias"] == "f32"                     # line 1461
    assert ty["blk.0.hc_attn_base.weight"] == "f32"                  # 1-D: line 1464
    assert ty["blk.0.hc_attn_fn.weight"] == "iq4_ks"                 # a 2-D f32 table is quantized (no exemption)
    assert ty["blk.0.ffn_up_exps.weight"] == "mxfp4"                 # the converter's MXFP4, copied
    assert ty["blk.0.attn_kv.weight"] == "q8_0"                      # converter's Q8_0 kept (and "attn_k": 663)
    assert ty["blk.2.indexer.proj.weight"] == "iq4_ks"
    assert ty["blk.0.ffn_gate_inp.weight"] == "bf16"                 # router: lines 1474-1478


def test_mla_attention_tensors():
    # ik: every name containing "attn_k" (attn_kv_a_mqa, attn_kv_b, attn_k_b) -> Q8_0 when n_expert >= 4, lines
    # 663-667; attn_v_b does not contain "attn_v.weight" and keeps the ftype's type
    ty = _types("deepseek-r1", "IQ4_KS")
    assert ty["blk.3.attn_kv_b.weight"] == ty["blk.3.attn_k_b.weight"] == ty["blk.3.attn_kv_a_mqa.weight"] == "q8_0"
    assert ty["blk.3.attn_v_b.weight"] == "iq4_ks"
    assert ty["blk.3.attn_q_b.weight"] == "iq4_ks"


def test_shared_experts_in_the_iq2_kt_table():
    # IQ2_KT's own table: "_shexp.weight" -> IQ4_K (lines 493-494); routed experts keep the ftype's type
    ty = _types("deepseek-r1", "IQ2_KT", imatrix=True)
    assert ty["blk.3.ffn_up_shexp.weight"] == ty["blk.3.ffn_down_shexp.weight"] == "iq4_k"
    assert ty["blk.30.ffn_up_exps.weight"] == "iq2_kt"


def test_delta_net_state_tensors():
    ty = _types("qwen3-next-80b-a3b", "IQ4_KS")
    assert ty["blk.0.ssm_conv1d.weight"] == "f32"                    # line 1487
    assert ty["blk.0.ssm_a"] == "f32" and ty["blk.0.ssm_dt.bias"] == "f32"   # no "weight" suffix: line 1461
    assert ty["blk.0.ssm_norm.weight"] == "f32"                      # 1-D: line 1464
    assert ty["blk.0.ffn_gate_inp_shexp.weight"] == "f32"            # 1-D shared-expert gate
    assert ty["blk.0.ssm_out.weight"] == ty["blk.0.ssm_ba.weight"] == "iq4_ks"
    assert ty["blk.3.attn_v.weight"] == "q8_0"                       # lines 542-547


def test_dsa_indexer_and_nextn():
    ty = _types("glm-5", "IQ4_KS")
    assert ty["blk.5.indexer.k_norm.weight"] == ty["blk.5.indexer.k_norm.bias"] == "f32"
    assert ty["blk.5.indexer.attn_k.weight"] == "q8_0"               # contains "attn_k": lines 663-667
    assert ty["blk.5.indexer.proj.weight"] == "iq4_ks"
    # llama-quantize has no NextN exemption: the kept MTP block (layer 78) is quantized like the others
    assert ty["blk.78.nextn.eh_proj.weight"] == "iq4_ks" and ty["blk.78.nextn.enorm.weight"] == "f32"


def test_n_attention_wv_check():
    # lines 1288-1294: llama-quantize aborts unless attn_v + attn_qkv tensors are 0, n_layer or 3 n_layer.
    # Qwen3-Next written with the fused ssm_in (no attn_qkv) has 12 attn_v for 48 blocks: ik refuses it.
    tm = builtin("qwen3-next-80b-a3b")
    fused = tuple(TensorInfo(t.name.replace("attn_qkv", "ssm_in"), t.shape, t.dtype) for t in tm.tensors
                  if "attn_gate" not in t.name)
    with pytest.raises(RecipeError, match="12 attn_v/attn_qkv tensors for 48 blocks"):
        quantize(replace(tm, tensors=fused), QuantizeSpec(base_type="IQ4_KS"))
    quantize(replace(tm, tensors=fused), QuantizeSpec(base_type="Q4_K_M", engine="mainline"))   # not checked
    for name in ("glm-4.6", "deepseek-v4-flash", "llama-4-maverick"):     # NextN kept / MLA-like / interleaved
        _types(name, "Q4_K_M")


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_footprints_with_the_default_recipe(name):
    # the acceptance's footprint leg (benchmarks/acceptance_builtins.py runs inspect/footprint/plan on 24 + 128 GiB):
    # the default recipe goes through llama-quantize's rules without a refusal, and every converter-quantized
    # tensor keeps its type
    tm = builtin(name)
    types, fp = mix_from_options(tm, base_type=default_base_type("ik"))
    assert fp is not None and fp.total_bytes > 0
    assert all(types[n] == t.dtype for n in tm.prequantized for t in (tm.by_name()[n],))
