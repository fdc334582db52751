#!/usr/bin/env bash
# Regenerate the RPC-harness fixtures in tests/fixtures/engine/ from ALREADY BUILT engines (this script builds
# nothing). Each case starts N rpc-server processes bound to 127.0.0.1 (ports 50150-50199, or from $PORT_BASE), runs the engine's CLI
# with --rpc over them (so the engine sees N devices, no GPU needed), saves the full log, a stripped copy (the
# lines the tests compare: layer assignment, layer sizes, weight/KV/compute buffers) and the exact command, and
# stops its rpc-servers. rpc-server is unauthenticated: never bind it to anything but 127.0.0.1.
#
# Engines these fixtures were captured with: CPU-only builds with the options GGML_RPC=ON, GGML_NATIVE=ON,
# LLAMA_CURL=OFF, release optimisation (ik also GGML_OPENMP=ON):
#   ik_llama.cpp 8337e4cd (binaries rpc-server, llama-cli, llama-quantize; the captured ik logs: objects not yet
#     compiled after the first 15 were built at -O1, see the fixtures README)
#   llama.cpp 0c1e57098, the tree vendored by the llama-cpp-python 0.3.36 sdist (binaries ggml-rpc-server,
#     llama-completion)
#
# Usage:
#   run_harness.sh ik       BIN_DIR MODEL.gguf OUT_DIR [CASE_FILTER]
#   run_harness.sh mainline BIN_DIR MODEL.gguf OUT_DIR [CASE_FILTER]
# BIN_DIR holds rpc-server + llama-cli (ik) or ggml-rpc-server + llama-completion (mainline). Models are made by
# make_tiny_qwen3moe.py (and, for ik, llama-quantize --custom-q; see tests/fixtures/engine/README.md). OUT_DIR
# gets NAME.log (stripped), full/NAME.log and cases.jsonl ({"log", "engine", "commit", "model", "command"}).
set -euo pipefail

engine=${1:?engine: ik or mainline}
bin=${2:?BIN_DIR}
model=${3:?MODEL.gguf}
out=${4:?OUT_DIR}
filter=${5:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/full"

case "$engine" in
  ik)       rpc="$bin/rpc-server";      cli="$bin/llama-cli";        commit=8337e4cd;  base=${PORT_BASE:-50150}; extra=() ;;
  mainline) rpc="$bin/ggml-rpc-server"; cli="$bin/llama-completion"; commit=0c1e57098; base=${PORT_BASE:-50170}
            extra=(-no-cnv -lv 5 --fit off) ;;
  *) echo "engine must be ik or mainline" >&2; exit 2 ;;
esac
[ -x "$rpc" ] && [ -x "$cli" ] || { echo "missing $rpc or $cli" >&2; exit 2; }

