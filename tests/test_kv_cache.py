"""KV cache and recurrent state per layer against the engines' own allocation formulas.

Each expected value is written out from the engine code it cites (ggml_row_size: q8_0 = 34 bytes per 32
elements, f16 = 2 bytes per element, f32 = 4), never taken from the planner's output:

* ik_llama.cpp @ 8337e4cd src/llama-model.cpp ``llama_model::cache_size`` (lines 2463-2532) and src/llama.cpp
  ``llama_kv_cache_init`` (line 1161; DSA indexer cache_kr_l at line 1433; recurrent s_l at line 1380).
* llama.cpp src/llama-kv-cache.cpp (``has_v = !is_mla``; K/V ``[n_embd_{k,v}_gqa, kv_size, n_stream]``),
  src/llama-kv-cache-iswa.cpp (``size_swa = GGML_PAD(min(size_base, n_swa*n_seq + n_ubatch), 256)``),
  src/llama-memory-recurrent.cpp + src/llama-hparams.cpp (``n_embd_r``/``n_embd_s`` F32 rows per sequence).
"""

from __future__ import annotations

import dataclasses

import pytest

from planner.errors import UnknownModelError
from planner.kv_cache import CacheConfig, cache_layers, layer_caches, total_cache_bytes
from planner.memory import RunConfig, kv_bytes_per_layer
from planner.tensors import ModelParams, builtin


def Q8(n: int) -> int:       # ggml_row_size(GGML_TYPE_Q8_0, n): 34 bytes per block of 32
    return n // 32 * 34


def F16(n: int) -> int:
    return 2 * n


# ------------------------------------------------------------------------------------- full attention (GQA)

def test_gqa_ik_matches_cache_size_formula():
    # ik: k = row(type_k, n_embd_head_k) * n_head_kv * rows; v = row(type_v, n_embd_v_gqa) * rows
    p = builtin("qwen3-235b-a22b").params                       # 4 KV heads x 128
    cfg = CacheConfig(ctx=32768)
    (c0, *_rest) = layer_caches(p, cfg)
    assert (c0.kind, c0.cells) == ("full", 32768)
    assert c0.k_bytes == Q8(128) * 4 * 32768 and c0.v_bytes == Q8(512) * 32768
    assert len(layer_caches(p, cfg)) == 94
    # the memory model's existing formula agrees (it is the same ik rule)
    assert c0.total_bytes == kv_bytes_per_layer(p, RunConfig(ctx=32768))


def test_padding_with_and_without_flash_attention():
    p = builtin("qwen3-32b").params
    # get_padding(flash_attn) = 256 : 32 (ik src/llama-context.h:74)
    assert layer_caches(p, CacheConfig(ctx=1000, flash_attn=True, type_v="f16"))[0].cells == 1024
    assert layer_caches(p, CacheConfig(ctx=1000, flash_attn=False, type_v="f16"))[0].cells == 1024
    assert layer_caches(p, CacheConfig(ctx=1001, flash_attn=False, type_v="f16"))[0].cells == 1024
    assert layer_caches(p, CacheConfig(ctx=1025, flash_attn=False, type_v="f16"))[0].cells == 1056


# ------------------------------------------------------------------------------------------------- MLA

@pytest.mark.parametrize("fa,mla,expected", [
    (True, 3, F16(576) * 4096),                                # FA: c^KV only, K type
    (False, 3, Q8(576) * 4096),                                # mla 2/3 without FA: the V type holds c^KV
    (False, 1, F16(576) * 4096 + Q8(512 * 4096)),              # mla 1 without FA: c^KV (K type) + kv^T (V type)
])
def test_mla_ik_modes(fa, mla, expected):
    p = builtin("deepseek-r1").params
    cfg = CacheConfig(ctx=4096, type_k="f16", type_v="q8_0", flash_attn=fa, mla=mla)
    c = layer_caches(p, cfg)[0]
    assert (c.kind, c.total_bytes) == ("mla", expected)


def test_mla_off_is_full_per_head_cache():
    p = builtin("deepseek-r1").params        # -mla 0: K [192, 128 heads], V [128 * 128] per cell
    c = layer_caches(p, CacheConfig(ctx=256, type_k="f16", type_v="f16", mla=0))[0]
    assert (c.k_bytes, c.v_bytes) == (F16(192) * 128 * 256, F16(128 * 128) * 256)


def test_mla_mainline_k_only():
    p = builtin("kimi-k2-0905").params      # has_v = !is_mla; K row = kv_lora_rank + n_rot = 576
    c = layer_caches(p, CacheConfig(engine="mainline", ctx=8192))[0]
    assert (c.k_bytes, c.v_bytes) == (Q8(576) * 8192, 0)


