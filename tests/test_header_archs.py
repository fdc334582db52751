"""GGUF headers alone: roles from tensor names and the KV/state layout from header keys, for architectures
with and without a template; layouts the planner cannot size are refused by name.

Header keys are the ones the converters write (gguf-py ``Keys.LLM``/``Keys.Attention``/``Keys.SSM``) and the
engines read (ik_llama.cpp @8337e4cd src/llama-hparams.cpp).
"""

from __future__ import annotations

import pytest
from conftest import gguf_bytes

from planner.errors import UnknownModelError
from planner.gguf_header import BytesSource, parse_gguf
from planner.kv_cache import CacheConfig, layer_caches
from planner.tensors import builtin, from_gguf


def _header(kv: dict, tensors) -> object:
    return parse_gguf(BytesSource(gguf_bytes(kv, tensors, data=False)), check_size=False)


def _base_kv(arch: str, p) -> dict:
    return {"general.architecture": arch, "general.name": f"test {arch}",
            f"{arch}.block_count": p.n_layer, f"{arch}.context_length": 4096,
            f"{arch}.embedding_length": p.n_embd, f"{arch}.attention.head_count": p.n_head,
            f"{arch}.attention.head_count_kv": p.n_head_kv, f"{arch}.attention.key_length": p.head_dim,
            f"{arch}.attention.value_length": p.head_dim, f"{arch}.vocab_size": p.n_vocab}


def _tensors(tm):
    return [(t.name, t.shape, t.dtype) for t in tm.tensors]


def test_gpt_oss_header_gives_the_builtin_layout():
    ref = builtin("gpt-oss-20b")
    p = ref.params
    kv = _base_kv("gpt-oss", p) | {"gpt-oss.expert_count": 32, "gpt-oss.expert_used_count": 4,
                                   "gpt-oss.expert_feed_forward_length": 2880,
                                   "gpt-oss.attention.sliding_window": 128}
    m = from_gguf(_header(kv, _tensors(ref)))
    # no sliding_window_pattern key in gpt-oss files: the alternation is the loader's (set_swa_pattern(2))
    assert (m.params.n_swa, m.params.swa_period) == (128, 2)
    cfg = CacheConfig(engine="mainline", ctx=32768)
    assert [c.total_bytes for c in layer_caches(m.params, cfg)] == [c.total_bytes for c in
                                                                    layer_caches(p, cfg)]
    assert m.by_name()["blk.0.ffn_down_exps.bias"].role == "ffn_down_exps"


def test_qwen3_next_header_recurrent_layers():
    ref = builtin("qwen3-next-80b-a3b")
    p = ref.params
    kv = _base_kv("qwen3next", p) | {"qwen3next.expert_count": 512, "qwen3next.expert_used_count": 10,
                                     "qwen3next.ssm.conv_kernel": 4, "qwen3next.ssm.inner_size": 4096,
                                     "qwen3next.ssm.state_size": 128, "qwen3next.ssm.time_step_rank": 32,
                                     "qwen3next.ssm.group_count": 16}
    m = from_gguf(_header(kv, _tensors(ref)))
    assert m.params.full_attn_interval == 4            # ik hard-codes (i + 1) % 4 != 0 for qwen3next
    assert m.by_name()["blk.0.ssm_a"].layer == 0
    cfg = CacheConfig(ctx=8192)
    assert layer_caches(m.params, cfg) == layer_caches(p, cfg)


def test_per_layer_sliding_window_pattern_array():
    ref = builtin("gemma-3-27b")
    p = ref.params
    pattern = [i % 6 < 5 for i in range(p.n_layer)]
    kv = _base_kv("gemma3", p) | {"gemma3.attention.sliding_window": 1024,
                                  "gemma3.attention.sliding_window_pattern": pattern}
    m = from_gguf(_header(kv, _tensors(ref)))
    assert m.params.swa_layers == tuple(pattern)
    assert [c.cells for c in layer_caches(m.params, CacheConfig(engine="mainline", ctx=16384))[:6]] == \
        [1536] * 5 + [16384]


