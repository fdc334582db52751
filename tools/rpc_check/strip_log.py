#!/usr/bin/env python3
"""Keep the lines of an engine (or rpc-server) log that tests/test_rpc_harness.py compares.

Usage: strip_log.py [--server] FULL.log > FIXTURE.log.  Lines are kept verbatim (non-UTF-8 bytes replaced).
"""

from __future__ import annotations

import re
import sys

CLIENT = re.compile(
    r"using device|buffer size|KV self size|llama_kv_cache: size|assigned to device|Setting default device|"
    r"offload|llama_model_loader: - type|n_layer  |n_ctx  |n_ubatch  |flash_attn  |graph splits|"
    r"memory_breakdown_print|load time|error|failed|Available buffer types|^  RPC|^  CPU"
)
# the server's debug log (mainline, GGML_RPC_DEBUG=1): every buffer allocation in bytes, and every command that
# moves data (load: set_tensor / set_tensor_hash; per token: set_tensor, graph_(re)compute, get_tensor, copy_tensor)
SERVER = re.compile(r"alloc_buffer|set_tensor|get_tensor|copy_tensor|graph_compute|graph_recompute|Starting RPC|"
                    r"endpoint|local cache|Devices|^  CPU|transport|error|failed|WARNING|create_backend|using")


def main() -> int:
    args = sys.argv[1:]
    keep = SERVER if args and args[0] == "--server" else CLIENT
    path = args[-1]
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if keep.search(line):
                sys.stdout.write(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