# ------------------------------------------------------------------------------------ DSA indexer (GLM-5)

def test_glm5_dsa_indexer_cache_ik():
    p = builtin("glm-5").params
    cfg = CacheConfig(ctx=16384, type_k="q8_0")
    caches = layer_caches(p, cfg)
    assert len(caches) == 78                                    # the NextN block (layer 78) has no cache
    with_index = [c.layer for c in caches if c.index_bytes]
    # indexer_is_full[il] = il <= 1 || il % 4 == 2 (src/llama-hparams.cpp:1918)
    assert with_index == [0, 1] + [il for il in range(2, 78) if il % 4 == 2]
    # cache_kr_l = [indexer_head_size 128, kv_size] in idx_type_k (default f16)
    assert caches[2].index_bytes == F16(128) * 16384
    assert caches[2].k_bytes == Q8(512 + 64) * 16384


def test_mtp_layers_get_a_cache_only_with_mtp():
    p = builtin("glm-5").params
    with_mtp = layer_caches(p, CacheConfig(ctx=4096, mtp=True))
    assert len(with_mtp) == 79 and with_mtp[78].kind == "mla"
    assert with_mtp[78].index_bytes == 0                          # MTP tail: no indexer cache (is_mtp_tail_layer)
    air = builtin("glm-4.5-air").params
    assert len(cache_layers(air, CacheConfig())) == 46             # n_layer - nextn_predict_layers
    assert len(cache_layers(air, CacheConfig(mtp=True))) == 47
    assert len(cache_layers(air, CacheConfig(engine="mainline", mtp=True))) == 46   # n_layer_kv_from_start


# ------------------------------------------------------------------------------- sliding-window attention

def test_gpt_oss_swa_mainline_vs_ik():
    p = builtin("gpt-oss-120b").params          # 8 KV heads x 64, window 128, layers 0, 2, 4 ... sliding
    ml = layer_caches(p, CacheConfig(engine="mainline", ctx=131072, ubatch=512))
    # size_swa = GGML_PAD(min(131072, 128 * 1 + 512), 256) = 768
    assert [c.cells for c in ml[:4]] == [768, 131072, 768, 131072]
    assert [c.kind for c in ml[:2]] == ["swa", "full"]
    assert ml[0].total_bytes == 2 * Q8(512) * 768
    assert ml[1].total_bytes == 2 * Q8(512) * 131072
    # ik allocates every layer at kv_size (rows(il) = size unless --swa-compress)
    ik = layer_caches(p, CacheConfig(engine="ik", ctx=131072))
    assert {c.cells for c in ik} == {131072}
    assert ik[0].total_bytes == Q8(64) * 8 * 131072 + Q8(512) * 131072


def test_gemma3_pattern_and_swa_full():
    p = builtin("gemma-3-27b").params           # window 1024 on layers il % 6 < 5
    ml = layer_caches(p, CacheConfig(engine="mainline", ctx=32768, ubatch=512))
    assert [c.cells for c in ml[:7]] == [1536] * 5 + [32768, 1536]
    full = layer_caches(p, CacheConfig(engine="mainline", ctx=32768, swa_full=True))
    assert {c.cells for c in full} == {32768}


def test_llama4_chunked_layers_mainline():
    p = builtin("llama-4-scout").params         # 8192-token chunks on 3 of 4 layers
    # -kvu: one stream; the window cache n_swa * n_seq + n_ubatch = 8192 * 2 + 512 = 16896 cells (66 * 256,
    # src/llama-kv-cache-iswa.cpp:73 @0c1e57098 `n_swa*(unified ? n_seq_max : 1) + n_ubatch`)
    ml = layer_caches(p, CacheConfig(engine="mainline", ctx=65536, ubatch=512, n_seq=2, unified=True))
    assert [c.cells for c in ml[:4]] == [16896, 16896, 16896, 65536]
    # without -kvu: two streams of n_ctx_seq = GGML_PAD(65536 / 2, 256) = 32768 cells (llama-context.cpp:290-300),
    # the window cache min(32768, 8192 + 512) = 8704 cells per stream; bytes count both streams
    two = layer_caches(p, CacheConfig(engine="mainline", ctx=65536, ubatch=512, n_seq=2))
    assert [c.cells for c in two[:4]] == [8704, 8704, 8704, 32768]
    assert two[3].total_bytes == ml[3].total_bytes                      # 2 x 32768 cells = 65536
    assert two[0].total_bytes * 16896 == ml[0].total_bytes * 2 * 8704


# ----------------------------------------------------------------------------------- recurrent (hybrid)