pids=()
stop_servers() {
  local p
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap stop_servers EXIT

rpc_list=""
start_servers() {   # $1 = number of servers; sets rpc_list (not a subshell: the PIDs must stay in this shell)
  local n=$1 i port list=""
  for ((i = 0; i < n; i++)); do
    port=$((base + i))
    "$rpc" -H 127.0.0.1 -p "$port" > "$out/full/rpc-$port.log" 2>&1 &
    pids+=($!)
    list+="${list:+,}127.0.0.1:$port"
  done
  for ((i = 0; i < n; i++)); do   # wait until each port accepts connections
    port=$((base + i))
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
  done
  rpc_list=$list
}

run_case() {   # $1 = name, $2 = number of devices, rest = engine flags
  local name=$1 n=$2
  shift 2
  if [ -n "$filter" ] && [[ "$name" != *$filter* ]]; then return 0; fi
  start_servers "$n"
  local list=$rpc_list
  local cmd=("$(basename "$cli")" -m "$(basename "$model")" --rpc "$list" "$@" -n 1 -p hi "${extra[@]}")
  echo "== $name: ${cmd[*]}" >&2
  # the CLIs read stdin (interactive/conversation modes): give them none; ik's llama-cli may crash at exit after
  # generating (double free), which is why the status is not checked: the load log is complete before that.
  (cd "$(dirname "$model")" && "$cli" -m "$(basename "$model")" --rpc "$list" "$@" -n 1 -p hi "${extra[@]}" \
      < /dev/null > "$out/full/$engine-$name.log" 2>&1) || true
  python3 "$here/../strip_log.py" --filter harness "$out/full/$engine-$name.log" > "$out/$engine-$name.log"
  python3 - "$out/cases.jsonl" "$engine-$name.log" "$engine" "$commit" "$(basename "$model")" "${cmd[@]}" <<'EOF'
import json, shlex, sys
path, log, engine, commit, model, *cmd = sys.argv[1:]
with open(path, "a") as fh:
    fh.write(json.dumps({"log": log, "engine": engine, "commit": commit, "model": model,
                         "command": shlex.join(cmd)}) + "\n")
EOF
  stop_servers
}

EXP_CPU_0_20='blk\.([0-9]|1[0-9]|20)\.ffn_(gate|up|down)_exps\.weight=CPU'
EXP_CPU_40S='blk\.(4[0-9])\.ffn_(gate|up|down)_exps\.weight=CPU'
EXP_CPU_ODD='blk\.[0-9]*[13579]\.ffn_(gate|up)_exps\.weight=CPU'
EXP_CPU_0_2='blk\.[0-2]\.ffn_(gate|up|down)_exps\.weight=CPU'
EXP_CPU_UPGATE_2_5='blk\.[2-5]\.ffn_(gate|up)_exps\.weight=CPU'

case "$(basename "$model")" in
  rpc8*)   # rpc8 (tools/rpc_check/make_models.sh: 8 layers, hidden 256, 8 experts, 2 used): compute-buffer cases
           # for the allocator replay (planner/engine_graph.py): large ubatches, no flash attention, -ot experts
    run_case g-rpc2-ub2048            2 -ngl 99 -ts 1,1 -c 4096 -ub 2048 -b 2048
    run_case g-rpc2-ub4096-ot0-2      2 -ngl 99 -ts 1,1 -c 4096 -ub 4096 -b 4096 -ot "$EXP_CPU_0_2"
    run_case g-rpc1-ngl4-ub4096       1 -ngl 4 -c 8192 -ub 4096 -b 4096
    run_case g-rpc2-ngl6-nofa         2 -ngl 6 -ts 1,1 -c 1024 -fa off
    run_case g-rpc3-nofa-ub256        3 -ngl 99 -c 512 -ub 256 -fa off
    ;;
  u8*)     # u8 (make_tiny_qwen3moe.py u8.gguf --hidden 256 --layers 8 --experts 16 --used 8 --heads 16 --kv-heads 4
           # --head-dim 32 --ffn-exp 96 --ffn 384 --vocab 1024): Qwen3-235B's 8 of 128 experts and 16:4 heads, tiny
    run_case g-u8-rpc2-ngl99          2 -ngl 99 -c 2048
    run_case g-u8-rpc3-ngl5-ub2048    3 -ngl 5 -ts 1,2,1 -c 2048 -ub 2048 -b 2048
    run_case g-u8-rpc2-otup-nofa      2 -ngl 99 -c 1024 -fa off -ot "$EXP_CPU_UPGATE_2_5"
    run_case g-u8-rpc2-ub4096-ngl7    2 -ngl 7 -c 4096 -ub 4096 -b 4096
    ;;
  ds*)   # tiny DeepSeek (make_tiny_deepseek2.py, 20 layers): MLA in ik, full multi-head K/V in mainline
    DS_EXP_CPU='blk\.([5-9]|1[0-2])\.ffn_(gate|up|down)_exps\.weight=CPU'
    DS_EXP_CPU_10S='blk\.1[0-9]\.ffn_(gate|up|down)_exps\.weight=CPU'
    run_case ds-rpc3-ngl99-ts1,1,1      3 -ngl 99 -ts 1,1,1 -c 1024
    run_case ds-rpc3-ngl15-ts2,1,1      3 -ngl 15 -ts 2,1,1 -c 512
    run_case ds-rpc4-ngl99-ot5-12-ub256 4 -ngl 99 -ts 1,1,1,1 -c 2048 -ub 256 -ot "$DS_EXP_CPU"
    run_case g-ds-rpc2-ngl12-ub1024     2 -ngl 12 -c 2048 -ub 1024 -b 1024
    run_case g-ds-rpc2-nofa-ot10s       2 -ngl 99 -c 1024 -fa off -ot "$DS_EXP_CPU_10S"
    if [ "$engine" = ik ]; then    # ik's -amb chunks of heads (build_deepseek2.cpp:924-1012): 2 and 4 chunks
      # (ik raises -amb below 128 to 128, common/common.cpp:1966-1970: the chunks need a long context here)
      run_case g-ds-rpc2-c64k-amb128        2 -ngl 99 -c 65536 -amb 128
      run_case g-ds-rpc2-c128k-amb128-q8kv  2 -ngl 99 -c 131072 -amb 128 -ctk q8_0
    fi
    ;;
  *)     # t94 (make_tiny_qwen3moe.py, 94 layers, Qwen3-235B tensor names)
    run_case rpc3-ngl99-default-split  3 -ngl 99 -c 512
    run_case rpc3-ts1,2,1-ub256        3 -ngl 99 -ts 1,2,1 -c 1024 -ub 256
    run_case rpc3-ts2,1,1-ngl60        3 -ngl 60 -ts 2,1,1 -c 512
    run_case rpc4-ts1,1,1,1-ot0-20     4 -ngl 99 -ts 1,1,1,1 -c 2048 -ub 1024 -b 1024 -ot "$EXP_CPU_0_20"
    run_case rpc4-ts3,1,1,1-ngl94      4 -ngl 94 -ts 3,1,1,1 -c 512 -ub 128
    run_case rpc4-ngl80-ot40s-c4096    4 -ngl 80 -c 4096 -ot "$EXP_CPU_40S"
    run_case rpc3-ts1,1,2-q8kv-otodd   3 -ngl 99 -ts 1,1,2 -c 3000 -ctk q8_0 -ctv q8_0 -ot "$EXP_CPU_ODD"
    if [ "$engine" = ik ]; then
      run_case rpc3-sm-graph-ts1,1,1   3 -ngl 99 -sm graph -ts 1,1,1 -c 512
      run_case rpc3-sm-graph-maxgpu2   3 -ngl 99 -sm graph -ts 1,1,1 -c 512 --max-gpu 2
    fi
    ;;
esac
echo "done: $out" >&2
