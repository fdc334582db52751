"""The per-layer sizes ik_llama.cpp's layer rule fills devices by (``get_layer_sizes`` in ``src/llama.cpp`` at
8337e4cd: weights left on the device + KV cache, and the largest per-layer compute buffer), with the exact
``ggml_nbytes`` of a tensor at its mix type and the per-layer KV bytes of both engines."""

from __future__ import annotations

from collections.abc import Mapping

from planner.layer_split import MIB, LayerSizes
from planner.quants import catalogue
from planner.tensors import TensorInfo, TensorMap

_EXPS = frozenset({"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_up_exps"})
_SHEXP = frozenset({"ffn_up_shexp", "ffn_gate_shexp", "ffn_down_shexp"})
_DENSE = frozenset({"ffn_up", "ffn_gate", "ffn_down"})
# LLM_TENSOR_ATTN_NORM, _ATTN_NORM_2, _ATTN_OUT_NORM, _ATTN_POST_NORM, _FFN_NORM, _FFN_POST_NORM, _LAYER_OUT_NORM
_NORMS = frozenset({"attn_norm", "attn_norm_2", "attn_output_norm", "post_attention_norm", "ffn_norm",
                    "post_ffw_norm", "layer_output_norm"})
_SKIPPED_GLOBAL = frozenset({"output_norm.weight", "rope_freqs.weight", "mtp_pre_proj.weight",
                             "mtp_post_proj.weight", "mtp_centroids.weight", "mtp_token_ordering.weight",
                             "nextn.post_projection.weight", "nextn.pre_projection.weight"})


def _row_size(type_name: str, ne0: int) -> int:
    return catalogue().get(type_name).row_bytes(ne0)


def type_of(t: TensorInfo, mix: Mapping[str, str] | None) -> str:
    return (mix or {}).get(t.name, t.dtype)


def nbytes(t: TensorInfo, mix: Mapping[str, str] | None = None) -> int:
    """ggml_nbytes of ``t`` at its mix type."""
    return catalogue().get(type_of(t, mix)).tensor_bytes(t.shape)


def ik_kv_bytes(tmap: TensorMap, il: int, *, ctx: int, type_k: str, type_v: str, flash_attn: bool = True,
                mla_attn: int = 3, n_seq: int = 1) -> int:
    """ik ``llama_model::cache_size`` (src/llama-model.cpp:2463 @8337e4cd) for one layer at ``kv_size = ctx``:
    :func:`planner.kv_cache.ik_cache_size` (standard, MLA per ``-mla``/FA, gated delta-net state, DeepSeek-V4
    compressed caches; every layer below ``n_layer`` counts, shared-KV and NextN layers included); ``n_seq`` is
    ``-np`` (recurrent state slots, DeepSeek-V4 streams)."""
    from planner.kv_cache import CacheConfig, ik_cache_size

    cfg = CacheConfig(engine="ik", ctx=max(1, ctx), type_k=type_k, type_v=type_v, flash_attn=flash_attn,
                      mla=mla_attn, n_seq=max(1, n_seq))
    return ik_cache_size(tmap.params, il, cfg, ctx)


def mainline_kv_bytes(tmap: TensorMap, il: int, *, ctx: int, type_k: str, type_v: str, n_stream: int = 1) -> int:
    """mainline's cache of layer ``il`` at ``kv_size = ctx`` cells, times the streams (``-np`` without
    ``--kv-unified``): the one rule of :mod:`planner.kv_cache` (``llama_kv_cache`` and its iSWA, recurrent, DSA and
    DeepSeek-V4 variants at 0c1e57098). An MLA file in the converter's current layout (``key_length_mla``) caches
    K only, ``kv_lora_rank + n_rot`` wide; a legacy DeepSeek file (one ``attn_kv_b``, no ``*_mla`` keys) runs as
    plain multi-head attention with full per-head K and V.
    """
    from planner.kv_cache import CacheConfig, bytes_by_layer

    p = tmap.params
    if not 0 <= il < p.n_layer:
        return 0
    cfg = CacheConfig(engine="mainline", ctx=ctx, type_k=type_k, type_v=type_v)
    return bytes_by_layer(p, cfg)[il] * n_stream


