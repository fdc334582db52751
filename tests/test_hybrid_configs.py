"""config.json of a per-layer hybrid (Ling-3.0, BailingMoeV3ForCausalLM: Kimi Delta Attention + MLA) through the
bailingmoe3 template, against the file both engines ran.

The independent source: tests/fixtures/kv_kinds/kda.header.gguf (tools/engine_harness/make_tiny_arch.py kda), the
file llama.cpp 0c1e57098 and ik_llama.cpp 8337e4cd3 loaded and ran (their logs: tests/fixtures/kv_kinds[_ik]/kda-*);
its tensors are the ones both loaders create, in the converter's layout.  The config below carries that file's
numbers under the names BailingMoeV3's config.json uses (conversion/bailingmoe3.py set_gguf_parameters reads
them: layer_group_size, short_conv_kernel_size, head_dim as the KDA head, kv_lora_rank, ...).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import UnknownModelError
from planner.kv_cache import CacheConfig, layer_caches
from planner.source import load_model
from planner.tensors import from_config
from planner.tensors.config import config_arch

KV_KINDS = Path(__file__).parent / "fixtures" / "kv_kinds"

TINY_LING = {
    "architectures": ["BailingMoeV3ForCausalLM"], "model_type": "bailing_hybrid", "hidden_size": 256,
    "intermediate_size": 512, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 4,
    "head_dim": 64, "vocab_size": 512, "layer_group_size": 4, "short_conv_kernel_size": 4, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 64, "q_lora_rank": 96, "kv_lora_rank": 512, "first_k_dense_replace": 1,
    "num_experts": 8, "num_experts_per_tok": 2, "num_shared_experts": 1, "moe_intermediate_size": 64,
    "moe_shared_expert_intermediate_size": 64, "tie_word_embeddings": False, "max_position_embeddings": 32768,
}



def _same_as_engine_file(config: dict, header: str, engines: tuple[str, ...] = ("mainline",)):
    """The template built from ``config`` equals the engine-run file ``header`` (tests/fixtures/kv_kinds) tensor for
    tensor (name, ne shape, converter type), with the same recurrent layers and the same KV / state per layer on
    each of ``engines``; returns both maps for the caller's own checks."""
    cfg_map = from_config(config)
    ran = load_model(str(KV_KINDS / header), check_size=False)
    assert {t.name: (t.shape, t.dtype) for t in cfg_map.tensors} == {t.name: (t.shape, t.dtype) for t in ran.tensors}
    assert cfg_map.params.recurrent_layers == ran.params.recurrent_layers
    for engine in engines:
        cfg = CacheConfig(engine=engine, ctx=4096, type_k="f16", type_v="f16")
        assert ([(c.layer, c.kind, c.total_bytes) for c in layer_caches(cfg_map.params, cfg)]
                == [(c.layer, c.kind, c.total_bytes) for c in layer_caches(ran.params, cfg)])
    return cfg_map, ran

def test_ling3_config_builds_the_file_the_engines_ran():
    """Every tensor (name, ne shape, converter type) of the template equals the engine-run file's, and the KV /
    KDA state per layer on both engines is the same as from that file's header."""
    cfg_map, ran = _same_as_engine_file(TINY_LING, "kda.header.gguf", ("ik", "mainline"))
    assert cfg_map.params.recurrent_layers == ran.params.recurrent_layers == (True, True, True, False) * 2


def test_bailing_hybrid_model_type_maps_by_class():
    """BailingMoeV2_5 (Ring/Ling-2.5, lightning attention) writes the same model_type "bailing_hybrid": only the
    V3 class maps to bailingmoe3; the other is refused by name, not sized as KDA."""
    assert config_arch(TINY_LING) == "bailingmoe3"
    with pytest.raises(UnknownModelError, match="bailing_hybrid"):
        config_arch(dict(TINY_LING, architectures=["BailingMoeV2_5ForCausalLM"]))


def test_ling3_layer_groups_and_tail_rule():
    """The converter's is_full_attention: MLA at (il + 1) % layer_group_size == 0 and on a last partial group
    (10 layers, groups of 4: MLA on 3, 7, 8, 9); NextN blocks are MLA blocks after the trunk."""
    p = from_config(dict(TINY_LING, num_hidden_layers=10, num_nextn_predict_layers=1)).params
    assert [il for il in range(p.n_layer) if not p.is_recurrent(il)] == [3, 7, 8, 9, 10]
    assert p.n_nextn == 1 and p.n_layer == 11
    with pytest.raises(UnknownModelError, match="layer_group_size"):
        from_config({k: v for k, v in TINY_LING.items() if k != "layer_group_size"})


