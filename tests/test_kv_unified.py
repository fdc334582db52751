"""-np 4 with and without a unified KV cache against the real engine (tests/fixtures/kv_kinds, the
``*-np4-rpc1`` / ``*-np4-kvu-rpc1`` / ``qwen3moe-c4096-np3*`` / ``dsv4-c8192-np2-kvu`` cases of
tools/engine_harness/run_kv_unified.sh: llama.cpp 0c1e57098, llama-completion over one rpc-server; the unified runs
through kv_unified_shim.c, which sets llama_context_params.kv_unified as llama-server's -kvu does, and each log says
``kv_unified = true/false``).

mainline llama-server without -np runs 4 slots sharing one unified cache (common/arg.cpp:1403 ``n_parallel = -1``,
tools/server/server.cpp:156-160); the CPU build here has no llama-server, so the default is read from that source
and these runs show what it costs: what `check` predicts for ``llama-server -m M -c 4096`` (no -np) must equal the
engine's -np 4 -kvu run, and differ from the -np 4 run where the engine's do.  The generic kv_kinds tests compare
the same cases' KV allocations to the byte and their compute buffers to the printed digit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from planner.kv_cache import CacheConfig, layer_caches
from planner.launch import parse_server_command

sys.path.insert(0, str(Path(__file__).parent))
from test_compute_kv_kinds import logged, predicted as predicted_compute  # noqa: E402
from test_kv_engine_logs import CASES, _cache_blocks, case_model, log_text  # noqa: E402

MIB = 1 << 20
KINDS = ["qwen3moe", "gptoss", "gemma3", "qwen35moe", "mamba2"]


def _case(log: str) -> dict:
    return next(c for c in CASES if c["log"] == log)


def _kv_mib(text: str) -> float:
    """Every KV/RS buffer the client log prints, summed (MiB to two decimals each)."""
    return sum(float(m) for m in re.findall(r"(?:KV|RS) buffer size = +([\d.]+) MiB", text))


def _server_default_cache(kind: str) -> CacheConfig:
    """The cache `check` predicts for a mainline llama-server command without -np at the fixtures' flags."""
    run = parse_server_command(["llama-server", "-m", f"{kind}.gguf", "-c", "4096"], engine="mainline").run
    assert (run.n_parallel, run.kv_unified) == (4, True)
    return CacheConfig.from_run(run)


@pytest.mark.parametrize("kind", KINDS)
def test_the_server_default_is_the_unified_run(kind):
    kvu, per_seq = log_text(f"{kind}-c4096-np4-kvu-rpc1.log"), log_text(f"{kind}-c4096-np4-rpc1.log")
    assert "kv_unified            = true" in kvu and "kv_unified            = false" in per_seq
    assert "n_seq_max             = 4" in kvu
    p = case_model(_case(f"{kind}-c4096-np4-kvu-rpc1.log")).params
    caches = layer_caches(p, _server_default_cache(kind))
    assert f"{sum(c.total_bytes for c in caches) / MIB:.2f}" == f"{_kv_mib(kvu):.2f}"
    # the cells of each attention cache ("size = ... (N cells, L layers"): one stream of -c cells, the window
    # cache n_swa * 4 + n_ubatch (llama-kv-cache-iswa.cpp:73)
    cells = {c.kind: c.cells for c in caches if c.kind in ("full", "swa")}
    names = {"non-SWA": "full", "SWA": "swa"}
    assert {names.get(n, "full"): c for n, c, _ in _cache_blocks(kvu)} == cells


@pytest.mark.parametrize("log, n_seq, unified", [
    ("gptoss-c4096-np4-rpc1.log", 4, False), ("gptoss-c4096-np4-kvu-rpc1.log", 4, True),
    ("gemma3-c4096-np4-rpc1.log", 4, False), ("gemma3-c4096-np4-kvu-rpc1.log", 4, True),
    ("qwen3moe-c4096-np3-rpc1.log", 3, False), ("qwen3moe-c4096-np3-kvu-rpc1.log", 3, True)])
def test_streams_and_window_cells_follow_kv_unified(log, n_seq, unified):
    """Per stream: ``n_ctx_seq`` (the log's "n_ctx_seq = ") and the window cache's cells; the printed total."""
    text = log_text(log)
    p = case_model(_case(log)).params
    cfg = CacheConfig(engine="mainline", ctx=4096, type_k="f16", type_v="f16", n_seq=n_seq, unified=unified)
    assert f"n_ctx_seq             = {cfg.n_ctx_seq}\n" in text
    caches = layer_caches(p, cfg)
    assert sorted({(c.kind, c.cells) for c in caches}) == sorted(
        {("swa" if n == "SWA" else "full", cells) for n, cells, _ in _cache_blocks(text)})
    assert f"{sum(c.total_bytes for c in caches) / MIB:.2f}" == f"{_kv_mib(text):.2f}"


