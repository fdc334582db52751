"""Which compute graph of ``data/engine_graphs.toml`` an engine builds for a model (:func:`graph_of`), from the
model's architecture, shapes and tensor roles and the run's flash attention, ubatch and ``-mla``; None where the
data has none (the live-set estimate of :mod:`planner.compute_buffers` applies).  :mod:`planner.engine_graph`
builds and replays the template chosen here.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from planner.tensors import TensorMap
from planner.toml_tables import two_level_tables


@cache
def _templates() -> dict[str, Mapping[str, Any]]:
    """engine -> template name -> template; a template is parsed when first read (a plan reads one or two)."""
    return two_level_tables(resources.files("planner.data").joinpath("engine_graphs.toml").read_text("utf-8"))


def _roles(tmap: TensorMap) -> frozenset[str]:
    return frozenset(t.role for t in tmap.tensors)


def _fused_up_gate(tmap: TensorMap) -> bool:
    """Whether every layer's up and gate experts share a type: ik then computes them in one MOE_FUSED_UP_GATE
    (ik src/llama-build-context.cpp:1600-1609, ``fused_moe_up_gate`` and ``up_exps->type == gate_exps->type``)."""
    types: dict[int | None, set[str]] = {}
    for t in tmap.tensors:
        if t.role in ("ffn_up_exps", "ffn_gate_exps") and t.name.endswith(".weight"):    # not gpt-oss's biases
            types.setdefault(t.layer, set()).add(t.dtype)
    return all(len(v) == 1 for v in types.values())


def k_as_v(tmap: TensorMap) -> tuple[bool, ...]:
    """Per loaded layer, whether it stores K as V: an attention layer with attn_k and no attn_v (gemma-4's
    attention_k_eq_v full layers: mainline gemma4.cpp:246-248, ik build_gemma4.cpp:960-975); () when none does."""
    return tmap.derived(_k_as_v)


def _k_as_v(tmap: TensorMap) -> tuple[bool, ...]:
    k = {t.layer for t in tmap.tensors if t.role == "attn_k"}
    v = {t.layer for t in tmap.tensors if t.role == "attn_v"}
    out = tuple(il in k and il not in v for il in range(tmap.params.n_loaded_layers))
    return out if any(out) else ()


def graph_of(engine: str, tmap: TensorMap, flash_attn: bool = True, tokens: int = 512, mla: int = 3) -> str | None:
    """The template in ``engine_graphs.toml`` that draws this model's graph on this engine, or None:
    ``qwen3moe`` (MoE in every layer, softmax gating, no shared experts, plain GQA attention) and ``deepseek2``
    (mainline's plain multi-head path for the legacy ``attn_kv_b`` layout: no ``attn_k_b``/``attn_v_b``, which
    mainline runs as MLA; dense lead layers, sigmoid gating with ``exp_probs_b``, one shared expert), ``gptoss``
    (gpt-oss, its SWA layers reading the window cache's inputs; ik: fused up/gate, with or without flash attention),
    ``gemma3`` (dense gemma-3, the same window inputs; ik: with flash attention), ``deepseek2mla`` (mainline,
    ``attn_k_b``).  ik's
    templates draw its flash-attention graph with fused up/gate experts only, and for DeepSeek its -mla 3 graph of a
    ubatch of ``tokens`` >= 128 (see engine_graphs.toml)."""
    p = tmap.params
    if p.arch == "gpt-oss" and p.n_swa and p.n_expert and p.n_ff_exp:
        # every layer MoE with biased experts, SWA on the layers the pattern names (mainline openai-moe.cpp:
        # 62-175; ik build_openai.cpp:5-65, with or without flash attention, fused up/gate experts only)
        if engine == "ik" and not tmap.derived(_fused_up_gate):
            return None
        return "gptoss" if "gptoss" in _templates().get(engine, {}) else None
    if p.arch == "llama4" and p.n_swa and p.n_expert and p.n_expert_used == 1:
        # chunked attention on 3 of 4 layers (NoPE full layers), MoE every moe_every-th layer, one routed expert
        # (its CONT) and a shared expert: mainline llama4.cpp
        roles = tmap.derived(_roles)
        l4 = {"ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"} <= roles
        if engine == "ik":      # ik's template: flash attention and fused up/gate experts only
            l4 = l4 and flash_attn and tmap.derived(_fused_up_gate)
        return "llama4" if l4 and "llama4" in _templates().get(engine, {}) else None
    if p.arch == "gemma3" and p.n_swa and not p.n_expert:
        # ik: its flash-attention graph only (build_gemma3.cpp); mainline gemma3.cpp either way
        if engine == "ik" and not flash_attn:
            return None
        return "gemma3" if "gemma3" in _templates().get(engine, {}) else None
    if p.arch == "gemma4" and p.n_swa and not p.n_expert:
        # dense gemma-4 without per-layer embeddings, with the layer output scale (mainline gemma4.cpp:155-437);
        # layers storing K as V (attention_k_eq_v) included; MoE (26B-A4B) and per-layer embeddings (E2B/E4B) are
        # other graphs
        roles = tmap.derived(_roles)
        g4 = "layer_output_scale" in roles and "per_layer_token_embd" not in roles
        if engine == "ik" and not flash_attn:
            # ik's KQ is never split by -amb while K and Q head counts differ (build-context.cpp:2126)
            g4 = g4 and all(p.head_count_kv(il) < p.n_head for il in range(p.n_loaded_layers))
        return "gemma4" if g4 and "gemma4" in _templates().get(engine, {}) else None
    if p.arch == "qwen35moe" and (p.full_attn_interval or p.recurrent_layers) and p.n_expert and p.n_ff_shexp:
        # the gated delta-net hybrid with routed and gated shared experts (mainline qwen35moe.cpp)
        roles = tmap.derived(_roles)
        gdn = {"attn_qkv", "attn_gate", "ffn_gate_inp_shexp"} <= roles and "ffn_gate_up_exps" not in roles
        if engine == "ik":      # ik's template: flash attention and fused up/gate experts only (as ik.qwen3moe)
            gdn = gdn and flash_attn and tmap.derived(_fused_up_gate)
        return "qwen35moe" if gdn and "qwen35moe" in _templates().get(engine, {}) else None
    if p.arch == "glm-dsa" and p.kv_lora_rank and p.q_lora_rank and p.n_shared_exp == 1 and p.indexer_top_k:
        # GLM-5 DSA: every layer a full indexer layer (no indexer_types key), MLA in the attn_k_b/attn_v_b layout
        roles = tmap.derived(_roles)
        if engine == "ik":
            # ik runs the indexer only with --dsa (off by default: common/common.h:431, dsa_should_use in
            # build_deepseek2.cpp:338-340, which the plans never emit); without it GLM-DSA is build_deepseek2's
            # dense MLA graph ("When off, the model runs the dense MLA path", 798-804): its deepseek2 template
            dense_mla = tmap.derived(_fused_up_gate) and {"attn_k_b", "attn_v_b"} <= roles
            return "deepseek2" if dense_mla and "deepseek2" in _templates().get(engine, {}) else None
        dsa = {"attn_k_b", "attn_v_b", "indexer.attn_k"} <= roles
        return "glmdsa" if dsa and "glmdsa" in _templates().get(engine, {}) else None
    if p.arch == "deepseek4" and p.compress_ratios and p.hc_mult == 4 and p.o_groups and p.n_shared_exp == 1:
        # DeepSeek-V4 (mainline deepseek4.cpp: its hyper-connection code asserts hc_mult == 4); flash attention
        # only (the raw-mask types and the sparse mask's zeros follow it; the KQ path is not drawn)
        # (ik's template: fused up/gate experts, no dense lead layer: build_deepseek4.cpp)
        v4 = flash_attn and (engine != "ik" or (tmap.derived(_fused_up_gate) and not p.n_dense_lead))
        return "deepseek4" if v4 and "deepseek4" in _templates().get(engine, {}) else None
    if p.arch == "falcon-h1" and p.recurrent_attn and p.ssm_n_group and not p.n_expert:
        # attention and a Mamba-2 mixer in every layer, a dense FFN (mainline falcon-h1.cpp)
        return "falconh1" if "falconh1" in _templates().get(engine, {}) else None
    if p.arch == "mamba2" and p.recurrent_layers and p.ssm_n_group and not p.recurrent_attn:
        # a Mamba-2 mixer in every layer, no attention, no FFN (mainline mamba.cpp with build_mamba2_layer)
        return "mamba2" if "mamba2" in _templates().get(engine, {}) else None
    if p.arch == "mamba" and p.recurrent_layers and not p.ssm_n_group and not p.recurrent_attn:
        # Mamba-1 without the dt/B/C norms (FalconMamba's ssm.dt_b_c_rms adds three RMS_NORMs: not drawn)
        header = tmap.header
        norms = header is not None and bool(header.get("mamba.ssm.dt_b_c_rms"))
        norms = norms or "ssm_dt_norm" in tmap.derived(_roles)
        return "mamba" if not norms and "mamba" in _templates().get(engine, {}) else None
    if p.arch in ("rwkv6", "rwkv7", "rwkv6qwen2", "arwkv7") and p.wkv_head_size and p.decay_rank:
        # rwkv6/rwkv7: two token-shift rows (time and channel mix), the Qwen2-trunk ones one; the converter's fused
        # lerp (RWKV-6's older five lerp tensors are another graph); RWKV-7 with its gate LoRA (6 mixes) and
        # group norm; rwkv6qwen2 in the QRWKV6 layout (no time_mix_first, key/value/receptance biases)
        roles = tmap.derived(_roles)
        v7, qwen = p.arch.endswith("rwkv7"), p.arch in ("rwkv6qwen2", "arwkv7")
        need = {"time_mix_lerp_fused"} | ({"time_mix_g1", "time_mix_g2", "time_mix_ln"} if v7 else set())
        fits = p.state_r == (1 if qwen else 2) * p.n_embd and need <= roles and bool(p.gate_rank if v7 else p.mix_rank)
        if p.arch == "rwkv6":
            fits = fits and "time_mix_ln" in roles
        elif p.arch == "rwkv6qwen2":
            biases = {t.name.split(".", 2)[2] for t in tmap.tensors if t.name.endswith("bias") and t.layer == 0}
            fits = fits and "time_mix_first" not in roles and {f"time_mix_{x}.bias" for x in (
                "key", "value", "receptance")} <= biases
        return p.arch if fits and p.arch in _templates().get(engine, {}) else None
    if p.arch in ("bailingmoe3", "kimi-linear") and p.recurrent_layers and p.kv_lora_rank and p.n_expert:
        # Kimi Delta Attention and MLA layers from the per-layer arrays, a dense lead, MoE with a shared expert
        # (mainline bailingmoe3.cpp, kimi-linear.cpp); drawn: MLA in the attn_k_b/attn_v_b layout (Kimi-Linear's
        # MHA fallback and fused attn_qkv are not), Ling-3.0 with its Q LoRA
        roles = tmap.derived(_roles)
        kda = p.ssm_n_group > 0 and {"attn_k_b", "attn_v_b"} <= roles and "attn_qkv" not in roles
        kda = kda and (p.arch == "kimi-linear" or (bool(p.q_lora_rank) and "attn_q_a" in roles))
        if engine == "ik":      # -mla >= 1 (every latent path checked against ik's dumps), fused up/gate experts
            kda = kda and mla >= 1 and tmap.derived(_fused_up_gate)
        return p.arch if kda and p.arch in _templates().get(engine, {}) else None
    if p.arch in ("lfm2", "lfm2moe") and p.recurrent_layers and p.state_r and not p.n_swa:
        # short-conv and attention layers from the per-layer arrays, no sliding window (mainline lfm2.cpp
        # graph<false>, which lfm2moe.cpp builds too); a dense FFN, or LFM2-MoE's dense lead and sigmoid-gated MoE
        # with the router bias (conversion/lfm2.py:111) and no shared expert; separate Q/K/V projections
        # (build_qkv's fused attn_qkv path is not drawn)
        roles = tmap.derived(_roles)
        lfm = "attn_q" in roles and "attn_qkv" not in roles
        lfm = lfm and (bool(p.n_expert) == (p.arch == "lfm2moe")) and not (p.n_shared_exp or p.n_ff_shexp)
        moe_ok = not p.n_expert or "exp_probs_b" in roles      # sigmoid gating: the converter's only value
        return p.arch if lfm and moe_ok and p.arch in _templates().get(engine, {}) else None
    if p.arch == "plamo2" and p.recurrent_layers and p.ssm_d_inner and not p.ssm_n_group and not p.n_expert:
        # Mamba (no groups: plamo2.cpp asserts n_group == 0) and attention layers from the per-layer arrays, a
        # fused attn_qkv projection, dense FFN (mainline plamo2.cpp)
        return "plamo2" if "plamo2" in _templates().get(engine, {}) else None
    if p.arch == "jamba" and p.recurrent_layers and p.n_expert and p.n_ff_exp and not p.ssm_n_group:
        # Mamba-1 and attention layers from the per-layer arrays, MoE every moe_every-th layer (mainline jamba.cpp)
        return "jamba" if "jamba" in _templates().get(engine, {}) else None
    if p.arch in ("nemotron_h", "granitehybrid") and p.recurrent_layers and not p.n_expert and p.ssm_n_group:
        # Mamba-2 and attention layers from the per-layer arrays, no experts: Nemotron-H's attention/MLP layers
        # (nemotron-h.cpp), Granite-4.0-H's dense FFN after either mixer (granite-hybrid.cpp)
        name = "nemotronh" if p.arch == "nemotron_h" else "granitehybrid"
        return name if name in _templates().get(engine, {}) else None
    if p.n_swa or p.full_attn_interval or not (p.n_expert and p.n_expert_used and p.n_ff_exp):
        return None
    if engine == "ik" and p.arch == "deepseek2":
        # every -mla and both attention modes (build_deepseek2.cpp; GraphShape.drawn says which shapes), with either
        # layout: ik derives attn_kv_b, or attn_k_b/attn_v_b, at load (src/llama.cpp llm_prepare_mla); fused up/gate
        roles = tmap.derived(_roles)
        ok = p.kv_lora_rank and p.q_lora_rank and p.n_shared_exp == 1 and tmap.derived(_fused_up_gate)
        ok = ok and ("attn_kv_b" in roles or {"attn_k_b", "attn_v_b"} <= roles)
        return "deepseek2" if ok and "deepseek2" in _templates().get(engine, {}) else None
    if engine == "ik" and not (flash_attn and tmap.derived(_fused_up_gate)):
        return None
    if p.arch == "qwen3moe" and not (p.kv_lora_rank or p.n_dense_lead or p.n_shared_exp or p.n_ff_shexp):
        name = "qwen3moe"
    elif p.arch == "deepseek2" and p.kv_lora_rank and p.q_lora_rank and p.n_shared_exp == 1:
        roles = tmap.derived(_roles)
        name = "deepseek2" if "attn_kv_b" in roles and "attn_k_b" not in roles else (
            "deepseek2mla" if engine == "mainline" and "attn_k_b" in roles and "attn_v_b" in roles else "")
    else:
        name = ""
    return name if name and name in _templates().get(engine, {}) else None


def has_graph(engine: str, tmap: TensorMap) -> bool:
    """Whether a node-level graph of this engine and model is in the data (:func:`graph_of`)."""
    return graph_of(engine, tmap) is not None
