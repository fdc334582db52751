"""The deepseek2 (MLA) and glm4moe templates: names, shapes, counts, config/header mapping, end to end.

Expected shapes are the ones ik's llama-quantize prints for a 1147-tensor DeepSeek-R1 GGUF and llama.cpp's
loader prints for an 803-tensor GLM-4.5-Air GGUF; parameter counts are recomputed here from config.json numbers.
"""

import dataclasses

import pytest

from planner.gguf_header import BytesSource, parse_gguf
from planner.memory import RunConfig, kv_bytes_per_layer
from planner.quants import catalogue
from planner.tensors import build, builtin, from_config, from_gguf

# huggingface.co/deepseek-ai/DeepSeek-R1-0528 config.json (the keys the planner reads, plus a few it ignores)
R1_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 129280,
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
    "num_nextn_predict_layers": 1, "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
    "n_routed_experts": 256, "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "max_position_embeddings": 163840, "tie_word_embeddings": False, "scoring_func": "sigmoid",
    "topk_method": "noaux_tc", "routed_scaling_factor": 2.5,
}
# huggingface.co/moonshotai/Kimi-K2-Instruct config.json: DeepSeek-V3's shapes with 64 heads, 384 experts
KIMI_CONFIG = dict(R1_CONFIG, model_type="kimi_k2", vocab_size=163840, num_attention_heads=64, num_key_value_heads=64,
                   n_routed_experts=384, first_k_dense_replace=1, num_nextn_predict_layers=0,
                   max_position_embeddings=131072)
# huggingface.co/zai-org/GLM-4.5-Air config.json
AIR_CONFIG = {
    "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "vocab_size": 151552, "hidden_size": 4096,
    "intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 46, "num_nextn_predict_layers": 1,
    "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128, "partial_rotary_factor": 0.5,
    "attention_bias": True, "use_qk_norm": False, "n_routed_experts": 128, "n_shared_experts": 1,
    "num_experts_per_tok": 8, "first_k_dense_replace": 1, "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
}


def mla_moe_elements(c: dict, *, split_kv_b: bool = True) -> int:
    """DeepSeek-V3-style element count from config.json numbers (no MTP block)."""
    h, n_layer, n_head = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
    ql, kvl = c["q_lora_rank"], c["kv_lora_rank"]
    nope, rope, v = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    attn = (h * ql + ql + ql * n_head * (nope + rope)     # q_a_proj, q_a_layernorm, q_b_proj
            + h * (kvl + rope) + kvl                       # kv_a_proj_with_mqa, kv_a_layernorm
            + kvl * n_head * (nope + v)                    # kv_b_proj
            + n_head * v * h + 2 * h)                      # o_proj, input/post-attention norms
    if split_kv_b:                                         # ik convert adds attn_k_b/attn_v_b, copies of kv_b
        attn += n_head * nope * kvl + n_head * v * kvl
    e, fe, s = c["n_routed_experts"], c["moe_intermediate_size"], c["n_shared_experts"]
    moe = 3 * h * fe * e + 3 * h * fe * s + h * e + e      # experts, shared experts, router, correction bias
    k = c["first_k_dense_replace"]
    return n_layer * attn + k * 3 * h * c["intermediate_size"] + (n_layer - k) * moe + 2 * c["vocab_size"] * h + h


def mla_moe_f32_elements(c: dict) -> int:
    """Elements the converter writes as f32: norms, the router and the correction bias."""
    h, n_layer, k, e = c["hidden_size"], c["num_hidden_layers"], c["first_k_dense_replace"], c["n_routed_experts"]
    return n_layer * (2 * h + c["q_lora_rank"] + c["kv_lora_rank"]) + (n_layer - k) * (h * e + e) + h


