"""RPC emitters: rpc-server commands, --rpc, the engines' device names and order, scripts, the warning.

Device names are checked against the engines' own logs (tests/fixtures/rpc/, captured by
tools/rpc_check/run_rpc_cases.sh) and flags against the servers' own usage text captured the same way."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from planner.cluster_flags import cluster_from_flags
from planner.cluster_toml import load_cluster
from planner.errors import UsageError
from planner.hardware import load_profile
from planner.rpc import (comment, engine_devices, offload_list, ot_target, rpc_server_argv, rpc_server_script,
                         rpc_servers_arg, security_warning, tensor_split)

FIX = Path(__file__).parent / "fixtures" / "rpc"


def _cpu_main():
    return load_profile("cpu-epyc9654-768g")


def test_shipped_cluster_commands_ik_and_mainline():
    c = load_cluster("2x3090-384g+epyc-256g-10gbe")
    (box2,) = c.remotes
    assert rpc_server_argv(box2, "ik") == ("rpc-server", "-H", "192.168.10.2", "-p", "50052", "-c", "-t", "32")
    assert rpc_server_argv(box2, "mainline") == ("ggml-rpc-server", "-H", "192.168.10.2", "-p", "50052", "-c",
                                                 "-t", "32")
    assert rpc_servers_arg(c) == "192.168.10.2:50052"
    # RPC devices first, then the main host's GPUs (both engines' device order)
    ik = engine_devices(c, "ik")
    assert [(d.name, d.buft, d.dev) for d in ik] == [
        ("box2/CPU", "RPC0[192.168.10.2:50052]", "RPC0[192.168.10.2:50052]"),
        ("CUDA0", "CUDA0", "CUDA0"), ("CUDA1", "CUDA1", "CUDA1")]
    assert [d.dev for d in engine_devices(c, "mainline")] == ["RPC0", "CUDA0", "CUDA1"]
    # -ts runs over the engine's offload list: ik 8337e4cd lists the RPC device again after the GPUs
    # (llama_load_model_from_file: rpc_servers counted in llama_get_device_count before the buffer-type names are
    # listed), ik-2025 17a5a809 and mainline 0c1e57098 do not
    assert tensor_split({"box2/CPU": 30, "CUDA0": 16, "CUDA1": 15}, c, "ik") == (30, 16, 15, 0)
    assert tensor_split({"box2/CPU": 30, "CUDA0": 16, "CUDA1": 15}, c, "ik-2025") == (30, 16, 15)
    assert tensor_split({"box2/CPU": 30, "CUDA0": 16, "CUDA1": 15}, c, "mainline") == (30, 16, 15)
    assert offload_list(ik, "ik") == ("RPC0[192.168.10.2:50052]", "CUDA0", "CUDA1", "RPC0[192.168.10.2:50052]")
    # a CPU-only main host (the harness): ik's CPU build lists its CPU buffer type between them
    cpu = cluster_from_flags(_cpu_main(), ["g=addr:10.0.0.5,ram:128,bw:10gbe"])
    assert offload_list(engine_devices(cpu, "ik"), "ik") == ("RPC0[10.0.0.5:50052]", "CPU", "RPC0[10.0.0.5:50052]")
    assert offload_list(engine_devices(cpu, "ik-2025"), "ik-2025") == ("RPC0[10.0.0.5:50052]", "CPU")
    assert offload_list(engine_devices(cpu, "mainline"), "mainline") == ("RPC0[10.0.0.5:50052]",)
    assert ot_target("box2/CPU", c, "ik") == "RPC0[192.168.10.2:50052]" and ot_target("CPU", c, "ik") == "CPU"
    with pytest.raises(UsageError):
        ot_target("box9/CPU", c, "ik")


def test_device_selection_flags_per_engine():
    c = cluster_from_flags(_cpu_main(), ["g=addr:10.0.0.5,ram:128,vram:24+24,gpu:RTX 3090,devices:CUDA1+CPU,"
                                         "bw:10gbe"])
    (g,) = c.remotes
    # ik exposes the CPU beside GPUs only with -cpu; mainline takes CPU in -d
    assert rpc_server_argv(g, "ik") == ("rpc-server", "-H", "10.0.0.5", "-p", "50052", "-d", "CUDA1,CPU", "-cpu")
    assert rpc_server_argv(g, "mainline") == ("ggml-rpc-server", "-H", "10.0.0.5", "-p", "50052", "-d",
                                              "CUDA1,CPU")
    # server index = position in the server's own list: CUDA1 is RPC0 there, the CPU RPC1
    assert [d.buft for d in engine_devices(c, "ik")] == ["RPC0[10.0.0.5:50052]", "RPC1[10.0.0.5:50052]"]
    default = cluster_from_flags(_cpu_main(), ["g=addr:10.0.0.5,ram:128,vram:24,gpu:RTX 3090,bw:10gbe"])
    assert "-d" not in rpc_server_argv(default.remotes[0], "ik")


def test_mainline_numbers_devices_across_servers():
    c = cluster_from_flags(_cpu_main(), ["a=addr:10.0.0.2,ram:64,bw:1gbe",
                                         "b=addr:10.0.0.3,ram:64,vram:24+24,gpu:RTX 3090,bw:1gbe"])
    assert [d.dev for d in engine_devices(c, "mainline")] == ["RPC0", "RPC1", "RPC2"]
    assert [d.buft for d in engine_devices(c, "mainline")] == [
        "RPC0[10.0.0.2:50052]", "RPC0[10.0.0.3:50052]", "RPC1[10.0.0.3:50052]"]


def _logged_devices(log: str) -> list[str]:
    """The device / buffer names an engine log prints for its RPC devices, in order of first appearance."""
    names: list[str] = []
    for m in re.finditer(r"(RPC\d+\[[0-9.]+:\d+\])", log):
        if m.group(1) not in names:
            names.append(m.group(1))
    return names


def _case(engine: str, name: str) -> tuple[str, list[str]]:
    """The log and the --rpc endpoints of one captured case (cases.jsonl holds the exact command)."""
    for line in (FIX / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        if case["engine"] == engine and case["case"] == name:
            argv = shlex.split(case["command"])
            return (FIX / case["log"]).read_text(encoding="utf-8"), argv[argv.index("--rpc") + 1].split(",")
    raise KeyError((engine, name))


def _cluster_of(endpoints: list[str]):
    return cluster_from_flags(_cpu_main(), [f"s{i}=addr:{e.split(':')[0]},port:{e.split(':')[1]},ram:64,bw:10gbe"
                                            for i, e in enumerate(endpoints)])


@pytest.mark.parametrize("engine", ["ik", "mainline"])
def test_buffer_names_match_the_engine_logs(engine):
    log, endpoints = _case(engine, "two-ot-rpc")
    c = _cluster_of(endpoints)
    assert _logged_devices(log) == [d.buft for d in engine_devices(c, engine)]


def test_mainline_device_names_match_its_log():
    log, endpoints = _case("mainline", "two-ot-rpc")
    c = _cluster_of(endpoints)
    used = re.findall(r"using device (RPC\d+) \((127\.0\.0\.1:\d+)\)", log)
    assert used == [(d.dev, c.host(d.host).endpoint) for d in engine_devices(c, "mainline")]


@pytest.mark.parametrize("engine", ["ik", "mainline"])
def test_emitted_server_flags_are_in_the_server_usage(engine):
    usage = (FIX / f"{engine}-rpc-server-help.txt").read_text(encoding="utf-8")
    known = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
    c = cluster_from_flags(_cpu_main(), ["g=addr:10.0.0.5,ram:128,vram:24,gpu:RTX 3090,devices:CUDA0+CPU,"
                                         "bw:10gbe,cache,threads:8"])
    argv = rpc_server_argv(c.remotes[0], engine)
    flags = [a for a in argv[1:] if a.startswith("-")]
    assert flags and set(flags) <= known


def test_script_quotes_and_neutralises_comments(tmp_path):
    c = load_cluster("2x3090-384g+epyc-256g-10gbe")
    evil = "plan for $(reboot)\nrm -rf / #"
    text = rpc_server_script(c.remotes[0], "ik", comments=[evil])
    body = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert body == ["set -euo pipefail", 'RPC_SERVER="${RPC_SERVER:-rpc-server}"',
                    'exec "$RPC_SERVER" -H 192.168.10.2 -p 50052 -c -t 32']
    assert "# plan for $(reboot) rm -rf / #" in text
    script = tmp_path / "box2.sh"
    script.write_text(text, encoding="utf-8")
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    # with a fake rpc-server the script runs exactly the argv
    fake = tmp_path / "fake-rpc-server"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    fake.chmod(0o755)
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                         env={"RPC_SERVER": str(fake), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split("\n")[:-1] == list(rpc_server_argv(c.remotes[0], "ik")[1:])


def test_comment_is_one_line():
    assert comment("a\nb\rc\x00d") == "# a b c d"
    assert shlex.split(comment("x"), comments=True) == []    # a comment, whatever it holds


def test_security_warning():
    c = load_cluster("2x3090-384g+epyc-256g-10gbe")
    (text,) = security_warning(c)
    assert "no authentication" in text and "never on a public" in text
    wide = cluster_from_flags(_cpu_main(), ["w=addr:10.0.0.5,bind:0.0.0.0,ram:64,bw:1gbe"])
    assert any("0.0.0.0" in w for w in security_warning(wide))
