"""Acceptance (issue: plans that run as printed): multi-GPU plans re-derived with the engine's own layer rule fit.

The plan's launch command is parsed back and mapped with the engine profile's rule (``planner.layer_split``, from
ik_llama.cpp 8337e4cd ``llm_load_tensors``/``get_layer_sizes``), then memory is computed per device. Before, the
emitted ``-ts`` divided layers by n_layer, and ik put one or two more layers on one GPU than the plan did.
"""

from __future__ import annotations

import re

from planner.check import evaluate
from planner.hardware import resolve_hardware
from planner.launch import parse_server_command, placement_from_command
from planner.runconfig import RunConfig
from planner.source import load_model
from planhelp import plan_doc


def _rederive(doc, tmap, gpus, hw, argv):
    parsed = parse_server_command(list(argv), engine=doc.plan.run.engine)
    placement = placement_from_command(tmap, parsed, gpus, types=doc.plan.types,
                                       gpu_free_bytes=[doc.plan.budgets[g] for g in gpus])
    return placement, evaluate(tmap, doc.plan.types, placement, hw, doc.plan.run)


def test_deepseek_r1_on_2x3090_fits_on_every_gpu_under_ik_rule():
    hw = resolve_hardware(profile="2xrtx3090-epyc9354-384g")
    doc = plan_doc("deepseek-r1", hw, RunConfig(engine="ik", threads=32))
    tmap = load_model("deepseek-r1")
    gpus = ["CUDA0", "CUDA1"]
    placement, res = _rederive(doc, tmap, gpus, hw, doc.launch.argv)
    assert placement.layer_device == doc.plan.layer_device
    assert res.memory.fits, res.memory.problems()
    for d in res.memory.devices:
        assert d.total_bytes <= d.budget_bytes
    # the old emission, -ts = layers per GPU divided by n_layer: ik's greedy fill puts more layers on CUDA0
    counts = ",".join(str(doc.plan.layer_device.count(g)) for g in gpus)
    old = [re.sub(r"^\S+$", counts, a) if prev == "-ts" else a for prev, a in zip(("",) + doc.launch.argv, doc.launch.argv)]
    placement_old, res_old = _rederive(doc, tmap, gpus, hw, old)
    assert placement_old.layer_device.count("CUDA0") > doc.plan.layer_device.count("CUDA0")
    assert not res_old.memory.fits


def test_qwen3_235b_on_4x3090_fits_on_every_gpu_under_ik_rule():
    hw = resolve_hardware(vram=[24.0] * 4, ram=128.0, gpu="RTX 3090")
    doc = plan_doc("qwen3-235b-a22b", hw, RunConfig(engine="ik", threads=16))
    tmap = load_model("qwen3-235b-a22b")
    gpus = [f"CUDA{i}" for i in range(4)]
    placement, res = _rederive(doc, tmap, gpus, hw, doc.launch.argv)
    assert placement.layer_device == doc.plan.layer_device
    assert res.memory.fits, res.memory.problems()
    for d in res.memory.devices:
        assert d.total_bytes <= d.budget_bytes