def glm4moe_elements(c: dict, *, nextn: bool = True) -> int:
    """GLM-4.5-style element count; ``nextn``: with the NextN block the converter keeps."""
    h, n_head, n_kv, hd, v = (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                              c["head_dim"], c["vocab_size"])
    attn = 2 * h * n_head * hd + 2 * h * n_kv * hd + n_head * hd + 2 * n_kv * hd + 2 * h   # q,o,k,v, biases, norms
    e, fe, s = c["n_routed_experts"], c["moe_intermediate_size"], c["n_shared_experts"]
    moe = 3 * h * fe * e + 3 * h * fe * s + h * e + e
    k = c["first_k_dense_replace"]
    n_mtp = c["num_nextn_predict_layers"] if nextn else 0
    blocks = c["num_hidden_layers"] + n_mtp
    mtp_extra = n_mtp * (2 * h * h + 3 * h + 2 * v * h)    # eh_proj, enorm/hnorm/shared_head norm, embed + head
    return blocks * attn + k * 3 * h * c["intermediate_size"] + (blocks - k) * moe + mtp_extra + 2 * v * h + h


def _layer_roles(tm, layer: int) -> list[str]:
    return [t.name.split(".", 2)[2] for t in tm.tensors if t.layer == layer]


# ------------------------------------------------------------------------------------------- deepseek2

def test_deepseek_r1_counts_per_layer_type():
    tm = builtin("deepseek-r1")
    dense, moe = _layer_roles(tm, 0), _layer_roles(tm, 3)
    assert len(dense) == 14 and len(moe) == 19
    assert all(_layer_roles(tm, i) == dense for i in range(3))
    assert all(_layer_roles(tm, i) == moe for i in range(3, 61))
    # 3 globals + 3 dense + 58 MoE layers: the [n/1147] count of ik's llama-quantize on an ik-converted R1
    assert len(tm.tensors) == 3 + 3 * 14 + 58 * 19 == 1147
    assert not any(t.name.startswith("blk.61.") for t in tm.tensors)          # MTP block dropped
    assert "exp_probs_b.bias" not in dense and "ffn_gate_exps.weight" not in dense
    assert "ffn_gate.weight" not in moe


def test_deepseek_r1_shapes():
    by = builtin("deepseek-r1").by_name()
    expected = {   # ggml ne, as ik's llama-quantize prints them for DeepSeek-R1 (1147 tensors)
        "token_embd.weight": (7168, 129280), "output.weight": (7168, 129280), "output_norm.weight": (7168,),
        "blk.0.attn_q_a_norm.weight": (1536,), "blk.0.attn_kv_a_norm.weight": (512,),
        "blk.0.attn_q_a.weight": (7168, 1536), "blk.0.attn_q_b.weight": (1536, 24576),
        "blk.0.attn_kv_a_mqa.weight": (7168, 576), "blk.0.attn_kv_b.weight": (512, 32768),
        "blk.0.attn_k_b.weight": (128, 65536), "blk.0.attn_v_b.weight": (512, 16384),
        "blk.0.attn_output.weight": (16384, 7168),
        "blk.0.ffn_gate.weight": (7168, 18432), "blk.0.ffn_down.weight": (18432, 7168),
        "blk.3.ffn_gate_inp.weight": (7168, 256), "blk.3.exp_probs_b.bias": (256,),
        "blk.3.ffn_gate_exps.weight": (7168, 2048, 256), "blk.3.ffn_up_exps.weight": (7168, 2048, 256),
        "blk.3.ffn_down_exps.weight": (2048, 7168, 256),
        "blk.3.ffn_gate_shexp.weight": (7168, 2048), "blk.3.ffn_down_shexp.weight": (2048, 7168),
    }
    for name, shape in expected.items():
        assert by[name].shape == shape, name
    assert by["blk.3.ffn_gate_inp.weight"].dtype == "f32" and by["blk.3.exp_probs_b.bias"].dtype == "f32"
    assert by["blk.3.attn_k_b.weight"].dtype == "bf16"
    k_b, probs = by["blk.3.attn_k_b.weight"], by["blk.3.exp_probs_b.bias"]
    assert (k_b.role, k_b.is_expert, probs.role, probs.layer) == ("attn_k_b", False, "exp_probs_b", 3)
    assert by["blk.3.ffn_down_exps.weight"].is_expert and not by["blk.3.ffn_down_shexp.weight"].is_expert


