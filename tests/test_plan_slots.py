"""`plan --parallel N [--kv-unified]`: a plan for a llama-server with N slots emits the engine's own flags, and the
command it prints, read back the way the engine reads it, is the planned run with the planned memory.

Independent figures: the KV cache of Qwen3-30B-A3B (48 layers, 4 KV heads of 128, config.json of
Qwen/Qwen3-30B-A3B) at -c 32768 in q8_0 (34 bytes per 32 values, ggml's block_q8_0) is 48 x 32768 x 512 x 2 x
34/32 bytes, the same for -np 1 and for mainline's four streams of 8192 cells (src/llama-context.cpp:290-300
@0c1e57098: ``n_ctx_seq = GGML_PAD(n_ctx / n_seq_max, 256)``, llama-kv-cache.cpp:233 ``[n_embd, kv_size,
n_stream]``); a slot holds 8192 tokens there, the whole 32768 with -kvu (``n_ctx_seq = n_ctx``), and in ik's server
``n_ctx / n_parallel`` = 10922 for three slots (examples/server ``n_ctx_slot``).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from planner.check import evaluate
from planner.cli import main
from planner.hardware import resolve_hardware
from planner.launch import parse_server_command, placement_from_command
from planner.runconfig import RunConfig
from planner.source import load_model

KV_Q8 = 48 * 32768 * 512 * 2 * 34 // 32
BASE = ["plan", "qwen3-30b-a3b", "--vram", "8", "--ram", "32", "--ctx", "32768"]


def _plan(*extra: str) -> tuple[dict, str]:
    r = CliRunner().invoke(main, [*BASE, *extra, "--json"])
    assert r.exit_code == 0, r.output
    text = CliRunner().invoke(main, [*BASE, *extra])
    assert text.exit_code == 0, text.output
    return json.loads(r.stdout), text.stdout


@pytest.mark.parametrize("extra, engine, np_flag, kvu, slot", [
    (("--engine", "mainline", "--parallel", "4"), "mainline", "4", False, 8192),
    (("--engine", "mainline", "--parallel", "4", "--kv-unified"), "mainline", "4", True, 32768),
    (("--parallel", "3"), "ik", "3", False, 10922),
])
def test_slots_plan_runs_as_printed(extra, engine, np_flag, kvu, slot):
    doc, text = _plan(*extra)
    argv = doc["launch"]["argv"]
    assert argv[argv.index("-np") + 1] == np_flag
    assert ("-kvu" in argv) == kvu
    assert f"slots of {slot} tokens" in text.splitlines()[0]
    p = doc["plan"]
    assert sum(t["bytes"] for d in p["memory"]["devices"] for t in d["terms"] if t["name"] == "kv_cache") == KV_Q8
    # the command as the engine reads it is the planned run, and it needs the planned memory on every device
    parsed = parse_server_command(argv, engine=engine)
    planned = RunConfig(**p["run"])
    if engine == "mainline":
        planned = replace(planned, amb=parsed.run.amb)      # -amb is ik's: mainline has none to print
    assert parsed.run == planned
    tm = load_model("qwen3-30b-a3b")
    hw = resolve_hardware(vram=[8.0], ram=32.0)
    res = evaluate(tm, p["types"], placement_from_command(tm, parsed, ["CUDA0"]), hw, parsed.run)
    for d in p["memory"]["devices"]:
        assert res.memory.device(d["device"]).total_bytes == d["total_bytes"]


def test_one_slot_is_the_default():
    doc, text = _plan("--engine", "mainline")
    argv = doc["launch"]["argv"]
    assert argv[argv.index("-np") + 1] == "1" and "-kvu" not in argv       # mainline's own default is 4 slots
    assert "slots" not in text.splitlines()[0]


@pytest.mark.parametrize("extra, words", [
    (("--kv-unified",), "--kv-unified is a mainline flag"),
    (("--parallel", "0"), "--parallel"),
])
def test_bad_slot_options_are_one_line_errors(extra, words):
    r = CliRunner().invoke(main, [*BASE, *extra])
    assert r.exit_code == 2
    assert words in r.output and "Traceback" not in r.output


def test_speed_is_one_requests_with_slots():
    """With server slots a request reaches its slot's context only (8192 of -c 32768 over 4 slots, the engines'
    division above) and reads its own sequence's recurrent state: Qwen3-Next's gated delta-net layers keep one state
    per sequence (memory: 4 of them), but a token of one request reads one.  So 4 slots predict the one-slot speed
    at depth 0, and at full context the one-slot speed at depth 8192."""
    from planner.memory import Placement
    from planner.speed import estimate_speed

    tm = load_model("qwen3-next-80b-a3b")
    hw = resolve_hardware(vram=[24.0], ram=96.0)
    mix = {t.name: t.dtype for t in tm.tensors}
    placement = Placement({t.name: "CPU" for t in tm.tensors}, ("CPU",) * tm.params.n_layer, ("CPU",))
    one = estimate_speed(tm, mix, placement, hw, RunConfig(ctx=32768), depths=(0, 8192))
    four = estimate_speed(tm, mix, placement, hw, RunConfig(ctx=32768, n_parallel=4))
    assert four.tg_tps == one.tg_tps and four.pp_tps == one.pp_tps
    assert four.tg_tps_ctx != one.tg_tps_ctx                   # one-slot default: the whole 32768
    deep = estimate_speed(tm, mix, placement, hw, RunConfig(ctx=8192))
    assert four.tg_tps_ctx == pytest.approx(deep.tg_tps_ctx, rel=1e-12)