def test_qwen3_next_state_is_per_sequence_and_context_free():
    p = builtin("qwen3-next-80b-a3b").params
    # ik n_embd_v_s: conv (4-1) * (2 * 128*16 + 4096) + delta-net state (4096/32)^2 * 32 floats, F32, per slot
    state = 4 * (3 * (2 * 2048 + 4096) + 128 * 128 * 32)
    assert state == 2_195_456
    for ctx in (4096, 262144):
        caches = layer_caches(p, CacheConfig(ctx=ctx))
        assert [c.kind for c in caches[:4]] == ["recurrent"] * 3 + ["full"]
        assert caches[0].state_bytes == state and caches[0].cells == 0
        assert caches[3].total_bytes == Q8(256) * 2 * ctx + Q8(512) * ctx
    assert layer_caches(p, CacheConfig(n_seq=4))[0].state_bytes == 4 * state
    # mainline: r = (d_conv-1)*(d_inner + 2*n_group*d_state), s = d_state*d_inner, F32, per sequence
    ml = layer_caches(p, CacheConfig(engine="mainline", ctx=4096))
    assert ml[0].state_bytes == 4 * (3 * (4096 + 2 * 16 * 128) + 128 * 4096) == state


def test_qwen35_state():
    p = builtin("qwen3.5-397b-a17b").params     # 64 value heads x 128, 16 key heads x 128
    c = layer_caches(p, CacheConfig(ctx=8192))
    assert sum(x.kind == "recurrent" for x in c) == 45 and sum(x.kind == "full" for x in c) == 15
    assert c[0].state_bytes == 4 * (3 * (2 * 2048 + 8192) + 128 * 128 * 64) == 4_341_760


# ------------------------------------------------------------------------------------------ DeepSeek-V4

def _dsv4_params() -> ModelParams:
    return ModelParams(arch="deepseek4", n_layer=3, n_embd=4096, n_vocab=1000, n_head=64, n_head_kv=1,
                       head_dim=512, indexer_head_size=128, compress_ratios=(0, 4, 128))


