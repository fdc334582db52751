"""Load mode: no -rtr in a hybrid plan unless the speed model predicts it faster, and the plan says why.

Independent facts: ik_llama.cpp's README says k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) have no CUDA row-interleaved
implementation, so with -rtr their CPU-resident matrices are multiplied on the CPU even for prompt processing.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.quants import catalogue
from planner.speed import rtr_type


def plan_json(*args: str) -> dict:
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("kquant", ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K"])
def test_repacked_k_quants_have_no_cuda_kernel(kquant):
    repacked = rtr_type(kquant)
    assert repacked != kquant                                  # -rtr does repack them ...
    assert not catalogue().get(repacked).runs_on_cuda("ik")   # ... into types CUDA cannot multiply (ik README)


def test_hybrid_plan_does_not_emit_rtr_and_says_why():
    doc = plan_json("--vram", "8", "--ram", "32")
    argv = doc["launch"]["argv"]
    assert any(d == "CPU" for d in doc["plan"]["devices"].values()) and "CUDA0" in doc["plan"]["devices"].values()
    assert "-rtr" not in argv and "--no-mmap" in argv and doc["plan"]["run"]["load"] == "no-mmap"
    assert any(n.startswith("load: --no-mmap, not -rtr") for n in doc["plan"]["notes"])


def test_load_flag_forces_rtr():
    doc = plan_json("--vram", "8", "--ram", "32", "--load", "rtr")
    assert "-rtr" in doc["launch"]["argv"] and doc["plan"]["run"]["load"] == "rtr"
    assert not any(n.startswith("load:") for n in doc["plan"]["notes"])


def test_cpu_only_plan_keeps_the_engine_default():
    doc = plan_json("--vram", "0", "--ram", "64")
    assert "-rtr" in doc["launch"]["argv"]


def test_all_gpu_plan_uses_mmap_not_rtr():
    """Every matrix on the GPU: -rtr has nothing to repack (ik repacks only CPU-resident tensors, and never
    token_embd) and would only turn mmap off (ik PR 147), so the plan keeps ik's default, mmap, and says so."""
    doc = plan_json("--vram", "32", "--ram", "32")
    plan = doc["plan"]
    on_cpu = [n for n, d in plan["devices"].items() if d == "CPU" and plan["types"][n] != "f32"]
    assert on_cpu == ["token_embd.weight"], on_cpu
    argv = doc["launch"]["argv"]
    assert "-rtr" not in argv and "--no-mmap" not in argv and plan["run"]["load"] == "mmap"
    assert any(n.startswith("load: mmap") for n in plan["notes"])


def test_mmap_asked_for_a_hybrid_ik_plan_is_planned_as_the_no_mmap_ik_runs():
    """Current ik turns mmap off as soon as one tensor is overridden to the CPU buffer type
    (src/llama-load-tensors.cpp:463 and 5309-5311 @8337e4cd, PR 1510), which a hybrid plan's -ot ...=CPU rules do;
    so ``--load mmap`` gets a plan that says --no-mmap (and why) instead of a command the engine runs otherwise
    than predicted.  The command parsed back (check's reading of the same rule) agrees with the plan."""
    from planner.launch import parse_server_command

    doc = plan_json("--vram", "8", "--ram", "32", "--load", "mmap")
    argv = doc["launch"]["argv"]
    assert any("=CPU" in a for a in argv) and "--no-mmap" in argv and doc["plan"]["run"]["load"] == "no-mmap"
    assert any(n.startswith("load: --no-mmap, not mmap") for n in doc["plan"]["notes"])
    assert parse_server_command(argv).run.load == "no-mmap"
    # ik as of the seed card (a year before PR 1510) kept mmap with overrides: the plan keeps the user's choice
    old = plan_json("--vram", "8", "--ram", "32", "--load", "mmap", "--engine", "ik-2025")
    assert old["plan"]["run"]["load"] == "mmap" and "--no-mmap" not in old["launch"]["argv"]
    assert parse_server_command(old["launch"]["argv"], engine="ik-2025").run.load == "mmap"
