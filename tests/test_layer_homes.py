"""Layer homes: every layer's device as a decision of the CP-SAT model (planner.solver.LayerHomes), used by cluster
plans to choose how many layers each host takes jointly with the quant types.

The checks are against independent computations, not against the layered model's own numbers:

* the per-layer/per-home split of the fixed terms adds back up to :func:`planner.groups.build_groups` on any
  contiguous layout (the fixed-layout model, tested on its own);
* the once-per-device link terms add up to :func:`planner.network.pass_cost` of the whole layout (the network
  physics, tested against the harness logs);
* brute force: every contiguous split of the 8-layer harness model over (main CPU, remote CPU, main GPU) solved as
  a fixed-layout model (45 solves); the layered model's optimum equals the best of them, for the speed and the
  quality objective;
* zero remote layers is chosen when the link makes the remote host slower than keeping the layers home, and
  remote layers are chosen over the same link when it is fast.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from planner.cluster_flags import cluster_from_flags
from planner.cluster_plan import cluster_budgets, cluster_speeds, layer_order, link_terms, plan_cluster
from planner.errors import InfeasibleBudgetError
from planner.groups import Budget, build_groups, capacities, solver_copies
from planner.layered_groups import build_layered_groups, layered_capacities
from planner.hardware import resolve_hardware
from planner.compute_buffers import entry_of
from planner.devices import is_gpu
from planner.memory import CPU, Placement, compute_buffer_bytes
from planner.network import pass_cost
from planner.planning import _objective, solve_layered
from planner.quality import QualityModel
from planner.request import PlanRequest
from planner.runconfig import RunConfig
from planner.solver import solve
from planner.source import load_model

FIX = Path(__file__).parent / "fixtures" / "rpc"
MIB = 1 << 20
GIB = 1 << 30


def _tiny(link: str = "bw:10gbe", main_bw: float | None = None, remote: str = ""):
    """The harness model (8 layers, 15.5 MiB in bf16) on a main host with a 9 MiB GPU and 10 MiB of RAM, and a
    16 MiB box: it fits neither the GPU nor the RAM alone."""
    tmap = load_model(str(FIX / "rpc8.header.gguf"), check_size=False)
    hw = resolve_hardware(vram=[9 * MIB / GIB], ram=10 * MIB / GIB, ram_bw=main_bw)
    cluster = cluster_from_flags(hw, [f"box2=addr:10.0.0.2,ram:{16 * MIB / GIB},{link}{remote}"])
    run = RunConfig(engine="mainline", ctx=512, load="mmap", os_reserve_bytes=0, gpu_margin_bytes=0)
    return tmap, cluster, run


def _layouts(n: int, order: tuple[str, ...]):
    """Every contiguous layout of n layers over order (ranges may be empty)."""
    for cut in itertools.combinations_with_replacement(range(n + 1), len(order) - 1):
        bounds = (0, *cut, n)
        yield tuple(order[j] for j in range(len(order)) for _ in range(bounds[j + 1] - bounds[j]))


def _placement(tmap, layout, devs):
    return Placement({t.name: (layout[t.layer] if t.layer is not None else CPU) for t in tmap.tensors},
                     tuple(layout), tuple(devs))


def test_per_layer_terms_add_up_to_the_fixed_layout_model():
    tmap, cluster, run = _tiny()
    request = PlanRequest(run=run, allow=("Q8_0", "Q4_0"), floors=False)
    devs, sizes, labels = cluster_budgets(cluster)
    budget = Budget(devs, sizes, labels)
    speeds = cluster_speeds(cluster, run)
    order = layer_order(devs)
    hold_s, hold_pp_s, _ = link_terms(tmap, cluster, run, order)
    groups, fixed, fixed_time, homes = build_layered_groups(tmap, order, budget, cluster.main, run, request=request,
                                                            quality=None, speeds=speeds)
    n = tmap.params.n_layer
    checked = 0
    for layout in _layouts(n, order):
        g2, fixed2, time2 = build_groups(tmap, layout, budget, cluster.main, run, types=None, request=request,
                                         speeds=speeds)
        tg = fixed_time["tg_s"] + sum(homes.layer_s[il][layout[il]] for il in range(n))
        pp = fixed_time["pp_s"] + sum(homes.layer_pp_s[il][layout[il]] for il in range(n))
        assert tg == pytest.approx(time2["tg_s"], rel=1e-12) and pp == pytest.approx(time2["pp_s"], rel=1e-12)
        # bytes: the fixed tensors per device, and capacities (KV and compute buffers of the devices used)
        cap2 = capacities(tmap, layout, budget, run, fixed2)
        cap = layered_capacities(tmap, budget, run, fixed)
        for d in devs:
            held = d in layout
            mine = cap[d] - sum(homes.layer_bytes[il][d] for il in range(n) if layout[il] == d) \
                - (homes.hold_bytes.get(d, 0) if held else 0)
            if d != "box2/CPU" or held:      # the fixed-layout model charges a CPU its compute buffer always
                # the layered model reserves the largest compute buffer a device's position allows (it cannot
                # know which layout the solver picks); the fixed layout charges the entry it has
                # (compute_buffers.entry_of): swapping the one for the other gives the same capacity
                if held and d in homes.hold_bytes:
                    actual = compute_buffer_bytes(tmap, run, holds_layers=True, holds_output=False,
                                                  is_gpu=is_gpu(d), entry=entry_of(layout, d, CPU),
                                                  copies=solver_copies(tmap, budget, run))
                    assert homes.hold_bytes[d] >= actual
                    mine += homes.hold_bytes[d] - actual
                assert mine == cap2[d], (layout, d)
        # every layer group has the fixed-layout model's options for its layer's device
        opts = {g.key: g.options for g in groups}
        for g in g2:
            if g.layer is not None:
                mine_opts = [replace(o, home="") for o in opts[g.key] if o.home == layout[g.layer]]
                assert mine_opts == list(g.options), g.key
        # the link terms: what pass_cost says the layout costs on the network
        net = pass_cost(tmap, _placement(tmap, layout, devs), cluster, run, n_tokens=1, depth=0).seconds
        assert net == pytest.approx(hold_s["box2/CPU"] if "box2/CPU" in layout else 0.0, rel=1e-12)
        net_pp = pass_cost(tmap, _placement(tmap, layout, devs), cluster, run, n_tokens=min(run.ubatch, run.batch),
                           depth=0).seconds
        assert net_pp == pytest.approx(hold_pp_s["box2/CPU"] if "box2/CPU" in layout else 0.0, rel=1e-12)
        checked += 1
    assert checked == 45          # C(8 + 2, 2) layouts of 8 layers over 3 devices


def _tiny_layered(objective: str):
    """:func:`_tiny` with what solve_layered takes: (tmap, cluster, run, request, quality, budget, order, and its
    keyword arguments: speeds, the link terms)."""
    tmap, cluster, run = _tiny()
    request = PlanRequest(run=run, allow=("Q8_0", "Q4_0"), floors=False, objective=objective)
    quality = QualityModel.build(tmap)
    devs, sizes, labels = cluster_budgets(cluster)
    budget = Budget(devs, sizes, labels)
    speeds = cluster_speeds(cluster, run)
    order = layer_order(devs)
    hold_s, hold_pp_s, shared = link_terms(tmap, cluster, run, order)
    return tmap, cluster, run, request, quality, budget, order, dict(speeds=speeds, hold_s=hold_s,
                                                                     hold_pp_s=hold_pp_s, shared=shared)


@pytest.mark.parametrize("objective", ["speed", "quality"])
def test_the_chosen_split_is_the_best_of_every_split(objective):
    tmap, cluster, run, request, quality, budget, order, kw = _tiny_layered(objective)
    devs, speeds = budget.devices, kw["speeds"]
    layout, sol, _ = solve_layered(tmap, cluster.main, budget, request, quality, order, **kw)
    assert sol.status == "OPTIMAL"
    best: dict[tuple, float] = {}
    ub = min(run.ubatch, run.batch)
    for cand in _layouts(tmap.params.n_layer, order):
        placement = _placement(tmap, cand, devs)
        net = {"tg_s": pass_cost(tmap, placement, cluster, run, n_tokens=1, depth=0).seconds,
               "pp_s": pass_cost(tmap, placement, cluster, run, n_tokens=ub, depth=0).seconds}
        groups, fixed, fixed_time = build_groups(tmap, cand, budget, cluster.main, run, types=None,
                                                 request=request, quality=quality, speeds=speeds, extra_time=net)
        cap = capacities(tmap, cand, budget, run, fixed)
        if any(c < 0 for c in cap.values()):
            continue
        try:
            s = solve(groups, cap, _objective(request, quality, False, fixed_time), fixed_seconds=fixed_time["tg_s"])
        except InfeasibleBudgetError:          # this split has no feasible assignment
            continue
        assert s.status == "OPTIMAL"
        best[cand] = s.seconds if objective == "speed" else s.loss
    assert len(best) > 5
    top = min(best.values())
    mine = sol.seconds if objective == "speed" else sol.loss
    assert mine == pytest.approx(top, rel=1e-6)
    # and the split it chose is one whose own optimum is that value
    assert best[layout] == pytest.approx(top, rel=1e-6)


def test_zero_remote_layers_when_the_link_is_slow_and_remote_layers_when_it_is_fast():
    """The same hosts; the main host's RAM is slow (5 GB/s) and the box's fast (400 GB/s): over a fast link the
    fastest plan puts layers on the box, over a link with 20 ms of latency it keeps every layer home."""
    for link, want_remote in (("bw:100gbe,lat:1us", True), ("bw:10gbe,lat:20ms", False)):
        tmap, cluster, run = _tiny(link=link, main_bw=5.0, remote=",ram-bw:400,cores:32")
        request = PlanRequest(run=run, allow=("Q4_0",), floors=False, objective="speed")
        cp = plan_cluster(tmap, cluster, request, None, model_path="t.gguf")
        assert (cp.remote_layers["box2/CPU"] > 0) == want_remote, (link, cp.plan.layer_device)
        assert cp.plan.solver is not None and cp.plan.solver.status == "OPTIMAL"
        assert all(d.fits for d in cp.plan.memory.devices)


@pytest.mark.parametrize("objective", ["speed", "quality"])
def test_a_solution_hints_every_variable_of_the_layered_model_feasibly(objective, monkeypatch):
    """A layered solution handed to the next solve (the balanced speed step's hint, a long try's) hints every
    variable of the layered model, the homes' auxiliaries included (``alone``: the output on a GPU that holds no
    layer), and the hinted point meets every row (planner.solver_bounds.objective_if_feasible, exact arithmetic).
    With one variable unhinted the tightened search ignored the hint and probed from the LP (the Kimi-K2 two-box
    plan of docs/rpc.md: its speed step ended 5.48 % from its bound, 0.50 % with the hint complete)."""
    import planner.solver_bounds as bounds_mod

    tmap, cluster, run, request, quality, budget, order, kw = _tiny_layered(objective)
    groups, fixed, fixed_time, homes = build_layered_groups(tmap, order, budget, cluster.main, run, request=request,
                                                            quality=quality, **kw)
    assert homes.alone_bytes                    # the model has the auxiliary this test is about
    cap = layered_capacities(tmap, budget, run, fixed)
    _, sol, _ = solve_layered(tmap, cluster.main, budget, request, quality, order, **kw)
    seen = []
    real = bounds_mod.tightened_search

    def capture(cp_model, m, objective, coupling=(), kept=()):
        p = m.proto
        given = dict(zip(p.solution_hint.vars, p.solution_hint.values))
        point = [int(given.get(j, -1)) for j in range(len(p.variables))]
        seen.append(([p.variables[j].name for j in range(len(p.variables)) if j not in given],
                     bounds_mod.objective_if_feasible(p, point)))
        return real(cp_model, m, objective, coupling, kept)

    monkeypatch.setattr(bounds_mod, "tightened_search", capture)
    obj = _objective(request, quality, False, fixed_time)
    again = solve(groups, cap, replace(obj, tighten=True), homes=homes, hint=sol, fixed_seconds=fixed_time["tg_s"])
    missing, value = seen[-1]
    assert missing == []
    assert value is not None
    assert again.objective == pytest.approx(sol.objective, rel=1e-9)     # the same optimum, from its own hint


def test_a_cluster_plan_prints_its_own_speed_and_the_fastest_micro_batch_that_fits():
    """A cluster plan's speed is the cluster estimate (remote devices, the link) under the plan's own run
    configuration, the -ub and load mode it chose, not the request's; and of the micro-batches whose compute buffers
    fit, it takes the one that estimate predicts the fastest prompt processing for (over this link the smallest:
    the one-box rule, the largest that fits, ran it at -ub 4096, 1.5x slower, and printed the PP of -ub 512)."""
    from planner.cluster_plan import cluster_speed
    from planner.memory import memory_report
    from planner.runconfig import UBATCH_CHOICES

    tmap, cluster, run = _tiny()
    run = replace(run, engine="ik")
    request = PlanRequest(run=run, allow=("q8_0", "q4_0"), floors=False, objective="speed", ub_auto=True,
                          load_auto=True)
    plan = plan_cluster(tmap, cluster, request, None, model_path="t.gguf").plan
    devs, sizes, _ = cluster_budgets(cluster)
    placement = Placement(plan.devices, plan.layer_device, devs, output_device=plan.output_device)
    speeds = cluster_speeds(cluster, run)
    own = cluster_speed(tmap, plan.types, placement, cluster, plan.run, speeds)
    assert (plan.speed.tg_tps, plan.speed.pp_tps) == (own.tg_tps, own.pp_tps)
    fitting = [ub for ub in UBATCH_CHOICES if memory_report(
        tmap, plan.types, placement, sizes, replace(plan.run, ubatch=ub, batch=max(plan.run.batch, ub))).fits]
    assert len(fitting) > 1                     # a choice was made
    for ub in fitting:
        other = cluster_speed(tmap, plan.types, placement, cluster,
                              replace(plan.run, ubatch=ub, batch=max(plan.run.batch, ub)), speeds)
        assert other.pp_tps <= plan.speed.pp_tps
