#!/usr/bin/env bash
# The two tiny models tools/rpc_check/run_rpc_cases.sh loads (bf16, deterministic: seed 0), written with the
# engine-harness generator make_tiny_qwen3moe.py (Qwen3-MoE tensor names; pass its path as $1).
# Usage: make_models.sh GENERATOR.py OUT_DIR
set -euo pipefail
gen=${1:?make_tiny_qwen3moe.py}
out=${2:?OUT_DIR}
mkdir -p "$out"
python3 "$gen" "$out/rpc8.gguf" --hidden 256 --layers 8 --experts 8 --used 2 --heads 4 --kv-heads 2 \
    --head-dim 64 --ffn-exp 128 --ffn 384 --vocab 512
python3 "$gen" "$out/rpc2big.gguf" --hidden 2048 --layers 2 --experts 4 --used 2 --heads 4 --kv-heads 2 \
    --head-dim 64 --ffn-exp 64 --ffn 128 --vocab 3000
