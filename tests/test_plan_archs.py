"""The new architectures through placement and planning: per-layer KV/state in the memory model, expert biases
placed with their experts (the engines' -ot patterns move them together), and what a too-small machine is told."""

from __future__ import annotations

import pytest
from planhelp import plan_doc

from planner.errors import InfeasibleBudgetError
from planner.hardware import resolve_hardware
from planner.planning import place
from planner.quantize import QuantizeSpec, quantize
from planner.request import PlanRequest
from planner.runconfig import RunConfig
from planner.tensors import builtin


def _q8(n: int) -> int:
    return n // 32 * 34          # ggml_row_size(GGML_TYPE_Q8_0, n)


def test_gpt_oss_expert_biases_follow_their_experts():
    tm = builtin("gpt-oss-20b")
    types = {t.name: t.dtype for t in tm.tensors}                 # the MXFP4 checkpoint as it is
    p = place(tm, types, resolve_hardware(vram=[8.0], ram=64.0), PlanRequest(run=RunConfig(threads=16)))
    assert p.memory.fits
    moved = 0
    for t in tm.tensors:
        if t.role.endswith("_exps") and t.name.endswith(".bias"):
            weight = t.name[:-len(".bias")] + ".weight"
            assert p.devices[t.name] == p.devices[weight], t.name
            assert p.types[t.name] == "f32"
            moved += p.devices[t.name] == "CPU"
    assert moved > 0                                             # some experts did go to the CPU, biases too


def test_qwen3_next_kv_is_attention_layers_plus_state():
    tm = builtin("qwen3-next-80b-a3b")
    types = {r.name: r.type_name for r in quantize(tm, QuantizeSpec(base_type="IQ4_KS")).tensors}
    p = place(tm, types, resolve_hardware(vram=[24.0], ram=128.0), PlanRequest(run=RunConfig(threads=16)))
    # 12 gated-attention layers: K row(q8_0, 256) x 2 heads + V row(q8_0, 512) per cell, 32768 cells;
    # 36 gated delta-net layers: F32 (3 * (2*2048 + 4096) + 128*128*32) per sequence (ik n_embd_v_s)
    full = 12 * (2 * _q8(256) + _q8(512)) * 32768
    state = 36 * 4 * (3 * (2 * 2048 + 4096) + 128 * 128 * 32)
    assert p.memory.kv_cache_bytes == full + state == 506_855_424
    assert p.memory.fits


@pytest.mark.parametrize("model,needs", [("glm-5", "--ram"), ("kimi-k2-thinking", "--ram")])
def test_too_big_models_name_the_budget_they_need(model, needs):
    # without an imatrix (no iq1/iq2 types); with one, GLM-5 fits 24 + 128 at ~1.6 bpw
    with pytest.raises(InfeasibleBudgetError, match=needs):
        plan_doc(model, resolve_hardware(vram=[24.0], ram=128.0), RunConfig(threads=16), has_imatrix=False)


def test_hybrid_kv_read_counts_attention_blocks_and_state_only():
    # Qwen3-Next all on the CPU: per token the 36 recurrent states are read whole at any depth, and only the 12
    # attention blocks read cached cells (bytes per cell from the cache layout: K 2 x row(q8_0, 256) + V row(512))
    from planner.memory import Placement
    from planner.device_speed import device_speeds
    from planner.speed import speed_terms

    tm = builtin("qwen3-next-80b-a3b")
    hw = resolve_hardware(vram=[0.0], ram=256.0)
    cfg = RunConfig(threads=16, ctx=8192)
    mix = {t.name: t.dtype for t in tm.tensors}
    placement = Placement({}, ("CPU",) * tm.params.n_layer, ("CPU",))
    t0, t1 = speed_terms(tm, mix, placement, hw, cfg, (0, 8192))
    bw = device_speeds(hw, cfg)["CPU"].mem_bw_gbs
    state = 36 * 4 * (3 * (2 * 2048 + 4096) + 128 * 128 * 32)
    assert t0.tg["kv_read"] == pytest.approx(state / bw)
    assert t1.tg["kv_read"] - t0.tg["kv_read"] == pytest.approx(12 * (2 * _q8(256) + _q8(512)) * 8192 / bw)