def test_deepseek_r1_parameter_count_and_bf16_size():
    tm = builtin("deepseek-r1")
    assert tm.n_elements == mla_moe_elements(R1_CONFIG) == 672_049_829_376
    # DeepSeek's 671B excludes the MTP block; the k_b/v_b copies of kv_b add 61 * 16.8M = 1.02e9
    assert mla_moe_elements(R1_CONFIG, split_kv_b=False) == 671_026_419_200
    assert abs(tm.n_elements - 671.0e9) / 671.0e9 < 0.01
    f32 = mla_moe_f32_elements(R1_CONFIG)
    nbytes = sum(catalogue().get(t.dtype).tensor_bytes(t.shape) for t in tm.tensors)
    assert nbytes == 2 * (tm.n_elements - f32) + 4 * f32 == 1_344_314_562_560     # 1251.99 GiB


def test_kimi_k2_counts():
    tm = builtin("kimi-k2")
    assert len(tm.tensors) == 3 + 1 * 14 + 60 * 19
    assert tm.n_elements == mla_moe_elements(KIMI_CONFIG)        # 1.0269e12
    by = tm.by_name()
    assert by["blk.1.ffn_gate_exps.weight"].shape == (7168, 2048, 384)
    assert by["blk.0.attn_q_b.weight"].shape == (1536, 64 * 192)
    assert by["blk.0.attn_kv_b.weight"].shape == (512, 64 * 256)
    assert by["token_embd.weight"].shape == (7168, 163840)


@pytest.mark.parametrize("config,model", [
    (R1_CONFIG, "deepseek-r1"),                               # MTP block in the config, not in the map
    (dict(R1_CONFIG, head_dim=64), "deepseek-r1"),            # transformers serializes head_dim = qk_rope_head_dim
    (KIMI_CONFIG, "kimi-k2"),                                 # model_type kimi_k2
    (AIR_CONFIG, "glm-4.5-air"),                              # NextN block kept: 46 + 1 blocks
])
def test_config_json_equals_builtin(config, model):
    got, ref = from_config(config), builtin(model)
    assert [(t.name, t.shape, t.dtype) for t in got.tensors] == [(t.name, t.shape, t.dtype) for t in ref.tensors]
    assert got.params == ref.params


def _deepseek2_kv(*, mla_keys: bool) -> dict:
    kv = {"general.architecture": "deepseek2", "deepseek2.block_count": 61, "deepseek2.context_length": 163840,
          "deepseek2.embedding_length": 7168, "deepseek2.feed_forward_length": 18432,
          "deepseek2.attention.head_count": 128, "deepseek2.attention.head_count_kv": 128,
          "deepseek2.vocab_size": 129280, "deepseek2.leading_dense_block_count": 3,
          "deepseek2.attention.q_lora_rank": 1536, "deepseek2.attention.kv_lora_rank": 512,
          "deepseek2.attention.key_length": 192, "deepseek2.attention.value_length": 128,
          "deepseek2.expert_feed_forward_length": 2048, "deepseek2.expert_count": 256,
          "deepseek2.expert_shared_count": 1, "deepseek2.expert_used_count": 8,
          "deepseek2.rope.dimension_count": 64}
    if mla_keys:   # newer converters: latent widths in key/value_length, per-head widths in *_mla
        kv.update({"deepseek2.attention.key_length": 576, "deepseek2.attention.value_length": 512,
                   "deepseek2.attention.key_length_mla": 192, "deepseek2.attention.value_length_mla": 128})
    return kv


@pytest.mark.parametrize("mla_keys", [False, True])   # ik convert's key_length 192 / newer key_length_mla
def test_from_gguf_deepseek2_matches_builtin(mla_keys):
    from conftest import gguf_bytes

    ref = builtin("deepseek-r1")
    data = gguf_bytes(_deepseek2_kv(mla_keys=mla_keys), [(t.name, t.shape, t.dtype) for t in ref.tensors],
                      data=False)
    m = from_gguf(parse_gguf(BytesSource(data), check_size=False))
    # without key_length_mla mainline's is_mla() is false (src/models/deepseek2.cpp load_arch_hparams @0c1e57098:
    # key_length_mla optional): the file runs as plain attention there, which the header records
    assert m.params.mla_legacy is (not mla_keys)
    assert dataclasses.replace(m.params, mla_legacy=False) == ref.params
    assert build(m.params, "x", "x").by_name().keys() == m.by_name().keys()