def test_ling3_tiny_shape_total_is_the_engines_size_label():
    """Ling-3.0-tiny's shape (24 layers, hidden 1536, 128 experts of 512, 16 heads, KDA head 128, q_lora 256; as
    transcribed in a third-party MLX port's test of "the Ling-3.0-tiny configuration", not the Hub file) counts
    7.893B parameters: llama.cpp labels exactly this shape LLM_TYPE_7_9B_A1_3B (src/models/bailingmoe3.cpp:38
    @0c1e57098), i.e. 7.9B to its 0.1B rounding."""
    from planner.model_list import param_counts

    tiny = dict(TINY_LING, hidden_size=1536, intermediate_size=4608, num_hidden_layers=24, num_attention_heads=16,
                num_key_value_heads=16, head_dim=128, vocab_size=157184, v_head_dim=128, q_lora_rank=256,
                num_experts=128, num_experts_per_tok=8, moe_intermediate_size=512,
                moe_shared_expert_intermediate_size=512)
    total = param_counts(from_config(tiny)).total
    assert abs(total / 7.9e9 - 1) < 0.05 / 7.9


TINY_JAMBA = {
    "architectures": ["JambaForCausalLM"], "model_type": "jamba", "hidden_size": 256, "intermediate_size": 512,
    "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
    "attn_layer_offset": 4, "attn_layer_period": 8, "expert_layer_offset": 1, "expert_layer_period": 2,
    "mamba_d_conv": 4, "mamba_d_state": 16, "mamba_dt_rank": 16, "mamba_expand": 2, "num_experts": 4,
    "num_experts_per_tok": 2, "tie_word_embeddings": False,
}


def test_jamba_config_builds_the_file_mainline_ran():
    """The jamba template from a config with tests/fixtures/kv_kinds/jamba.header.gguf's numbers (the file
    llama.cpp 0c1e57098 ran: kv_kinds/jamba-*) equals it tensor for tensor; Mamba/attention layers from
    attn_layer_period/offset, experts from expert_layer_period/offset; the same KV and Mamba state."""
    cfg_map, ran = _same_as_engine_file(TINY_JAMBA, "jamba.header.gguf")
    # the header has no expert-layer key: the file's routers say which layers are MoE (the loader's rule,
    # jamba.cpp:88-100: ffn_gate_inp present) and the experts' shape their width (feed_forward_length's)
    routers = {t.layer for t in ran.tensors if t.role == "ffn_gate_inp"}
    width = {t.shape[1] for t in ran.tensors if t.role == "ffn_gate_exps"}
    for p in (cfg_map.params, ran.params):
        assert [p.is_moe_layer(il) for il in range(p.n_layer)] == [il in routers for il in range(p.n_layer)]
        assert {p.n_ff_exp} == width


