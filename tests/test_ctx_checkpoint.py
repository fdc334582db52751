"""The bytes of one llama-server context checkpoint (planner/ctx_checkpoint.py) against the engines.

Independent sources:

* measured: llama.cpp 0c1e57098's own ``llama_state_seq_get_size_ext(ctx, 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY)``
  -- what tools/server/server-context.cpp create_checkpoint stores -- on tiny GGUFs of every sliding-window and
  recurrent kind with one slot filled, and ik_llama.cpp 8337e4cd's ``llama_state_seq_get_size(ctx, 0, PARTIAL_ONLY)``
  (examples/server/server-context.cpp:28) on its gated delta-net and KDA hybrids and DeepSeek-V4 (tools/engine_harness/
  run_ckpt_sizes.sh + ckpt_size.c -> tests/fixtures/ctx_checkpoints/{mainline,ik}.jsonl; the models' headers are
  tests/fixtures/kv_kinds/KIND.header.gguf, the same files).  To the byte.
* a real model, by hand from the engines' writers and the model's published config: gemma-3-27b on mainline
  (src/llama-kv-cache.cpp state_write, :2065-2340; src/llama-context.cpp:3191-3197) and Qwen3-Next-80B-A3B on ik
  (src/llama.cpp write_kv_cache / write_kv_cache_data, :9768-10147 @8337e4cd).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.ctx_checkpoint import checkpoint_bytes, makes_checkpoints
from planner.kv_cache import CacheConfig
from planner.tensors import builtin
from planner.source import load_model

FIX = Path(__file__).parent / "fixtures"
CASES = [json.loads(line) for name in ("mainline", "ik")
         for line in (FIX / f"ctx_checkpoints/{name}.jsonl").read_text().splitlines() if line]


def _cfg(case: dict) -> CacheConfig:
    return CacheConfig(engine=case["engine"], ctx=case["n_ctx"], type_k="f16", type_v="f16", n_seq=case["n_seq"],
                       unified=case["kv_unified"], swa_full=case["swa_full"])


def _params(kind: str):
    return load_model(str(FIX / "kv_kinds" / f"{kind}.header.gguf"), check_size=False).params


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['engine']}-{c['kind']}-c{c['n_ctx']}-np{c['n_seq']}"
                         f"{'-kvu' if c['kv_unified'] else ''}-t{c['n_tokens']}")
def test_one_checkpoint_is_the_bytes_the_engine_writes(case):
    params = _params(case["kind"])
    cfg = _cfg(case)
    assert makes_checkpoints(params, cfg)
    got = checkpoint_bytes(params, cfg)
    slot = case["n_ctx"] // case["n_seq"]
    if case["engine"] == "ik" and case["n_tokens"] < slot:
        # ik writes a cell header (pos, n_seq_id: 8 bytes) for every cell the slot holds (src/llama.cpp:9768-9786)
        assert case["partial_bytes"] == got - 8 * (slot - case["n_tokens"])
    elif params.n_swa and case["n_tokens"] < min(params.n_swa, case["n_ctx"]):
        # fewer tokens than the window: the engine writes fewer cells than the full slot's worst case
        assert case["partial_bytes"] < got
    else:
        assert got == case["partial_bytes"]


def test_the_fixture_covers_windows_and_recurrent_state():
    kinds = {c["kind"] for c in CASES if c["engine"] == "mainline"}
    assert {"gemma3", "gptoss", "llama4", "gemma4", "dsv4"} <= kinds             # SWA / chunked / DeepSeek-V4
    assert {"qwen35moe", "falconh1", "mamba", "rwkv7", "jamba", "lfm2"} <= kinds  # recurrent, hybrid, parallel
    assert {c["kind"] for c in CASES if c["engine"] == "ik"} == {"qwen35moe", "kda", "dsv4"}  # + KDA/MLA, V4


def test_no_checkpoints_without_a_window_or_state_and_none_with_swa_full():
    cfg = CacheConfig(engine="mainline", ctx=32768, n_seq=4, unified=True)
    assert checkpoint_bytes(builtin("qwen3-235b-a22b").params, cfg) == 0
    gemma = builtin("gemma-3-27b").params
    # n_swa = swa_full ? 0 : llama_model_n_swa (tools/server/server-context.cpp:1185): no checkpoint is made
    assert checkpoint_bytes(gemma, CacheConfig(engine="mainline", ctx=32768, swa_full=True)) == 0
    # ik makes them for recurrent models only (examples/server/server-context.cpp:1801-1813 @8337e4cd)
    assert checkpoint_bytes(gemma, CacheConfig(engine="ik", ctx=32768)) == 0


def test_gemma3_27b_on_mainline_by_hand():
    """google/gemma-3-27b-it config: 62 layers, sliding_window 1024, sliding_window_pattern 6 (5 of 6 layers slide:
    52), 16 KV heads of 128; q8_0 rows of 2048 values are 64 blocks of 34 bytes."""
    row = 2048 // 32 * 34
    cells, swa_layers = 1024, 62 - 62 // 6
    want = (4 + 4                    # io_magic, seq_id (llama-context.cpp:3194-3195)
            + 4 + 4                  # n_stream = 1 (-kvu), one cell count
            + cells * (4 + 4 + 4)    # pos, n_seq_id, the seq id per cell (state_write_meta)
            + 4 + 4                  # v_trans, n_layer
            + 2 * swa_layers * (4 + 8 + row * cells))   # K then V: type, row size, rows
    cfg = CacheConfig(engine="mainline", ctx=32768, n_seq=4, unified=True)
    assert swa_layers == 52
    assert checkpoint_bytes(builtin("gemma-3-27b").params, cfg) == want


def test_qwen3_next_on_ik_by_hand():
    """Qwen/Qwen3-Next-80B-A3B config: 48 layers, full_attention_interval 4 (36 gated delta-net layers),
    linear_conv_kernel_dim 4, 16 key heads and 32 value heads of 128.  ik's state row: n_embd_v_s =
    (d_conv - 1) * (2 * key_dim + d_inner) + head_v^2 * n_v_heads F32 (src/llama-hparams.h:329)."""
    key_dim, d_inner = 16 * 128, 32 * 128
    n_embd_v_s = 3 * (2 * key_dim + d_inner) + 128 * 128 * 32
    n_layer, n_rec, cells = 48, 36, 32768
    want = (4 + cells * 8            # cell_count; pos + n_seq_id (0) per cell of the slot (write_kv_cache_meta)
            + 4 + 4                  # v_state, n_layer
            + 2 * n_layer * 12       # K and V type + row size, no rows (need_kv false)
            + 4                      # qnext_state
            + n_layer * 16 + n_rec * 4 * n_embd_v_s   # s type, row size, s_rows; one row per recurrent layer
            + 4)                     # dsa_indexer_state
    cfg = CacheConfig(engine="ik", ctx=32768, n_seq=1)
    assert checkpoint_bytes(builtin("qwen3-next-80b-a3b").params, cfg) == want
