#!/usr/bin/env python3
"""Write a tiny DeepSeek-V3-shaped GGUF (arch 'deepseek2', MLA attention) that both ik_llama.cpp and mainline load.

The attention is in the legacy layout (one attn_kv_b [kv_lora_rank, n_head*(qk_nope+v)], head_count_kv = n_head,
no *_mla keys): mainline then runs it as plain multi-head attention over a full K/V cache, ik as MLA, deriving
attn_k_b/attn_v_b from attn_kv_b at load. q_lora_rank > 0 (V3-style q_a/q_b), leading dense layers, routed and
shared experts, exp_probs_b, sigmoid gating. 1-D tensors and the router are F32, the rest BF16, as
convert_hf_to_gguf.py writes them. Head sizes follow DeepSeek-V3 (kv_lora_rank 512, rope 64, nope 128, v 128) so
the CPU flash-attention kernels of both engines accept them; everything else is small.

Usage: make_tiny_deepseek2.py OUT.gguf [--layers 12] [--hidden 256] [--heads 4] [--seed 0]
"""
import argparse

import gguf

from tiny_gguf import TinyWeights, add_tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--dense-lead", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--q-lora", type=int, default=96)
    ap.add_argument("--kv-lora", type=int, default=512)
    ap.add_argument("--rope", type=int, default=64)
    ap.add_argument("--nope", type=int, default=128)
    ap.add_argument("--v-head", type=int, default=128)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--used", type=int, default=2)
    ap.add_argument("--shared", type=int, default=1)
    ap.add_argument("--ffn-exp", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.layers in (26, 27):
        ap.error("26/27 layers make the engines treat the model as DeepSeek-V2-Lite (no q_lora)")

    H, L, E, nh = a.hidden, a.layers, a.experts, a.heads
    hk = a.nope + a.rope

    w = gguf.GGUFWriter(a.out, "deepseek2")
    w.add_name("tiny-deepseek2")
    w.add_block_count(L)
    w.add_context_length(a.ctx)
    w.add_embedding_length(H)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(nh)
    w.add_head_count_kv(nh)
    w.add_key_length(hk)
    w.add_value_length(a.v_head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(a.rope)
    w.add_leading_dense_block_count(a.dense_lead)
    w.add_q_lora_rank(a.q_lora)
    w.add_kv_lora_rank(a.kv_lora)
    w.add_expert_feed_forward_length(a.ffn_exp)
    w.add_expert_count(E)
    w.add_expert_used_count(a.used)
    w.add_expert_shared_count(a.shared)
    w.add_expert_weights_scale(1.0)
    w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)

    add_tokenizer(w, a.vocab)

    t = TinyWeights(w, a.seed)
    big, f32 = t.big, t.f32
    big("token_embd.weight", (a.vocab, H))
    for i in range(L):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (H,), 1.0)
        f32(p + "attn_q_a_norm.weight", (a.q_lora,), 1.0)
        f32(p + "attn_kv_a_norm.weight", (a.kv_lora,), 1.0)
        big(p + "attn_q_a.weight", (a.q_lora, H))
        big(p + "attn_q_b.weight", (nh * hk, a.q_lora))
        big(p + "attn_kv_a_mqa.weight", (a.kv_lora + a.rope, H))
        big(p + "attn_kv_b.weight", (nh * (a.nope + a.v_head), a.kv_lora))
        big(p + "attn_output.weight", (H, nh * a.v_head))
        f32(p + "ffn_norm.weight", (H,), 1.0)
        if i < a.dense_lead:
            big(p + "ffn_gate.weight", (a.ffn, H))
            big(p + "ffn_down.weight", (H, a.ffn))
            big(p + "ffn_up.weight", (a.ffn, H))
        else:
            f32(p + "ffn_gate_inp.weight", (E, H))
            f32(p + "exp_probs_b.bias", (E,), 0.0)
            big(p + "ffn_gate_exps.weight", (E, a.ffn_exp, H))
            big(p + "ffn_down_exps.weight", (E, H, a.ffn_exp))
            big(p + "ffn_up_exps.weight", (E, a.ffn_exp, H))
            big(p + "ffn_gate_shexp.weight", (a.ffn_exp * a.shared, H))
            big(p + "ffn_down_shexp.weight", (H, a.ffn_exp * a.shared))
            big(p + "ffn_up_shexp.weight", (a.ffn_exp * a.shared, H))
    f32("output_norm.weight", (H,), 1.0)
    big("output.weight", (a.vocab, H))

    t.finish()


if __name__ == "__main__":
    main()
