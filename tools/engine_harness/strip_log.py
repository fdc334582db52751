#!/usr/bin/env python3
"""Keep the lines of an engine load log that the fixtures are compared on (layer assignment, buffers, KV, compute).

Usage: strip_log.py FULL.log > FIXTURE.log. Lines are kept verbatim (bytes that are not UTF-8 are replaced).
"""

from __future__ import annotations

import re
import sys

KEEP = re.compile(
    r"using device|Free memory|^Layer +\d+:|^Total   :|Setting default device|Setting layer|Memory required|"
    r"Memory available|offload|buffer size|KV self size|llama_kv_cache: size|assigned to device|"
    r"memory_breakdown_print|common_params_fit|common_fit_params|llama_model_loader: - type|n_layer  |"
    r"n_ctx  |n_batch  |n_ubatch  |flash_attn  |Adding experts|overrid|graph splits|graph: nodes|"
    r"model size|repeating layers|fit margin|max_gpu|split mode|Split mode|MLA|mla|n_swa|Layer \d+: assigning|"
    r"error|failed|warning"
)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if KEEP.search(line):
                sys.stdout.write(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
