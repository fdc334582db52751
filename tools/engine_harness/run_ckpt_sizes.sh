#!/usr/bin/env bash
# Regenerate tests/fixtures/ctx_checkpoints/mainline.jsonl from an ALREADY BUILT mainline llama.cpp (the engine is not
# built here; only the small ckpt_size.c harness is compiled against its libllama): for each tiny GGUF
# (make_tiny_arch.py, the same files whose headers tests/fixtures/kv_kinds/ keeps) one slot is filled with N tokens
# and llama_state_seq_get_size_ext(ctx, 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY) -- the bytes of one llama-server
# context checkpoint -- is printed with the full state's size.  CPU only, one thread, F16 cache, flash attention on.
#
# Engine: llama.cpp 0c1e57098 (the tree vendored by the llama-cpp-python 0.3.36 sdist).
# Usage: run_ckpt_sizes.sh SRC_DIR BIN_DIR OUT.jsonl [WORK_DIR]
set -euo pipefail
src=${1:?SRC_DIR (llama.cpp tree with include/ and ggml/include/)}
bin=${2:?BIN_DIR (libllama.so)}
out=${3:?OUT.jsonl}
work=${4:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
commit=0c1e57098
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cc -O1 -o "$work/ckpt_size" "$here/ckpt_size.c" -I"$src/include" -I"$src/ggml/include" -L"$bin" -lllama -lggml -lggml-base
: > "$out.new"
# kind n_ctx n_seq kv_unified swa_full n_tokens
while read -r kind ctx nseq uni full ntok; do
  [ -f "$work/$kind.gguf" ] || python3 "$here/make_tiny_arch.py" "$kind" "$work/$kind.gguf" > /dev/null
  read -r _ _ _ _ _ partial fullb < <(nice "$work/ckpt_size" "$work/$kind.gguf" "$ctx" "$nseq" "$uni" "$full" "$ntok")
  printf '{"kind": "%s", "n_ctx": %s, "n_seq": %s, "kv_unified": %s, "swa_full": %s, "n_tokens": %s, "partial_bytes": %s, "full_bytes": %s, "engine": "mainline", "commit": "%s", "command": "ckpt_size %s.gguf %s %s %s %s %s"}\n' \
    "$kind" "$ctx" "$nseq" "$([ "$uni" = 1 ] && echo true || echo false)" "$([ "$full" = 1 ] && echo true || echo false)" \
    "$ntok" "$partial" "$fullb" "$commit" "$kind" "$ctx" "$nseq" "$uni" "$full" "$ntok" >> "$out.new"
done <<'CASES'
gemma3 4096 1 1 0 1500
gemma3 4096 2 0 0 1500
gemma3 4096 4 1 0 1500
gemma3 8192 1 1 0 300
gptoss 8192 2 0 0 1500
llama4 4096 2 1 0 4096
gemma4 4096 2 1 0 1500
gemma4kv 4096 2 1 0 1500
qwen35moe 4096 1 1 0 1500
qwen35moe 4096 2 0 0 1500
falconh1 4096 1 1 0 1500
lfm2 4096 1 1 0 1500
lfm2moe 4096 2 1 0 1500
jamba 4096 2 1 0 1500
granitehybrid 4096 2 1 0 1500
nemotronh 4096 2 1 0 1500
mamba 4096 2 1 0 1500
mamba2 4096 1 1 0 1500
rwkv6 4096 2 1 0 1500
rwkv7 4096 2 1 0 1500
arwkv7 4096 2 1 0 1500
kda 4096 2 1 0 1500
kimilinear 4096 2 1 0 1500
CASES
mv "$out.new" "$out"