def test_mla_kv_cache_matches_facts():
    p = builtin("deepseek-r1").params
    cfg = RunConfig(ctx=256, type_k="f16", type_v="f16", flash_attn=True)
    assert kv_bytes_per_layer(p, cfg) == 576 * 2 * 256          # facts §7: 1152 B per token per layer
    assert kv_bytes_per_layer(p, cfg) * p.n_layer // 256 == 70_272
    assert kv_bytes_per_layer(p, RunConfig()) == 576 // 32 * 34 * 32768   # q8_0, 32k: 612 B per token per layer


# ------------------------------------------------------------------------------------------- glm4moe

def test_glm_air_counts_and_shapes():
    tm = builtin("glm-4.5-air")
    assert len(_layer_roles(tm, 0)) == 12 and len(_layer_roles(tm, 1)) == 17
    assert len(_layer_roles(tm, 46)) == 17 + 6                  # the NextN block: a MoE layer + 6 nextn tensors
    assert len(tm.tensors) == 803                                # llama.cpp PR 14939's GGUF-Air load log
    by = tm.by_name()
    expected = {
        "blk.0.attn_q.weight": (4096, 12288), "blk.0.attn_k.weight": (4096, 1024),
        "blk.0.attn_v.weight": (4096, 1024), "blk.0.attn_output.weight": (12288, 4096),
        "blk.0.attn_q.bias": (12288,), "blk.0.attn_k.bias": (1024,), "blk.0.attn_v.bias": (1024,),
        "blk.0.post_attention_norm.weight": (4096,), "blk.0.ffn_down.weight": (10944, 4096),
        "blk.1.ffn_gate_exps.weight": (4096, 1408, 128), "blk.1.ffn_down_exps.weight": (1408, 4096, 128),
        "blk.1.ffn_up_shexp.weight": (4096, 1408), "blk.1.exp_probs_b.bias": (128,),
        "blk.46.nextn.eh_proj.weight": (8192, 4096), "blk.46.nextn.embed_tokens.weight": (4096, 151552),
        "blk.46.nextn.shared_head_head.weight": (4096, 151552), "blk.46.nextn.shared_head_norm.weight": (4096,),
    }
    for name, shape in expected.items():
        assert by[name].shape == shape, name
    assert by["blk.0.attn_q.bias"].dtype == "f32" and "blk.0.attn_q_norm.weight" not in by
    assert by["blk.46.nextn.eh_proj.weight"].role == "nextn.eh_proj"
    assert tm.n_elements == glm4moe_elements(AIR_CONFIG) == 110_468_824_832
    assert abs(glm4moe_elements(AIR_CONFIG, nextn=False) - 106e9) / 106e9 < 0.01    # "106B total parameters"


def test_glm_qk_norm_from_config():
    # GLM-4.5 (not -Air) sets use_qk_norm: per-head attn_q_norm/attn_k_norm in every block
    tiny = dict(AIR_CONFIG, num_hidden_layers=2, use_qk_norm=True, n_routed_experts=4, vocab_size=512)
    by = from_config(tiny).by_name()
    assert by["blk.2.attn_k_norm.weight"].shape == (128,) and "blk.2.nextn.enorm.weight" in by
    no_nextn = from_config(dict(tiny, num_nextn_predict_layers=0))
    assert no_nextn.params.n_layer == 2 and not any("nextn" in t.name for t in no_nextn.tensors)


# ------------------------------------------------------------------------------------------- end to end

