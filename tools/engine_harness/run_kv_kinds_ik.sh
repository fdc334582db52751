#!/usr/bin/env bash
# The ik_llama.cpp side of tests/fixtures/kv_kinds/: regenerate tests/fixtures/kv_kinds_ik/ from an ALREADY BUILT
# ik_llama.cpp (this script builds no engine): the tiny GGUF of every attention/state kind ik loads
# (make_tiny_arch.py, the same files as the mainline fixtures), run by ik's llama-cli on the CPU at two context
# sizes, over one and two rpc-server devices on 127.0.0.1, and with the flags that change ik's cache.
#
# ik's rpc-server cannot log its allocations (ggml/src/ggml-rpc.cpp:38-43 @8337e4cd3: LOG_DBG compiled out, no
# GGML_RPC_DEBUG), so every process runs with the LD_PRELOAD shim buft_alloc_log.c (built here with cc), which
# logs each ggml_backend_buft_alloc_buffer call in bytes ("[buft_alloc] buft: NAME, size: N"): per rpc-server
# and for the client's own CPU buffers. rpc-server is unauthenticated: only 127.0.0.1.
#
# Engine: ik_llama.cpp 8337e4cd3, CPU-only build with GGML_RPC=ON, GGML_NATIVE=ON, GGML_OPENMP=ON, LLAMA_CURL=OFF,
# release; binaries llama-cli and rpc-server.
#
# Usage: run_kv_kinds_ik.sh BIN_DIR OUT_DIR [WORK_DIR] [KIND_FILTER]   (a filter re-runs only the kinds it matches)
# Kinds: make_tiny_arch.py's (nemotronh, kimilinear, jamba, granitehybrid, falconh1, mamba, mamba2, plamo2, lfm2,
# rwkv6, rwkv7 refused by ik) and mlalegacy (make_tiny_deepseek2.py --layers 20).
# OUT_DIR gets, per case, CASE.log (tools/strip_log.py --filter kv-ik), CASE-server<i>.log for RPC cases,
# KIND.header.gguf and cases.jsonl ({"log", "engine", "commit", "model", "kind", "servers", "command"}); a kind ik
# refuses gets KIND-refused.log (not in cases.jsonl). WORK_DIR (default: a temporary folder) keeps the models and
# full logs.
set -euo pipefail

bin=${1:?BIN_DIR (llama-cli, rpc-server)}
out=${2:?OUT_DIR}
work=${3:-$(mktemp -d)}
filter=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
cli="$bin/llama-cli"
rpc="$bin/rpc-server"
commit=8337e4cd3
base=${PORT_BASE:-50420}   # this harness's ports: 50420-50429 unless PORT_BASE says, bound to 127.0.0.1 only
[ -x "$cli" ] && [ -x "$rpc" ] || { echo "missing $cli or $rpc" >&2; exit 2; }
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out" "$work/full"
: > "$out/cases.jsonl.new"
shim="$work/buft_alloc_log.so"
cc -O2 -shared -fPIC -o "$shim" "$here/buft_alloc_log.c" -ldl