def test_the_engine_shows_what_unified_changes():
    """The differences themselves, read from the logs (so a model that ignored -kvu could not pass): gpt-oss's
    window cache 1024 cells in one stream vs 4 x 768; plain attention at -np 3 4096 cells vs 3 x 1536 = 4608
    (GGML_PAD(4096 / 3, 256)); the recurrent state the same; the attention graph over all 4096 cells is larger."""
    blocks = {log: _cache_blocks(log_text(log)) for log in (
        "gptoss-c4096-np4-kvu-rpc1.log", "gptoss-c4096-np4-rpc1.log", "qwen3moe-c4096-np3-kvu-rpc1.log",
        "qwen3moe-c4096-np3-rpc1.log")}
    assert blocks["gptoss-c4096-np4-kvu-rpc1.log"][1][1:] == (1024, 3)
    assert blocks["gptoss-c4096-np4-rpc1.log"][1][1:] == (768, 3)
    assert blocks["qwen3moe-c4096-np3-kvu-rpc1.log"][0][1] == 4096
    assert blocks["qwen3moe-c4096-np3-rpc1.log"][0][1] == 1536
    rs = [re.search(r"RS buffer size = +([\d.]+)", log_text(f"mamba2-c4096-np4{u}-rpc1.log"))[1] for u in ("-kvu", "")]
    assert rs[0] == rs[1]
    for kind in ("qwen3moe", "gptoss", "gemma3", "qwen35moe"):
        kvu, per_seq = (f"{kind}-c4096-np4-kvu-rpc1.log", f"{kind}-c4096-np4-rpc1.log")
        got = [logged(log_text(x)) for x in (kvu, per_seq)]
        dev = next(d for d in got[0] if d != "CPU")
        assert got[0][dev] > got[1][dev]
        # and the replay follows, to the printed digit (the generic test covers every device)
        assert [round(predicted_compute(x, "mainline")[dev], 2) for x in (kvu, per_seq)] == [g[dev] for g in got]


def test_a_plan_json_carries_kv_unified_validated():
    """RunConfig.kv_unified is written only when set (goldens unchanged) and read back; anything but a boolean is
    a one-line plan-file error naming the JSON path."""
    import json

    from planner.documents import plan_schema, saved_plan
    from planner.errors import PlanFileError

    doc = json.loads((Path(__file__).parent / "golden/headline/plan.json").read_text())
    assert "kv_unified" not in doc["plan"]["run"]
    doc["plan"]["run"].update(kv_unified=True, n_parallel=4)
    run = saved_plan(doc, "plan.json").run
    assert (run.kv_unified, run.n_parallel) == (True, 4)
    doc["plan"]["run"]["kv_unified"] = "yes"
    with pytest.raises(PlanFileError) as e:
        plan_schema().check(doc, source="plan.json")
    assert e.value.path == "$.plan.run.kv_unified"


def test_the_memory_report_counts_cells_as_the_engine_does():
    """The KV term's note: one stream per sequence without -kvu ("4 x 1024", the engine's "(1024 cells, ...,
    4/4 seqs)" in qwen3moe-c4096-np4-rpc1.log), the padded context with it."""
    from planner.memory import _cells
    from planner.runconfig import RunConfig

    assert "(  1024 cells,   8 layers,  4/4 seqs)" in log_text("qwen3moe-c4096-np4-rpc1.log")
    assert _cells(RunConfig(engine="mainline", ctx=4096, n_parallel=4)) == "4 x 1024"
    assert "(  4096 cells,   8 layers,  4/1 seqs)" in log_text("qwen3moe-c4096-np4-kvu-rpc1.log")
    assert _cells(RunConfig(engine="mainline", ctx=4096, n_parallel=4, kv_unified=True)) == "4096"
    assert _cells(RunConfig(engine="ik", ctx=4096, n_parallel=4)) == "4096"


def test_verify_takes_mainlines_rounded_n_ctx_as_the_commands_own():
    """Without -kvu mainline sets n_ctx to n_ctx_seq x -np (src/llama-context.cpp:302-305 @0c1e57098): -c 4096
    -np 3 logs n_ctx = 4608 (3 x 1536).  That is the command's own context, not a different one, so verify adds
    no "n_ctx differs" note (it did before)."""
    from planner.hardware import load_profile
    from planner.logparse import parse_log, read_log
    from planner.memory import Placement
    from planner.source import load_model
    from planner.verify import verify

    fix = Path(__file__).parent / "fixtures" / "kv_kinds"
    lg = parse_log(read_log(fix / "qwen3moe-c4096-np3-rpc1.log"))
    assert lg.load.n_ctx == 4608
    tm = load_model(str(fix / "qwen3moe.header.gguf"), check_size=False)
    run = parse_server_command(["llama-completion", "-ngl", "0", "-c", "4096", "-np", "3"], engine="mainline").run
    pl = Placement({t.name: "CPU" for t in tm.tensors}, tuple(["CPU"] * tm.params.n_layer), {"CPU": 1 << 40})
    rep = verify(lg, tm, {t.name: t.dtype for t in tm.tensors}, pl, load_profile("rtx3090ti-9950x-96g"), run)
    assert not any("n_ctx" in n for n in rep.notes), rep.notes
