#!/usr/bin/env bash
# Dump the scheduler's view of the worst-case prompt graph (GGML_SCHED_DEBUG=2: every non-view node with its op,
# name, size and backend, in graph order) from an ALREADY BUILT engine (this script builds nothing), for
# tests/fixtures/engine/graphs/: the node order planner/data/engine_graphs.toml is checked against.
#
# Usage: dump_graph.sh BIN_DIR MODEL.gguf OUT.txt N_SERVERS [engine flags...]
# Starts N rpc-server processes on 127.0.0.1 ($PORT_BASE, default 50170, upwards), runs the engine over them and
# keeps, from the prompt-sized graph it reserves (the one whose buffers the engine keeps), the "## SPLIT" and
# "node #" lines without their timestamps, under a header naming the command and commit.
#
# ENGINE=mainline (default): llama.cpp 0c1e57098 (the tree vendored by the llama-cpp-python 0.3.36 sdist),
#   CPU-only, GGML_RPC=ON; binaries ggml-rpc-server and llama-completion; the last graph reserved with n_tokens > 1.
# ENGINE=ik: ik_llama.cpp 8337e4cd3, CPU-only, GGML_RPC=ON; binaries rpc-server and llama-cli; the graph dumped
#   before the first "compute buffer size" line (ik reserves the prompt graph first: src/llama.cpp
#   llama_init_from_model).  GGML_SCHED_DEBUG: ggml/src/ggml-backend.cpp:2560, printed by
#   ggml_backend_sched_print_assignments (1376-1407).  FIXTURE_PORTS (e.g. 50150,50151): the ports the fixture's
#   command names; the servers run on $PORT_BASE.. instead, the flags are rewritten to those and the dump back, so
#   the header's command is the fixture's own (tests/fixtures/engine/fixtures.json).
set -euo pipefail
bin=${1:?BIN_DIR}
model=${2:?MODEL.gguf}
out=${3:?OUT.txt}
n=${4:?N_SERVERS}
shift 4
engine=${ENGINE:-mainline}
base=${PORT_BASE:-50170}
IFS=, read -r -a fports <<< "${FIXTURE_PORTS:-}"
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done' EXIT
server=ggml-rpc-server
[ "$engine" = ik ] && server=rpc-server
list=""
flist=""
for ((i = 0; i < n; i++)); do
  "$bin/$server" -H 127.0.0.1 -p $((base + i)) > /dev/null 2>&1 &
  pids+=($!)
  list+="${list:+,}127.0.0.1:$((base + i))"
  flist+="${flist:+,}127.0.0.1:${fports[$i]:-$((base + i))}"
done
for ((i = 0; i < n; i++)); do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$((base + i))") 2>/dev/null && break; sleep 0.1; done
done
args=()
for a in "$@"; do
  for ((i = 0; i < n; i++)); do a=${a//127.0.0.1:${fports[$i]:-$((base + i))}/127.0.0.1:$((base + i))}; done
  args+=("$a")
done
if [ "$engine" = ik ]; then
  exe=llama-cli
  cmd=(llama-cli -m "$(basename "$model")" --rpc "$flist" "$@")
  run=(--rpc "$list" "${args[@]}")
  commit="ik_llama.cpp 8337e4cd3"
else
  exe=llama-completion
  cmd=(llama-completion -m "$(basename "$model")" --rpc "$flist" "$@" -n 1 -p hi -no-cnv -lv 5 --fit off)
  run=(--rpc "$list" "${args[@]}" -n 1 -p hi -no-cnv -lv 5 --fit off)
  commit="llama.cpp 0c1e57098"
fi
raw=$(mktemp)
(cd "$(dirname "$model")" && GGML_SCHED_DEBUG=2 LD_LIBRARY_PATH="$bin" "$bin/$exe" -m "$(basename "$model")" \
    "${run[@]}" < /dev/null > "$raw" 2>&1) || true
[ -n "${KEEP_RAW:-}" ] && cp "$raw" "$KEEP_RAW"
python3 - "$raw" "$out" "$engine" "$commit" "$list" "$flist" "${cmd[@]}" <<'PY'
import re, shlex, sys
raw, out, engine, commit, ports, fports, *cmd = sys.argv[1:]
text = [re.sub(r"\d+\.\d+\.\d+\.\d+ [DIWE] ", "", l) for l in open(raw, encoding="utf-8", errors="replace")]
for run, fix in zip(ports.split(","), fports.split(",")):
    text = [l.replace(run, fix) for l in text]
if engine == "ik":
    end = next(i for i, l in enumerate(text) if re.search(r"compute buffer size = ", l))
    body = text[max(i for i in range(end) if text[i].startswith("## SPLIT #0:")):end]
else:
    starts = [i for i, l in enumerate(text) if re.search(r"reserving a graph for ubatch with n_tokens = +(\d+)", l)
              and int(re.search(r"n_tokens = +(\d+)", l).group(1)) > 1]
    body = text[starts[-1]:]
    end = next((i for i, l in enumerate(body[1:], 1) if "graph_reserve:" in l or "sched_reserve:" in l), len(body))
    body = body[:end]
keep = [l.rstrip() for l in body if l.startswith(("## SPLIT", "node #"))]
build = "CPU-only, GGML_RPC=ON"
with open(out, "w") as fh:
    fh.write(f"# engine: {commit} ({build}); GGML_SCHED_DEBUG=2\n# command: {shlex.join(cmd)}\n")
    fh.write("\n".join(keep) + "\n")
PY
[ -n "${KEEP_RAW:-}" ] && cp "$raw" "$KEEP_RAW"
rm -f "$raw"
