"""Shorter recipes by merging minor per-role type groups (planner/simplify.py)."""

from __future__ import annotations

import pytest

from planner.quality import QualityModel
from planner.quants import catalogue
from planner.simplify import simplify_mix
from planner.tensors import builtin


@pytest.fixture(scope="module")
def qwen():
    return builtin("qwen3-235b-a22b")


@pytest.fixture(scope="module")
def qm(qwen):
    return QualityModel.build(qwen)


def base_mix(qwen):
    types = {}
    for t in qwen.tensors:
        if t.n_dims < 2 or t.role in ("ffn_gate_inp",):
            continue
        types[t.name] = {"attn_q": "iq5_k", "attn_k": "q8_0", "attn_v": "q8_0", "attn_output": "iq5_k",
                         "token_embd": "q8_0", "output": "q6_K"}.get(t.role, "iq4_ks")
    return types


def run(qwen, qm, types, free, **kw):
    cat = catalogue()
    by = qwen.by_name()
    return simplify_mix(qwen, types, ln_ratio_of=lambda n, ty: qm.k * qm.tensor_loss(n, ty),
                        bytes_of=lambda n, ty: cat.get(ty).tensor_bytes(by[n].shape),
                        device_of=lambda n: "CPU", free_bytes={"CPU": free}, **kw)


def test_one_layer_exception_is_merged(qwen, qm):
    types = base_mix(qwen)
    types["blk.41.attn_q.weight"] = "iq4_k"          # a one-off exception a solver leaves
    s = run(qwen, qm, types, free=1 << 30)
    assert s.types["blk.41.attn_q.weight"] == "iq5_k"
    assert s.groups_after == s.groups_before - 1 and s.merges[0].tensors == 1
    assert s.ln_ratio_cost <= 0.001


def test_memory_blocks_a_merge_upward(qwen, qm):
    types = base_mix(qwen)
    types["blk.41.attn_q.weight"] = "iq4_k"
    s = run(qwen, qm, types, free=0)                  # iq5_k is larger: no room
    # the only other way to remove the exception group is moving every iq5_k attn_q down: too costly
    assert s.types["blk.41.attn_q.weight"] == "iq4_k" or s.ln_ratio_cost <= 0.001


def test_max_rules_forces_merges_and_reports_the_cost(qwen, qm):
    types = base_mix(qwen)
    for layer in range(0, 94, 2):
        types[f"blk.{layer}.ffn_up_exps.weight"] = "iq3_k"      # half the layers a different type
    s = run(qwen, qm, types, free=0, max_rules=6)      # 6 block roles (gate/up tied): one type group each at best
    assert s.groups_before == 7 and s.groups_after == 6
    assert s.types["blk.1.ffn_up_exps.weight"] == "iq3_k"      # merged down: no bytes to merge up
    assert s.types["blk.1.ffn_gate_exps.weight"] == "iq3_k"    # gate follows up (one fused type)
    assert s.ln_ratio_cost > 0.001                     # above the tolerance: the caller must say so
    assert all(m.bytes_delta <= 0 for m in s.merges)   # no free bytes: only merges that shrink


def test_nothing_to_merge(qwen, qm):
    s = run(qwen, qm, base_mix(qwen), free=1 << 30)
    assert s.merges == () and s.groups_after == s.groups_before