def test_architecture_without_a_template_is_planned_from_its_header():
    # qwen2 (no template here): a plain GQA model; every number comes from the header
    kv = {"general.architecture": "qwen2", "qwen2.block_count": 2, "qwen2.context_length": 32768,
          "qwen2.embedding_length": 512, "qwen2.attention.head_count": 8, "qwen2.attention.head_count_kv": 2,
          "qwen2.feed_forward_length": 1024, "qwen2.vocab_size": 1000}
    tensors = [("token_embd.weight", (512, 1000), "bf16")]
    for il in range(2):
        tensors += [(f"blk.{il}.attn_q.weight", (512, 512), "bf16"), (f"blk.{il}.attn_q.bias", (512,), "f32"),
                    (f"blk.{il}.attn_k.weight", (512, 128), "bf16"), (f"blk.{il}.attn_v.weight", (512, 128), "bf16"),
                    (f"blk.{il}.attn_output.weight", (512, 512), "bf16"),
                    (f"blk.{il}.ffn_up.weight", (512, 1024), "bf16")]
    m = from_gguf(_header(kv, tensors))
    assert m.params.head_dim == 64 and m.by_name()["blk.1.attn_q.bias"].role == "attn_q"
    c = layer_caches(m.params, CacheConfig(ctx=1024, type_k="f16", type_v="f16"))
    # k = row(f16, 64) * 2 heads * 1024; v = row(f16, 128) * 1024
    assert [x.total_bytes for x in c] == [128 * 2 * 1024 + 256 * 1024] * 2


def _mamba_like(arch: str):
    kv = {"general.architecture": arch, f"{arch}.block_count": 1, f"{arch}.context_length": 0,
          f"{arch}.embedding_length": 256, f"{arch}.attention.head_count": 0, f"{arch}.ssm.conv_kernel": 4,
          f"{arch}.ssm.inner_size": 512, f"{arch}.ssm.state_size": 16, f"{arch}.ssm.time_step_rank": 16}
    tensors = [("token_embd.weight", (256, 100), "f32"), ("blk.0.ssm_in.weight", (256, 1024), "f32"),
               ("blk.0.ssm_conv1d.weight", (4, 512), "f32"), ("blk.0.ssm_a", (16, 512), "f32")]
    return from_gguf(_header(kv, tensors))


def test_mamba_header_is_sized_for_mainline_and_refused_for_ik():
    # architectures.toml [mamba]: every layer recurrent; mainline n_embd_r + n_embd_s (src/llama-hparams.cpp:
    # 208-258 @0c1e57098) = (4 - 1) x 512 + 16 x 512 F32 per sequence; ik 8337e4cd3 aborts building its graph
    m = _mamba_like("mamba")
    assert len(m.tensors) == 4
    (c,) = layer_caches(m.params, CacheConfig(engine="mainline"))
    assert (c.kind, c.state_bytes, c.k_bytes) == ("recurrent", 4 * (3 * 512 + 16 * 512), 0)
    with pytest.raises(UnknownModelError, match="mamba: ik_llama.cpp aborts building"):
        layer_caches(m.params, CacheConfig())


def test_state_tensors_of_an_architecture_without_data_are_refused_by_name():
    # kimi-k3 (a mainline architecture, src/llama-arch.cpp:155 @0c1e57098) has no entry in architectures.toml:
    # its state tensors are named, nothing is guessed
    m = _mamba_like("kimi-k3")
    with pytest.raises(UnknownModelError, match="kimi-k3: cannot size the KV/state cache: recurrent-state tensors "
                                                "ssm_a, ssm_conv1d, ssm_in"):
        layer_caches(m.params, CacheConfig(engine="mainline"))


def test_deepseek4_ratios_inferred_from_tensors():
    # no attention.compress_ratios key: layer 0 plain, 1 indexer (CSA, 4), 2 attention compressor only (HCA, 128)
    kv = {"general.architecture": "deepseek4", "deepseek4.block_count": 3, "deepseek4.context_length": 4096,
          "deepseek4.embedding_length": 256, "deepseek4.attention.head_count": 4,
          "deepseek4.attention.head_count_kv": 1, "deepseek4.attention.key_length": 128,
          "deepseek4.attention.indexer.key_length": 64, "deepseek4.vocab_size": 100}
    tensors = [("token_embd.weight", (256, 100), "bf16"), ("blk.0.attn_norm.weight", (256,), "f32"),
               ("blk.1.attn_compress_kv.weight", (256, 256), "bf16"),
               ("blk.1.indexer.attn_q_b.weight", (64, 256), "bf16"),
               ("blk.2.attn_compressor_kv.weight", (256, 256), "bf16")]
    m = from_gguf(_header(kv, tensors))
    assert m.params.compress_ratios == (0, 4, 128)
    c = layer_caches(m.params, CacheConfig(ctx=4096, type_k="f16"))
    assert [x.kind for x in c] == ["dsv4"] * 3 and c[0].index_bytes == 0 and c[1].index_bytes > c[2].index_bytes > 0


def test_header_name_is_file_name_safe():
    ref = builtin("qwen3-32b")
    kv = _base_kv("qwen3", ref.params) | {"general.name": "Qwen3 32B Instruct"}
    assert from_gguf(_header(kv, _tensors(ref))).name == "Qwen3-32B-Instruct"
