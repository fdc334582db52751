import itertools
import random

import pytest

from planner.errors import InfeasibleBudgetError
from planner.solver import Group, Objective, Option, solve


def _groups(rnd, n_layers=4, roles=("a", "b")):
    out = []
    types = [("t8", 8), ("t4", 4), ("t2", 2)]
    for layer in range(n_layers):
        for role in roles:
            opts = []
            for dev in ("CUDA0", "CPU"):
                for t, bits in types:
                    b = bits * 100 * (2 if role == "b" else 1)
                    opts.append(Option(t, dev, b, loss=(1.0 + (layer == 0)) * 2.0 ** -bits * rnd.uniform(0.9, 1.1),
                                       seconds=b * (1e-4 if dev == "CPU" else 1e-5)))
            out.append(Group(f"blk.{layer}.{role}", role, layer, (f"blk.{layer}.{role}.weight",), tuple(opts),
                             home="CUDA0"))
    return out


def _brute(groups, cap, max_s):
    best = None
    for combo in itertools.product(*[g.options for g in groups]):
        used = {}
        for o in combo:
            used[o.device] = used.get(o.device, 0) + o.bytes
        if any(used.get(d, 0) > c for d, c in cap.items()):
            continue
        if sum(o.seconds for o in combo) > max_s:
            continue
        loss = sum(o.loss for o in combo)
        best = loss if best is None else min(best, loss)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_aggregated_model_matches_brute_force(seed):
    rnd = random.Random(seed)
    groups = _groups(rnd, n_layers=3)
    cap = {"CUDA0": 2000, "CPU": 4000}
    max_s = 0.25
    sol = solve(groups, cap, Objective("quality", max_seconds=max_s))
    assert sol.status == "OPTIMAL"
    assert sol.loss == pytest.approx(_brute(groups, cap, max_s), rel=1e-6)
    used = {}
    for o in sol.choice.values():
        used[o.device] = used.get(o.device, 0) + o.bytes
    assert all(used.get(d, 0) <= c for d, c in cap.items())


def test_identical_layers_aggregate_into_one_class_per_role():
    rnd = random.Random(0)
    groups = []
    for g in _groups(rnd, n_layers=1):
        for layer in range(50):      # 50 interchangeable copies of each role
            groups.append(Group(f"blk.{layer}.{g.role}", g.role, layer, (f"blk.{layer}.{g.role}.weight",),
                                g.options, home="CUDA0"))
    sol = solve(groups, {"CUDA0": 30000, "CPU": 10**6}, Objective("quality", max_seconds=2.0))
    assert sol.n_classes == 2 and sol.status == "OPTIMAL"


def test_infeasible_raises_with_shortfall():
    rnd = random.Random(1)
    with pytest.raises(InfeasibleBudgetError) as ei:
        solve(_groups(rnd), {"CUDA0": 10, "CPU": 10}, Objective("quality"))
    assert ei.value.shortfall_bytes


def test_shared_type_key_forces_one_type():
    rnd = random.Random(2)
    groups = [Group(g.key, g.role, g.layer, g.tensors, g.options, home=g.home, type_key=g.role)
              for g in _groups(rnd, n_layers=4)]
    sol = solve(groups, {"CUDA0": 2500, "CPU": 4000}, Objective("quality", max_seconds=0.5))
    for role in ("a", "b"):
        assert len({o.type_name for k, o in sol.choice.items() if k.endswith(role)}) == 1


def test_deterministic():
    rnd = random.Random(3)
    groups = _groups(rnd, n_layers=6)
    a = solve(groups, {"CUDA0": 3000, "CPU": 9000}, Objective("quality", max_seconds=0.6))
    b = solve(list(reversed(groups)), {"CUDA0": 3000, "CPU": 9000}, Objective("quality", max_seconds=0.6))
    assert a.choice == b.choice


def test_remembered_signatures_are_the_groups_own():
    """The signatures kept from the previous solve are used only for the very same group objects: a new group
    (even one with the key of an old one) gets its own."""
    import dataclasses

    from planner.solver import _signature, _signatures

    rnd = random.Random(5)
    groups = _groups(rnd, n_layers=3)
    assert _signatures(groups) == [_signature(g) for g in groups]
    changed = [dataclasses.replace(g, role="other") if i % 2 else g for i, g in enumerate(groups)]
    assert _signatures(changed) == [_signature(g) for g in changed]
    assert _signatures(list(reversed(changed))) == [_signature(g) for g in reversed(changed)]
