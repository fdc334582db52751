"""llama-server's context checkpoints: the bytes of one, from the engines' own state-writing code.

A server slot keeps up to N checkpoints (mainline ``-ctxcp/--ctx-checkpoints/--swa-checkpoints``, default 32 per
slot: common/common.h:631, common/arg.cpp:1698 @0c1e57098; ik ``-ctx-ckpt/--ctx-checkpoints``, default 32:
common/common.h:554, common/common.cpp:2848 @8337e4cd) in host memory, outside every buffer the load log prints.
Each is ``llama_state_seq_get_size(ctx, slot, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY)`` bytes: the parts of the slot's
memory that cannot be rolled back.

When the engines make them:

* mainline (tools/server/server-context.cpp:3441-3455): a memory whose ``seq_rm`` removes only whole sequences
  (recurrent state, ``common_context_can_seq_rm``, common/common.cpp:1491-1530) or a model with a sliding window
  (``n_swa = swa_full ? 0 : llama_model_n_swa``, server-context.cpp:1185);
* ik (examples/server/server-context.cpp:1801-1813): recurrent/hybrid architectures (``llama_model_has_recurrent``,
  src/llama-model.cpp:2302), openPangu and DeepSeek-V4; never for sliding-window attention (ik caches the whole
  context on those layers).

What one holds (worst case: a slot filled to its context):

* mainline ``llama_kv_cache_iswa::state_write`` with the partial flag writes only the SWA cache
  (src/llama-kv-cache-iswa.cpp:259-265), and ``llama_kv_cache::state_write`` (src/llama-kv-cache.cpp:2065-2137)
  only the slot's cells that its window does not mask (``is_masked_swa``: at most ``n_swa``), with a 12-byte
  header per cell (pos, n_seq_id, the seq id: ``state_write_meta``, :2211-2242) and a type + row size header per
  layer and per K/V (``state_write_data``, :2244-2340); ``llama_memory_hybrid`` writes only its recurrent part
  (src/llama-memory-hybrid.cpp:190-195), ``llama_memory_hybrid_iswa`` the SWA cache and the recurrent part
  (src/llama-memory-hybrid-iswa.cpp:195-198); ``llama_memory_recurrent::state_write`` (src/llama-memory-recurrent.cpp
  :766-990) the slot's one cell: F32 r and s rows of every recurrent layer, each with a 12-byte header.
* ik ``llama_data_write::write_kv_cache`` (src/llama.cpp:10094-10147) with the partial flag: the cell header of
  every cell of the slot (8 bytes: pos, n_seq_id = 0, :9768-9786), per-layer K/V type headers without data
  (``need_kv`` false, :9835-9966), and the recurrent state row of the slot in every recurrent layer (:9969-10009),
  then the DSA marker (:10012).

DeepSeek-V4 (checkpointed by both): mainline writes its raw window cache and compressor states
(src/llama-kv-cache-dsv4.cpp:1594-1626 @0c1e57098), ik the cell headers and, per compressed layer, the slot's
stream of its compressed caches and states (``write_dsv4_cache``, src/llama.cpp:10036-10091 @8337e4cd).
"""

from __future__ import annotations

from planner.kv_cache import (
    DSV4_MAINLINE_STATES,
    MLA_ARCHS,
    CacheConfig,
    LayerCache,
    _n_embd_v_gqa,
    _row,
    layer_caches,
    n_embd_r_s,
    n_embd_v_s,
)
from planner.tensors import ModelParams

U32, U64 = 4, 8
TYPE_AND_ROW = U32 + U64          # int32 type + uint64 row size (both engines' per-layer headers)
F32 = 4


def makes_checkpoints(params: ModelParams, cfg: CacheConfig) -> bool:
    """Whether the engine's server makes context checkpoints for this model (see the module's sources)."""
    caches = layer_caches(params, cfg)
    recurrent = any(c.state_bytes for c in caches)
    if cfg.engine == "ik":
        return recurrent or bool(params.compress_ratios)
    return recurrent or (params.n_swa > 0 and not cfg.swa_full)


def checkpoint_bytes(params: ModelParams, cfg: CacheConfig) -> int:
    """Bytes of one context checkpoint of one slot at its fullest (0: the engine makes none).

    ``llama_state_seq_get_size(..., LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY)`` as each engine's writer counts it."""
    if not makes_checkpoints(params, cfg):
        return 0
    caches = layer_caches(params, cfg)
    if cfg.engine == "ik":
        return _ik_bytes(params, cfg, caches)
    # llama_context::state_seq_get_size writes io_magic and the seq id first (src/llama-context.cpp:3191-3197)
    if params.compress_ratios:
        return 2 * U32 + _mainline_dsv4_bytes(params, cfg, caches)
    return 2 * U32 + _mainline_bytes(params, cfg, caches)


