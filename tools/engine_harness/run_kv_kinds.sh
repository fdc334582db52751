#!/usr/bin/env bash
# Regenerate tests/fixtures/kv_kinds/ from an ALREADY BUILT mainline llama.cpp (this script builds nothing): one
# tiny GGUF per attention/state kind (make_tiny_arch.py), run by the real engine on the CPU at two or more context
# sizes, plus one run over two rpc-server devices on 127.0.0.1 (GGML_RPC_DEBUG=1, so each server logs every buffer
# it allocates in bytes: per-device KV/state to the byte). rpc-server is unauthenticated: only 127.0.0.1.
#
# Engine: llama.cpp 0c1e57098 (the tree vendored by the llama-cpp-python 0.3.36 sdist), CPU-only build with
# GGML_RPC=ON, GGML_NATIVE=ON, LLAMA_CURL=OFF, release; binaries llama-completion and ggml-rpc-server.
#
# Usage: run_kv_kinds.sh BIN_DIR OUT_DIR [WORK_DIR] [KIND_FILTER]   (a filter re-runs only the kinds it matches)
# OUT_DIR gets, per case, CASE.log (stripped with tools/strip_log.py --filter kv), CASE-server<i>.log for RPC
# cases, KIND.header.gguf (the model's bytes before the tensor data) and cases.jsonl ({"log", "engine", "commit",
# "model", "kind", "servers", "command"}). WORK_DIR (default: a temporary folder) keeps the models and full logs.
set -euo pipefail

bin=${1:?BIN_DIR (llama-completion, ggml-rpc-server)}
out=${2:?OUT_DIR}
work=${3:-$(mktemp -d)}
filter=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
cli="$bin/llama-completion"
rpc="$bin/ggml-rpc-server"
commit=0c1e57098
base=${PORT_BASE:-50400}   # this harness's ports: 50400-50409 unless PORT_BASE says, bound to 127.0.0.1 only
[ -x "$cli" ] && [ -x "$rpc" ] || { echo "missing $cli or $rpc" >&2; exit 2; }
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out" "$work/full"
: > "$out/cases.jsonl.new"

