#!/usr/bin/env python3
"""Tiny but structurally faithful GGUFs of the attention/state kinds the planner sizes, for mainline llama.cpp.

One builder per kind. Each writes every tensor the mainline loader at 0c1e57098 creates as required (names from
``LLM_TENSOR_NAMES`` in src/llama-arch.cpp, ggml shapes from the model's ``load_arch_tensors`` in
src/models/<arch>.cpp) and the hyperparameter keys as the converter writes them (conversion/<family>.py and
conversion/base.py ``set_gguf_parameters``; key strings from ``LLM_KV_NAMES`` in src/llama-arch.cpp). Weights are
seeded random (tiny_gguf.TinyWeights: 2-D/3-D BF16, 1-D F32); widths are small (4-26 MB a file; the tests keep
only the headers, a few KB), but the cache-relevant numbers (head counts, head widths, windows, patterns, state
sizes, compress ratios) follow the real models' structure.

Kinds (name -> GGUF architecture, what the cache holds):
  dsv4       deepseek4   K-only raw SWA cache + CSA/HCA compressed caches + lightning-indexer cache + compressor
                         states (src/llama-kv-cache-dsv4.cpp)
  mla        deepseek2   MLA in the converter's current layout (attn_k_b/attn_v_b, key_length_mla): K-only cache
  dsa        glm-dsa     MLA + DSA lightning-indexer key cache on "full" indexer layers (llama-kv-cache-dsa.cpp)
  qwen35moe  qwen35moe   gated delta-net recurrent layers + full-attention every 4th layer (llama-memory-hybrid)
  gemma3     gemma3      sliding window 512 on 5 of 6 layers (llama-kv-cache-iswa.cpp)
  gptoss     gpt-oss     sliding window 128 on every other layer, attention sinks (llama-kv-cache-iswa.cpp)
  llama4     llama4      chunked attention (8192-token chunks) on 3 of 4 layers (llama-kv-cache-iswa.cpp)
  nemotronh  nemotron_h  Mamba-2 SSM / attention / MLP layers from per-layer arrays (llama-memory-hybrid.cpp)
  gemma4     gemma4      sliding window on 4 of 5 layers, per-layer head widths and KV heads, the last layers
                         reusing earlier layers' KV (shared_kv_layers; src/llama-model.cpp create_memory reuse)
  gemma4kv   gemma4      the gemma4 layers with the full layers' V taken from K (attention_k_eq_v, no attn_v) and
                         no shared-KV layers, as the larger dense Gemma-4 checkpoints
  kda        bailingmoe3 Kimi Delta Attention recurrent layers + MLA every 4th layer (llama-memory-hybrid; ik too)
  kimilinear kimi-linear the same KDA layers (factorized f/g projections) + MLA without Q LoRA on 2 of 8 layers
  jamba      jamba       Mamba-1 SSM layers + attention on one layer of 8 (llama-memory-hybrid)
  granitehybrid granitehybrid  Mamba-2 layers + attention on 2 of 8 layers (llama-memory-hybrid)
  falconh1   falcon-h1   attention and a Mamba-2 mixer in every layer: KV and state on every layer
  mamba      mamba       Mamba-1 in every layer, no attention: state only (llama-memory-recurrent; ik too)
  mamba2     mamba2      Mamba-2 in every layer, no attention: state only (llama-memory-recurrent)
  plamo2     plamo2      Mamba layers + attention on every other layer (llama-memory-hybrid)
  lfm2       lfm2        short-conv layers + attention on 3 of 8 layers: conv state and KV (llama-memory-hybrid)
  lfm2moe    lfm2moe     lfm2 with 2 dense lead layers, then sigmoid-gated MoE; the last layer short-conv
  rwkv6      rwkv6       RWKV-6 time/channel mix in every layer: token shift + wkv state (llama-memory-recurrent)
  rwkv7      rwkv7       RWKV-7, the same state rows (llama-memory-recurrent)
  rwkv6rescale2 rwkv6    the rwkv6 file with rescale_every_n_layers 2 (RWKV-6 halves every 2nd layer's output)
  rwkv6qwen2 rwkv6qwen2  RWKV-6 time mix on a Qwen2 trunk (one token-shift row, grouped key/value, SwiGLU FFN)
  arwkv7     arwkv7      RWKV-7 time mix on a Qwen2 trunk (one token-shift row, SwiGLU FFN)

Usage: make_tiny_arch.py KIND OUT.gguf [--seed 0]
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import gguf
import numpy as np

from tiny_gguf import TinyWeights, add_tokenizer

VOCAB = 512


def _common(w: gguf.GGUFWriter, arch: str, *, n_layer: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int,
            ctx: int = 4096, eps: float = 1e-6, rope_base: float = 10000.0) -> None:
    """What conversion/base.py TextModel.set_gguf_parameters writes for every model."""
    w.add_name(f"tiny-{arch}")
    w.add_block_count(n_layer)
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    if n_ff:
        w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    if n_head_kv:                                            # 0: the builder writes a per-layer array
        w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)


def _u32(w: gguf.GGUFWriter, arch: str, key: str, value: int) -> None:
    w.add_uint32(f"{arch}.{key}", value)


def _f32(w: gguf.GGUFWriter, arch: str, key: str, value: float) -> None:
    w.add_float32(f"{arch}.{key}", value)


# ----------------------------------------------------------------------------------------------- DeepSeek-V4

def build_dsv4(w: gguf.GGUFWriter, t: TinyWeights, top_k: int = 64) -> None:
    """deepseek4: src/models/deepseek4.cpp load_arch_hparams/load_arch_tensors (lines 19-176); keys as
    conversion/deepseek.py DeepseekV4Model.set_gguf_parameters writes them (lines 659-689). The layer pattern is
    V4-Flash's: two uncompressed (pure sliding-window) layers, then CSA (ratio 4, with the lightning indexer) and
    HCA (ratio 128) alternating; one hash-routed layer (ffn_gate_tid2eid, I32)."""
    arch = "deepseek4"
    L, H, nh, hd, rope = 6, 256, 4, 128, 64
    q_lora, o_groups, o_lora, hc = 64, 2, 32, 4
    E, used, ffn_exp, n_hash = 8, 2, 64, 1
    ix_heads, ix_dim = 4, 64
    ratios = [0, 0, 4, 128, 4, 128]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=0, n_head=nh, n_head_kv=1)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    _u32(w, arch, "expert_gating_func", 4)                       # LLAMA_EXPERT_GATING_FUNC_TYPE_SQRT_SOFTPLUS
    w.add_rope_dimension_count(rope)
    w.add_q_lora_rank(q_lora)
    _u32(w, arch, "attention.sliding_window", 128)
    w.add_expert_feed_forward_length(ffn_exp)
    w.add_expert_shared_count(1)
    w.add_expert_weights_scale(1.5)
    w.add_expert_weights_norm(True)
    w.add_array(f"{arch}.swiglu_clamp_exp", [10.0] * L)
    w.add_array(f"{arch}.swiglu_clamp_shexp", [10.0] * L)
    _u32(w, arch, "attention.indexer.head_count", ix_heads)
    _u32(w, arch, "attention.indexer.key_length", ix_dim)
    _u32(w, arch, "attention.indexer.top_k", top_k)
    _u32(w, arch, "attention.output_group_count", o_groups)
    _u32(w, arch, "attention.output_lora_rank", o_lora)
    w.add_array(f"{arch}.attention.compress_ratios", ratios)
    _f32(w, arch, "attention.compress_rope_freq_base", 160000.0)
    _u32(w, arch, "hyper_connection.count", hc)
    _u32(w, arch, "hyper_connection.sinkhorn_iterations", 20)
    _f32(w, arch, "hyper_connection.epsilon", 1e-6)
    _u32(w, arch, "hash_layer_count", n_hash)
    _u32(w, arch, "embedding_length_out", H * hc)
    add_tokenizer(w, VOCAB)

    big, f32 = t.big, t.f32
    hc_dim, hc_mix = hc * H, (2 + hc) * hc
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    f32("output_hc_fn.weight", (hc, hc_dim))
    f32("output_hc_base.weight", (hc,))
    f32("output_hc_scale.weight", (1,), 1.0)
    rng = np.random.default_rng(1234)
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        f32(p + "attn_sinks.weight", (nh,), 0.0)
        big(p + "attn_q_a.weight", (q_lora, H))
        f32(p + "attn_q_a_norm.weight", (q_lora,), 1.0)
        big(p + "attn_q_b.weight", (nh * hd, q_lora))
        big(p + "attn_kv.weight", (hd, H))
        f32(p + "attn_kv_a_norm.weight", (hd,), 1.0)
        big(p + "attn_output_a.weight", (o_lora * o_groups, nh * hd // o_groups))
        big(p + "attn_output_b.weight", (H, o_groups * o_lora))
        for part in ("attn", "ffn"):
            f32(p + f"hc_{part}_fn.weight", (hc_mix, hc_dim))
            f32(p + f"hc_{part}_base.weight", (hc_mix,))
            f32(p + f"hc_{part}_scale.weight", (3,), 1.0)
        r = ratios[i]
        if r:
            coff = 2 if r == 4 else 1
            big(p + "attn_compressor_kv.weight", (coff * hd, H))
            big(p + "attn_compressor_gate.weight", (coff * hd, H))
            f32(p + "attn_compressor_ape.weight", (r, coff * hd))
            f32(p + "attn_compressor_norm.weight", (hd,), 1.0)
            if r == 4:
                big(p + "indexer.proj.weight", (ix_heads, H))
                big(p + "indexer.attn_q_b.weight", (ix_heads * ix_dim, q_lora))
                big(p + "indexer_compressor_kv.weight", (2 * ix_dim, H))
                big(p + "indexer_compressor_gate.weight", (2 * ix_dim, H))
                f32(p + "indexer_compressor_ape.weight", (r, 2 * ix_dim))
                f32(p + "indexer_compressor_norm.weight", (ix_dim,), 1.0)
        f32(p + "ffn_gate_inp.weight", (E, H))
        if i < n_hash:
            # conversion/deepseek.py _write_hash_routing_tensors: I32 token-id -> expert table [n_vocab, n_used]
            w.add_tensor(p + "ffn_gate_tid2eid.weight", rng.integers(0, E, size=(VOCAB, used), dtype=np.int32))
        else:
            f32(p + "exp_probs_b.bias", (E,), 0.0)
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
        big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
        big(p + "ffn_up_exps.weight", (E, ffn_exp, H))
        big(p + "ffn_gate_shexp.weight", (ffn_exp, H))
        big(p + "ffn_down_shexp.weight", (H, ffn_exp))
        big(p + "ffn_up_shexp.weight", (ffn_exp, H))


# ------------------------------------------------------------------------------ MLA (deepseek2) and DSA (glm-dsa)

def _mla_keys(w: gguf.GGUFWriter, arch: str, *, L: int, H: int, nh: int, q_lora: int, kv_lora: int, rope: int,
              nope: int, v_head: int, E: int, used: int, ffn_exp: int, ffn: int, ctx: int) -> None:
    """conversion/deepseek.py DeepseekV2Model.set_gguf_parameters (lines 319-380): MLA converts to MQA with one
    KV head of kv_lora_rank + rope (key) / kv_lora_rank (value) and the per-head widths in *_mla."""
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=1, ctx=ctx)
    w.add_leading_dense_block_count(1)
    w.add_vocab_size(VOCAB)
    w.add_q_lora_rank(q_lora)
    w.add_kv_lora_rank(kv_lora)
    w.add_key_length(kv_lora + rope)
    w.add_value_length(kv_lora)
    _u32(w, arch, "attention.key_length_mla", nope + rope)
    _u32(w, arch, "attention.value_length_mla", v_head)
    w.add_expert_feed_forward_length(ffn_exp)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    w.add_expert_shared_count(1)
    w.add_expert_weights_scale(2.5)
    w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_rope_dimension_count(rope)


def _mla_block(t: TinyWeights, i: int, *, H: int, nh: int, q_lora: int, kv_lora: int, rope: int, nope: int,
               v_head: int, E: int, ffn_exp: int, ffn: int) -> None:
    """src/models/deepseek2.cpp load_arch_tensors (is_mla: attn_k_b/attn_v_b, not the legacy attn_kv_b)."""
    big, f32, p = t.big, t.f32, f"blk.{i}."
    f32(p + "attn_norm.weight", (H,), 1.0)
    f32(p + "attn_q_a_norm.weight", (q_lora,), 1.0)
    f32(p + "attn_kv_a_norm.weight", (kv_lora,), 1.0)
    big(p + "attn_q_a.weight", (q_lora, H))
    big(p + "attn_q_b.weight", (nh * (nope + rope), q_lora))
    big(p + "attn_kv_a_mqa.weight", (kv_lora + rope, H))
    big(p + "attn_k_b.weight", (nh, kv_lora, nope))
    big(p + "attn_v_b.weight", (nh, v_head, kv_lora))
    big(p + "attn_output.weight", (H, nh * v_head))
    f32(p + "ffn_norm.weight", (H,), 1.0)
    if i == 0:
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        big(p + "ffn_up.weight", (ffn, H))
    else:
        f32(p + "ffn_gate_inp.weight", (E, H))
        f32(p + "exp_probs_b.bias", (E,), 0.0)
        big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
        big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
        big(p + "ffn_up_exps.weight", (E, ffn_exp, H))
        big(p + "ffn_gate_shexp.weight", (ffn_exp, H))
        big(p + "ffn_down_shexp.weight", (H, ffn_exp))
        big(p + "ffn_up_shexp.weight", (ffn_exp, H))


_MLA = dict(H=256, nh=4, q_lora=96, kv_lora=512, rope=64, nope=128, v_head=128, E=8, ffn_exp=64, ffn=512)


def build_mla(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """deepseek2 in the converter's current MLA layout; DeepSeek-V3 head widths (kv_lora 512, rope 64, nope 128,
    v 128), 6 layers (not 26/27/47/48: those trigger the engines' Lite/GLM-Lite special cases)."""
    L = 6
    _mla_keys(w, "deepseek2", L=L, used=2, ctx=163840, **_MLA)
    add_tokenizer(w, VOCAB)
    t.big("token_embd.weight", (VOCAB, _MLA["H"]))
    for i in range(L):
        _mla_block(t, i, **_MLA)
    t.f32("output_norm.weight", (_MLA["H"],), 1.0)
    t.big("output.weight", (VOCAB, _MLA["H"]))


def build_dsa(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """glm-dsa (GLM-5): MLA plus the DSA lightning indexer on every layer (src/models/glm-dsa.cpp lines 1-140; a
    context_length under 1,048,576 and no indexer_types key make every layer a "full" indexer layer, as for
    GLM-5/5.1); keys as conversion/glm.py GlmMoeDsaModel.set_gguf_parameters writes them."""
    arch, L, ix_heads, ix_dim = "glm-dsa", 6, 4, 128
    _mla_keys(w, arch, L=L, used=2, ctx=202752, **_MLA)
    _u32(w, arch, "attention.indexer.head_count", ix_heads)
    _u32(w, arch, "attention.indexer.key_length", ix_dim)
    _u32(w, arch, "attention.indexer.top_k", 64)
    add_tokenizer(w, VOCAB)
    H, q_lora = _MLA["H"], _MLA["q_lora"]
    t.big("token_embd.weight", (VOCAB, H))
    for i in range(L):
        _mla_block(t, i, **_MLA)
        p = f"blk.{i}."
        t.f32(p + "indexer.k_norm.weight", (ix_dim,), 1.0)
        t.f32(p + "indexer.k_norm.bias", (ix_dim,), 0.0)
        t.big(p + "indexer.proj.weight", (ix_heads, H))
        t.big(p + "indexer.attn_k.weight", (ix_dim, H))
        t.big(p + "indexer.attn_q_b.weight", (ix_heads * ix_dim, q_lora))
    t.f32("output_norm.weight", (H,), 1.0)
    t.big("output.weight", (VOCAB, H))


# ------------------------------------------------------------------------------------ gated delta-net hybrid

def build_qwen35moe(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """qwen35moe (Qwen3.5 MoE): 8 trunk layers, full attention every 4th (layers 3, 7), the rest gated delta-net,
    plus one MTP block (nextn_predict_layers = 1, skipped by the loader without MTP). src/models/qwen35moe.cpp
    load_arch_hparams/load_arch_tensors; keys as conversion/qwen.py Qwen3NextModel.set_gguf_parameters (lines
    372-395: ssm.conv_kernel = linear_conv_kernel_dim, state_size = linear_key_head_dim, group_count =
    linear_num_key_heads, time_step_rank = linear_num_value_heads, inner_size = value_head_dim * value heads)."""
    arch, L, nextn = "qwen35moe", 8, 1
    H, nh, nkv, hd = 256, 4, 2, 128
    d_conv, d_state, n_k, n_v = 4, 64, 2, 4
    E, used, ffn_exp = 8, 2, 64
    key_dim, value_dim = d_state * n_k, d_state * n_v
    conv_dim = 2 * key_dim + value_dim
    _common(w, arch, n_layer=L + nextn, n_embd=H, n_ff=0, n_head=nh, n_head_kv=nkv, ctx=262144)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    w.add_expert_feed_forward_length(ffn_exp)
    _u32(w, arch, "expert_shared_feed_forward_length", ffn_exp)
    _u32(w, arch, "ssm.conv_kernel", d_conv)
    _u32(w, arch, "ssm.state_size", d_state)
    _u32(w, arch, "ssm.group_count", n_k)
    _u32(w, arch, "ssm.time_step_rank", n_v)
    _u32(w, arch, "ssm.inner_size", value_dim)
    # config.json layer_types -> attention.recurrent_layers (NextN block: False), then the interval (qwen.py:382-389)
    w.add_array(f"{arch}.attention.recurrent_layers", [(i + 1) % 4 != 0 for i in range(L)] + [False] * nextn)
    _u32(w, arch, "full_attention_interval", 4)
    w.add_rope_dimension_count(hd // 4)
    w.add_array(f"{arch}.rope.dimension_sections", [6, 5, 5, 0])
    _u32(w, arch, "nextn_predict_layers", nextn)
    add_tokenizer(w, VOCAB)

    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L + nextn):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        f32(p + "post_attention_norm.weight", (H,), 1.0)
        if i >= L or (i + 1) % 4 == 0:
            big(p + "attn_q.weight", (2 * hd * nh, H))          # query and its output gate
            big(p + "attn_k.weight", (hd * nkv, H))
            big(p + "attn_v.weight", (hd * nkv, H))
            big(p + "attn_output.weight", (H, hd * nh))
            f32(p + "attn_q_norm.weight", (hd,), 1.0)
            f32(p + "attn_k_norm.weight", (hd,), 1.0)
        else:
            big(p + "attn_qkv.weight", (conv_dim, H))
            big(p + "attn_gate.weight", (value_dim, H))
            f32(p + "ssm_conv1d.weight", (conv_dim, d_conv))
            f32(p + "ssm_dt.bias", (n_v,), 0.0)
            f32(p + "ssm_a", (n_v,), -1.0)
            big(p + "ssm_beta.weight", (n_v, H))
            big(p + "ssm_alpha.weight", (n_v, H))
            f32(p + "ssm_norm.weight", (d_state,), 1.0)
            big(p + "ssm_out.weight", (H, value_dim))
        f32(p + "ffn_gate_inp.weight", (E, H))
        big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
        big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
        big(p + "ffn_up_exps.weight", (E, ffn_exp, H))
        f32(p + "ffn_gate_inp_shexp.weight", (H,))
        big(p + "ffn_gate_shexp.weight", (ffn_exp, H))
        big(p + "ffn_up_shexp.weight", (ffn_exp, H))
        big(p + "ffn_down_shexp.weight", (H, ffn_exp))
        if i >= L:
            big(p + "nextn.eh_proj.weight", (H, 2 * H))
            f32(p + "nextn.enorm.weight", (H,), 1.0)
            f32(p + "nextn.hnorm.weight", (H,), 1.0)
            f32(p + "nextn.shared_head_norm.weight", (H,), 1.0)


# ------------------------------------------------------------------------------------------ sliding window

def build_gemma3(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """gemma3: 8 layers, window 512, no pattern key (conversion/gemma.py Gemma3Model writes sliding_window only;
    src/models/gemma3.cpp load_swa_pattern(ml, 6): layers il % 6 < 5 slide), gemma-3's 2:1 query:KV heads and
    head_dim 128; tied embeddings (no output.weight), as the 27B checkpoint."""
    arch, L, H, nh, nkv, hd, ffn = "gemma3", 8, 256, 4, 2, 128, 512
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=nkv, ctx=131072, rope_base=1e6)
    w.add_key_length(hd)
    w.add_value_length(hd)
    _u32(w, arch, "attention.sliding_window", 512)
    _f32(w, arch, "rope.freq_base_swa", 10000.0)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        big(p + "attn_q.weight", (hd * nh, H))
        big(p + "attn_k.weight", (hd * nkv, H))
        big(p + "attn_v.weight", (hd * nkv, H))
        big(p + "attn_output.weight", (H, hd * nh))
        f32(p + "post_attention_norm.weight", (H,), 1.0)
        f32(p + "attn_k_norm.weight", (hd,), 1.0)
        f32(p + "attn_q_norm.weight", (hd,), 1.0)
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_up.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        f32(p + "post_ffw_norm.weight", (H,), 1.0)


def build_gptoss(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """gpt-oss: 6 layers, window 128 on even layers (src/models/openai-moe.cpp load_swa_pattern(ml, 2)), 64-wide
    heads with 8:1... here 4 query heads per KV head, attention sinks and biases; keys as conversion/gpt_oss.py
    writes them (sliding_window, expert_feed_forward_length; no pattern key)."""
    arch, L, H, nh, nkv, hd = "gpt-oss", 6, 256, 8, 2, 64
    E, used, ffn_exp = 8, 2, 128
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn_exp, n_head=nh, n_head_kv=nkv, ctx=131072, eps=1e-5,
            rope_base=150000.0)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    _u32(w, arch, "attention.sliding_window", 128)
    w.add_expert_feed_forward_length(ffn_exp)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        f32(p + "post_attention_norm.weight", (H,), 1.0)
        big(p + "attn_q.weight", (hd * nh, H))
        big(p + "attn_k.weight", (hd * nkv, H))
        big(p + "attn_v.weight", (hd * nkv, H))
        f32(p + "attn_q.bias", (hd * nh,), 0.0)
        f32(p + "attn_k.bias", (hd * nkv,), 0.0)
        f32(p + "attn_v.bias", (hd * nkv,), 0.0)
        big(p + "attn_output.weight", (H, hd * nh))
        f32(p + "attn_output.bias", (H,), 0.0)
        f32(p + "attn_sinks.weight", (nh,), 0.0)
        f32(p + "ffn_gate_inp.weight", (E, H))
        f32(p + "ffn_gate_inp.bias", (E,), 0.0)
        big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
        big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
        big(p + "ffn_up_exps.weight", (E, ffn_exp, H))
        f32(p + "ffn_gate_exps.bias", (E, ffn_exp), 0.0)
        f32(p + "ffn_down_exps.bias", (E, H), 0.0)
        f32(p + "ffn_up_exps.bias", (E, ffn_exp), 0.0)


def build_gemma4(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """gemma4: 10 layers, every 5th full attention (sliding_window_pattern written as a per-layer array), window
    512, wider heads and fewer KV heads on full layers (key_length 256 / key_length_swa 128, head_count_kv as a
    per-layer array 4 (SWA) / 1 (full), so V rows differ: 512 vs 256), and the last 5 layers reusing the KV of layers 3 (SWA) and 4 (full)
    (shared_kv_layers = 5; the engine's reuse rule n_layer_kv_from_start - (is_swa ? 2 : 1) needs the last owner
    pair to be SWA then full, as in Gemma-4 E2B: 35 layers, 20 shared):
    src/models/gemma4.cpp load_arch_hparams/load_arch_tensors; keys as conversion/gemma.py Gemma4Model writes
    them (lines 671-735); one rope_freqs tensor for the full layers (proportional RoPE), no per-layer embeddings."""
    _gemma4(w, t, shared=5, v_on_full=True)


def build_gemma4kv(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """gemma4 as the larger dense Gemma-4 checkpoints have it: attention_k_eq_v, the full layers without attn_v
    (the engines use K as V: mainline src/models/gemma4.cpp:78-85 and 246-248, ik build_gemma4.cpp:963-975), and
    no shared-KV layers (shared_kv_layers 0); otherwise the gemma4 file."""
    _gemma4(w, t, shared=0, v_on_full=False)


def _gemma4(w: gguf.GGUFWriter, t: TinyWeights, *, shared: int, v_on_full: bool) -> None:
    arch, L, H, nh, ffn = "gemma4", 10, 256, 8, 512
    hd_full, hd_swa, kv_full, kv_swa = 256, 128, 1, 4
    swa = [il % 5 < 4 for il in range(L)]
    kv_heads = [kv_swa if s else kv_full for s in swa]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=0, ctx=131072, rope_base=1e6)
    w.add_array(f"{arch}.attention.head_count_kv", kv_heads)
    _u32(w, arch, "attention.sliding_window", 512)
    _f32(w, arch, "rope.freq_base_swa", 10000.0)
    _u32(w, arch, "attention.shared_kv_layers", shared)
    _u32(w, arch, "embedding_length_per_layer_input", 0)
    w.add_array(f"{arch}.attention.sliding_window_pattern", swa)
    w.add_key_length(hd_full)
    w.add_value_length(hd_full)
    _u32(w, arch, "attention.key_length_swa", hd_swa)
    _u32(w, arch, "attention.value_length_swa", hd_swa)
    w.add_rope_dimension_count(hd_full)
    _u32(w, arch, "rope.dimension_count_swa", hd_swa)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    f32("rope_freqs.weight", (hd_full // 2,), 1.0)
    for i in range(L):
        p, hd, nkv = f"blk.{i}.", (hd_swa if swa[i] else hd_full), kv_heads[i]
        f32(p + "attn_norm.weight", (H,), 1.0)
        big(p + "attn_q.weight", (hd * nh, H))
        big(p + "attn_k.weight", (hd * nkv, H))
        if v_on_full or swa[i]:
            big(p + "attn_v.weight", (hd * nkv, H))
        big(p + "attn_output.weight", (H, hd * nh))
        f32(p + "attn_q_norm.weight", (hd,), 1.0)
        f32(p + "attn_k_norm.weight", (hd,), 1.0)
        f32(p + "post_attention_norm.weight", (H,), 1.0)
        f32(p + "layer_output_scale.weight", (1,), 1.0)
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_up.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        f32(p + "post_ffw_norm.weight", (H,), 1.0)


def build_llama4(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """llama4 (Llama 4 Maverick-like): 8 layers, MoE every 2nd layer (interleave_moe_layer_step), no
    sliding_window key, so the loader's chunked attention applies: n_swa = 8192 on 3 of 4 layers
    (src/models/llama4.cpp load_arch_hparams: LLAMA_SWA_TYPE_CHUNKED, load_swa_pattern(ml, 4)); keys as
    conversion/llama.py Llama4Model writes them (interleave_moe_layer_step, expert_feed_forward_length)."""
    arch, L, H, nh, nkv, hd, ffn = "llama4", 8, 256, 4, 2, 64, 512
    E, used, ffn_exp = 8, 1, 128
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=nkv, ctx=1048576, eps=1e-5,
            rope_base=500000.0)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(VOCAB)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    _u32(w, arch, "interleave_moe_layer_step", 2)
    w.add_expert_feed_forward_length(ffn_exp)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        big(p + "attn_q.weight", (hd * nh, H))
        big(p + "attn_k.weight", (hd * nkv, H))
        big(p + "attn_v.weight", (hd * nkv, H))
        big(p + "attn_output.weight", (H, hd * nh))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        if (i + 1) % 2 == 0:
            f32(p + "ffn_gate_inp.weight", (E, H))
            big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
            big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
            big(p + "ffn_up_exps.weight", (E, ffn_exp, H))
            big(p + "ffn_gate_shexp.weight", (ffn_exp, H))
            big(p + "ffn_down_shexp.weight", (H, ffn_exp))
            big(p + "ffn_up_shexp.weight", (ffn_exp, H))
        else:
            big(p + "ffn_gate.weight", (ffn, H))
            big(p + "ffn_down.weight", (H, ffn))
            big(p + "ffn_up.weight", (ffn, H))


def build_nemotronh(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """nemotron_h (Nemotron-H): a Mamba-2 hybrid whose layer kinds come from per-layer arrays: head_count_kv 0 and
    feed_forward_length 0 = a Mamba-2 (SSM) layer, head_count_kv > 0 = attention, feed_forward_length > 0 = MLP
    (src/models/nemotron-h.cpp load_arch_hparams/load_arch_tensors @0c1e57098); keys as conversion/nemotron.py
    NemotronHModel / granite.py GraniteHybridModel write them from hybrid_override_pattern. Pattern "M-M*M-M-":
    4 SSM layers, 1 attention layer, 3 MLP layers."""
    arch, H, nh, nkv, hd, ffn = "nemotron_h", 256, 4, 2, 64, 512
    pattern = "M-M*M-M-"
    L = len(pattern)
    d_conv, d_inner, d_state, n_group, n_ssm_head = 4, 256, 32, 2, 8
    conv_dim = d_inner + 2 * n_group * d_state
    d_in_proj = 2 * d_inner + 2 * n_group * d_state + n_ssm_head
    _common(w, arch, n_layer=L, n_embd=H, n_ff=0, n_head=nh, n_head_kv=0, ctx=8192, eps=1e-5)
    w.add_array(f"{arch}.attention.head_count_kv", [nkv if c == "*" else 0 for c in pattern])
    w.add_array(f"{arch}.feed_forward_length", [ffn if c == "-" else 0 for c in pattern])
    w.add_key_length(hd)
    w.add_value_length(hd)
    _f32(w, arch, "attention.layer_norm_epsilon", 1e-5)
    _u32(w, arch, "ssm.conv_kernel", d_conv)
    _u32(w, arch, "ssm.state_size", d_state)
    _u32(w, arch, "ssm.group_count", n_group)
    _u32(w, arch, "ssm.inner_size", d_inner)
    _u32(w, arch, "ssm.time_step_rank", n_ssm_head)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i, kind in enumerate(pattern):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if kind == "M":
            big(p + "ssm_in.weight", (d_in_proj, H))
            f32(p + "ssm_conv1d.weight", (conv_dim, d_conv))
            f32(p + "ssm_conv1d.bias", (conv_dim,), 0.0)
            f32(p + "ssm_dt.bias", (n_ssm_head,), 0.0)
            f32(p + "ssm_a", (n_ssm_head, 1), -1.0)
            f32(p + "ssm_d", (n_ssm_head, 1), 1.0)
            f32(p + "ssm_norm.weight", (n_group, d_inner // n_group), 1.0)
            big(p + "ssm_out.weight", (H, d_inner))
        elif kind == "*":
            big(p + "attn_q.weight", (hd * nh, H))
            big(p + "attn_k.weight", (hd * nkv, H))
            big(p + "attn_v.weight", (hd * nkv, H))
            big(p + "attn_output.weight", (H, hd * nh))
        else:
            big(p + "ffn_up.weight", (ffn, H))
            big(p + "ffn_down.weight", (H, ffn))


# ------------------------------------------------- Kimi Delta Attention (bailingmoe3) and Mamba/Mamba-2 hybrids

def build_kda(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """bailingmoe3 (Ling-3.0): Kimi Delta Attention (KDA) recurrent layers and MLA full-attention layers, MoE with
    a shared expert after one dense layer. Layer kind from the per-layer head_count_kv (0 = KDA), as
    conversion/bailingmoe3.py BailingMoeV3Model.set_gguf_parameters writes it (full attention where
    (bid + 1) % layer_group_size == 0; group 4 here); loaders: mainline src/models/bailingmoe3.cpp
    load_arch_hparams/load_arch_tensors @0c1e57098, ik src/llama-hparams.cpp:1413-1470 and
    src/llama-load-tensors.cpp:4053-4140 create_bailingmoe3_tensors @8337e4cd3 (both load this file: the MLA
    output is n_head * v_head_dim wide on mainline, n_head * kda head_dim on ik, so v_head_dim = kda head_dim)."""
    arch, L, H, nh, kda_hd, d_conv = "bailingmoe3", 8, 256, 4, 64, 4
    q_lora, kv_lora, rope, nope, v_head = 96, 512, 64, 128, 64
    E, used, ffn_exp, ffn, group = 8, 2, 64, 512, 4
    d_inner = kda_hd * nh
    full = [(i + 1) % group == 0 for i in range(L)]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=0, ctx=32768)
    w.add_array(f"{arch}.attention.head_count_kv", [1 if f else 0 for f in full])
    w.add_vocab_size(VOCAB)
    _u32(w, arch, "ssm.conv_kernel", d_conv)
    _u32(w, arch, "kda.head_dim", kda_hd)
    w.add_bool(f"{arch}.kda.safe_gate", True)
    _f32(w, arch, "kda.gate_lower_bound", -5.0)
    w.add_q_lora_rank(q_lora)
    w.add_kv_lora_rank(kv_lora)
    w.add_rope_dimension_count(rope)
    w.add_key_length(kv_lora + rope)
    _u32(w, arch, "attention.key_length_mla", nope + rope)
    _u32(w, arch, "attention.value_length_mla", v_head)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    w.add_expert_feed_forward_length(ffn_exp)
    w.add_expert_shared_feed_forward_length(ffn_exp)
    w.add_expert_shared_count(1)
    _u32(w, arch, "expert_group_count", 1)
    _u32(w, arch, "expert_group_used_count", 1)
    w.add_leading_dense_block_count(1)
    w.add_expert_weights_scale(2.5)
    w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if not full[i]:
            for n in ("q", "k", "v"):
                big(p + f"attn_{n}.weight", (d_inner, H))
            for n in ("q", "k", "v"):
                f32(p + f"ssm_conv1d_{n}.weight", (1, d_inner, 1, d_conv))   # the converter's 4-D layout
            big(p + "ssm_f_a.weight", (d_inner, H))
            big(p + "ssm_beta.weight", (nh, H))
            f32(p + "ssm_a", (nh, 1), 1.0)
            f32(p + "ssm_dt.bias", (d_inner,), 0.0)
            big(p + "ssm_g_a.weight", (d_inner, H))
            f32(p + "ssm_norm.weight", (kda_hd,), 1.0)
            big(p + "attn_output.weight", (H, d_inner))
        else:
            big(p + "attn_q_a.weight", (q_lora, H))
            f32(p + "attn_q_a_norm.weight", (q_lora,), 1.0)
            big(p + "attn_q_b.weight", (nh * (nope + rope), q_lora))
            big(p + "attn_kv_a_mqa.weight", (kv_lora + rope, H))
            f32(p + "attn_kv_a_norm.weight", (kv_lora,), 1.0)
            big(p + "attn_k_b.weight", (nh, kv_lora, nope))
            big(p + "attn_v_b.weight", (nh, v_head, kv_lora))
            big(p + "attn_gate.weight", (nh, H))
            big(p + "attn_output.weight", (H, nh * v_head))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        if i == 0:
            big(p + "ffn_gate.weight", (ffn, H))
            big(p + "ffn_up.weight", (ffn, H))
            big(p + "ffn_down.weight", (H, ffn))
        else:
            f32(p + "ffn_gate_inp.weight", (E, H))
            f32(p + "exp_probs_b.bias", (E,), 0.0)
            big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
            big(p + "ffn_up_exps.weight", (E, ffn_exp, H))
            big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
            big(p + "ffn_gate_shexp.weight", (ffn_exp, H))
            big(p + "ffn_up_shexp.weight", (ffn_exp, H))
            big(p + "ffn_down_shexp.weight", (H, ffn_exp))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))


def build_kimilinear(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """kimi-linear (Kimi-Linear-48B-A3B; mainline only): the same KDA recurrent layers as bailingmoe3 (with the
    f/g projections factorized: ssm_f_a/ssm_f_b, ssm_g_a/ssm_g_b) where head_count_kv is 0, MLA without Q
    compression on the layers linear_attn_config.full_attn_layers names (1-based; 4 and 8 here), MoE after one
    dense layer (src/models/kimi-linear.cpp load_arch_hparams/load_arch_tensors @0c1e57098; keys as
    conversion/kimi_linear.py KimiLinearModel.set_gguf_parameters writes them)."""
    arch, L, H, nh, kda_hd, d_conv = "kimi-linear", 8, 256, 4, 64, 4
    kv_lora, rope, nope, v_head = 512, 64, 128, 128
    E, used, ffn_exp, ffn = 8, 2, 64, 512
    d_inner = kda_hd * nh
    full = [il + 1 in (4, 8) for il in range(L)]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=0, ctx=32768)
    w.add_array(f"{arch}.attention.head_count_kv", [1 if f else 0 for f in full])
    w.add_vocab_size(VOCAB)
    _u32(w, arch, "ssm.conv_kernel", d_conv)
    _u32(w, arch, "kda.head_dim", kda_hd)
    w.add_kv_lora_rank(kv_lora)
    w.add_rope_dimension_count(rope)
    w.add_key_length(kv_lora + rope)
    _u32(w, arch, "attention.key_length_mla", nope + rope)
    _u32(w, arch, "attention.value_length_mla", v_head)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    w.add_expert_feed_forward_length(ffn_exp)
    w.add_expert_shared_count(1)
    w.add_leading_dense_block_count(1)
    w.add_expert_weights_scale(2.446)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if not full[i]:
            for n in ("q", "k", "v"):
                f32(p + f"ssm_conv1d_{n}.weight", (1, d_inner, 1, d_conv))
            for n in ("q", "k", "v"):
                big(p + f"attn_{n}.weight", (d_inner, H))
            big(p + "ssm_f_a.weight", (kda_hd, H))
            big(p + "ssm_f_b.weight", (d_inner, kda_hd))
            big(p + "ssm_beta.weight", (nh, H))
            f32(p + "ssm_a", (1, 1, nh, 1), -1.0)
            f32(p + "ssm_dt.bias", (d_inner,), 0.0)
            big(p + "ssm_g_a.weight", (kda_hd, H))
            big(p + "ssm_g_b.weight", (d_inner, kda_hd))
            f32(p + "ssm_norm.weight", (kda_hd,), 1.0)
            big(p + "attn_output.weight", (H, d_inner))
        else:
            f32(p + "attn_kv_a_norm.weight", (kv_lora,), 1.0)
            big(p + "attn_q.weight", (nh * (nope + rope), H))
            big(p + "attn_kv_a_mqa.weight", (kv_lora + rope, H))
            big(p + "attn_k_b.weight", (nh, kv_lora, nope))
            big(p + "attn_v_b.weight", (nh, v_head, kv_lora))
            big(p + "attn_output.weight", (H, nh * v_head))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        if i == 0:
            big(p + "ffn_gate.weight", (ffn, H))
            big(p + "ffn_down.weight", (H, ffn))
            big(p + "ffn_up.weight", (ffn, H))
        else:
            f32(p + "ffn_gate_inp.weight", (E, H))
            big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
            big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
            big(p + "ffn_up_exps.weight", (E, ffn_exp, H))
            big(p + "ffn_gate_shexp.weight", (ffn_exp, H))
            big(p + "ffn_down_shexp.weight", (H, ffn_exp))
            big(p + "ffn_up_shexp.weight", (ffn_exp, H))
            f32(p + "exp_probs_b.bias", (E,), 0.0)


def build_jamba(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """jamba: Mamba-1 layers and attention layers from the per-layer head_count_kv (0 = Mamba), MoE on every
    other layer (src/models/jamba.cpp load_arch_hparams/load_arch_tensors @0c1e57098; keys as conversion/jamba.py
    JambaModel.set_gguf_parameters writes them: attention every attn_layer_period from attn_layer_offset, experts
    every expert_layer_period from expert_layer_offset). Real Jamba: period 8 offset 4, experts period 2 offset 1;
    d_inner = 2 n_embd (asserted by the loader)."""
    arch, L, H, nh, nkv, ffn, E, used = "jamba", 8, 256, 4, 2, 512, 4, 2
    d_conv, d_state, dt_rank = 4, 16, 16
    d_inner, hd = 2 * H, H // nh
    attn = [i % 8 == 4 for i in range(L)]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=0, ctx=16384)
    w.add_array(f"{arch}.attention.head_count_kv", [nkv if a else 0 for a in attn])
    _u32(w, arch, "ssm.conv_kernel", d_conv)
    _u32(w, arch, "ssm.inner_size", d_inner)
    _u32(w, arch, "ssm.state_size", d_state)
    _u32(w, arch, "ssm.time_step_rank", dt_rank)
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if attn[i]:
            big(p + "attn_q.weight", (H, H))
            big(p + "attn_k.weight", (hd * nkv, H))
            big(p + "attn_v.weight", (hd * nkv, H))
            big(p + "attn_output.weight", (H, H))
        else:
            big(p + "ssm_in.weight", (2 * d_inner, H))
            f32(p + "ssm_conv1d.weight", (d_inner, d_conv))
            f32(p + "ssm_conv1d.bias", (d_inner,), 0.0)
            big(p + "ssm_x.weight", (dt_rank + 2 * d_state, d_inner))
            f32(p + "ssm_dt_norm.weight", (dt_rank,), 1.0)
            big(p + "ssm_dt.weight", (d_inner, dt_rank))
            f32(p + "ssm_dt.bias", (d_inner,), 0.0)
            f32(p + "ssm_b_norm.weight", (d_state,), 1.0)
            f32(p + "ssm_c_norm.weight", (d_state,), 1.0)
            f32(p + "ssm_a", (d_inner, d_state), -1.0)
            f32(p + "ssm_d", (d_inner,), 1.0)
            big(p + "ssm_out.weight", (H, d_inner))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        if i % 2 == 1:
            f32(p + "ffn_gate_inp.weight", (E, H))
            big(p + "ffn_gate_exps.weight", (E, ffn, H))
            big(p + "ffn_down_exps.weight", (E, H, ffn))
            big(p + "ffn_up_exps.weight", (E, ffn, H))
        else:
            big(p + "ffn_gate.weight", (ffn, H))
            big(p + "ffn_down.weight", (H, ffn))
            big(p + "ffn_up.weight", (ffn, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))


def _mamba2_block(t: TinyWeights, p: str, *, H: int, d_conv: int, d_inner: int, d_state: int, n_group: int,
                  n_ssm_head: int) -> None:
    """One Mamba-2 mixer (granite-hybrid.cpp / falcon-h1.cpp load_arch_tensors @0c1e57098)."""
    conv_dim = d_inner + 2 * n_group * d_state
    t.big(p + "ssm_in.weight", (d_inner + conv_dim + n_ssm_head, H))
    t.f32(p + "ssm_conv1d.weight", (conv_dim, d_conv))
    t.f32(p + "ssm_conv1d.bias", (conv_dim,), 0.0)
    t.f32(p + "ssm_dt.bias", (n_ssm_head,), 0.0)
    t.f32(p + "ssm_a", (n_ssm_head, 1), -1.0)
    t.f32(p + "ssm_d", (n_ssm_head, 1), 1.0)
    t.f32(p + "ssm_norm.weight", (n_group, d_inner // n_group), 1.0)
    t.big(p + "ssm_out.weight", (H, d_inner))


_MAMBA2 = dict(d_conv=4, d_inner=512, d_state=32, n_group=2, n_ssm_head=8)


def _ssm_keys(w: gguf.GGUFWriter, arch: str, m: dict[str, int]) -> None:
    _u32(w, arch, "ssm.conv_kernel", m["d_conv"])
    _u32(w, arch, "ssm.inner_size", m["d_inner"])
    _u32(w, arch, "ssm.state_size", m["d_state"])
    _u32(w, arch, "ssm.time_step_rank", m["n_ssm_head"])
    _u32(w, arch, "ssm.group_count", m["n_group"])


def build_granitehybrid(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """granitehybrid (Granite-4.0-H dense, e.g. -micro): Mamba-2 layers and attention layers from the per-layer
    head_count_kv (0 = Mamba-2; conversion/granite.py GraniteHybridModel from layer_types), a dense SwiGLU FFN in
    every layer (src/models/granite-hybrid.cpp @0c1e57098; d_inner = 2 n_embd is asserted). Attention on layers
    2 and 6 of 8."""
    arch, L, H, nh, nkv, hd, ffn = "granitehybrid", 8, 256, 4, 2, 64, 512
    attn = [i % 4 == 2 for i in range(L)]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=0, ctx=16384, eps=1e-5)
    w.add_array(f"{arch}.attention.head_count_kv", [nkv if a else 0 for a in attn])
    _ssm_keys(w, arch, _MAMBA2)
    _f32(w, arch, "logit_scale", 8.0)
    _f32(w, arch, "residual_scale", 0.25)
    _f32(w, arch, "embedding_scale", 12.0)
    _f32(w, arch, "attention.scale", 0.0078125)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if attn[i]:
            big(p + "attn_q.weight", (hd * nh, H))
            big(p + "attn_k.weight", (hd * nkv, H))
            big(p + "attn_v.weight", (hd * nkv, H))
            big(p + "attn_output.weight", (H, hd * nh))
        else:
            _mamba2_block(t, p, H=H, **_MAMBA2)
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        big(p + "ffn_up.weight", (ffn, H))


def build_falconh1(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """falcon-h1: every layer runs attention and a Mamba-2 mixer in parallel, so every layer has both a KV cache
    and a recurrent state (src/models/falcon-h1.cpp @0c1e57098: is_recr for all layers; create_memory's filters
    for FALCON_H1 keep every layer in both caches). The pre-FFN norm has no .weight suffix (gguf
    FFN_PRE_NORM "blk.N.ffn_norm"; the loader asks for tn(LLM_TENSOR_FFN_NORM, i)). Keys as conversion/falcon_h1.py."""
    arch, L, H, nh, nkv, hd, ffn = "falcon-h1", 4, 256, 4, 2, 64, 512
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=nkv, ctx=16384, eps=1e-5)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_vocab_size(VOCAB)
    _ssm_keys(w, arch, _MAMBA2)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    big("output.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    for i in range(L):
        p = f"blk.{i}."
        _mamba2_block(t, p, H=H, **_MAMBA2)
        big(p + "attn_q.weight", (hd * nh, H))
        big(p + "attn_k.weight", (hd * nkv, H))
        big(p + "attn_v.weight", (hd * nkv, H))
        big(p + "attn_output.weight", (H, hd * nh))
        f32(p + "attn_norm.weight", (H,), 1.0)
        f32(p + "ffn_norm", (H,), 1.0)
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        big(p + "ffn_up.weight", (ffn, H))


# ------------------------------------------------------------------------ pure recurrent models (no attention)

def _ssm_only_common(w: gguf.GGUFWriter, arch: str, L: int, H: int) -> None:
    """What conversion/mamba.py MambaModel/Mamba2Model.set_gguf_parameters writes @0c1e57098 (lines 63-73,
    155-166): context 2**20, feed_forward_length 0 and head_count 0 ("unused, but seemingly required when
    loading"), no head_count_kv."""
    w.add_name(f"tiny-{arch}")
    w.add_context_length(2**20)
    w.add_embedding_length(H)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(L)


def build_mamba(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """mamba (Mamba-1, e.g. state-spaces/mamba-130m: d_conv 4, d_state 16, dt_rank ceil(n_embd / 16), d_inner =
    2 n_embd, which the loader requires): every layer a Mamba-1 mixer, no attention, no FFN
    (src/models/mamba.cpp load_arch_hparams/load_arch_tensors @0c1e57098; ik src/llama-load-tensors.cpp
    LLM_ARCH_MAMBA @8337e4cd3 creates the same tensors)."""
    arch, L, H = "mamba", 6, 256
    d_conv, d_state, dt_rank, d_inner = 4, 16, 16, 2 * H
    _ssm_only_common(w, arch, L, H)
    _u32(w, arch, "ssm.conv_kernel", d_conv)
    _u32(w, arch, "ssm.inner_size", d_inner)
    _u32(w, arch, "ssm.state_size", d_state)
    _u32(w, arch, "ssm.time_step_rank", dt_rank)
    _f32(w, arch, "attention.layer_norm_rms_epsilon", 1e-5)
    w.add_bool(f"{arch}.ssm.dt_b_c_rms", False)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        big(p + "ssm_in.weight", (2 * d_inner, H))
        f32(p + "ssm_conv1d.weight", (d_inner, d_conv))
        f32(p + "ssm_conv1d.bias", (d_inner,), 0.0)
        big(p + "ssm_x.weight", (dt_rank + 2 * d_state, d_inner))
        big(p + "ssm_dt.weight", (d_inner, dt_rank))
        f32(p + "ssm_dt.bias", (d_inner,), 0.0)
        f32(p + "ssm_a", (d_inner, d_state), -1.0)
        f32(p + "ssm_d", (d_inner,), 1.0)
        big(p + "ssm_out.weight", (H, d_inner))


def build_mamba2(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """mamba2 (e.g. state-spaces/mamba2-130m: d_conv 4, d_state 128, head_dim 64, n_groups 1; here 2 groups of
    d_state 32): every layer a Mamba-2 mixer, no attention, no FFN (src/models/mamba2.cpp @0c1e57098;
    ssm.time_step_rank = d_inner / head_dim = the SSM heads, conversion/mamba.py:163)."""
    arch, L, H = "mamba2", 6, 256
    _ssm_only_common(w, arch, L, H)
    _ssm_keys(w, arch, _MAMBA2)
    _f32(w, arch, "attention.layer_norm_rms_epsilon", 1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        _mamba2_block(t, p, H=H, **_MAMBA2)


def build_plamo2(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """plamo2 (PLaMo-2: Mamba layers and attention layers, every other one by mamba_step 2): a layer is Mamba iff
    its head_count_kv is 0 (src/models/plamo2.cpp load_arch_hparams/load_arch_tensors @0c1e57098); keys as
    conversion/plamo.py Plamo2Model.set_gguf_parameters writes them (per-layer head_count / head_count_kv arrays,
    ssm.inner_size = mamba_num_heads x hidden_size_per_head, ssm.group_count 0). Fused QKV, per-head Q/K norms,
    post-attention and post-FFN norms without a .weight suffix (tn(LLM_TENSOR_ATTN_POST_NORM, i))."""
    arch, L, H, nh, nkv, hd, ffn = "plamo2", 4, 256, 4, 2, 64, 512
    m_heads, d_state, d_conv = 4, 16, 4
    d_inner, dt_dim = m_heads * hd, max(64, H // 16)
    attn = [i % 2 == 1 for i in range(L)]
    w.add_name(f"tiny-{arch}")
    w.add_vocab_size(VOCAB)
    w.add_head_count_kv([nkv if a else 0 for a in attn])
    w.add_head_count([nh if a else 0 for a in attn])
    w.add_context_length(4096)
    w.add_embedding_length(H)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_block_count(L)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_ssm_state_size(d_state)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_time_step_rank(m_heads)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_group_count(0)
    w.add_feed_forward_length(ffn)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if attn[i]:
            big(p + "attn_qkv.weight", ((nh + 2 * nkv) * hd, H))
            f32(p + "attn_q_norm.weight", (nh, hd), 1.0)
            f32(p + "attn_k_norm.weight", (nkv, hd), 1.0)
            big(p + "attn_output.weight", (H, nh * hd))
        else:
            big(p + "ssm_in.weight", (2 * d_inner, H))
            f32(p + "ssm_conv1d.weight", (d_inner, d_conv))
            big(p + "ssm_x.weight", (dt_dim + 2 * d_state, d_inner))
            big(p + "ssm_dt.weight", (m_heads, dt_dim))
            f32(p + "ssm_dt.bias", (m_heads,), 0.0)
            f32(p + "ssm_a", (m_heads,), -1.0)
            f32(p + "ssm_d", (m_heads,), 1.0)
            big(p + "ssm_out.weight", (H, d_inner))
            f32(p + "ssm_dt_norm", (dt_dim,), 1.0)
            f32(p + "ssm_b_norm", (d_state,), 1.0)
            f32(p + "ssm_c_norm", (d_state,), 1.0)
        f32(p + "post_attention_norm", (H,), 1.0)
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_down.weight", (H, ffn))
        big(p + "ffn_up.weight", (2 * ffn, H))
        f32(p + "post_ffw_norm", (H,), 1.0)


def build_lfm2(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """lfm2 (LFM2-350M/1.2B: gated short-convolution layers and GQA attention layers; here attention on layers 2, 5
    and 7 of 8): a layer is a short-conv layer iff its head_count_kv is 0 (src/models/lfm2.cpp
    load_arch_hparams/load_arch_tensors @0c1e57098); keys as conversion/lfm2.py LFM2Model.set_gguf_parameters
    writes them (head_count_kv 0 on conv layers, shortconv.l_cache = conv_L_cache, 3 in the released models);
    the final norm is token_embd_norm (LLM_TENSOR_OUTPUT_NORM_LFM2), the output tied to token_embd, conv weights
    F32 (conversion/base.py SHORTCONV_CONV)."""
    arch, L, H, nh, nkv, hd, ffn, l_cache = "lfm2", 8, 256, 4, 2, 64, 512, 3
    attn = [i in (2, 5, 7) for i in range(L)]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=0, n_head=nh, n_head_kv=0, ctx=32768, eps=1e-5)
    w.add_array(f"{arch}.attention.head_count_kv", [nkv if a else 0 for a in attn])
    w.add_vocab_size(VOCAB)
    _u32(w, arch, "shortconv.l_cache", l_cache)
    w.add_feed_forward_length(ffn)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("token_embd_norm.weight", (H,), 1.0)
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if attn[i]:
            f32(p + "attn_q_norm.weight", (hd,), 1.0)
            f32(p + "attn_k_norm.weight", (hd,), 1.0)
            big(p + "attn_q.weight", (nh * hd, H))
            big(p + "attn_k.weight", (nkv * hd, H))
            big(p + "attn_v.weight", (nkv * hd, H))
            big(p + "attn_output.weight", (H, nh * hd))
        else:
            f32(p + "shortconv.conv.weight", (H, l_cache))
            big(p + "shortconv.in_proj.weight", (3 * H, H))
            big(p + "shortconv.out_proj.weight", (H, H))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        big(p + "ffn_up.weight", (ffn, H))


def build_lfm2moe(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """lfm2moe (LFM2-8B-A1B: the lfm2 layers with a dense lead and sigmoid-gated MoE FFNs after it; here attention on
    layers 2 and 5 of 8, so the last layer is a short-conv layer as in the released models): keys as
    conversion/lfm2.py LFM2MoeModel.set_gguf_parameters writes them (expert_feed_forward_length,
    leading_dense_block_count, expert_gating_func SIGMOID; no expert_weights_scale/norm keys), experts merged per
    layer, the router's expert_bias as exp_probs_b.bias (src/models/lfm2moe.cpp load_arch_tensors @0c1e57098)."""
    arch, L, H, nh, nkv, hd, ffn, l_cache = "lfm2moe", 8, 256, 4, 2, 64, 512, 3
    E, used, ffn_exp, dense = 8, 4, 128, 2
    attn = [i in (2, 5) for i in range(L)]
    _common(w, arch, n_layer=L, n_embd=H, n_ff=ffn, n_head=nh, n_head_kv=0, ctx=32768, eps=1e-5)
    w.add_array(f"{arch}.attention.head_count_kv", [nkv if a else 0 for a in attn])
    w.add_expert_count(E)
    w.add_expert_used_count(used)
    w.add_expert_feed_forward_length(ffn_exp)
    w.add_leading_dense_block_count(dense)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_vocab_size(VOCAB)
    _u32(w, arch, "shortconv.l_cache", l_cache)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("token_embd_norm.weight", (H,), 1.0)
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        if attn[i]:
            f32(p + "attn_q_norm.weight", (hd,), 1.0)
            f32(p + "attn_k_norm.weight", (hd,), 1.0)
            big(p + "attn_q.weight", (nh * hd, H))
            big(p + "attn_k.weight", (nkv * hd, H))
            big(p + "attn_v.weight", (nkv * hd, H))
            big(p + "attn_output.weight", (H, nh * hd))
        else:
            f32(p + "shortconv.conv.weight", (H, l_cache))
            big(p + "shortconv.in_proj.weight", (3 * H, H))
            big(p + "shortconv.out_proj.weight", (H, H))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        if i < dense:
            big(p + "ffn_gate.weight", (ffn, H))
            big(p + "ffn_down.weight", (H, ffn))
            big(p + "ffn_up.weight", (ffn, H))
        else:
            big(p + "ffn_gate_inp.weight", (E, H))
            f32(p + "exp_probs_b.bias", (E,), 0.0)
            big(p + "ffn_gate_exps.weight", (E, ffn_exp, H))
            big(p + "ffn_down_exps.weight", (E, H, ffn_exp))
            big(p + "ffn_up_exps.weight", (E, ffn_exp, H))


def _rwkv_keys(w: gguf.GGUFWriter, arch: str, L: int, H: int, head: int, ffn: int) -> None:
    """conversion/rwkv.py Rwkv6Model/Rwkv7Model.set_gguf_parameters @0c1e57098: context 1048576, head_count 0, no
    token_shift_count (the loader's default 2, src/llama-hparams.h:143)."""
    w.add_name(f"tiny-{arch}")
    w.add_context_length(1048576)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_layer_norm_eps(1e-5)
    w.add_wkv_head_size(head)
    w.add_feed_forward_length(ffn)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_head_count(0)


def _rwkv_ends(t: TinyWeights, H: int) -> None:
    t.big("token_embd.weight", (VOCAB, H))
    t.f32("token_embd_norm.weight", (H,), 1.0)
    t.f32("token_embd_norm.bias", (H,), 0.0)
    t.f32("output_norm.weight", (H,), 1.0)
    t.f32("output_norm.bias", (H,), 0.0)
    t.big("output.weight", (VOCAB, H))


def build_rwkv6(w: gguf.GGUFWriter, t: TinyWeights, rescale: int = 6) -> None:
    """rwkv6 (RWKV-6 "Finch": time mix with a wkv state of head_size x n_embd per layer and sequence, token shift of
    2 x n_embd for the time and channel mixes; no attention): src/models/rwkv6.cpp load_arch_tensors @0c1e57098,
    fused lerp (conversion/rwkv.py stacks w/k/v/r/g into time_mix_lerp_fused), the converter's F32 tensors
    (TIME_MIX_FIRST/W1/W2/DECAY_W1/DECAY_W2/LERP_FUSED, conversion/base.py).  ``rescale``: rescale_every_n_layers
    (the released models' 6; kind rwkv6rescale2 halves every 2nd layer's output, so 4 layers show it)."""
    arch, L, H, head, ffn, tmx, tdx = "rwkv6", 4, 256, 64, 512, 32, 64
    _rwkv_keys(w, arch, L, H, head, ffn)
    w.add_rescale_every_n_layers(rescale)
    w.add_time_mix_extra_dim(tmx)
    w.add_time_decay_extra_dim(tdx)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    _rwkv_ends(t, H)
    for i in range(L):
        p = f"blk.{i}."
        for n in ("attn_norm", "attn_norm_2", "time_mix_ln"):
            f32(p + f"{n}.weight", (H,), 1.0)
            f32(p + f"{n}.bias", (H,), 0.0)
        f32(p + "time_mix_w1.weight", (5 * tmx, H))
        f32(p + "time_mix_w2.weight", (5, H, tmx))
        f32(p + "time_mix_lerp_x.weight", (H,))
        f32(p + "time_mix_lerp_fused.weight", (5, 1, 1, H))
        f32(p + "time_mix_first.weight", (H // head, head))
        f32(p + "time_mix_decay.weight", (H,))
        f32(p + "time_mix_decay_w1.weight", (tdx, H))
        f32(p + "time_mix_decay_w2.weight", (H, tdx))
        for n in ("key", "value", "receptance", "gate"):
            big(p + f"time_mix_{n}.weight", (H, H))
        big(p + "time_mix_output.weight", (H, H))
        f32(p + "channel_mix_lerp_k.weight", (H,))
        f32(p + "channel_mix_lerp_r.weight", (H,))
        big(p + "channel_mix_key.weight", (ffn, H))
        big(p + "channel_mix_value.weight", (H, ffn))
        big(p + "channel_mix_receptance.weight", (H, H))


def build_rwkv7(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """rwkv7 (RWKV-7 "Goose": the same state rows as RWKV-6, head_size x n_embd wkv state and 2 x n_embd token
    shift per layer and sequence): src/models/rwkv7.cpp load_arch_tensors @0c1e57098; LoRA ranks as
    conversion/rwkv.py Rwkv7Model writes them (decay, iclr, value-residual mix, gate)."""
    arch, L, H, head, ffn = "rwkv7", 4, 256, 64, 512
    r_decay, r_iclr, r_vres, r_gate = 32, 32, 16, 64
    _rwkv_keys(w, arch, L, H, head, ffn)
    w.add_decay_lora_rank(r_decay)
    w.add_iclr_lora_rank(r_iclr)
    w.add_value_residual_mix_lora_rank(r_vres)
    w.add_gate_lora_rank(r_gate)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    _rwkv_ends(t, H)
    for i in range(L):
        p = f"blk.{i}."
        for n in ("attn_norm", "attn_norm_2", "time_mix_ln"):
            f32(p + f"{n}.weight", (H,), 1.0)
            f32(p + f"{n}.bias", (H,), 0.0)
        f32(p + "time_mix_w0.weight", (H,))
        f32(p + "time_mix_w1.weight", (r_decay, H))
        f32(p + "time_mix_w2.weight", (H, r_decay))
        f32(p + "time_mix_a0.weight", (H,))
        big(p + "time_mix_a1.weight", (r_iclr, H))
        big(p + "time_mix_a2.weight", (H, r_iclr))
        r_v = r_iclr if i == 0 else r_vres
        f32(p + "time_mix_v0.weight", (H,))
        big(p + "time_mix_v1.weight", (r_v, H))
        big(p + "time_mix_v2.weight", (H, r_v))
        big(p + "time_mix_g1.weight", (r_gate, H))
        big(p + "time_mix_g2.weight", (H, r_gate))
        f32(p + "time_mix_lerp_fused.weight", (6, 1, 1, H))
        for n in ("k_k", "k_a", "r_k"):
            f32(p + f"time_mix_{n}.weight", (H,))
        for n in ("key", "value", "receptance"):
            big(p + f"time_mix_{n}.weight", (H, H))
        big(p + "time_mix_output.weight", (H, H))
        f32(p + "channel_mix_lerp_k.weight", (H,))
        big(p + "channel_mix_key.weight", (ffn, H))
        big(p + "channel_mix_value.weight", (H, ffn))


def build_rwkv6qwen2(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """rwkv6qwen2 (QRWKV6: RWKV-6 time mix on a Qwen2 trunk: RMS norms, one token-shift row, SwiGLU FFN):
    src/models/rwkv6qwen2.cpp load_arch_tensors @0c1e57098; keys as conversion/rwkv.py RWKV6Qwen2Model writes them
    (token_shift_count 1, head_count_kv for the grouped key/value, head_count 0); no time_mix_first (the gated
    linear attention path of the QRWKV checkpoints) and the key/value/receptance biases of the Qwen2 trunk."""
    arch, L, H, head, ffn, tmx, tdx, kv_heads = "rwkv6qwen2", 4, 256, 64, 512, 32, 64, 2
    kv = kv_heads * head
    _rwkv_keys(w, arch, L, H, head, ffn)
    w.add_time_mix_extra_dim(tmx)
    w.add_time_decay_extra_dim(tdx)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_token_shift_count(1)
    w.add_head_count_kv(kv_heads)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        f32(p + "time_mix_w1.weight", (5 * tmx, H))
        f32(p + "time_mix_w2.weight", (5, H, tmx))
        f32(p + "time_mix_lerp_x.weight", (H,))
        f32(p + "time_mix_lerp_fused.weight", (5, 1, 1, H))
        f32(p + "time_mix_decay.weight", (H,))
        f32(p + "time_mix_decay_w1.weight", (tdx, H))
        f32(p + "time_mix_decay_w2.weight", (H, tdx))
        big(p + "time_mix_key.weight", (kv, H))
        big(p + "time_mix_value.weight", (kv, H))
        big(p + "time_mix_receptance.weight", (H, H))
        big(p + "time_mix_gate.weight", (H, H))
        f32(p + "time_mix_key.bias", (kv,), 0.0)
        f32(p + "time_mix_value.bias", (kv,), 0.0)
        f32(p + "time_mix_receptance.bias", (H,), 0.0)
        big(p + "time_mix_output.weight", (H, H))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        big(p + "ffn_up.weight", (ffn, H))


def build_arwkv7(w: gguf.GGUFWriter, t: TinyWeights) -> None:
    """arwkv7 (RWKV-7 time mix on a Qwen2 trunk: RMS norms, one token-shift row, SwiGLU FFN): src/models/arwkv7.cpp
    load_arch_tensors @0c1e57098; keys as conversion/rwkv.py ARwkv7Model writes them (token_shift_count 1, the
    converter's LoRA ranks 64/64/32 and a gate of 128 with wkv_has_gate, here scaled down), with the gate and the
    time_mix_ln group norm."""
    arch, L, H, head, ffn = "arwkv7", 4, 256, 64, 512
    r_decay, r_iclr, r_vres, r_gate = 32, 32, 16, 64
    _rwkv_keys(w, arch, L, H, head, ffn)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_decay_lora_rank(r_decay)
    w.add_iclr_lora_rank(r_iclr)
    w.add_value_residual_mix_lora_rank(r_vres)
    w.add_gate_lora_rank(r_gate)
    w.add_token_shift_count(1)
    add_tokenizer(w, VOCAB)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (VOCAB, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (VOCAB, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        f32(p + "time_mix_w0.weight", (H,))
        f32(p + "time_mix_w1.weight", (r_decay, H))
        f32(p + "time_mix_w2.weight", (H, r_decay))
        f32(p + "time_mix_a0.weight", (H,))
        big(p + "time_mix_a1.weight", (r_iclr, H))
        big(p + "time_mix_a2.weight", (H, r_iclr))
        r_v = r_iclr if i == 0 else r_vres
        f32(p + "time_mix_v0.weight", (H,))
        big(p + "time_mix_v1.weight", (r_v, H))
        big(p + "time_mix_v2.weight", (H, r_v))
        big(p + "time_mix_g1.weight", (r_gate, H))
        big(p + "time_mix_g2.weight", (H, r_gate))
        f32(p + "time_mix_lerp_fused.weight", (6, 1, 1, H))
        for n in ("k_k", "k_a", "r_k"):
            f32(p + f"time_mix_{n}.weight", (H,))
        for n in ("key", "value", "receptance"):
            big(p + f"time_mix_{n}.weight", (H, H))
        f32(p + "time_mix_ln.weight", (H,), 1.0)
        f32(p + "time_mix_ln.bias", (H,), 0.0)
        big(p + "time_mix_output.weight", (H, H))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        big(p + "ffn_gate.weight", (ffn, H))
        big(p + "ffn_down.weight", (H, ffn))
        big(p + "ffn_up.weight", (ffn, H))


BUILDERS: dict[str, tuple[str, Callable[[gguf.GGUFWriter, TinyWeights], None]]] = {
    "dsv4": ("deepseek4", build_dsv4),
    # the dsv4 file keeping 512 keys per query (V4-Flash's index_topk): from -c 2048 down the indexer keeps every
    # compressed row and ik builds no top-k (build_deepseek4.cpp:1155-1170)
    "dsv4k512": ("deepseek4", lambda w, t: build_dsv4(w, t, top_k=512)),
    "mla": ("deepseek2", build_mla),
    "dsa": ("glm-dsa", build_dsa),
    "qwen35moe": ("qwen35moe", build_qwen35moe),
    "gemma3": ("gemma3", build_gemma3),
    "gptoss": ("gpt-oss", build_gptoss),
    "gemma4": ("gemma4", build_gemma4),
    "gemma4kv": ("gemma4", build_gemma4kv),
    "llama4": ("llama4", build_llama4),
    "nemotronh": ("nemotron_h", build_nemotronh),
    "kda": ("bailingmoe3", build_kda),
    "kimilinear": ("kimi-linear", build_kimilinear),
    "jamba": ("jamba", build_jamba),
    "granitehybrid": ("granitehybrid", build_granitehybrid),
    "falconh1": ("falcon-h1", build_falconh1),
    "mamba": ("mamba", build_mamba),
    "mamba2": ("mamba2", build_mamba2),
    "plamo2": ("plamo2", build_plamo2),
    "lfm2": ("lfm2", build_lfm2),
    "lfm2moe": ("lfm2moe", build_lfm2moe),
    "rwkv6": ("rwkv6", build_rwkv6),
    "rwkv7": ("rwkv7", build_rwkv7),
    "rwkv6rescale2": ("rwkv6", lambda w, t: build_rwkv6(w, t, rescale=2)),
    "rwkv6qwen2": ("rwkv6qwen2", build_rwkv6qwen2),
    "arwkv7": ("arwkv7", build_arwkv7),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(BUILDERS))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    arch, build = BUILDERS[a.kind]
    w = gguf.GGUFWriter(a.out, arch)
    t = TinyWeights(w, a.seed)
    build(w, t)
    t.finish()


if __name__ == "__main__":
    main()