pids=()
stop_servers() {
  local p
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap stop_servers EXIT

make_model() {   # $1 = kind: the model file and its committed header (bytes before the tensor data)
  local kind=$1
  if [ "$kind" = mlalegacy ]; then    # the legacy DeepSeek layout (one attn_kv_b), tests/fixtures/engine/ds20
    [ -f "$work/$kind.gguf" ] || python3 "$here/make_tiny_deepseek2.py" "$work/$kind.gguf" --layers 20
  else
    [ -f "$work/$kind.gguf" ] || python3 "$here/make_tiny_arch.py" "$kind" "$work/$kind.gguf"
  fi
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

# $1 = kind, $2 = case name, $3 = number of rpc-servers (0: CPU only), rest = engine flags (-ngl/-ts given for
# RPC cases unless the flags set -ngl themselves)
run_case() {
  local kind=$1 name=$2 n=$3 i port list=""
  shift 3
  if [ -n "$filter" ] && [[ "$kind" != $filter ]]; then return 0; fi
  for ((i = 0; i < n; i++)); do
    port=$((base + i))
    LD_PRELOAD="$shim" "$rpc" -H 127.0.0.1 -p "$port" > "$work/full/$name-server$i.log" 2>&1 &
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
  if [ "$n" -gt 0 ]; then
    rpcargs=(--rpc "$list")
    [[ " $* " == *" -ngl "* ]] || rpcargs+=(-ngl 99 -ts "$(printf '1%.0s,' $(seq "$n") | sed 's/,$//')")
  fi
  local cmd=(llama-cli -m "$kind.gguf" "${rpcargs[@]}" "$@" -n 1 -p hi -t 1)
  echo "== $name: ${cmd[*]}" >&2
  # ik's llama-cli may crash at exit after generating (double free): the load log is complete before that
  (cd "$work" && LD_PRELOAD="$shim" timeout 300 nice "$cli" "${cmd[@]:1}" < /dev/null > "$work/full/$name.log" 2>&1) || true
  stop_servers
  python3 "$here/../strip_log.py" --filter kv-ik "$work/full/$name.log" > "$out/$name.log"
  for ((i = 0; i < n; i++)); do
    python3 "$here/../strip_log.py" --filter kv-ik "$work/full/$name-server$i.log" > "$out/$name-server$i.log"
  done
  python3 - "$out/cases.jsonl.new" "$name.log" "$commit" "$kind" "$n" "${cmd[@]}" <<'EOF'
import json, shlex, sys
path, log, commit, kind, n, *cmd = sys.argv[1:]
with open(path, "a") as fh:
    fh.write(json.dumps({"log": log, "engine": "ik", "commit": commit, "model": f"{kind}.header.gguf",
                         "kind": kind, "servers": int(n), "command": shlex.join(cmd)}) + "\n")
EOF
}

for kind in dsv4 mla dsa qwen35moe gemma3 gptoss gemma4 gemma4kv llama4 mlalegacy kda; do
  if [ -n "$filter" ] && [[ "$kind" != $filter ]]; then continue; fi
  make_model "$kind"
done

# Per kind: the CPU engine at two contexts (buffers printed to 0.01 MiB, the CPU allocations in bytes), the larger
# context over one rpc-server and the smaller over two (-ngl 99 -ts 1,1; every server allocation in bytes), and
# the flags that change ik's cache, each over one rpc-server.
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

# DeepSeek-V4: K-only raw cache of the whole context, CSA/HCA/indexer caches and compressor states allocated per
# tensor on the first decode; a quantized K cache; two sequences
run_kind dsv4 "c4096-q8:-c 4096 -ctk q8_0" "c8192-np2:-c 8192 -np 2"
# MLA (the converter's attn_k_b/attn_v_b layout): -mla 3 computes attn_kv_b per layer; -fa off stores the latent
# in the V type; -mla 1 keeps no wkv_b and, without flash attention, a transposed V cache; -mla 0 plain attention; at
# 32k cells KQ (256 MiB) exceeds -amb 128 and ik computes it in chunks of heads (the c32768-amb128 cases were run
# with PORT_BASE=19100)
run_kind mla "c4096-fa-off:-c 4096 -fa off" "c4096-q8:-c 4096 -ctk q8_0" "c4096-mla1:-c 4096 -mla 1" \
  "c4096-mla1-fa-off:-c 4096 -mla 1 -fa off" "c4096-mla2-fa-off:-c 4096 -mla 2 -fa off" "c4096-mla0:-c 4096 -mla 0" \
  "c32768-amb128-fa-off:-c 32768 -amb 128 -fa off" "c32768-amb128-mla1-fa-off:-c 32768 -amb 128 -mla 1 -fa off"
# DSA (GLM-5): MLA cache + the lightning-indexer key cache on "full" indexer layers
run_kind dsa "c4096-fa-off:-c 4096 -fa off" "c4096-q8:-c 4096 -ctk q8_0"
# gated delta-net hybrid: recurrent state per sequence slot, independent of the context
run_kind qwen35moe "c4096-np2:-c 4096 -np 2"
# sliding window (ik keeps the whole context on every layer without --swa-compress); the tied output: token_embd
# loaded again for the output layer (--no-mmap: CPU output at -ngl 0 and -ngl 8 = n_layer; offloaded at -ngl 99)
run_kind gemma3 "c4096-ub256:-c 4096 -ub 256" "c4096-nommap-ngl0:-c 4096 --no-mmap -ngl 0" \
  "c4096-nommap-ngl8:-c 4096 --no-mmap -ngl 8" "c4096-nommap-ngl99:-c 4096 --no-mmap -ngl 99" \
  "c4096-ngl8:-c 4096 -ngl 8"
run_case gemma3 gemma3-c4096-nommap 0 -c 4096 --no-mmap
# cell padding: 256 with flash attention, 32 without (-c 4000)
run_kind gptoss "c4096-q8:-c 4096 -ctk q8_0" "c4000-fa-off:-c 4000 -fa off" "c4000:-c 4000"
# gemma-4: the last layers reuse earlier layers' KV; rope_freqs created once per full-attention layer
run_kind gemma4 "c4096-fa-off:-c 4096 -fa off" "c4096-nommap-ngl0:-c 4096 --no-mmap -ngl 0"
run_case gemma4 gemma4-c4096-nommap 0 -c 4096 --no-mmap
run_kind gemma4kv "c4096-fa-off:-c 4096 -fa off"
run_kind llama4 "c16384-ub256:-c 16384 -ub 256"
# MLA in the legacy layout (attn_kv_b only; 20 layers, make_tiny_deepseek2.py): ik derives attn_k_b/attn_v_b at
# load for -mla > 0, each in a buffer of its own; -mla 0 is plain attention over the file's 4 heads
run_kind mlalegacy "c4096-mla1:-c 4096 -mla 1" "c4096-mla0:-c 4096 -mla 0" "c4096-fa-off:-c 4096 -fa off"
run_case mlalegacy mlalegacy-c4096-nommap 0 -c 4096 --no-mmap

# Kimi Delta Attention (Ling-3.0, bailingmoe3): KDA state slots on the KDA layers, MLA on the rest (ik computes
# attn_kv_b at load unless -mla 1); two sequences; without flash attention; -mla 1 without flash attention
run_kind kda "c4096-np2:-c 4096 -np 2" "c4096-fa-off:-c 4096 -fa off" "c4096-mla1-fa-off:-c 4096 -mla 1 -fa off"

# Nemotron-H, Kimi-Linear, Jamba, Granite-4.0-H, Falcon-H1, Mamba-2, PLaMo-2, LFM2, RWKV-6/7: ik 8337e4cd3 has none
# of these architectures; Mamba-1 it knows but aborts building its graph; keep its refusals
for kind in nemotronh kimilinear jamba granitehybrid falconh1 mamba mamba2 plamo2 lfm2 rwkv6 rwkv7; do
  if [ -n "$filter" ] && [[ "$kind" != $filter ]]; then continue; fi
  [ -f "$work/$kind.gguf" ] || python3 "$here/make_tiny_arch.py" "$kind" "$work/$kind.gguf"
  (cd "$work" && timeout 120 nice "$cli" -m "$kind.gguf" -c 4096 -n 1 -p hi -t 1 < /dev/null \
     > "$work/full/$kind-refused.log" 2>&1) || true
  python3 "$here/../strip_log.py" --filter kv-ik "$work/full/$kind-refused.log" > "$out/$kind-refused.log"
done

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