pids=()
stop_servers() {
  local p
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap stop_servers EXIT

make_model() {   # $1 = kind: the model file and its committed header
  local kind=$1
  [ -f "$work/$kind.gguf" ] || python3 "$here/make_tiny_arch.py" "$kind" "$work/$kind.gguf"
  python3 - "$work/$kind.gguf" "$out/$kind.header.gguf" <<'EOF'
import sys
import gguf
src, dst = sys.argv[1:]
start = gguf.GGUFReader(src).data_offset
with open(src, "rb") as fh:
    head = fh.read(start)
open(dst, "wb").write(head)
EOF
}

run_case() {   # $1 = kind, $2 = case name, $3 = number of rpc-servers (0: CPU only), rest = engine flags
  local kind=$1 name=$2 n=$3 i port list=""
  shift 3
  if [ -n "$filter" ] && [[ "$kind" != $filter ]]; then return 0; fi
  for ((i = 0; i < n; i++)); do
    port=$((base + i))
    GGML_RPC_DEBUG=1 "$rpc" -H 127.0.0.1 -p "$port" > "$work/full/$name-server$i.log" 2>&1 &
    pids+=($!)
    list+="${list:+,}127.0.0.1:$port"
  done
  for ((i = 0; i < n; i++)); do
    port=$((base + i))
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
  done
  local rpcargs=()
  [ "$n" -gt 0 ] && rpcargs=(--rpc "$list" -ngl 99 -ts "$(printf '1%.0s,' $(seq "$n") | sed 's/,$//')")
  local cmd=(llama-completion -m "$kind.gguf" "${rpcargs[@]}" "$@" -n 1 -p hi -t 1 -no-cnv -lv 5 --fit off)
  echo "== $name: ${cmd[*]}" >&2
  # a run that hangs after its load log is complete (the tiny plamo2 in its first decode) is stopped by timeout
  (cd "$work" && timeout "${TIMEOUT:-300}" nice "$cli" "${cmd[@]:1}" < /dev/null > "$work/full/$name.log" 2>&1) || true
  stop_servers
  python3 "$here/../strip_log.py" --filter kv "$work/full/$name.log" > "$out/$name.log"
  for ((i = 0; i < n; i++)); do
    python3 "$here/../strip_log.py" --filter kv "$work/full/$name-server$i.log" > "$out/$name-server$i.log"
  done
  python3 - "$out/cases.jsonl.new" "$name.log" "$commit" "$kind" "$n" "${cmd[@]}" <<'EOF'
import json, shlex, sys
path, log, commit, kind, n, *cmd = sys.argv[1:]
with open(path, "a") as fh:
    fh.write(json.dumps({"log": log, "engine": "mainline", "commit": commit, "model": f"{kind}.header.gguf",
                         "kind": kind, "servers": int(n), "command": shlex.join(cmd)}) + "\n")
EOF
}

for kind in dsv4 mla dsa qwen35moe gemma3 gptoss gemma4 gemma4kv llama4 nemotronh kda kimilinear jamba granitehybrid \
    falconh1 mamba mamba2 plamo2 lfm2 lfm2moe rwkv6 rwkv7 rwkv6qwen2 arwkv7; do
  if [ -n "$filter" ] && [[ "$kind" != $filter ]]; then continue; fi
  make_model "$kind"
done

# Per kind: the plain CPU engine at two contexts (buffers printed to 0.01 MiB), the larger context again over one
# rpc-server and the smaller over two (every allocation in bytes: exact per device), and the flags that change
# the cache, each over one rpc-server.
run_kind() {   # $1 = kind, then "name:flags" variants run over one rpc-server
  local kind=$1 v
  shift
  run_case "$kind" "$kind-c4096"       0 -c 4096
  run_case "$kind" "$kind-c16384"      0 -c 16384
  run_case "$kind" "$kind-c16384-rpc1" 1 -c 16384
  run_case "$kind" "$kind-c4096-rpc2"  2 -c 4096
  for v in "$@"; do
    # shellcheck disable=SC2086
    run_case "$kind" "$kind-${v%%:*}-rpc1" 1 ${v#*:}
  done
}

# DeepSeek-V4: raw SWA K cache (window-sized), CSA/HCA compressed caches and the indexer cache (context-sized),
# compressor states (fixed); a quantized K cache; two sequences (one stream each)
run_kind dsv4 "c4096-q8:-c 4096 -ctk q8_0 -ctv q8_0" "c8192-np2:-c 8192 -np 2"
# MLA: K-only latent cache, with and without flash attention
run_kind mla "c4096-fa-off:-c 4096 -fa off" "c4096-q8:-c 4096 -ctk q8_0 -ctv q8_0"
# DSA (GLM-5): MLA cache + lightning-indexer key cache
run_kind dsa "c4096-fa-off:-c 4096 -fa off"
# gated delta-net hybrid: recurrent state per sequence, independent of the context
run_kind qwen35moe "c4096-np2:-c 4096 -np 2"
# sliding window: window + ubatch cells on SWA layers, the context on full ones
run_kind gemma3 "c4096-swa-full:-c 4096 --swa-full" "c4096-ub256:-c 4096 -ub 256"
run_kind gptoss "c4096-ub256:-c 4096 -ub 256" "c4096-q8:-c 4096 -ctk q8_0 -ctv q8_0"
# gemma-4: the last layers reuse earlier layers' KV; without flash attention V rows are padded to the widest layer
run_kind gemma4 "c4096-fa-off:-c 4096 -fa off"
# gemma-4 with K as V on the full layers (attention_k_eq_v) and no shared-KV layers (the larger dense checkpoints)
run_kind gemma4kv "c4096-fa-off:-c 4096 -fa off"
# Llama 4: 8192-token chunks (cells = min(context, 8192 + ubatch)): the context at 4096, 8704 cells at 16384
run_kind llama4 "c16384-ub256:-c 16384 -ub 256"
# Nemotron-H (Mamba-2 hybrid): SSM state per sequence, KV on the attention layer only, nothing for MLP layers
run_kind nemotronh "c4096-np2:-c 4096 -np 2"
# Kimi Delta Attention (Ling-3.0, bailingmoe3): KDA state per sequence on the KDA layers, MLA K-only cache on the
# rest, with and without flash attention
run_kind kda "c4096-np2:-c 4096 -np 2" "c4096-fa-off:-c 4096 -fa off"
# Kimi-Linear: the same KDA state rule, MLA without Q compression
run_kind kimilinear "c4096-np2:-c 4096 -np 2"
# Jamba (Mamba-1) and Granite-4.0-H (Mamba-2): state on the SSM layers, KV on the attention layers
run_kind jamba "c4096-np2:-c 4096 -np 2"
run_kind granitehybrid "c4096-np2:-c 4096 -np 2" "c4096-fa-off:-c 4096 -fa off"
# Falcon-H1: attention and Mamba-2 in every layer: KV and state on every layer
run_kind falconh1 "c4096-np2:-c 4096 -np 2"
# purely recurrent models (Mamba-1, Mamba-2, RWKV-6, RWKV-7): one state per sequence on every layer, no KV cache
run_kind mamba "c4096-np2:-c 4096 -np 2"
run_kind mamba2 "c4096-np2:-c 4096 -np 2"
run_kind rwkv6 "c4096-np2:-c 4096 -np 2"
run_kind rwkv7 "c4096-np2:-c 4096 -np 2"
# the RWKV time mixes on a Qwen2 trunk (one token-shift row, SwiGLU FFN): rwkv6qwen2 with grouped key/value
run_kind rwkv6qwen2 "c4096-np2:-c 4096 -np 2"
run_kind arwkv7 "c4096-np2:-c 4096 -np 2"
# PLaMo-2 (Mamba + attention every other layer) and LFM2 (short-conv + attention): state and KV per layer kind
# (the tiny plamo2 hangs in its first decode after the load log: run with TIMEOUT=20)
run_kind plamo2 "c4096-np2:-c 4096 -np 2"
run_kind lfm2 "c4096-np2:-c 4096 -np 2" "c4096-fa-off:-c 4096 -fa off"
# LFM2-MoE: the same state and KV, MoE FFNs after a dense lead, the last layer short-conv
run_kind lfm2moe "c4096-np2:-c 4096 -np 2"

# a KIND_FILTER run replaces only its kinds' entries
python3 - "$out/cases.jsonl" "$out/cases.jsonl.new" <<'EOF'
import json, os, sys
old_path, new_path = sys.argv[1:]
new = [json.loads(x) for x in open(new_path) if x.strip()]
kinds = {c["kind"] for c in new}
old = [json.loads(x) for x in open(old_path) if x.strip()] if os.path.exists(old_path) else []
keep = [c for c in old if c["kind"] not in kinds]
with open(old_path, "w") as fh:
    fh.writelines(json.dumps(c) + "\n" for c in keep + new)
os.remove(new_path)
EOF
echo "done: $out (models and full logs in $work)" >&2
