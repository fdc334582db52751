#!/usr/bin/env bash
# Regenerate tests/fixtures/rpc/ from ALREADY BUILT engines (this script builds nothing): rpc-server processes on
# 127.0.0.1 only (ports 50200-50249), the engine's CLI with --rpc and the planner's -ot device names, the load logs
# and each rpc-server's own log, the exact commands, the engine commit.  rpc-server is unauthenticated: this
# script never binds it to anything but 127.0.0.1.
#
# Engines: CPU-only builds with the options GGML_RPC=ON, GGML_NATIVE=ON, LLAMA_CURL=OFF, release optimisation:
#   ik_llama.cpp 8337e4cd (rpc-server, llama-cli); llama.cpp 0c1e57098 as vendored by the llama-cpp-python 0.3.36
#   sdist (ggml-rpc-server, llama-completion).
# Models: tools/rpc_check/make_models.sh (make_tiny_qwen3moe.py, bf16, seed 0).
#
# Usage: run_rpc_cases.sh ik|mainline BIN_DIR MODEL_DIR OUT_DIR [CASE_FILTER]
set -euo pipefail

engine=${1:?engine: ik or mainline}
bin=${2:?BIN_DIR}
models=${3:?MODEL_DIR}
out=${4:?OUT_DIR}
filter=${5:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/full"

case "$engine" in
  ik)       rpc="$bin/rpc-server";      cli="$bin/llama-cli";        commit=8337e4cd;  base=50200; extra=() ;;
  mainline) rpc="$bin/ggml-rpc-server"; cli="$bin/llama-completion"; commit=0c1e57098; base=50220
            extra=(-no-cnv -lv 5 --fit off) ;;
  *) echo "engine must be ik or mainline" >&2; exit 2 ;;
esac
[ -x "$rpc" ] && [ -x "$cli" ] || { echo "missing $rpc or $cli" >&2; exit 2; }

# the servers' own usage text: the flags the emitters may use
"$rpc" --help > "$out/$engine-rpc-server-help.txt" 2>&1 || true

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
ports=()
free_port() {   # a port of this engine's 20 that nothing holds now (ports here are also ephemeral client ports)
  python3 - "$1" <<'PY'
import socket, sys
start = int(sys.argv[1])
for p in range(start, start + 20):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
PY
}
start_servers() {   # $1 = case name, $2 = number of servers, $3 = extra server flags (e.g. -c); sets rpc_list, ports
  local name=$1 n=$2 sflags=$3 i port list="" try next=$base pid ok
  ports=()
  for ((i = 0; i < n; i++)); do
    for try in 1 2 3 4 5; do
      port=$(free_port "$next")
      [ -n "$port" ] || { echo "no free port near $next" >&2; exit 3; }
      # GGML_RPC_DEBUG: mainline's server logs every buffer allocation in bytes and every hash offer
      GGML_RPC_DEBUG=1 LLAMA_CACHE="$out/full/cache-$engine" "$rpc" -H 127.0.0.1 -p "$port" $sflags \
          > "$out/full/$engine-$name-server$i.log" 2>&1 &
      pid=$!
      ok=0
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { ok=1; break; }
        sleep 0.1
      done
      next=$((port + 1))
      if [ "$ok" = 1 ]; then pids+=("$pid"); ports+=("$port"); break; fi
      wait "$pid" 2>/dev/null || true   # bind failed (the port was taken meanwhile): try the next one
    done
    [ "$ok" = 1 ] || { echo "could not start rpc-server $i" >&2; exit 3; }
    list+="${list:+,}127.0.0.1:$port"
  done
  sleep 0.3   # let each server finish the probe connection before the client's
  rpc_list=$list
}

run_case() {   # $1 = name, $2 = model file, $3 = number of servers, $4 = server flags, rest = CLI flags
  local name=$1 model=$2 n=$3 sflags=$4
  shift 4
  if [ -n "$filter" ] && [[ "$name" != *$filter* ]]; then return 0; fi
  start_servers "$name" "$n" "$sflags"
  local list=$rpc_list args=("$@") i j
  for ((i = 0; i < n; i++)); do                                       # @0, @1: the servers' endpoints
    for j in "${!args[@]}"; do args[$j]=${args[$j]//@$i/127.0.0.1:${ports[$i]}}; done
  done
  echo "== $engine $name: $(basename "$cli") -m $model --rpc $list ${args[*]}" >&2
  (cd "$models" && "$cli" -m "$model" --rpc "$list" "${args[@]}" -n 2 -p hi "${extra[@]}" \
      < /dev/null > "$out/full/$engine-$name.log" 2>&1) || true
  stop_servers
  python3 "$here/../strip_log.py" --filter rpc-client "$out/full/$engine-$name.log" > "$out/$engine-$name.log"
  for ((i = 0; i < n; i++)); do
    python3 "$here/../strip_log.py" --filter rpc-server "$out/full/$engine-$name-server$i.log" > "$out/$engine-$name-server$i.log"
  done
  python3 - "$out/cases.jsonl" "$engine" "$name" "$commit" "$model" "$n" "$sflags" "$(basename "$cli")" \
      "$list" "${args[@]}" "-n" "2" "-p" "hi" "${extra[@]}" <<'PY'
import json, shlex, sys
path, engine, name, commit, model, n, sflags, cli, rpc_list, *args = sys.argv[1:]
cmd = [cli, "-m", model, "--rpc", rpc_list, *args]
with open(path, "a") as fh:
    fh.write(json.dumps({"engine": engine, "case": name, "commit": commit, "model": model, "servers": int(n),
                         "server_flags": sflags, "log": f"{engine}-{name}.log", "command": shlex.join(cmd)}) + "\n")
PY
}

M=rpc8.gguf      # 8 layers, hidden 256, 8 experts
B=rpc2big.gguf   # 2 layers, hidden 2048, vocab 3000: output.weight 12,288,000 bytes > the 10 MiB hash threshold
EXP03='blk\.[0-3]\.ffn_(gate|up|down)_exps\.weight=CPU'
run_case one-ngl5        $M 1 ""  -ngl 5 -c 512
run_case one-ot-exps     $M 1 ""  -ngl 99 -c 1024 -ot "$EXP03"
run_case two-ot-rpc      $M 2 ""  -ngl 99 -ts 1,1 -c 512 -ot 'blk\.[0-7]\.ffn_(gate|up|down)_exps\.weight=RPC0[@1]'
run_case two-ot-mixed    $M 2 ""  -ngl 99 -ts 1,1 -c 768 -ot 'blk\.[0-3]\.ffn_(gate|up)_exps\.weight=RPC0[@0],blk\.[4-7]\.ffn_down_exps\.weight=CPU'
# the -ts the planner emits for a wanted layer map: layer counts with the output counted on its device
# (3 layers on the first server, 5 and the output on the second: -ngl 9 -ts 3,6)
run_case two-ts-output   $M 2 ""  -ngl 9 -ts 3,6 -c 512
run_case cache-cold      $B 1 "-c" -ngl 99 -c 512
run_case cache-warm      $B 1 "-c" -ngl 99 -c 512
echo "done: $out" >&2