def _mainline_bytes(params: ModelParams, cfg: CacheConfig, caches: tuple[LayerCache, ...]) -> int:
    total = 0
    swa = [c for c in caches if c.kind == "swa"]
    if swa:
        total += _mainline_swa_bytes(params, cfg, swa)
    rec = [c for c in caches if c.state_bytes]
    if rec:
        # llama_memory_recurrent::state_write: cell_count, one cell (pos, n_seq_id = 0), s_trans, n_layer; per
        # recurrent layer an r row and an s row, F32 (llama_model::create_memory), each after type + row size
        r, s = n_embd_r_s(params)
        total += U32 + 2 * U32 + 2 * U32 + len(rec) * (2 * TYPE_AND_ROW + F32 * (r + s))
    return total


def _mainline_swa_bytes(params: ModelParams, cfg: CacheConfig, swa: list[LayerCache]) -> int:
    """The SWA cache's part: n_stream, a cell count per stream, then the slot's stream: ``min(n_swa, cells)``
    unmasked cells, 12 header bytes each (no cell extension: M-RoPE and PLE models have no sliding window), v_trans,
    n_layer, and per layer K then V (type + row size, rows; the transposed V writes type, element size and width,
    also 12 bytes, then the same bytes for the non-block types it allows)."""
    n_stream = cfg.n_stream
    cells = min(params.n_swa, swa[0].cells)
    total = U32 + U32 * n_stream + cells * 3 * U32 + 2 * U32
    for c in swa:
        width_k = params.layer_head_dim(c.layer) * params.head_count_kv(c.layer)
        total += TYPE_AND_ROW + _row(cfg.type_k, width_k) * cells
        if c.v_bytes:
            total += TYPE_AND_ROW + _row(cfg.type_v, _n_embd_v_gqa(params, c.layer)) * cells
    return total


def _mainline_dsv4_bytes(params: ModelParams, cfg: CacheConfig, caches: tuple[LayerCache, ...]) -> int:
    """``llama_kv_cache_dsv4::state_write`` with the partial flag (src/llama-kv-cache-dsv4.cpp:1594-1626
    @0c1e57098): magic, version, mode; the raw K-only window cache (a ``llama_kv_cache_iswa`` whose every trunk
    layer slides, so its SWA cache as above, one stream per sequence, no V); no compressed caches; then the CSA,
    HCA and indexer compressor states of the slot's stream (``llama_dsv4_comp_state::state_write``, :1080-1106:
    six u32, then per layer its index and the kv and score tensors, each a 28-byte header --
    ``dsv4_state_write_tensor_streams``, :249-290 -- and ``state_size`` F32 rows of ``n_embd_state``)."""
    n_stream = max(1, cfg.n_seq)                    # unified_raw = false (:1239)
    cells = min(params.n_swa, caches[0].cells)
    total = 3 * U32 + U32 + U32 * n_stream + cells * 3 * U32 + 2 * U32
    for c in caches:
        width = params.layer_head_dim(c.layer) * params.head_count_kv(c.layer)
        total += TYPE_AND_ROW + _row(cfg.type_k, width) * cells
    for _name, ratio, state_size, mult, width_of in DSV4_MAINLINE_STATES:
        total += 6 * U32
        for c in caches:
            if params.compress_ratios[c.layer] != ratio:
                continue
            n_embd_state = mult * (params.layer_head_dim(c.layer) if width_of == "head" else params.indexer_head_size)
            total += U32 + 2 * (U32 + 3 * U64 + state_size * F32 * n_embd_state)
    return total


def _ik_bytes(params: ModelParams, cfg: CacheConfig, caches: tuple[LayerCache, ...]) -> int:
    n_layer = params.n_layer if cfg.mtp else params.n_loaded_layers          # k_l.size() (llama_kv_cache_init)
    cells = cfg.kv_size // max(1, cfg.n_seq)                                   # n_ctx_slot = n_ctx / n_parallel
    # v_l stays empty on MLA layers unless -mla 1 without flash attention (needs_v_cache, src/llama.cpp:1334-1339)
    # and on DeepSeek-V4 (is_dsv4_k_only, :1243)
    has_v = not (params.arch in MLA_ARCHS and params.kv_lora_rank and cfg.mla
                 and not (cfg.mla == 1 and not cfg.flash_attn)) and not params.compress_ratios
    total = U32 + cells * 2 * U32 + 2 * U32                     # cell_count, (pos, n_seq_id) per cell, v_state, n_layer
    total += n_layer * TYPE_AND_ROW * (2 if has_v else 1)       # K (and V) headers, no data
    n_rec = sum(1 for c in caches if c.kind == "recurrent")
    total += U32                                                # qnext_state
    if n_rec:
        total += n_layer * (TYPE_AND_ROW + U32) + n_rec * F32 * n_embd_v_s(params)   # type, row, s_rows; one row
    total += U32                                                # dsa_indexer_state (no rows: need_kv is false)
    if params.compress_ratios:
        # DeepSeek-V4 (:10036-10091): n_layer, single stream, stream index, n_stream, then per layer its type and,
        # for a compressed layer, the slot's stream of every compressed cache and compressor state (no headers)
        n_stream = max(1, cfg.n_seq)
        total += 4 * U32 + n_layer * U32 + sum(c.index_bytes for c in caches) // n_stream
    return total
