"""llama-server's prompt cache (-cram): RAM the server fills after loading, sized by the plan to what it leaves.

Independent facts: the captured ik ``llama-server --help`` (tests/fixtures/ik/help/, a real build at 8337e4cd)
prints ``-cram, --cache-ram N ... (default: 8192, -1 - no limit, 0 - disable)``; mainline's default is the same
(common/common.h:634 @0c1e57098) and the server drops the oldest states to stay under it
(tools/server/server-task.cpp:1731-1760).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.errors import UsageError
from planner.launch import parse_server_command
from planner.ctx_checkpoint import checkpoint_bytes
from planner.kv_cache import CacheConfig
from planner.prompt_cache import checkpoints_default, default_mib
from planner.tensors import builtin

IK_HELP = (Path(__file__).parent / "fixtures/ik/help/llama-server-help.txt").read_text()


def test_the_default_limit_is_the_one_the_engine_prints():
    printed = int(re.search(r"--cache-ram N .*\(default: (\d+),", IK_HELP).group(1))
    assert default_mib("ik") == printed == 8192 and default_mib("mainline") == 8192
    assert default_mib("ik-2025") == 0          # no prompt cache in the spring-2025 server


def _memory(doc: dict) -> dict:
    return {d["device"]: d for d in doc["plan"]["memory"]["devices"]}


def test_a_plan_that_leaves_less_ram_than_the_default_caps_the_cache_at_what_it_leaves():
    r = CliRunner().invoke(main, ["plan", "--vram", "24", "--ram", "96", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    cpu = _memory(doc)["CPU"]
    left = cpu["budget_bytes"] - sum(t["bytes"] for t in cpu["terms"])      # the OS reserve stays reserved
    assert 0 < left < 8192 << 20
    argv = doc["launch"]["argv"]
    assert argv[argv.index("-cram") + 1] == str(left >> 20)
    assert argv.index("-cram") < argv.index("--host") and "-cram" not in doc["sweep_command"]
    assert parse_server_command(argv).run.cache_ram_mib == left >> 20


def test_a_plan_with_room_keeps_the_engines_default():
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "24", "--ram", "64", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert _memory(doc)["CPU"]["free_bytes"] >= 8192 << 20 and "-cram" not in doc["launch"]["argv"]


def test_check_warns_when_the_default_cache_outgrows_the_ram_a_command_leaves():
    """The seed card's placement (its -ot rules) in current ik's spelling on the card's 96 GiB box: every buffer
    fits, but a few long prompts in the default 8 GiB cache would not."""
    argv = ["llama-server", "-m", "x.gguf", "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0", "-c", "32768", "-amb", "512",
            "-rtr", "-ot", r"blk\.1[2-9]\.ffn.*=CPU", "-ot", r"blk\.[2-8][0-9]\.ffn.*=CPU", "-ot",
            r"blk\.9[0-3]\.ffn.*=CPU", "-ngl", "99", "--threads", "16"]
    args = ["check", "qwen3-235b-a22b", "--recipe-file", "examples/seed-mix-IQ3_K.recipe", "--base-type", "IQ3_K",
            "--vram", "24", "--ram", "96", "--engine", "ik", "--", *argv]
    out = CliRunner().invoke(main, args).output
    assert "prompt cache: llama-server keeps up to 8192 MiB (-cram, the default)" in out, out
    capped = CliRunner().invoke(main, args + ["-cram", "1024"]).output
    assert "prompt cache:" not in capped


def test_a_negative_limit_other_than_no_limit_is_refused():
    with pytest.raises(UsageError, match="-cram"):
        parse_server_command(["llama-server", "-cram", "-5"])
    assert parse_server_command(["llama-server", "--cache-ram", "-1"]).run.cache_ram_mib == -1


# --- context checkpoints (planner/ctx_checkpoint.py): slots x N x one checkpoint, set aside before the prompt cache.
# The default N is what both engines print: ik's captured --help "-ctx-ckpt N, --ctx-checkpoints N ... (default:
# 32)"; mainline common/common.h:631 @0c1e57098.  One checkpoint's bytes are checked against the engine in
# tests/test_ctx_checkpoint.py.

def test_the_default_checkpoint_count_is_the_one_the_engine_prints():
    printed = int(re.search(r"-ctx-ckpt N, --ctx-checkpoints N\s+.*?\(default: (\d+)\)", IK_HELP, re.S).group(1))
    assert checkpoints_default("ik") == printed == 32 and checkpoints_default("mainline") == 32
    assert checkpoints_default("ik-2025") == 0


def _gemma_plan(ram: str) -> tuple[dict, list[str], int]:
    r = CliRunner().invoke(main, ["plan", "gemma-3-27b", "--engine", "mainline", "--vram", "24", "--ram", ram,
                                  "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    argv = doc["launch"]["argv"]
    cpu = _memory(doc)["CPU"]
    return doc, argv, cpu["budget_bytes"] - sum(t["bytes"] for t in cpu["terms"])


def _one_gemma_checkpoint() -> int:
    one = checkpoint_bytes(builtin("gemma-3-27b").params,
                           CacheConfig(engine="mainline", ctx=32768, type_k="q8_0", type_v="q8_0"))
    assert one and one > 200 << 20          # 52 sliding layers x 1024 cells x 2 q8_0 rows of 2176 bytes
    return one


def test_checkpoints_are_set_aside_before_the_prompt_cache():
    """gemma-3-27b on mainline, one slot: 32 checkpoints of ~221 MiB fit in what the plan leaves, the prompt
    cache gets the rest."""
    doc, argv, left = _gemma_plan("14")
    ckpts = 32 * _one_gemma_checkpoint()
    assert ckpts < left < ckpts + (8192 << 20)
    assert "-ctxcp" not in argv and argv[argv.index("-cram") + 1] == str((left - ckpts) >> 20)
    assert any("after the context checkpoints" in n for n in doc["plan"]["notes"])


def test_a_plan_caps_the_checkpoints_where_the_default_does_not_fit():
    doc, argv, left = _gemma_plan("12")
    one = _one_gemma_checkpoint()
    assert left < 32 * one
    n = left // one
    assert argv[argv.index("-ctxcp") + 1] == str(n) and argv.index("-ctxcp") < argv.index("--host")
    assert argv[argv.index("-cram") + 1] == str((left - n * one) >> 20)
    parsed = parse_server_command(argv, engine="mainline").run
    assert parsed.ctx_checkpoints == n and parsed.cache_ram_mib == (left - n * one) >> 20
    assert any(x.startswith(f"context checkpoints: -ctxcp {n}:") for x in doc["plan"]["notes"])


def test_check_warns_when_the_default_checkpoints_outgrow_the_ram_a_command_leaves():
    """mainline without -np runs 4 slots (tools/server/server.cpp:156-160): 4 x 32 checkpoints of gemma-3-27b
    are ~28 GiB, more than a 32 GiB box leaves once the model is in RAM."""
    argv = ["llama-server", "-m", "x.gguf", "-c", "32768", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on",
            "-ngl", "99", "--fit", "off"]
    args = ["check", "gemma-3-27b", "--base-type", "Q4_K_M", "--vram", "24", "--ram", "32", "--engine", "mainline",
            "--", *argv]
    out = CliRunner().invoke(main, args).output
    assert "context checkpoints: llama-server keeps up to 32 (-ctxcp, the default) checkpoints" in out, out
    n = int(re.search(r"add -ctxcp (\d+)", out).group(1))
    capped = CliRunner().invoke(main, args + ["-ctxcp", str(n)]).output
    assert "context checkpoints:" not in capped, capped
    assert "context checkpoints:" in CliRunner().invoke(main, args + ["-ctxcp", str(n + 1)]).output


def test_checkpoint_flags_are_read_in_each_engines_spelling():
    assert parse_server_command(["llama-server", "-ctxcp", "4"], engine="mainline").run.ctx_checkpoints == 4
    assert parse_server_command(["llama-server", "--swa-checkpoints", "2"],
                                engine="mainline").run.ctx_checkpoints == 2
    assert parse_server_command(["llama-server", "-ctx-ckpt", "0"], engine="ik").run.ctx_checkpoints == 0
    assert parse_server_command(["llama-server", "-c", "4096"], engine="ik").run.ctx_checkpoints is None
    with pytest.raises(UsageError, match="-ctxcp"):
        parse_server_command(["llama-server", "-ctxcp", "-1"], engine="mainline")


def test_a_capped_checkpoint_count_survives_the_plan_file(tmp_path):
    plan, script = tmp_path / "p.json", tmp_path / "run.sh"
    r = CliRunner().invoke(main, ["plan", "gemma-3-27b", "--engine", "mainline", "--vram", "24", "--ram", "12",
                                  "--out", str(plan)])
    assert r.exit_code == 0, r.output
    n = json.loads(plan.read_text())["plan"]["run"]["ctx_checkpoints"]
    assert 0 < n < 32
    r = CliRunner().invoke(main, ["export", "--plan", str(plan), "--out", str(script), "--model-path", "/m/x.gguf"])
    assert r.exit_code == 0, r.output
    assert f"-ctxcp {n} " in script.read_text()