def test_jamba_defaults_and_unmodelled_expert_offsets():
    """The converter's defaults (conversion/jamba.py: d_conv 4, d_state 16, dt_rank ceil(n_embd / 16) for a
    missing or "auto" mamba_dt_rank); an expert offset other than period - 1 is refused by name."""
    auto = {k: v for k, v in TINY_JAMBA.items() if k not in ("mamba_d_conv", "mamba_d_state")}
    p = from_config(dict(auto, mamba_dt_rank="auto")).params
    assert (p.ssm_d_conv, p.ssm_d_state, p.ssm_dt_rank, p.ssm_d_inner) == (4, 16, 256 // 16, 512)
    with pytest.raises(UnknownModelError, match="expert_layer_offset = 0"):
        from_config(dict(TINY_JAMBA, expert_layer_offset=0))


# ai21labs/AI21-Jamba-1.5-Mini config.json, as a public repository's model factory transcribes it (its docstring
# links https://huggingface.co/ai21labs/AI21-Jamba-1.5-Mini/blob/main/config.json); the Hub is not reachable here
JAMBA_15_MINI = {
    "architectures": ["JambaForCausalLM"], "attention_dropout": 0.0, "attn_layer_offset": 4, "attn_layer_period": 8,
    "bos_token_id": 1, "eos_token_id": [2, 518], "expert_layer_offset": 1, "expert_layer_period": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "mamba_conv_bias": True, "mamba_d_conv": 4, "mamba_d_state": 16, "mamba_dt_rank": 256, "mamba_expand": 2,
    "mamba_proj_bias": False, "max_position_embeddings": 262144, "model_type": "jamba", "num_attention_heads": 32,
    "num_experts": 16, "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "num_logits_to_keep": 1, "output_router_logits": False, "pad_token_id": 0, "rms_norm_eps": 1e-06,
    "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.40.2", "use_cache": True, "use_mamba_kernels": False, "vocab_size": 65536,
}


def test_jamba_15_mini_layout_and_state():
    """Jamba 1.5 Mini: attention on layers 4, 12, 20, 28 (8 KV heads of 128), Mamba on the other 28, experts on odd
    layers. Per Mamba layer and sequence, F32 (mainline n_embd_r + n_embd_s, src/llama-hparams.cpp:229, 257
    @0c1e57098): (4 - 1) x 8192 conv + 16 x 8192 state = 155,648 floats, whatever the context; per attention
    layer 2 x 8 x 128 f16 values per cell."""
    tmap = from_config(JAMBA_15_MINI)
    p = tmap.params
    assert [il for il in range(32) if not p.is_recurrent(il)] == [4, 12, 20, 28]
    assert [il for il in range(32) if p.is_moe_layer(il)] == list(range(1, 32, 2))
    for ctx in (8192, 65536):
        caches = layer_caches(p, CacheConfig(engine="mainline", ctx=ctx, type_k="f16", type_v="f16"))
        assert {c.state_bytes for c in caches if c.kind == "recurrent"} == {4 * (3 * 8192 + 16 * 8192)}
        assert {c.total_bytes for c in caches if c.kind == "full"} == {ctx * 2 * 8 * 128 * 2}
    with pytest.raises(UnknownModelError, match="ik_llama.cpp does not load"):
        layer_caches(p, CacheConfig(engine="ik"))


TINY_KIMI_LINEAR = {
    "architectures": ["KimiLinearForCausalLM"], "model_type": "kimi_linear", "hidden_size": 256,
    "intermediate_size": 512, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 4,
    "vocab_size": 512, "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "num_experts": 8, "num_experts_per_token": 2, "num_shared_experts": 1,
    "moe_intermediate_size": 64, "first_k_dense_replace": 1, "tie_word_embeddings": False,
    "linear_attn_config": {"full_attn_layers": [4, 8], "kda_layers": [1, 2, 3, 5, 6, 7], "num_heads": 4,
                           "head_dim": 64, "short_conv_kernel_size": 4},
}


def test_kimi_linear_config_builds_the_file_mainline_ran():
    """The kimi-linear template from a config with tests/fixtures/kv_kinds/kimilinear.header.gguf's numbers (the
    file llama.cpp 0c1e57098 ran: kv_kinds/kimilinear-*) equals it tensor for tensor: KDA layers from the nested
    linear_attn_config (head_dim, short_conv_kernel_size; MLA on the 1-based full_attn_layers), no Q LoRA; the
    same KV and KDA state; ik refuses it by name."""
    cfg_map, ran = _same_as_engine_file(TINY_KIMI_LINEAR, "kimilinear.header.gguf")
    assert cfg_map.params.recurrent_layers == ran.params.recurrent_layers == (True, True, True, False) * 2
    with pytest.raises(UnknownModelError, match="ik_llama.cpp does not load"):
        layer_caches(cfg_map.params, CacheConfig(engine="ik"))
    with pytest.raises(UnknownModelError, match="full_attn_layers"):
        from_config(dict(TINY_KIMI_LINEAR, linear_attn_config={"head_dim": 64, "short_conv_kernel_size": 4}))


TINY_GRANITE_H = {
    "architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid", "hidden_size": 256,
    "intermediate_size": 512, "shared_intermediate_size": 512, "num_hidden_layers": 8, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "num_local_experts": 0, "tie_word_embeddings": True,
    "layer_types": ["mamba", "mamba", "attention", "mamba"] * 2, "mamba_d_conv": 4, "mamba_d_state": 32,
    "mamba_n_groups": 2, "mamba_n_heads": 8, "mamba_d_head": 64, "mamba_expand": 2,
}


def test_granite_h_config_builds_the_file_mainline_ran():
    """The granitehybrid template from a config with tests/fixtures/kv_kinds/granitehybrid.header.gguf's numbers
    (the file llama.cpp 0c1e57098 ran) equals it tensor for tensor: Mamba-2 layers where layer_types is not
    "attention", the mamba_-prefixed numbers as conversion/granite.py reads them, a dense model's shared_mlp as
    ffn_gate/up/down, the tied output; the same KV and Mamba-2 state. With experts, every layer is MoE with the
    shared expert shared_intermediate_size wide (granite-hybrid.cpp load_arch_tensors)."""
    cfg_map, ran = _same_as_engine_file(TINY_GRANITE_H, "granitehybrid.header.gguf")
    moe = from_config(dict(TINY_GRANITE_H, num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=128))
    shapes = {t.name: t.shape for t in moe.tensors}
    assert shapes["blk.0.ffn_up_exps.weight"] == (256, 512, 4) and shapes["blk.0.ffn_up_shexp.weight"] == (256, 128)
    assert "blk.0.ffn_up.weight" not in shapes
    with pytest.raises(UnknownModelError, match="layer_types"):
        from_config({k: v for k, v in TINY_GRANITE_H.items() if k != "layer_types"})
