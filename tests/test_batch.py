"""-ub/-b as decisions: b >= ub always (llama.cpp src/llama-context.cpp caps n_ubatch at n_batch), --ub/--batch fix
them, otherwise -ub is the largest micro-batch whose compute buffers fit beside the plan, or with --min-pp the
smallest that meets it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.errors import UsageError
from planner.runconfig import UBATCH_CHOICES, batch_sizes


def plan(*args: str) -> dict:
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def flag(argv: list[str], name: str) -> int:
    return int(argv[argv.index(name) + 1])


@pytest.mark.parametrize("ub, b, want", [
    (None, None, (512, 2048)),     # the engines' defaults
    (4096, None, (4096, 4096)),    # -b follows a larger -ub (else the engine would cap -ub at 2048)
    (None, 256, (256, 256)),       # -ub follows a smaller -b
    (1024, 4096, (1024, 4096)),
])
def test_batch_sizes_keep_b_at_least_ub(ub, b, want):
    assert batch_sizes(ub, b) == want


def test_batch_below_ubatch_is_refused_exit_2():
    with pytest.raises(UsageError, match="smaller than --ub"):
        batch_sizes(2048, 1024)
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "8", "--ram", "32", "--ub", "2048",
                                  "--batch", "1024"])
    assert r.exit_code == 2 and "smaller than --ub" in r.output


def test_given_ub_is_emitted_with_a_batch_at_least_as_large():
    doc = plan("--vram", "8", "--ram", "32", "--ub", "4096")
    argv = doc["launch"]["argv"]
    assert flag(argv, "-ub") == 4096 and flag(argv, "-b") >= 4096
    assert doc["plan"]["run"]["ubatch"] == 4096


def test_chosen_ub_is_the_largest_that_fits(tmp_path):
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "24", "--ram", "64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    from dataclasses import replace

    from planner.documents import load_plan_json
    from planner.groups import Budget
    from planner.hardware import resolve_hardware
    from planner.memory import Placement, memory_report

    saved = load_plan_json(str(out))
    ub = saved.run.ubatch
    assert ub in UBATCH_CHOICES and ub > 512 and saved.run.batch >= ub
    budget = Budget.from_hardware(resolve_hardware(vram=[24.0], ram=64.0))
    placement = Placement(saved.devices, saved.layer_device, budget.devices)
    assert memory_report(saved.tmap, saved.types, placement, budget.bytes, saved.run).fits
    if ub < UBATCH_CHOICES[-1]:            # the next choice would not have fitted beside the same plan
        nxt = UBATCH_CHOICES[UBATCH_CHOICES.index(ub) + 1]
        bigger = replace(saved.run, ubatch=nxt, batch=max(nxt, saved.run.batch))
        assert not memory_report(saved.tmap, saved.types, placement, budget.bytes, bigger).fits


def test_min_pp_picks_the_smallest_ub_that_meets_it():
    box = ("--vram", "8", "--ram", "32")
    target = round(plan(*box, "--ub", "4096")["plan"]["speed"]["pp_tps"] * 0.95)
    doc = plan(*box, "--min-pp", str(target))
    ub = doc["plan"]["run"]["ubatch"]
    assert doc["plan"]["speed"]["pp_tps"] >= target * 0.999
    for smaller in (u for u in UBATCH_CHOICES if u < ub):   # each smaller micro-batch cannot meet the target
        r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", *box, "--ub", str(smaller), "--min-pp", str(target),
                                      "--json"])
        assert r.exit_code == 2 or json.loads(r.stdout)["plan"]["speed"]["pp_tps"] < target * 0.999, smaller
