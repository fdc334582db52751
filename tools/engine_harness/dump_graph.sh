#!/usr/bin/env bash
# Dump the scheduler's view of the worst-case prompt graph (GGML_SCHED_DEBUG=2: every non-view node with its op,
# name, size and backend, in graph order) from an ALREADY BUILT mainline llama.cpp (this script builds nothing), for
# tests/fixtures/engine/graphs/: the node order planner/data/engine_graphs.toml is checked against.
#
# Usage: dump_graph.sh BIN_DIR MODEL.gguf OUT.txt N_SERVERS [engine flags...]
# Starts N ggml-rpc-server processes on 127.0.0.1 ($PORT_BASE, default 50170, upwards), runs llama-completion over
# them and keeps, from the last graph reserved with n_tokens > 1 (the prompt-sized one whose buffers the engine
# keeps), the "## SPLIT" and "node #" lines without their timestamps, under a header naming the command and commit.
# Engine: llama.cpp 0c1e57098 (the tree vendored by the llama-cpp-python 0.3.36 sdist), CPU-only, GGML_RPC=ON.
set -euo pipefail
bin=${1:?BIN_DIR}
model=${2:?MODEL.gguf}
out=${3:?OUT.txt}
n=${4:?N_SERVERS}
shift 4
base=${PORT_BASE:-50170}
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done' EXIT
list=""
for ((i = 0; i < n; i++)); do
  "$bin/ggml-rpc-server" -H 127.0.0.1 -p $((base + i)) > /dev/null 2>&1 &
  pids+=($!)
  list+="${list:+,}127.0.0.1:$((base + i))"
done
for ((i = 0; i < n; i++)); do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$((base + i))") 2>/dev/null && break; sleep 0.1; done
done
cmd=(llama-completion -m "$(basename "$model")" --rpc "$list" "$@" -n 1 -p hi -no-cnv -lv 5 --fit off)
raw=$(mktemp)
(cd "$(dirname "$model")" && GGML_SCHED_DEBUG=2 LD_LIBRARY_PATH="$bin" "$bin/llama-completion" -m "$(basename "$model")" \
    --rpc "$list" "$@" -n 1 -p hi -no-cnv -lv 5 --fit off < /dev/null > "$raw" 2>&1) || true
python3 - "$raw" "$out" "${cmd[@]}" <<'PY'
import re, shlex, sys
raw, out, *cmd = sys.argv[1:]
text = [re.sub(r"\d+\.\d+\.\d+\.\d+ [DIWE] ", "", l) for l in open(raw, encoding="utf-8", errors="replace")]
starts = [i for i, l in enumerate(text) if re.search(r"reserving a graph for ubatch with n_tokens = +(\d+)", l)
          and int(re.search(r"n_tokens = +(\d+)", l).group(1)) > 1]
body = text[starts[-1]:]
end = next((i for i, l in enumerate(body[1:], 1) if "graph_reserve:" in l or "sched_reserve:" in l), len(body))
keep = [l.rstrip() for l in body[:end] if l.startswith(("## SPLIT", "node #"))]
with open(out, "w") as fh:
    fh.write(f"# engine: llama.cpp 0c1e57098 (CPU-only, GGML_RPC=ON); GGML_SCHED_DEBUG=2\n# command: {shlex.join(cmd)}\n")
    fh.write("\n".join(keep) + "\n")
PY
rm -f "$raw"
