#!/usr/bin/env python3
"""Keep the lines of an engine (or rpc-server) log that the committed fixtures are compared on.

Usage: strip_log.py --filter NAME FULL.log > FIXTURE.log.  Lines are kept verbatim (non-UTF-8 bytes replaced).

One filter per kind of fixture, because each set of committed fixtures was cut with its own line set and a test
reads exactly those lines:

* ``harness``: engine load logs of tools/engine_harness (tests/fixtures/engine/*.log): layer assignment, per-device
  buffers, KV, compute, the ik layer-size table and fit messages.
* ``rpc-client``: the llama-cli side of tools/rpc_check (tests/fixtures/rpc/<engine>-<case>.log).
* ``rpc-server``: an rpc-server's debug log (mainline, GGML_RPC_DEBUG=1; tests/fixtures/rpc/*-server<i>.log):
  every buffer allocation in bytes, and every command that moves data (load: set_tensor / set_tensor_hash; per
  token: set_tensor, graph_(re)compute, get_tensor, copy_tensor).
* ``kv``: the KV/state fixtures of tools/engine_harness/run_kv_kinds.sh (tests/fixtures/kv_kinds/), client and
  server logs alike: context flags, the layout lines (n_swa, layer -> device, which layers each cache holds), every
  KV / recurrent-state / DeepSeek-V4 compressor-state / compute buffer and each server's allocations in bytes.
* ``kv-ik``: the ik_llama.cpp side of those fixtures (tools/engine_harness/run_kv_kinds_ik.sh,
  tests/fixtures/kv_kinds_ik/): context and MLA flags, ik's layer-size table and "Setting default device" map,
  every weight/KV/compute buffer line, the DeepSeek-V4 cache line, ik's MLA adjustments (computed attn_kv_b,
  "changing MLA") and every allocation in bytes (the buft_alloc_log.c shim's "[buft_alloc]" lines).

tests/test_strip_log.py re-filters every committed fixture with its filter and checks nothing is lost.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator

FILTERS: dict[str, re.Pattern[str]] = {
    "harness": re.compile(
        r"using device|Free memory|^Layer +\d+:|^Total   :|Setting default device|Setting layer|Memory required|"
        r"Memory available|offload|buffer size|KV self size|llama_kv_cache: size|assigned to device|"
        r"memory_breakdown_print|common_params_fit|common_fit_params|llama_model_loader: - type|n_layer  |"
        r"n_ctx  |n_batch  |n_ubatch  |flash_attn  |Adding experts|overrid|graph splits|graph: nodes|"
        r"model size|repeating layers|fit margin|max_gpu|split mode|Split mode|MLA|mla|n_swa|Layer \d+: assigning|"
        r"error|failed|warning"),
    "rpc-client": re.compile(
        r"using device|buffer size|KV self size|llama_kv_cache: size|assigned to device|Setting default device|"
        r"offload|llama_model_loader: - type|n_layer  |n_ctx  |n_ubatch  |flash_attn  |graph splits|"
        r"memory_breakdown_print|load time|error|failed|Available buffer types|^  RPC|^  CPU"),
    "rpc-server": re.compile(
        r"alloc_buffer|set_tensor|get_tensor|copy_tensor|graph_compute|graph_recompute|Starting RPC|"
        r"endpoint|local cache|Devices|^  CPU|transport|error|failed|WARNING|create_backend|using"),
    "kv": re.compile(
        r"llama_context: +(n_seq_max|n_ctx|n_ctx_seq|n_batch|n_ubatch|flash_attn|kv_unified|n_rs_seq) |"
        r"print_info: +(n_layer|n_swa|n_head_kv|n_embd_head_k|n_embd_head_v|is_swa_any) |assigned to device|"
        r"using device|model buffer size|KV buffer size|RS buffer size|state buffer size|llama_kv_cache: size|"
        r"llama_memory_recurrent: size|ratio = \d|creating|: layer +\d+: (dev|filtered)|compute buffer size|"
        r"llama_memory_recurrent, layer +\d+: dev|llama_memory_recurrent: layer +\d+: skipped|"
        r"memory_breakdown_print|alloc_buffer|Starting RPC|endpoint|padding V cache|does not have KV|reuse layer|"
        r"error|failed|warning|WARN"),
    "kv-ik": re.compile(
        r"llama_init_from_model: +(n_ctx|n_batch|n_ubatch|flash_attn|mla_attn|attn_max_b) |"
        r"llm_load_print_meta: +(n_layer|n_swa|n_swa_pattern|n_head_kv|n_embd_head_k|n_embd_head_v|n_embd_k_gqa|"
        r"n_embd_v_gqa|n_lora_kv|n_rot) |using device|^Layer +\d+:|^Total   :|Setting default device|offload|"
        r"buffer size|KV self|DSV4 cache|state slots|MLA|wkv_b|Computed|need to compute|overridden|graph splits|"
        r"buft_alloc|Starting RPC|endpoint|error|failed|warning|WARN"),
}


def strip(lines: Iterable[str], name: str) -> Iterator[str]:
    """The lines the filter ``name`` keeps, verbatim and in order."""
    keep = FILTERS[name]
    return (line for line in lines if keep.search(line))


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "--filter" or argv[1] not in FILTERS:
        print(f"usage: strip_log.py --filter {{{','.join(FILTERS)}}} FULL.log > FIXTURE.log", file=sys.stderr)
        return 2
    with open(argv[2], encoding="utf-8", errors="replace") as fh:
        sys.stdout.writelines(strip(fh, argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