def test_quantize_deepseek_r1_iq4_ks():
    from planner.quantize import QuantizeSpec, quantize

    fp = quantize(builtin("deepseek-r1"), QuantizeSpec(base_type="IQ4_KS"))
    got = {r.name: r for r in fp.tensors}
    assert len(got) == 1147
    for r in fp.tensors:
        qt = catalogue().get(r.type_name)
        assert r.shape[0] % qt.block_size == 0, r.name       # attn_k_b rows are 128 wide: no 256-blocks
        if len(r.shape) == 1 or r.name.endswith(("ffn_gate_inp.weight", ".bias")):
            assert r.type_name == "f32", r.name
    assert got["blk.3.ffn_up_exps.weight"].type_name == "iq4_ks"


@pytest.fixture(scope="module")
def r1_plan():
    from planner.hardware import resolve_hardware
    from planhelp import plan_doc

    return plan_doc("deepseek-r1", resolve_hardware(vram=[24.0], ram=512.0), RunConfig(threads=32))


def test_plan_deepseek_r1_end_to_end(r1_plan):
    from planner.quantize import QuantizeSpec, Rule, quantize

    p = r1_plan.plan
    assert p.solver.status in ("OPTIMAL", "OPTIMAL_WITHIN_GAP") and p.memory.fits
    assert set(p.types) == {t.name for t in builtin("deepseek-r1").tensors}
    assert p.types["blk.3.exp_probs_b.bias"] == "f32" and p.devices["blk.3.exp_probs_b.bias"] == "CUDA0"
    spec = QuantizeSpec(base_type=r1_plan.recipe.base_type,
                        custom_q=tuple(Rule(rx, ty, i) for i, (rx, ty) in enumerate(r1_plan.recipe.rules)))
    fp = quantize(builtin("deepseek-r1"), spec)
    assert {r.name: r.type_name for r in fp.tensors} == p.types and fp.total_bytes == p.total_bytes
    assert p.memory.kv_cache_bytes == 61 * 612 * 32768           # MLA cache, q8_0, -c 32768


def test_place_deepseek_r1_quantized_mix():
    from planner.hardware import resolve_hardware
    from planner.planning import place
    from planner.request import PlanRequest
    from planner.quantize import QuantizeSpec, quantize

    tm = builtin("deepseek-r1")
    types = {r.name: r.type_name for r in quantize(tm, QuantizeSpec(base_type="IQ4_KS")).tensors}
    p = place(tm, types, resolve_hardware(vram=[24.0], ram=512.0), PlanRequest(run=RunConfig(threads=32)))
    assert p.solver.status in ("OPTIMAL", "OPTIMAL_WITHIN_GAP") and p.memory.fits and p.types == types


def test_plan_glm_air_end_to_end():
    from planner.hardware import resolve_hardware
    from planhelp import plan_doc
    from planner.quantize import QuantizeSpec, Rule, quantize

    tm = builtin("glm-4.5-air")
    doc = plan_doc("glm-4.5-air", resolve_hardware(vram=[24.0], ram=512.0), RunConfig(threads=32))
    p = doc.plan
    assert p.types["blk.0.attn_q.bias"] == "f32"                 # biases keep their type (never quantized)
    # the NextN block (layer 46) is in the file but not loaded: no weights, no KV cache, typed like layer 45
    nextn = [t for t in tm.tensors if t.layer == 46]
    assert nextn and p.types["blk.46.ffn_up_exps.weight"] == p.types["blk.45.ffn_up_exps.weight"]
    loaded = sum(b for n, b in _sizes(tm, p.types).items() if not n.startswith("blk.46."))
    assert sum(d.term("weights") for d in p.memory.devices) == loaded
    assert p.memory.kv_cache_bytes == 46 * kv_one_layer(tm, p.run)
    spec = QuantizeSpec(base_type=doc.recipe.base_type,
                        custom_q=tuple(Rule(rx, ty, i) for i, (rx, ty) in enumerate(doc.recipe.rules)))
    assert {r.name: r.type_name for r in quantize(tm, spec).tensors} == p.types


def _sizes(tm, types):
    from planner.memory import mix_bytes

    return mix_bytes(tm, types)


def kv_one_layer(tm, run):
    from planner.memory import kv_bytes_per_layer

    return kv_bytes_per_layer(tm.params, run)
