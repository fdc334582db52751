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


def test_ling3_config_builds_the_file_the_engines_ran():
    """Every tensor (name, ne shape, converter type) of the template equals the engine-run file's, and the KV /
    KDA state per layer on both engines is the same as from that file's header."""
    cfg_map = from_config(TINY_LING)
    ran = load_model(str(KV_KINDS / "kda.header.gguf"), check_size=False)
    assert {t.name: (t.shape, t.dtype) for t in cfg_map.tensors} == {t.name: (t.shape, t.dtype) for t in ran.tensors}
    assert cfg_map.params.recurrent_layers == ran.params.recurrent_layers == (True, True, True, False) * 2
    for engine in ("ik", "mainline"):
        cfg = CacheConfig(engine=engine, ctx=4096, type_k="f16", type_v="f16")
        assert ([(c.layer, c.kind, c.total_bytes) for c in layer_caches(cfg_map.params, cfg)]
                == [(c.layer, c.kind, c.total_bytes) for c in layer_caches(ran.params, cfg)])


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
