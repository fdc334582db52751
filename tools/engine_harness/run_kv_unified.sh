#!/usr/bin/env bash
# Add the -np 4 cases of tests/fixtures/kv_kinds/ with and without a unified KV cache, from an ALREADY BUILT mainline
# llama.cpp (this script builds no engine): mainline llama-server with no -np runs 4 slots sharing one unified KV
# cache (common/arg.cpp:1403, tools/server/server.cpp:156-160 @0c1e57098), which changes the recurrent state, the
# sliding-window cache (src/llama-kv-cache-iswa.cpp:73), the per-sequence cells (src/llama-context.cpp:290-300) and
# the compute graph.  llama-completion has no -kvu (common/arg.cpp:1724-1730 registers it for the server and a few
# other tools), so the unified runs preload kv_unified_shim.c (compiled here against the engine's own llama.h),
# which sets llama_context_params.kv_unified as llama-server's -kvu does; the engine's log then says
# "kv_unified = true".  Each run is over one rpc-server on 127.0.0.1 (GGML_RPC_DEBUG=1: every buffer in bytes).
#
# Engine: llama.cpp 0c1e57098 (the tree vendored by the llama-cpp-python 0.3.36 sdist), CPU-only, GGML_RPC=ON;
# binaries llama-completion and ggml-rpc-server.  LLAMA_SRC (default: BIN_DIR/../..) holds include/llama.h.
#
# Usage: PORT_BASE=18300 run_kv_unified.sh BIN_DIR OUT_DIR [WORK_DIR]
# OUT_DIR gets CASE.log, CASE-server0.log (tools/strip_log.py --filter kv), KIND.header.gguf and its cases appended
# to cases.jsonl (entries of the same log name replaced), each with "kv_unified".
set -euo pipefail

bin=${1:?BIN_DIR (llama-completion, ggml-rpc-server)}
out=${2:?OUT_DIR}
work=${3:-$(mktemp -d)}
src=${LLAMA_SRC:-$bin/../..}
here=$(cd "$(dirname "$0")" && pwd)
cli="$bin/llama-completion"
rpc="$bin/ggml-rpc-server"
commit=0c1e57098
port=${PORT_BASE:-50410}
[ -x "$cli" ] && [ -x "$rpc" ] || { echo "missing $cli or $rpc" >&2; exit 2; }
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out" "$work/full"
shim="$work/kv_unified_shim.so"
cc -O2 -shared -fPIC -I"$src/include" -I"$src/ggml/include" -o "$shim" "$here/kv_unified_shim.c" -ldl
: > "$out/cases.jsonl.new"

make_model() {   # $1 = kind: the model file and its committed header
  local kind=$1
  if [ ! -f "$work/$kind.gguf" ]; then
    if [ "$kind" = qwen3moe ]; then   # plain GQA attention: tests/fixtures/rpc's rpc8 model
      python3 "$here/make_tiny_qwen3moe.py" "$work/$kind.gguf" --hidden 256 --layers 8 --experts 8 --used 2 \
          --heads 4 --kv-heads 2 --head-dim 64 --ffn-exp 128 --ffn 384 --vocab 512
    else
      python3 "$here/make_tiny_arch.py" "$kind" "$work/$kind.gguf"
    fi
  fi
  python3 - "$work/$kind.gguf" "$out/$kind.header.gguf" <<'PY'
import sys
import gguf
src, dst = sys.argv[1:]
start = gguf.GGUFReader(src).data_offset
with open(src, "rb") as fh:
    head = fh.read(start)
open(dst, "wb").write(head)
PY
}

run_case() {   # $1 = kind, $2 = case name, $3 = 1 for a unified cache, rest = engine flags
  local kind=$1 name=$2 unified=$3 pid
  shift 3
  GGML_RPC_DEBUG=1 "$rpc" -H 127.0.0.1 -p "$port" > "$work/full/$name-server0.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  local env=() cmd
  # the shim sits in WORK_DIR, the folder the command runs in
  [ "$unified" = 1 ] && env=(LLAMA_SHIM_KV_UNIFIED=1 LD_PRELOAD=./kv_unified_shim.so)
  cmd=(llama-completion -m "$kind.gguf" --rpc "127.0.0.1:$port" -ngl 99 -ts 1 "$@" -n 1 -p hi -t 1 -no-cnv -lv 5
       --fit off)
  echo "== $name: ${env[*]} ${cmd[*]}" >&2
  (cd "$work" && env "${env[@]}" timeout "${TIMEOUT:-300}" nice "$cli" "${cmd[@]:1}" < /dev/null \
      > "$work/full/$name.log" 2>&1) || true
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  python3 "$here/../strip_log.py" --filter kv "$work/full/$name.log" > "$out/$name.log"
  python3 "$here/../strip_log.py" --filter kv "$work/full/$name-server0.log" > "$out/$name-server0.log"
  python3 - "$out/cases.jsonl.new" "$name.log" "$commit" "$kind" "$unified" "${env[@]}" "${cmd[@]}" <<'PY'
import json, shlex, sys
path, log, commit, kind, unified, *cmd = sys.argv[1:]
with open(path, "a") as fh:
    fh.write(json.dumps({"log": log, "engine": "mainline", "commit": commit, "model": f"{kind}.header.gguf",
                         "kind": kind, "servers": 1, "kv_unified": unified == "1",
                         "command": shlex.join(cmd)}) + "\n")
PY
}

# per kind: -np 4 as llama-server runs it without -np (unified) and with -np 4 (one stream per sequence)
for kind in qwen3moe gptoss gemma3 qwen35moe mamba2; do
  make_model "$kind"
  run_case "$kind" "$kind-c4096-np4-kvu-rpc1" 1 -c 4096 -np 4
  run_case "$kind" "$kind-c4096-np4-rpc1" 0 -c 4096 -np 4
done
# plain attention at -np 3: n_ctx_seq = GGML_PAD(4096 / 3, 256) = 1536, so 4608 cells without -kvu, 4096 with
run_case qwen3moe qwen3moe-c4096-np3-kvu-rpc1 1 -c 4096 -np 3
run_case qwen3moe qwen3moe-c4096-np3-rpc1 0 -c 4096 -np 3
# DeepSeek-V4 keeps one stream per sequence whatever -kvu says, over n_ctx_seq = n_ctx when unified
make_model dsv4
run_case dsv4 dsv4-c8192-np2-kvu-rpc1 1 -c 8192 -np 2

python3 - "$out/cases.jsonl" "$out/cases.jsonl.new" <<'PY'
import json, os, sys
old_path, new_path = sys.argv[1:]
new = [json.loads(x) for x in open(new_path) if x.strip()]
logs = {c["log"] for c in new}
old = [json.loads(x) for x in open(old_path) if x.strip()] if os.path.exists(old_path) else []
with open(old_path, "w") as fh:
    fh.writelines(json.dumps(c) + "\n" for c in [c for c in old if c["log"] not in logs] + new)
os.remove(new_path)
PY
echo "done: $out (models and full logs in $work)" >&2
