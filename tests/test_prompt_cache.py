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
from planner.prompt_cache import default_mib

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
