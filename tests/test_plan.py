"""Acceptance of the joint planner (issue 6) and consistency with footprint/check."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.hardware import resolve_hardware
from planner.launch import parse_server_command, placement_from_command
from planner.memory import RunConfig
from planner.planning import VS_BEST
from planhelp import plan_doc

from planner.check import evaluate
from planner.quantize import QuantizeSpec, Rule, quantize

ROOT = Path(__file__).parents[1]
SEED_ARGV = [tok for line in (ROOT / "examples/seed-command.sh").read_text().splitlines()
             if line.strip() and not line.startswith("#") for tok in line.split()]


@pytest.fixture(scope="module")
def planned():
    hw = resolve_hardware(vram=[24.0], ram=96.0)
    run = RunConfig(threads=hw.threads_default)
    return hw, plan_doc(None, hw, run)


@pytest.fixture(scope="module")
def seed_reference(planned):
    from planner.mix import mix_from_options
    from planner.quality import QualityModel
    from planner.source import load_model

    hw, _ = planned
    tm = load_model(None)
    types, fp = mix_from_options(tm, base_type="IQ3_K", recipe_text=(ROOT / "examples/seed-mix-IQ3_K.recipe").read_text())
    parsed = parse_server_command(SEED_ARGV, engine="ik-2025")
    res = evaluate(tm, types, placement_from_command(tm, parsed, ["CUDA0"]), hw, parsed.run,
                   quality=QualityModel.build(tm))
    return fp, res


def test_plan_dominates_the_seed(planned, seed_reference):
    _, doc = planned
    fp, seed = seed_reference
    p = doc.plan
    # proven to the quality step's 0.01 % stop (the issue counts gap <= 0.01 % as proven)
    assert p.solver.status in ("OPTIMAL", "OPTIMAL_WITHIN_GAP") and p.solver.gap <= 1e-4
    # the seed card's size (106.830 GiB) within 0.1 %: the plan fills the memory the engine leaves, and with the
    # compute buffer the seed rig's log shows (312.75 MiB, not ik's fit estimate x1.5 = 637 MiB) it has 0.3 GiB
    # more GPU room than the seed card's author had planned for
    assert p.total_bytes <= fp.total_bytes * 1.001
    assert p.quality.loss <= seed.quality.loss                   # predicted quality loss at most the seed's
    assert p.speed.tg_tps >= seed.speed.tg_tps                   # predicted TG at least the seed command's
    assert p.memory.fits


def test_recipe_through_footprint_gives_the_plans_bytes(planned):
    from planner.source import load_model

    _, doc = planned
    tm = load_model(None)
    spec = QuantizeSpec(base_type=doc.recipe.base_type,
                        custom_q=tuple(Rule(rx, ty, i) for i, (rx, ty) in enumerate(doc.recipe.rules)))
    fp = quantize(tm, spec)
    assert fp.total_bytes == doc.plan.total_bytes
    assert {r.name: r.type_name for r in fp.tensors} == doc.plan.types


def test_launch_through_check_gives_the_plans_memory(planned):
    from planner.source import load_model

    hw, doc = planned
    tm = load_model(None)
    parsed = parse_server_command(list(doc.launch.argv), engine="ik")
    assert parsed.run == doc.plan.run          # the engine's reading of the command is the planned run
    res = evaluate(tm, doc.plan.types, placement_from_command(tm, parsed, ["CUDA0"]), hw, parsed.run)
    for d in doc.plan.memory.devices:
        assert res.memory.device(d.device).total_bytes == d.total_bytes
    assert len(doc.launch.overrides) <= 3


def test_impossible_budget_exits_2_with_shortfall_and_options():
    import re

    r = CliRunner().invoke(main, ["plan", "--vram", "8", "--ram", "32"])
    assert r.exit_code == 2
    assert "short by" in r.output and "nearest feasible" in r.output and "Traceback" not in r.output
    ram = int(re.search(r"--ram (\d+)", r.output).group(1))
    # the named option really is feasible, and one GiB less is not
    assert CliRunner().invoke(main, ["plan", "--vram", "8", "--ram", str(ram)]).exit_code == 0
    assert CliRunner().invoke(main, ["plan", "--vram", "8", "--ram", str(ram - 1)]).exit_code == 2


def test_plan_json_is_byte_identical(tmp_path):
    outs = []
    for _ in range(2):
        r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "8", "--ram", "32", "--json"])
        assert r.exit_code == 0, r.output
        outs.append(r.stdout)
    assert outs[0] == outs[1]
    doc = json.loads(outs[0])
    assert doc["format"] == "gguf-planner/plan-v1" and "wall_s" not in doc["plan"]["solver"]


def test_export_from_plan_json(tmp_path):
    pj = tmp_path / "plan.json"
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "8", "--ram", "32", "--out", str(pj)])
    assert r.exit_code == 0, r.output
    sh = tmp_path / "run.sh"
    r = CliRunner().invoke(main, ["export", "--plan", str(pj), "--out", str(sh), "--model-path", "/m/x.gguf"])
    assert r.exit_code == 0, r.output
    text = sh.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text and "estimated TG" in text
    r = CliRunner().invoke(main, ["export", "--plan", str(pj), "--out", str(sh)])
    assert r.exit_code == 3 and "already exists" in r.output and sh.read_text() == text


def test_granularity_role_gives_one_type_per_role():
    from planner.source import load_model

    hw = resolve_hardware(vram=[8.0], ram=32.0)
    doc = plan_doc("qwen3-30b-a3b", hw, RunConfig(threads=16), granularity="role")
    tm = load_model("qwen3-30b-a3b")
    per_role = {}
    for t in tm.tensors:
        if t.layer is not None and t.n_dims >= 2 and t.role != "ffn_gate_inp":
            per_role.setdefault(t.role, set()).add(doc.plan.types[t.name])
    assert all(len(v) == 1 for v in per_role.values()), per_role
    assert all(r"blk\..*\." in rx for rx, _ in doc.recipe.rules if rx.startswith("blk"))


def test_pareto_plans_are_non_dominated_and_ordered():
    hw = resolve_hardware(vram=[8.0], ram=32.0)
    ps = plan_doc("qwen3-30b-a3b", hw, RunConfig(threads=16), pareto=3)
    plans = [d.plan for d in ps.documents]
    assert len(plans) >= 2
    for a, b in zip(plans, plans[1:]):
        assert a.quality.loss < b.quality.loss and a.speed.tg_tps < b.speed.tg_tps   # trade quality for speed


def test_kv_auto_falls_back_to_q4_0_when_q8_0_does_not_fit():
    # CPU only, qwen3-30b-a3b at its full 40960 context: pick a RAM size where only q4_0 KV fits
    hw = resolve_hardware(vram=[0.0], ram=14.0)
    run = RunConfig(ctx=40960, threads=16)
    from planner.errors import InfeasibleBudgetError
    with pytest.raises(InfeasibleBudgetError):
        plan_doc("qwen3-30b-a3b", hw, run, allow=("iq2_ks",), min_tg=None)
    doc = plan_doc("qwen3-30b-a3b", hw, run, allow=("iq2_ks",), kv_auto=True)
    assert (doc.plan.run.type_k, doc.plan.run.type_v) == ("q4_0", "q4_0")


@pytest.mark.parametrize("engine", ["ik", "mainline"])
def test_two_gpus_launch_reproduces_plan_memory(engine):
    from planner.source import load_model

    hw = resolve_hardware(vram=[6.0, 6.0], ram=24.0)
    doc = plan_doc("qwen3-30b-a3b", hw, RunConfig(engine=engine, threads=16,
                                                           load="rtr" if engine == "ik" else "mmap"))
    # 24 layers on each GPU and the output on CUDA1: -ngl 49 -ts 24,25 (the engines' upper_bound divides by
    # ngl = n_layer + 1, so -ts 24,24 would put layer 24 on CUDA0; ik's greedy fill reproduces it as well)
    assert doc.launch.tensor_split == (24, 25)
    assert "-ts" in doc.launch.argv
    tm = load_model("qwen3-30b-a3b")
    parsed = parse_server_command(list(doc.launch.argv), engine=engine)
    pl = placement_from_command(tm, parsed, ["CUDA0", "CUDA1"], types=doc.plan.types)
    assert dict(pl.tensor_device) == doc.plan.devices and pl.layer_device == doc.plan.layer_device
    # the command, as the engine reads it (its defaults where it does not say), runs the plan's configuration;
    # mainline has no -amb (engines.toml amb = ""), so that one value means nothing there
    ignore = {"amb"} if engine == "mainline" else set()
    assert [(f, getattr(parsed.run, f), getattr(doc.plan.run, f)) for f in doc.plan.run.__dataclass_fields__
            if f not in ignore and getattr(parsed.run, f) != getattr(doc.plan.run, f)] == []
    res = evaluate(tm, doc.plan.types, pl, hw, parsed.run)
    assert [d.total_bytes for d in res.memory.devices] == [d.total_bytes for d in doc.plan.memory.devices]
    if engine == "mainline":
        from planner.quants import catalogue
        assert all("mainline" in catalogue().get(t).engines for t in doc.plan.types.values())


def test_min_tg_and_min_pp_are_met():
    hw = resolve_hardware(vram=[8.0], ram=32.0)
    base = plan_doc("qwen3-30b-a3b", hw, RunConfig(threads=16)).plan
    want_pp = base.speed.pp_tps * 1.15
    p = plan_doc("qwen3-30b-a3b", hw, RunConfig(threads=16), min_pp=want_pp).plan
    assert p.speed.pp_tps >= want_pp * 0.999 and not [n for n in p.notes if not n.startswith(VS_BEST)]   # no "target missed"
    want_tg = base.speed.tg_tps * 1.2
    p = plan_doc("qwen3-30b-a3b", hw, RunConfig(threads=16), min_tg=want_tg).plan
    assert p.speed.tg_tps >= want_tg and p.quality.loss >= base.quality.loss


def test_budget_uses_free_vram_of_a_probed_gpu():
    import dataclasses

    from planner.groups import Budget

    hw = resolve_hardware(vram=[24.0], ram=96.0)
    probed = dataclasses.replace(hw, gpus=(dataclasses.replace(hw.gpus[0], free_bytes=20 << 30),))
    assert Budget.from_hardware(probed).bytes["CUDA0"] == 20 << 30     # a desktop holds 4 GiB right now
    assert Budget.from_hardware(hw).bytes["CUDA0"] == 24 << 30         # a card described by hand is idle


def test_plan_warns_when_the_quantized_file_does_not_fit_its_disk():
    import dataclasses

    hw = dataclasses.replace(resolve_hardware(vram=[1.5], ram=4.0), disk_free_bytes=1_000_000)
    doc = plan_doc(str(ROOT / "tests/fixtures/ik/tiny-a-bf16.gguf"), hw, RunConfig(threads=16, os_reserve_bytes=1 << 30))
    assert any("disk has 0.0 GiB free" in n for n in doc.plan.notes)
    args = doc.quantize_command.split()
    out = next(a for a in args if a.endswith(".gguf") and "planned" in a)       # never the source file
    assert out.endswith("tiny-a-planned.gguf") and args.index(out) == len(args) - 3   # ... out TYPE nthreads
