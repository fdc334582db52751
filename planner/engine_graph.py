"""The compute graph an engine builds for one worst-case ubatch, rebuilt from ``data/engine_graphs.toml`` and
replayed through ggml's scheduler and allocator (:mod:`planner.gallocr`) to size every backend's compute buffer
as the engine logs it.

Which graphs exist: ``engine_graphs.toml`` has a table per (engine, architecture); :func:`graph_of` says which
one applies (mainline: Qwen3-MoE-shaped models, DeepSeek on the legacy ``attn_kv_b`` layout or with
``attn_k_b``/``attn_v_b`` (MLA), gpt-oss and gemma-3 with their sliding-window and full caches, the Qwen3.5-MoE
gated delta-net hybrid, GLM-5 DSA (flash attention), Llama-4 with chunked attention, Nemotron-H, Granite-4.0-H and
Falcon-H1 (Mamba-2, attention and dense FFN layers), dense gemma-4 with its shared-KV layers reading another
layer's (another device's) cache and its K-as-V (attention_k_eq_v) layers, Jamba (Mamba-1, attention, MoE every
other layer), LFM2 and LFM2-MoE (gated short convolutions and attention), PLaMo-2 (Mamba and attention),
Ling-3.0 and Kimi-Linear (Kimi Delta Attention and MLA), DeepSeek-V4 (hyper-connections, raw/CSA/HCA attention by
compress ratio as per-layer tags, :func:`layer_tags`), RWKV-6/7 and their Qwen2-trunk forms (rwkv6qwen2 in the
QRWKV6 layout, arwkv7); ik 8337e4cd3: gpt-oss, gemma-3, the same
Qwen3-MoE shapes, Qwen3.5-MoE, Ling-3.0 (``-mla`` >= 1), DeepSeek under every ``-mla`` and GLM-DSA (its dense MLA
graph: no ``--dsa``), DeepSeek-V4 (its fused ops; each layer copies its own mask views: planner/input_copies.py),
with flash attention (DeepSeek, GLM-DSA, gpt-oss, gemma-4 and Ling-3.0: with or without) and fused up/gate experts,
dense gemma-4).  Others keep the live-set estimate of
:mod:`planner.compute_buffers`.

The worst-case ubatch (mainline ``llama_context::sched_reserve``, src/llama-context.cpp; ik
``llama_init_from_model``, src/llama.cpp): ``T = min(n_ctx, n_ubatch)`` tokens, every one an output, against
``n_kv`` cache cells; the buffer the engine keeps is the largest over the graphs it reserves, and the prompt-sized
one is the largest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any

from planner.gallocr import T, buffer_sizes, inplace_ops
from planner.graph_memo import Row, memo_of, source
from planner.graph_shape import GraphShape
from planner.input_copies import input_rooted, layer_leaf_bytes
from planner.layer_kinds import TAGS, compress, dense_flags, ffn_only, kv_devices, layer_tags
from planner.tensors import ModelParams, TensorMap
from planner.toml_tables import two_level_tables

__all__ = ["GraphShape", "build", "compress", "compute_buffers", "dense_flags", "ffn_only", "first_layer_own",
           "graph_of", "has_graph", "k_as_v", "kv_devices", "layer_leaf_bytes", "layer_tags"]


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


_ITER = ("iter", "iter0", "iterN")


def _chunked(rows: list[list[Any]], n_iter: int) -> list[tuple[list[Any], int]]:
    """The layer's rows with each run of rows flagged "iter"/"iter0"/"iterN" repeated once per -amb chunk (ik
    build_deepseek2.cpp:969-1012): (row, chunk index); "iter0" rows only in the first chunk, "iterN" in the
    others."""
    out: list[tuple[list[Any], int]] = []
    i = 0
    while i < len(rows):
        if not _flags(rows[i]) & set(_ITER):
            out.append((rows[i], 0))
            i += 1
            continue
        j = i
        while j < len(rows) and _flags(rows[j]) & set(_ITER):
            j += 1
        for k in range(n_iter):
            out.extend((r, k) for r in rows[i:j]
                       if not ("iter0" in _flags(r) and k > 0) and not ("iterN" in _flags(r) and k == 0))
        i = j
    return out


def _flags(row: list[Any]) -> set[str]:
    return set(row[5].split("+")) if len(row) > 5 and row[5] else set()


def build(engine: str, graph: str, shape: GraphShape, layer_dev: Sequence[int], device_of: Callable[[str], int],
          out_dev: int, cpu: int, dense: Sequence[bool] = (), swa: Sequence[bool] = (),
          recr: Sequence[bool] = (), kv_dev: Sequence[int] = (), kev: Sequence[bool] = (),
          tags: Sequence[str] = (), shared_inputs: bool = False) -> list[T]:
    """The graph's tensors in graph order for template ``graph`` (:func:`graph_of`); devices are backend indices
    (``cpu`` the last).  ``device_of`` maps a weight's GGUF name to its device (``-ot`` included); ``dense``: the
    layers with a dense FFN (rows flagged "dense"; the others take the "moe" rows); ``swa``: the sliding-window
    layers, whose "in:NAME" sources are the window cache's inputs "in:NAME_swa" where the template has them
    (mainline build_attn with llm_graph_input_attn_kv_iswa, src/llama-graph.cpp:3425-3455); ``recr``: the
    recurrent layers of a hybrid (rows flagged "recr"; the others take the "full" rows).  A source "sh:NAME" is
    a row of the template's ``shared`` list (views of a graph input that every layer reads), put into the graph
    where it is first read, as ggml's depth-first walk does (ggml.c ggml_visit_parents).  ``kv_dev``: per layer,
    the backend of another layer's cache it reads (gemma-4's shared-KV layers, :func:`kv_devices`), -1 for a
    layer with its own; such a layer drops the rows flagged "ownkv" (its K/V projections and cache stores) and
    draws those flagged "sharedkv", and its "kv:" cache views are of that cache, on that backend.  ``kev``: the
    layers that store K as V (no V projection, gemma-4's attention_k_eq_v): rows flagged "ownv" are drawn on layers
    with their own KV and V projection, "kev" on these, "noownv" on these and the shared-KV layers.  A template
    with ``window = true`` sizes a sliding-window layer's rows by :meth:`GraphShape.window` (its own cells and
    head widths).  ``tags``: each layer's kind tags (:func:`layer_tags`, "+"-joined: a row flagged with a tag is
    drawn only on layers that have it).  ``shared_inputs``: every layer reads the first one's views of the graph
    inputs (drawn "once"), so a device copies each in once (planner/input_copies.py: the solver's role stand-ins)."""
    tpl = _templates()[engine][graph]
    shared_views = input_rooted(engine, graph) if shared_inputs else frozenset()
    k_seqs = tpl.get("reserve_seqs", 0)
    if k_seqs and shape.ns > k_seqs:
        # the engine reserves this architecture's prompt graph with k sequences whatever -np (Kimi-Linear:
        # llama-context.cpp:716-722); the other states are the rs input's extra states
        shape = replace(shape, ns=k_seqs, nx=shape.nx + shape.ns - k_seqs,
                        tc=shape.tc - (shape.dc - 1) * (shape.ns - k_seqs))
    windowed = bool(tpl.get("window"))
    ts: list[T] = []
    ids: dict[str, int] = {}
    n_layer = len(layer_dev)
    full_offload = cpu not in layer_dev and out_dev != cpu
    pin_norm = shape.T < 32 or full_offload      # llama-context.cpp:2646-2657 graph_get_cb

    # graph order: a tensor's key; rows flagged "pre" go right after the last row flagged "exp" (see below)
    keys: list[tuple[int, int]] = []
    nxt = [(0, 0)]          # the key of the next tensor (minor 0: its own index)
    mark = [(0, 0)]         # after the last expanded row

    def add(t: T) -> int:
        ts.append(t)
        n = nxt[0]
        if n[1]:
            keys.append(n)
            nxt[0] = (n[0], n[1] + 1)
        else:
            keys.append((len(ts), 0))
        return len(ts) - 1

    for name, expr, *flag in tpl["inputs"]:
        if shape.has(flag[0] if flag else ""):
            ids["in:" + name] = add(T(f"inp_{name}", "NONE", shape.size(expr), layout=expr, inp=True))
    weights: dict[str, int] = {}

    def weight(name: str, il: int = -1) -> int:
        if name not in weights:
            # the token-embedding norm is loaded with layer 0 (LLM_TENSOR_LAYER_REPEATING, mainline
            # llama-arch.cpp:732 @0c1e57098), whatever device holds the other model-level weights
            dev = layer_dev[il] if il >= 0 and name.startswith("token_embd_norm.") else device_of(name)
            weights[name] = add(T(name, "NONE", 0, dev=dev, weight=True))
        return weights[name]

    shared: dict[str, int] = {}
    shared_rows = {row[0]: row for row in tpl.get("shared", [])}

    memo = memo_of(engine, graph, shape)
    sizes = memo.sizes
    win_shape = shape.window() if windowed else shape

    def size(expr: str, k1: int = 1, win: bool = False) -> int:
        key = (expr, k1, win)
        got = sizes.get(key)
        if got is None:
            got = sizes[key] = (win_shape if win else shape).size(expr, k1)
        return got

    def shared_kv(il: int) -> bool:
        return 0 <= il < len(kv_dev) and kv_dev[il] >= 0

    def cache_node(s: str, il: int, local: dict[str, int]) -> int:
        """The cache a "kv:" source names: the layer's own, or the one it shares (on that layer's backend)."""
        key = f"{s}{il}"
        if key not in local:
            dev = kv_dev[il] if shared_kv(il) else layer_dev[il]
            local[key] = add(T(f"cache_{s[3:]}_l{il}", "NONE", 0, dev=dev))
        return local[key]

    # keyed by the row list's id: the list is kept with its rows (memo.parts), so no other list takes that id
    kept = memo.kept

    def rows_of(rows: list[tuple[list[Any], int]], il: int) -> list[Row]:
        """The rows a layer of this kind draws (its flags hold), with their flags and their sources' alternatives;
        parsed once per kind."""
        is_last, is_dense = il == n_layer - 1, il >= 0 and il < len(dense) and dense[il]
        is_recr = 0 <= il < len(recr) and recr[il]
        is_swa = 0 <= il < len(swa) and swa[il]
        is_shared = shared_kv(il)
        is_kev = not is_shared and 0 <= il < len(kev) and kev[il]
        own_v = not is_shared and not is_kev
        tag = tags[il] if 0 <= il < len(tags) else ""
        key = (id(rows), is_last, is_dense, is_recr, is_swa, is_shared, is_kev, tag)
        if key not in kept:
            out = []
            lshape = win_shape if is_swa else shape
            have = set(tag.split("+")) if tag else set()
            for row, k in rows:
                flags = _flags(row)
                # a flag naming a layer tag holds where the layer has it ("a|b": either, tags or shape flags)
                if not all(any(g in have if g in TAGS else lshape.has(g) for g in f.split("|"))
                           for f in flags if TAGS.intersection(f.split("|"))):
                    continue
                if ("last" in flags and not is_last) or ("nofirst" in flags and "first" in have):
                    continue
                if not all(lshape.has(f) for f in flags):
                    continue
                if ("dense" in flags and not is_dense) or (flags & {"moe", "nodense"} and is_dense):
                    continue
                if ("recr" in flags and not is_recr) or ("full" in flags and is_recr):
                    continue
                if ("swa" in flags and not is_swa) or ("noswa" in flags and is_swa):
                    continue
                if ("ownkv" in flags and is_shared) or ("sharedkv" in flags and not is_shared):
                    continue
                if ("ownv" in flags and not own_v) or ("noownv" in flags and own_v) or ("kev" in flags and not is_kev):
                    continue
                # a node's bytes, and its layout: a window layer's has another only where its size differs (its
                # own head widths); the views/sums of EXPERT_SUM and LEAF rows are sized where they are drawn
                expr, win = row[2], windowed and is_swa
                drawn_here = row[1] in ("EXPERT_SUM", "LEAF")
                sz = 0 if drawn_here else size(expr, k + 1, win)
                layout = (expr, True) if not drawn_here and win and sz != size(expr, k + 1) else expr
                out.append((row, k, flags, [source(tuple(x.split("|"))) for x in row[3]], sz, layout))
            kept[key] = (rows, out)
        return kept[key][1]

    once: dict[str, int] = {}       # rows drawn by the first layer that has them, read by the others
    moved = [False]                 # a row flagged "pre" was drawn: the graph order is not the drawing order

    def nodes(rows: list[tuple[list[Any], int]], il: int, local: dict[str, int]) -> None:
        dev = layer_dev[il] if il >= 0 else out_dev
        win = windowed and 0 <= il < len(swa) and swa[il]
        for row, _k, flags, srcs, sz, layout in rows_of(rows, il):
            name, op, expr = row[0], row[1], row[2]
            if ("once" in flags or name in shared_views) and name in once:
                local[name] = once[name]
                continue
            view = row[4] if len(row) > 4 else ""
            resolved: list[int] = []
            for own, s, kind in srcs:
                for a in own:           # "a|b": the last alternative that exists (graph_memo.source)
                    if a in local:
                        s, kind = a, ""
                        break
                if not kind:            # a node of the layer (the most common source)
                    resolved.append(local[s])
                elif kind == "self":    # ggml_cast: a CPY into a new tensor, which is its own second source
                    resolved.append(-1)
                elif kind == "sh:":
                    if s not in shared:
                        if (s, 0) not in memo.parts:
                            memo.parts[s, 0] = [(shared_rows[s[3:]], 0)]
                        nodes(memo.parts[s, 0], il, shared)  # noqa: F821  (deleted after the last layer: see below)
                        shared[s] = shared[s[3:]]
                    resolved.append(shared[s])
                elif kind == "w:":      # a layer's weight, its name in the layer (graph_memo.source)
                    resolved.append(weight(f"blk.{il}.{s}" if il >= 0 else s, il))
                elif kind == "wm:":     # a model-level weight
                    resolved.append(weight(s, il))
                elif kind == "kv:":
                    resolved.append(cache_node(s, il, local))
                else:                   # "in:"
                    is_swa = 0 <= il < len(swa) and swa[il]
                    resolved.append(ids[s + "_swa"] if is_swa and s + "_swa" in ids else ids[s])
            if -1 in resolved:
                resolved = [len(ts) if r == -1 else r for r in resolved]
            if op == "EXPERT_SUM":      # build_moe_ffn: n_used views of `weighted`, summed by n_used - 1 ADDs
                views = [add(T(f"{name}{j}-{il}", "VIEW", size(expr, 1, win), srcs=(resolved[0],),
                               view_src=resolved[0])) for j in range(shape.n_used)]
                cur = views[0]
                for v in views[1:]:
                    cur = add(T(f"moe_out-{il}", "ADD", size(expr, 1, win), srcs=(cur, v), layout=expr))
                local["moe_out"] = cur
                if "exp" in flags:      # each view and sum expanded (mainline llama-graph.cpp:2353, 2362)
                    mark[0] = keys[-1]
                continue
            v_src = None
            if view:
                if view.startswith("kv:"):
                    v_src = cache_node(view, il, local)
                elif view.startswith("in:"):
                    v_src = ids[view]
                else:
                    root = local[[a for a in view.split("|") if a in local][-1]]
                    while (up := ts[root].view_src) is not None:    # ggml keeps a view's root (ggml.c)
                        root = up
                    v_src = root
            if op == "LEAF":          # a tensor the graph creates (ggml_new_tensor): allocated as a leaf
                local[name] = add(T(f"{name}-{il}", "NONE", size(expr, 1, win), layout=expr, leaf=True))
                continue
            pin = dev if ("norm" in flags and pin_norm and il >= 0) else None
            if "pre" in flags:      # drawn where the last expanded row left off
                nxt[0] = (mark[0][0], mark[0][1] + 1)
                moved[0] = True
            # positional: name, op, size, srcs, view_src, layout, dev, weight, inp, out, pin (the hottest call)
            local[name] = add(T(f"{name}-{il}", op, sz, tuple(resolved), v_src, layout, None, False, False,
                                "out" in flags, pin))
            if "once" in flags or name in shared_views:
                once[name] = local[name]
            if "pre" in flags:
                mark[0] = keys[-1]
                nxt[0] = (0, 0)
            elif "exp" in flags:
                mark[0] = keys[-1]
            if "glob" in flags:
                glob[name] = local[name]

    def part(name: str, n_iter: int = 1) -> list[tuple[list[Any], int]]:
        if (name, n_iter) not in memo.parts:
            memo.parts[name, n_iter] = _chunked(tpl[name], n_iter)
        return memo.parts[name, n_iter]

    head: dict[str, int] = {}
    glob: dict[str, int] = {}           # rows flagged "glob": read by every later layer by name
    nodes(part("head"), -1, head)
    inp = head[tpl["head"][-1][0]]           # the last head row is layer 0's input (gemma-3: the scaled embeddings)
    layer = part("layer", shape.nit)
    for il in range(n_layer):
        local = {"inpL": inp, **glob}
        nodes(layer, il, local)
        inp = local["l_out"]
    nodes(part("tail"), -1, {"inpL": inp})
    # nodes() calls itself, so its closure refers to it: a reference cycle that would keep every tensor of this
    # graph alive until the cyclic collector finds it (~17,000 tensors a headline plan); cut it here
    del nodes
    return _reordered(ts, keys) if moved[0] else ts


def _reordered(ts: list[T], keys: list[tuple[int, int]]) -> list[T]:
    """The tensors sorted by their keys, sources and view sources renumbered.  ggml orders a graph by its
    ``ggml_build_forward_expand`` calls, each adding the unvisited ancestors of the expanded tensor depth first
    (ggml.c ggml_visit_parents): a node built early but expanded later lands late.  Templates are written in
    the order of the rows' own dependencies; a row flagged "pre" reads no node of its layer and is expanded
    before the layer's input is (a Mamba layer's conv-state build_rs, mamba-base.cpp:184 and llama-graph.cpp:
    3512-3547), so it lands right after the last row flagged "exp" (an expanded node) of the graph so far."""
    order = sorted(range(len(ts)), key=keys.__getitem__)
    new = {old: i for i, old in enumerate(order)}
    out = []
    for old in order:
        t = ts[old]
        t.srcs = tuple(new[s] for s in t.srcs)
        t.view_src = None if t.view_src is None else new[t.view_src]
        out.append(t)
    return out


@cache
def _sizes(engine: str, graph: str, shape: GraphShape, layer_dev: tuple[int, ...], dense: tuple[bool, ...],
           weight_dev: tuple[tuple[str, int], ...], out_dev: int, n_backends: int, copies: int,
           swa: tuple[bool, ...] = (), recr: tuple[bool, ...] = (), kv_dev: tuple[int, ...] = (),
           kev: tuple[bool, ...] = (), tags: tuple[str, ...] = (), shared_inputs: bool = False) -> tuple[int, ...]:
    wd = dict(weight_dev)
    cpu = n_backends - 1

    def device_of(name: str) -> int:
        if name in wd:
            return wd[name]
        if name.startswith("blk."):
            return layer_dev[int(name.split(".")[1])]
        return cpu if name == "token_embd.weight" else out_dev

    ts = build(engine, graph, shape, layer_dev, device_of, out_dev, cpu, dense, swa, recr, kv_dev, kev, tags,
               shared_inputs)
    return tuple(buffer_sizes(ts, n_backends, copies=copies, inplace=inplace_ops(engine)))


@cache
def first_layer_own(engine: str, graph: str) -> bool:
    """Whether the model's layer 0 is a kind of its own for the allocator: the template draws it unlike the others
    (rows flagged "first" or "nofirst", :func:`layer_tags`), or a layer's "pre" rows (its recurrent state's reads)
    land among the previous layer's rows, which layer 0 has none of.  A stand-in placement from layer 0 then needs
    one more layer to reach the steady state (the tiny RWKV-6 on the CPU: 7.1309 MiB with 4 layers or more, 2 KiB
    less with 3; the tiny Mamba-2's first of two rpc-servers, 4 layers: 12.77 MiB as logged, 12.35 with 3)."""
    return any(_flags(row) & {"first", "nofirst", "pre"} for row in _templates()[engine][graph]["layer"])


def compute_buffers(engine: str, graph: str, p: ModelParams, shape: GraphShape, layer_dev: Sequence[int],
                    weight_dev: dict[str, int], out_dev: int, n_backends: int, copies: int = 1,
                    *, exact_layers: bool = False, layer_base: int = 0, kv_elsewhere: int = -1,
                    kev: Sequence[bool] = (), shared_inputs: bool = False) -> tuple[int, ...]:
    """Each backend's compute buffer in bytes (backend ``n_backends - 1`` is the CPU) for template ``graph``.
    ``weight_dev``: the weights away from their layer's device (``-ot``), by GGUF name; token_embd is on the CPU,
    the output's tensors on ``out_dev``.  The placement is :func:`compress`-ed unless ``exact_layers`` or its
    layers create leafs or copy their own input views (the buffer grows per layer held).
    ``layer_base``: the model layer the placement's first layer stands for (its kind: sliding-window, recurrent,
    dense; a stand-in placement of a few layers, :func:`planner.compute_buffers.estimate`); ``kv_elsewhere``: the
    backend of a shared cache whose layer is before the stand-in (:func:`kv_devices`); ``kev``: per model layer,
    whether it stores K as V (:func:`k_as_v`); ``shared_inputs``: see :func:`build`."""
    n = len(layer_dev)
    dense = dense_flags(p, n + layer_base)[layer_base:]
    swa = [p.is_swa(il + layer_base) for il in range(n)] if p.n_swa else []
    recr = [p.is_recurrent(il + layer_base) for il in range(n)]
    m = p.n_loaded_layers
    if p.recurrent_layers and n + layer_base > m:
        # a role's stand-in longer than the model (role_compute._stand_in): kinds from per-layer arrays repeat
        # the model's own pattern rather than turning into the attention layers of no array
        model_dense = dense_flags(p, m)
        dense = [model_dense[(il + layer_base) % m] for il in range(n)]
        recr = [p.is_recurrent((il + layer_base) % m) for il in range(n)]
    kv_dev = kv_devices(p, layer_dev, layer_base, kv_elsewhere)
    layer_kev = [bool(kev) and kev[(il + layer_base) % len(kev)] for il in range(n)]
    tags = [layer_tags(p, il + layer_base) for il in range(n)]
    if not exact_layers and not layer_leaf_bytes(engine, graph, shape) and not input_rooted(engine, graph):
        layer_dev, weight_dev, dense, swa, recr, kv_dev, layer_kev, tags = compress(
            layer_dev, weight_dev, dense, swa, recr, kv_dev, layer_kev, tags)
    return _sizes(engine, graph, shape, tuple(layer_dev), tuple(dense), tuple(sorted(weight_dev.items())), out_dev,
                  n_backends, copies, tuple(swa), tuple(recr), tuple(kv_dev), tuple(layer_kev), tuple(tags),
                  shared_inputs)