def ik_layer_sizes(tmap: TensorMap, mix: Mapping[str, str] | None = None, *, ctx: int, type_k: str = "f16",
                   type_v: str = "f16", n_ubatch: int = 512, n_batch: int = 2048, flash_attn: bool = True,
                   mla_attn: int = 3, amb: int = 0, worst_case_tokens: int = 0, mtp: bool = False,
                   n_seq: int = 1) -> LayerSizes:
    """ik ``get_layer_sizes`` (src/llama.cpp at 8337e4cd) for a mix (tensor name → type; default: the file's types).

    ``ctx`` is ``-c`` as given (the engine passes ``max_ctx_size = n_ctx``, unpadded); ``n_ubatch`` is
    ``min(-ub, min(-b, -c))`` as common's ``get_batch_ubatch`` makes it. Per layer: weights = Σ bytes of
    ``blk.il.*`` (NextN blocks skipped unless ``mtp``), MLA adds ``wk_b + wv_b`` (derived at load from
    ``attn_kv_b``: half its bytes each; from ``k_b``/``v_b`` without ``kv_b``: their Q8_0 re-quantised size x 2);
    compute = max(routed experts ``ne1 * ub * n_expert_used * 4`` summed over gate/up/down, shared experts
    ``ne1 * ub * 4``, dense FFN ``ne1 * ub * 4``) + ``n_embd * ub * 4`` (x2 when the layer has a norm); with
    ``-mla 3`` the attention ``2 * ne1(wv_b) * heads * ctx * 4`` (heads cut by ``-amb``) when larger.
    Output = ``output.weight`` (``token_embd`` when tied), plus the logits ``n_vocab * ub * 4`` beyond the largest
    compute buffer.
    """
    p = tmap.params
    n = p.n_layer
    ub = min(n_ubatch, min(n_batch, ctx) if ctx > 0 else n_batch)
    weights = [0] * n
    exps = [0] * n
    shexp = [0] * n
    dense = [0] * n
    has_norm = [False] * n
    mla: dict[int, dict[str, TensorInfo]] = {}
    ow = embd = 0
    tensor_bytes = {t.name: nbytes(t, mix) for t in tmap.tensors}
    for t in tmap.tensors:
        size = tensor_bytes[t.name]
        if t.name == "token_embd.weight":
            embd = size
            continue
        if t.name == "output.weight":
            ow += size
            continue
        if t.layer is None:
            continue                                    # output_norm, rope_freqs, ... are not counted
        il = t.layer
        if not 0 <= il < n:
            continue
        if not mtp and p.n_nextn > 0 and il >= n - p.n_nextn:
            continue
        weights[il] += size
        if t.name.endswith((".bias", ".scale")):
            continue
        if p.is_mla and t.role in ("attn_k_b", "attn_v_b", "attn_kv_b"):
            mla.setdefault(il, {})[t.role] = t
            continue
        if t.role in _NORMS:
            has_norm[il] = True
        elif len(t.shape) < 2:
            continue                                    # a vector under a matrix role adds no activation buffer
        elif t.role in _EXPS:
            exps[il] += t.shape[1] * ub * p.n_expert_used * 4
        elif t.role in _SHEXP:
            shexp[il] += t.shape[1] * ub * 4
        elif t.role in _DENSE:
            dense[il] += t.shape[1] * ub * 4
    compute = []
    for il in range(n):
        inp = p.n_embd * ub * 4 * (2 if has_norm[il] else 1)
        compute.append(max(exps[il], shexp[il], dense[il]) + inp)
    for il, parts in mla.items():
        kb, vb, kvb = parts.get("attn_k_b"), parts.get("attn_v_b"), parts.get("attn_kv_b")
        if kb is not None and vb is not None and kvb is None:
            kb_type = type_of(kb, mix)
            kind = "q8_0" if catalogue().get(kb_type).is_quantized else kb_type
            weights[il] += _row_size(kind, _ne(vb, 0)) * (_ne(vb, 1) + _ne(kb, 1)) * _ne(vb, 2) * 2
        elif kvb is not None:
            half = tensor_bytes[kvb.name] // 2
            if kb is None:
                weights[il] += half
            if vb is None:
                weights[il] += half
        if mla_attn == 3 and vb is not None:
            n_head = _ne(vb, 2)                        # 1 for the 2-D attn_v_b ik's converter writes
            kv_f32_mib = (2 * _ne(vb, 1) * n_head * ctx * 4) / (1024.0 * 1024.0)
            n_max_head = n_head
            if amb > 0 and kv_f32_mib > amb:
                n_max_head = 1
                for niter in range(2, n_head):
                    if n_head % niter == 0 and kv_f32_mib / niter <= amb:
                        n_max_head = n_head // niter
                        break
            compute[il] = max(compute[il], 2 * _ne(vb, 1) * n_max_head * ctx * 4)
    kv = [ik_kv_bytes(tmap, il, ctx=ctx, type_k=type_k, type_v=type_v, flash_attn=flash_attn, mla_attn=mla_attn,
                      n_seq=n_seq)
          for il in range(n)]
    output_weights = ow or embd
    max_compute = max(compute, default=0)
    n_output = worst_case_tokens if worst_case_tokens > 0 else ub
    logits = p.n_vocab * n_output * 4
    return LayerSizes(tuple(weights), tuple(kv), tuple(compute), output_weights, max(logits, max_compute) - max_compute)


def _ne(t: TensorInfo, i: int) -> int:
    """ggml ne[i]: dimensions past the stored ones are 1."""
    return t.shape[i] if i < len(t.shape) else 1


def format_layer_sizes(sizes: LayerSizes) -> list[str]:
    """The table ik prints at load ("Layer NN: weights, kv, total   compute MiB"), for line-by-line comparison."""
    lines = []
    for il in range(sizes.n_layer):
        w, k, c = sizes.weights[il] / MIB, sizes.kv[il] / MIB, sizes.compute[il] / MIB
        lines.append(f"Layer {il:2d}: {w:9.2f}, {k:9.2f}, {w + k:9.2f}   {c:9.2f}  MiB")
    w, x = sizes.output_weights / MIB, sizes.output_extra / MIB
    lines.append(f"Layer {sizes.n_layer:2d}: {w:9.2f}, {x:9.2f}, {w + x:9.2f} MiB (output layer)")
    return lines