def test_deepseek4_compressed_caches_ik():
    p, kv = _dsv4_params(), 32768
    c = layer_caches(p, CacheConfig(ctx=kv, type_k="f16"))
    raw = F16(512) * 1 * kv                                       # K-only raw cache, no V
    csa = hca = None
    csa = -(-(kv // 4) // 256) * 256                              # GGML_PAD(ceil(kv/4), 256) = 8192
    hca = -(-(kv // 128) // 256) * 256                            # GGML_PAD(ceil(kv/128), 256) = 256
    assert [x.k_bytes for x in c] == [raw] * 3 and c[0].index_bytes == 0
    assert c[1].index_bytes == (F16(512) * csa + F16(128) * csa
                                + 2 * 512 * 2 * 4 * 4 * 2 + 2 * 128 * 2 * 4 * 4 * 2)
    assert c[2].index_bytes == F16(512) * hca + 512 * 128 * 4 * 2


def test_deepseek4_mainline_formula():
    """llama.cpp 0c1e57098 llama_kv_cache_dsv4 (src/llama-kv-cache-dsv4.cpp:1210-1335): a K-only raw cache in an
    iSWA cache where every layer slides (GGML_PAD(min(kv, n_swa + n_ubatch), 256) cells), the CSA (ratio 4) and
    lightning-indexer caches of GGML_PAD(ceil(kv / 4), 256) cells, the HCA (ratio 128) cache of
    GGML_PAD(ceil(kv / 128), 256) cells, all in the K type, and F32 compressor states [n_embd_state, state_size]
    x 2 (kv, score): CSA 2*head x 8, HCA head x 128, indexer 2*index_head x 8 (lines 1313-1328)."""
    p = dataclasses.replace(_dsv4_params(), n_swa=128)
    kv = 32768
    c = layer_caches(p, CacheConfig(engine="mainline", ctx=kv, type_k="f16", type_v="f16", ubatch=512))
    raw = F16(512) * 768                                          # GGML_PAD(min(32768, 128 + 512), 256) = 768
    assert [x.k_bytes for x in c] == [raw] * 3 and [x.cells for x in c] == [768] * 3
    assert c[0].index_bytes == 0
    assert c[1].index_bytes == (F16(512) * 8192 + F16(128) * 8192
                                + 2 * 4 * (2 * 512) * 8 + 2 * 4 * (2 * 128) * 8)
    assert c[2].index_bytes == F16(512) * 256 + 2 * 4 * 512 * 128


def test_deepseek4_refused_without_ratios_or_window():
    with pytest.raises(UnknownModelError, match="compress_ratios"):
        layer_caches(dataclasses.replace(_dsv4_params(), compress_ratios=(0,)), CacheConfig())
    # mainline's loader reads attention.sliding_window unconditionally (src/models/deepseek4.cpp:32)
    with pytest.raises(UnknownModelError, match="sliding_window"):
        layer_caches(_dsv4_params(), CacheConfig(engine="mainline"))


def test_deepseek4_builtin_window_from_config():
    """V4-Flash's config.json sliding_window = 128 reaches the model (the converter writes it,
    conversion/deepseek.py:665 @0c1e57098): mainline's raw cache is 128 + 512 padded to 768 cells."""
    p = builtin("deepseek-v4-flash").params
    assert p.n_swa == 128
    c = layer_caches(p, CacheConfig(engine="mainline", ctx=131072, type_k="f16", type_v="f16"))
    assert {x.cells for x in c} == {768} and c[0].k_bytes == F16(512) * 768


# ----------------------------------------------------------------------------------- what is refused

@pytest.mark.parametrize("changes,match", [
    ({"full_attn_interval": 4}, "state sizes"),                                   # hybrid without ssm.*
    ({"full_attn_interval": 4, "ssm_d_conv": 4, "ssm_d_inner": 64, "ssm_d_state": 16}, "group_count"),
    ({"unknown_layout": "recurrent-state tensors ssm_conv1d, ssm_x"}, "ssm_conv1d"),  # Mamba-style file
    ({"n_swa": 4096}, "sliding window 4096 without a layer pattern"),           # mainline needs the pattern
])
def test_unknown_layouts_are_named(changes, match):
    p = dataclasses.replace(builtin("qwen3-32b").params, **changes)
    with pytest.raises(UnknownModelError, match=match):
        layer_caches(p, CacheConfig(engine="mainline"))


def test_total_is_the_sum_of_layers():
    p = builtin("gpt-oss-20b").params
    cfg = CacheConfig(engine="mainline", ctx=8192)
    assert total_cache_bytes(p, cfg) == sum(c.total_bytes for c in layer_caches(p, cfg)) == (
        12 * 2 * Q8(512) * 768 + 12 * 2 * Q8(512) * 8192)


def test_glm5_dsa_indexer_cache_mainline():
    # llama_kv_cache_dsa: kv_lid = llama_kv_cache with n_head_kv 1, n_embd_head_k = indexer_head_size, K type only
    p = builtin("glm-5").params
    c = layer_caches(p, CacheConfig(engine="mainline", ctx=8192, type_k="q8_0"))
    assert len(c) == 78 and {x.index_bytes for x in c} == {Q8(128) * 8192}
    assert c[0].k_bytes == Q8(576) * 8192 and c[0].v_bytes == 0


def test_gqa_ik_matches_a_real_engine_log():
    # ik_llama.cpp 8337e4cd, llama-cli on a 94-layer qwen3moe (h512, 2 KV heads x 64), -c 512, FA on, f16 cache:
    #   "KV self size = 23.50 MiB, K (f16): 11.75 MiB, V (f16): 11.75 MiB"; with -ts 1,1 over two RPC devices
    #   "RPC0[...50152] KV buffer size = 12.75 MiB", "RPC0[...50153] KV buffer size = 10.75 MiB" (51 + 43 layers)
    p = ModelParams(arch="qwen3moe", n_layer=94, n_embd=512, n_vocab=512, n_head=8, n_head_kv=2, head_dim=64,
                    n_expert=8, n_expert_used=2, n_ff_exp=256)
    caches = layer_caches(p, CacheConfig(ctx=512, type_k="f16", type_v="f16", flash_attn=True))
    mib = 1 << 20
    assert sum(c.k_bytes for c in caches) == 11.75 * mib and sum(c.v_bytes for c in caches) == 11.75 * mib
    assert sum(c.total_bytes for c in caches[:51]) == 12.75 * mib
    assert sum(c.total_bytes for c in caches[51:]) == 10.75 * mib


def test_gqa_mainline_matches_a_real_engine_log():
    # llama.cpp (mainline 0c1e57098, the RPC harness build) on the same model:
    #   "llama_kv_cache: size = 23.50 MiB (512 cells, 94 layers, 1/1 seqs), K (f16): 11.75 MiB, V (f16): 11.75 MiB"
    p = ModelParams(arch="qwen3moe", n_layer=94, n_embd=512, n_vocab=512, n_head=8, n_head_kv=2, head_dim=64,
                    n_expert=8, n_expert_used=2, n_ff_exp=256)
    caches = layer_caches(p, CacheConfig(engine="mainline", ctx=512, type_k="f16", type_v="f16"))
    assert {c.cells for c in caches} == {512} and len(caches) == 94
    assert sum(c.k_bytes for c in caches) == sum(c.v_bytes for c in caches) == 11.75 * (1 << 20)
