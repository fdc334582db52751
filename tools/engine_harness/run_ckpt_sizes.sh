#!/usr/bin/env bash
# Regenerate tests/fixtures/ctx_checkpoints/{mainline,ik}.jsonl from an ALREADY BUILT engine (the engine is not built
# here; only the small ckpt_size.c harness is compiled against its libllama): for each tiny GGUF (make_tiny_arch.py,
# the same files whose headers tests/fixtures/kv_kinds/ keeps) one slot is filled with N tokens and the engine's
# llama_state_seq_get_size[_ext](ctx, 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY) -- the bytes of one llama-server
# context checkpoint -- is printed with the full state's size.  CPU only, one thread, F16 cache, flash attention on.
#
# Engines: llama.cpp 0c1e57098 (the tree vendored by the llama-cpp-python 0.3.36 sdist; LIB_DIRS its build/bin),
# ik_llama.cpp 8337e4cd (LIB_DIRS build-rpc/src:build-rpc/ggml/src).
# Usage: run_ckpt_sizes.sh mainline|ik SRC_DIR LIB_DIRS OUT.jsonl [WORK_DIR]
set -euo pipefail
engine=${1:?mainline or ik}
src=${2:?SRC_DIR (the engine tree with include/ and ggml/include/)}
libs=${3:?LIB_DIRS (colon-separated: libllama.so, libggml*.so)}
out=${4:?OUT.jsonl}
work=${5:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ldirs=(); for d in ${libs//:/ }; do ldirs+=("-L$d"); done
if [ "$engine" = ik ]; then
  commit=8337e4cd
  cc -O1 -DIK_LLAMA -o "$work/ckpt_size_ik" "$here/ckpt_size.c" -I"$src/include" -I"$src/ggml/include" "${ldirs[@]}" \
    -lllama -lggml
  bin="$work/ckpt_size_ik"
  # ik: one cache of -c cells shared by the slots (kv_unified/swa_full unused); a slot holds n_ctx / np cells
  cases='qwen35moe 4096 1 0 0 4096
qwen35moe 4096 2 0 0 2048
qwen35moe 4096 1 0 0 1500
kda 4096 1 0 0 4096
kda 4096 2 0 0 2048
dsv4 4096 1 0 0 4096
dsv4 4096 2 0 0 2048
dsv4 4096 1 0 0 1500'
else
  commit=0c1e57098
  cc -O1 -o "$work/ckpt_size" "$here/ckpt_size.c" -I"$src/include" -I"$src/ggml/include" "${ldirs[@]}" \
    -lllama -lggml -lggml-base
  bin="$work/ckpt_size"
  cases='gemma3 4096 1 1 0 1500
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
dsv4 4096 1 1 0 1500
dsv4 4096 2 0 0 1500
dsv4 4096 1 1 0 100'
fi
: > "$out.new"
# kind n_ctx n_seq kv_unified swa_full n_tokens
while read -r kind ctx nseq uni full ntok; do
  [ -f "$work/$kind.gguf" ] || python3 "$here/make_tiny_arch.py" "$kind" "$work/$kind.gguf" > /dev/null
  read -r _ _ _ _ _ partial fullb < <(nice "$bin" "$work/$kind.gguf" "$ctx" "$nseq" "$uni" "$full" "$ntok")
  printf '{"kind": "%s", "n_ctx": %s, "n_seq": %s, "kv_unified": %s, "swa_full": %s, "n_tokens": %s, "partial_bytes": %s, "full_bytes": %s, "engine": "%s", "commit": "%s", "command": "%s %s.gguf %s %s %s %s %s"}\n' \
    "$kind" "$ctx" "$nseq" "$([ "$uni" = 1 ] && echo true || echo false)" "$([ "$full" = 1 ] && echo true || echo false)" \
    "$ntok" "$partial" "$fullb" "$engine" "$commit" "$(basename "$bin")" "$kind" "$ctx" "$nseq" "$uni" "$full" "$ntok" \
    >> "$out.new"
done <<< "$cases"
mv "$out.new" "$out"
