"""The planner's memos (issue 10, solver speed) answer exactly what the uncached computations answer.

candidate_types is memoized on the parts of a tensor it reads; build_groups' answer is reused across the joint plans
of one model on one machine.  Both must be invisible: the reference here is the uncached function itself, run on
every tensor of the built-in headline model and of DeepSeek-R1 (MLA, dense + MoE layers) under each option that
changes the candidate list.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner import groups as groups_mod
from planner import planning
from planner.groups import Budget, _candidate_types, build_groups, candidate_types, layer_split, plan_floor
from planner.hardware import resolve_hardware
from planner.quality import QualityModel
from planner.request import PlanRequest
from planner.runconfig import RunConfig
from planner.source import load_model


@pytest.mark.parametrize("model", [None, "deepseek-r1"])
def test_candidate_types_memo_matches_the_uncached_rule(model):
    tm = load_model(model)
    hw = resolve_hardware(vram=[24.0], ram=96.0)
    budget = Budget.from_hardware(hw)
    floor = plan_floor(tm, budget, PlanRequest(run=RunConfig()))
    assert floor is not None
    groups_mod._CANDIDATES.clear()
    variants = [dict(allow=None, deny=(), has_imatrix=True, floor=floor),
                dict(allow=None, deny=("iq4_k",), has_imatrix=False, floor=floor),
                dict(allow=None, deny=(), has_imatrix=False, floor=None, ignore_imatrix_rules=True),
                dict(allow=("q8_0", "iq4_xs", "q4_0_r8"), deny=(), has_imatrix=True, floor=floor)]
    checked = 0
    for t in tm.tensors:
        if t.n_dims < 2:
            continue
        for kw in variants:
            for on_gpu in (True, False):
                args = dict(kw, on_gpu=on_gpu)
                args.setdefault("ignore_imatrix_rules", False)
                want = _candidate_types(t, "ik", **args)
                assert candidate_types(t, "ik", **args) == want, (t.name, args)
                assert candidate_types(t, "ik", **args) == want, (t.name, args)    # the memoized answer
                checked += 1
    assert checked > 1000
    # a floor only applies to its roles: the memo must not hand attn_v's floored list to attn_q of the same shape
    attn_v = next(t for t in tm.tensors if t.name.endswith("attn_v.weight") or t.name.endswith("attn_kv_b.weight"))
    assert candidate_types(attn_v, "ik", allow=None, deny=(), has_imatrix=True, on_gpu=True, floor=floor) == \
        _candidate_types(attn_v, "ik", allow=None, deny=(), has_imatrix=True, on_gpu=True, floor=floor,
                         ignore_imatrix_rules=False)


def test_groups_are_reused_only_for_the_same_inputs_within_pareto():
    tm = load_model(None)
    hw = resolve_hardware(vram=[24.0], ram=96.0)
    budget = Budget.from_hardware(hw)
    q = QualityModel.build(tm)
    req = PlanRequest(run=RunConfig(threads=hw.threads_default, ctx=32768))
    split = layer_split(tm.params.n_layer, budget, 0)
    assert planning._GROUPS_CACHE is None          # only pareto_plans turns the reuse on
    planning._GROUPS_CACHE = {}
    try:
        _check_reuse(tm, hw, budget, q, req, split)
    finally:
        planning._GROUPS_CACHE = None


def _check_reuse(tm, hw, budget, q, req, split):

    def groups_of(request, layer_device=split):
        return planning._groups(tm, layer_device, budget, hw, request, types=None, quality=q, speeds=None,
                                extra_time=None)

    first = groups_of(req)
    fresh = build_groups(tm, split, budget, hw, req.run, types=None, request=req, quality=q)
    assert first == fresh
    # what --pareto changes between points (objective, --min-tg) reuses the groups
    again = groups_of(replace(req, objective="quality", min_tg=12.0))
    assert again == fresh and again[0][0] is first[0][0]
    # a different context (KV bytes, compute) or layer split builds them again
    other_ctx = groups_of(replace(req, run=replace(req.run, ctx=8192)))
    assert other_ctx == build_groups(tm, split, budget, hw, replace(req.run, ctx=8192), types=None, request=req,
                                     quality=q)
    moved = layer_split(tm.params.n_layer, budget, 8)
    assert groups_of(req, moved)[0] == build_groups(tm, moved, budget, hw, req.run, types=None, request=req,
                                                    quality=q)[0]
    # a request field build_groups reads (the type menu) is part of the key
    denied = replace(req, deny=("q8_0",))
    assert groups_of(denied) == build_groups(tm, split, budget, hw, req.run, types=None, request=denied, quality=q)
    assert all(o.type_name != "q8_0" for g in groups_of(denied)[0] for o in g.options)
