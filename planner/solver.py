"""The optimizer: choose one (quant type, device) option per tensor group with OR-Tools CP-SAT.

Pure and deterministic: no I/O, inputs sorted, fixed seed and worker count.  Groups whose options
have identical bytes, losses and times (typically the same role in interchangeable layers) are
aggregated into classes with one integer count per (class, option): this removes the symmetry that
makes a per-layer model slow (on the headline Qwen3-235B instance: 0.16 s to a proven optimum with classes,
no proof in 30 s without; the technique is orbit aggregation of interchangeable variables, F. Margot, "Symmetry
in Integer Linear Programming", in 50 Years of Integer Programming, Springer 2010) without losing optimality,
since any assignment of the counts within a class costs the same.
Concrete layers are then filled in ascending order, GPU options first, which keeps the emitted
regexes short (layer ranges).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field

from planner.devices import CPU
from planner.errors import InfeasibleBudgetError, SolverError


@dataclass(frozen=True, slots=True)
class Option:
    """One choice for a group: a stored type and a device, with its exact bytes and modelled costs."""

    type_name: str
    device: str
    bytes: int          # exact bytes charged to ``device`` (weights, plus any device-bound extra)
    loss: float         # predicted quality loss contribution
    seconds: float      # predicted seconds per generated token contributed
    pp_seconds: float = 0.0   # predicted seconds per prompt ubatch contributed (PCIe copy of CPU weights)
    home: str = ""            # with :class:`LayerHomes`: the layer's device this option assumes ("" = the group's)
    also_device: str = ""     # a second device this option charges (a tied output on a GPU: token_embd's input
    also_bytes: int = 0       # copy stays on the CPU), and its bytes there


@dataclass(frozen=True, slots=True)
class Group:
    """Tensors that must share one type and one device (e.g. a layer's gate+up experts)."""

    key: str
    role: str
    layer: int | None
    tensors: tuple[str, ...]
    options: tuple[Option, ...]
    home: str = ""                       # the layer's device; options elsewhere cost hand-offs
    handoff_s: float = 0.0               # seconds per token for the round trip when any group of the
                                         # layer is away from home (charged once per layer, not per group)
    type_key: str = ""                   # groups with the same non-empty key must share one type
                                         # (--granularity role / band); devices may still differ


@dataclass(frozen=True, slots=True)
class LayerHomes:
    """Where each repeating layer lives (its attention, KV cache and fixed tensors) as a decision of the model.

    The layers form contiguous ranges in ``order`` (the engines' layer rule: CPU layers first, then the devices
    in device order), any range possibly empty.  Groups of a layer then carry options for every home
    (:attr:`Option.home`); each class's options of home ``h`` are used exactly as often as the class has layers
    in ``h``'s range.  Terms that follow the home and not a group's choice are given per layer and home; terms
    paid once by a device that holds at least one layer (its compute buffer, the network crossings of a remote
    device) per device; ``shared`` corrects the latter for devices of one host (a copy between two devices of one
    rpc-server replaces a crossing of the link) per used device beyond the first.
    """

    order: tuple[str, ...]
    layer_bytes: tuple[dict[str, int], ...]       # per layer: home -> bytes charged to it (KV, fixed tensors)
    layer_s: tuple[dict[str, float], ...]         # per layer: home -> seconds per token
    layer_pp_s: tuple[dict[str, float], ...]      # per layer: home -> seconds per ubatch
    hold_bytes: dict[str, int] = field(default_factory=dict)
    hold_s: dict[str, float] = field(default_factory=dict)
    hold_pp_s: dict[str, float] = field(default_factory=dict)
    alone_bytes: dict[str, int] = field(default_factory=dict)   # charged to a device with the output and no layer
    shared: tuple[tuple[tuple[str, ...], float, float], ...] = ()   # (devices of one host, s, pp_s)

    @property
    def n_layer(self) -> int:
        return len(self.layer_bytes)


@dataclass(frozen=True, slots=True)
class Objective:
    kind: str = "balanced"                # quality | speed | balanced | feasibility (no objective)
    max_seconds: float | None = None      # from --min-tg (placement-dependent part, fixed part removed)
    max_pp_seconds: float | None = None   # from --min-pp, per ubatch (placement-dependent part)
    max_total_bytes: int | None = None    # cap on the weights summed over all devices
    max_loss: float | None = None         # balanced, second step: loss at most this
    work_limit: float = 2.0               # CP-SAT deterministic time (measured here: ~5-6 wall s per unit on
                                          # 2 cores); machine-independent, so a plan does not depend on load
    relative_gap: float = 0.0             # stop when the proven gap is at most this (0 = prove optimality)
    aim_gap: float = 0.0                  # a tightened search may stop within relative_gap but aims at this: with
                                          # coupling rows the decomposition first (planner.solver_lagrange), else a
                                          # target search when it ends near (planner.solver_bounds.AIM_NEAR)
    cpu_first: bool = False               # fill a class's lowest layers with CPU options first (mainline's
                                          # --n-cpu-moe N keeps the FIRST N layers' experts on the CPU)
    workers: int = 1                      # one worker: deterministic, and fastest on 2 cores (measured)
    tighten: bool = False                 # reduced-cost bounds (planner.solver_bounds) from the solution of a
                                          # short first run, then the search on the tightened model
    search_work: float | None = None      # a tightened search that may stop within a gap: its optimisation run
                                          # at most this, the rest to RINS and the target search (the Lagrangian
                                          # decomposition's parts: planner.solver_lagrange.PART_SEARCH_WORK)


# How far a solve got, strongest first: proven optimal; optimal within the requested relative gap; a solution
# without a proof (CP-SAT stopped at its work limit).
STATUS_ORDER = ("OPTIMAL", "OPTIMAL_WITHIN_GAP", "FEASIBLE")


@dataclass(frozen=True, slots=True)
class SolveStep:
    """One CP-SAT solve that produced (part of) a plan: its objective, how far it got, its proven gap."""

    objective: str                        # quality | speed (placement uses speed)
    status: str                           # one of STATUS_ORDER
    gap: float                            # |objective - bound| / |objective| at the end of the solve
    gap_limit: float = 0.0                # the relative gap the solve was allowed to stop at (0: a proof)


def weakest(steps: Sequence[SolveStep]) -> SolveStep:
    """The step with the weakest status (ties: the largest gap): what a plan built from all of them can claim."""
    return max(steps, key=lambda s: (STATUS_ORDER.index(s.status), s.gap))


@dataclass(frozen=True, slots=True)
class Solution:
    choice: dict[str, Option]             # group key -> chosen option
    status: str                           # OPTIMAL | FEASIBLE
    objective: float
    bound: float
    gap: float
    wall_s: float
    n_classes: int
    n_vars: int
    loss: float
    seconds: float
    bytes_by_device: dict[str, int] = field(default_factory=dict)
    scaling_error_bound: float = 0.0      # max change of the objective due to integer scaling
    steps: tuple[SolveStep, ...] = ()     # every solve this solution rests on, in order
    best_loss: float | None = None        # balanced: the loss of the best-quality solve the speed step kept near
    layer_device: tuple[str, ...] = ()    # with LayerHomes: the chosen home of every layer


# Objective coefficients are rounded to integers at this resolution relative to the largest term;
# the reported scaling_error_bound says how much the rounding can move the optimum.
RESOLUTION = 1e7


def _signature(g: Group) -> tuple:
    return (g.role, g.home, g.handoff_s, g.type_key, tuple((o.type_name, o.device, o.bytes, round(o.loss, 12),
                                                            round(o.seconds, 12), round(o.pp_seconds, 12), o.home,
                                                            o.also_device, o.also_bytes)
                          for o in g.options))


# Each group's signature, kept from the previous solve (only its groups, held so that their ids stay theirs): a
# plan solves the same groups two or more times (balanced: quality then speed; --pareto: every point), and the
# signatures cost about 0.05 CPU s per solve on the headline model (566 groups, 35,000 rounded option fields).
_SIGNATURES: dict[int, tuple[Group, tuple]] = {}


def _signatures(groups: Sequence[Group]) -> list[tuple]:
    """:func:`_signature` of every group, remembered from the previous call for the same group objects."""
    global _SIGNATURES
    memo: dict[int, tuple[Group, tuple]] = {}
    out = []
    for g in groups:
        hit = _SIGNATURES.get(id(g))
        sig = hit[1] if hit is not None and hit[0] is g else _signature(g)
        memo[id(g)] = (g, sig)
        out.append(sig)
    _SIGNATURES = memo
    return out


def _cp_model() -> Any:
    """``ortools.sat.python.cp_model``, imported on first use without pandas.

    cp_model imports pandas at module level (0.2-0.3 s of CPU on the 2-core CI machine, about a sixth of the
    headline plan) only for its ``*_series`` helpers and a type alias; the planner never passes pandas objects.
    When pandas is not loaded yet, a stand-in module with the two names the import needs is in place during
    the import only, so a later ``import pandas`` anywhere gets the real one.
    """
    import sys

    if "ortools.sat.python.cp_model" in sys.modules or "pandas" in sys.modules:
        from ortools.sat.python import cp_model
        return cp_model
    import types

    stand_in = types.ModuleType("pandas")
    stand_in.Index = type("Index", (), {})      # type: ignore[attr-defined]
    stand_in.Series = type("Series", (), {})    # type: ignore[attr-defined]
    sys.modules["pandas"] = stand_in
    try:
        from ortools.sat.python import cp_model
    finally:
        del sys.modules["pandas"]
    return cp_model


def solve(groups: Sequence[Group], capacity: Mapping[str, int], objective: Objective,
          *, fixed_seconds: float = 0.0, hint: Solution | None = None, homes: LayerHomes | None = None) -> Solution:
    """Optimal (type, device) per group under per-device byte capacities; with ``homes``, the layers' devices too.

    Raises:
        InfeasibleBudgetError: no assignment fits (shortfall estimated per device).
        SolverError: the time limit passed without any solution.
    """
    cp_model = _cp_model()

    t_start = time.perf_counter()
    groups = sorted(groups, key=lambda g: (g.layer if g.layer is not None else -1, g.key))
    classes: dict[tuple, list[Group]] = {}
    for g, sig in zip(groups, _signatures(groups)):
        classes.setdefault(sig, []).append(g)
    # pruning is per class; a shared type key couples classes, so only prune there within one type
    class_list = _pruned(classes.values())

    m = cp_model.CpModel()
    counts: list[list] = []
    for ci, members in enumerate(class_list):
        opts = members[0].options
        vs = [m.new_int_var(0, len(members), f"n{ci}_{oi}") for oi in range(len(opts))]
        m.add(sum(vs) == len(members))
        counts.append(vs)

    home_terms = _add_homes(m, homes, class_list, counts) if homes is not None else None
    devices = sorted(capacity)
    coupling: list[int] = []            # rows over every class (planner.solver_lagrange): the CPU's, the targets'
    for dev in devices:
        terms = [(v, o.bytes) for members, vs in zip(class_list, counts)
                 for v, o in zip(vs, members[0].options) if o.device == dev and o.bytes]
        terms += [(v, o.also_bytes) for members, vs in zip(class_list, counts)
                  for v, o in zip(vs, members[0].options) if o.also_device == dev and o.also_bytes]
        if home_terms is not None:
            terms += [(v, b) for v, b in home_terms.bytes.get(dev, []) if b]
        if terms:
            # divide by the gcd of the byte counts (tensor sizes share large powers of two): exact, and
            # far smaller coefficients for CP-SAT's LP relaxation
            div = math.gcd(*(c for _, c in terms))
            if dev == CPU:
                coupling.append(len(m.proto.constraints))
            m.add(sum((c // div) * v for v, c in terms) <= max(0, int(capacity[dev])) // div)
    all_opts = [(v, o) for members, vs in zip(class_list, counts) for v, o in zip(vs, members[0].options)]
    # shared type keys: one Boolean per (key, type); a class may only use the key's chosen type
    by_key: dict[str, list[int]] = {}
    key_vars: list[tuple[dict[str, Any], list[int]]] = []      # each key's type Booleans and its classes
    for ci, members in enumerate(class_list):
        if members[0].type_key:
            by_key.setdefault(members[0].type_key, []).append(ci)
    for key, cis in sorted(by_key.items()):
        tnames = sorted({o.type_name for ci in cis for o in class_list[ci][0].options})
        z = {t: m.new_bool_var(f"z[{key},{t}]") for t in tnames}
        key_vars.append((z, cis))
        m.add_exactly_one(z.values())
        for ci in cis:
            size = len(class_list[ci])
            for t in tnames:
                using = [v for v, o in zip(counts[ci], class_list[ci][0].options) if o.type_name == t]
                if using:
                    m.add(sum(using) <= size * z[t])
                else:
                    m.add(z[t] == 0)
    # hand-offs: a layer pays one GPU->CPU->GPU round trip if ANY of its groups is away from home.
    # Classes covering the same layers share y = layers with something away (y >= each class's away count);
    # since layers are filled in the same ascending order, the away parts coincide and y is exact.
    # With layer homes, the same per home: a class's layers of one home are filled in the same order too.
    away_by_layers: dict[tuple[tuple[int, ...], float, str], list[list[Any]]] = {}
    for members, vs in zip(class_list, counts):
        g0 = members[0]
        if g0.handoff_s and g0.layer is not None:
            layers = tuple(sorted(x.layer for x in members if x.layer is not None))
            for home in sorted({o.home for o in g0.options}) if not g0.home else [g0.home]:
                away_by_layers.setdefault((layers, g0.handoff_s, home), []).append(
                    [v for v, o in zip(vs, g0.options) if (o.home or g0.home) == home and o.device != home])
    handoff_vars: list[tuple[Any, Option]] = []
    handoff_away: list[list[list[Any]]] = []
    for (layers, h, _), aways in sorted(away_by_layers.items()):
        handoff_away.append(aways)
        y = m.new_int_var(0, len(layers), f"y{len(handoff_vars)}")
        for away in aways:
            if away:
                m.add(y >= sum(away))
        handoff_vars.append((y, Option("handoff", "", 0, 0.0, h)))
    all_opts += handoff_vars
    if home_terms is not None:
        all_opts += home_terms.costs
    if objective.max_total_bytes is not None:
        div = math.gcd(*(o.bytes for _, o in all_opts if o.bytes)) or 1
        coupling.append(len(m.proto.constraints))
        m.add(sum((o.bytes // div) * v for v, o in all_opts) <= objective.max_total_bytes // div)

    # integer scaling: time in nanoseconds-ish units, loss scaled so both have ~1e-9 resolution
    max_loss = max((o.loss for _, o in all_opts), default=0.0) or 1.0
    max_sec = max((o.seconds for _, o in all_opts), default=0.0) or 1.0
    loss_scale = RESOLUTION / max_loss
    sec_scale = RESOLUTION / max_sec
    if objective.max_seconds is not None:
        budget = objective.max_seconds - fixed_seconds
        coupling.append(len(m.proto.constraints))
        m.add(sum(round(o.seconds * sec_scale) * v for v, o in all_opts) <= math.floor(budget * sec_scale))

    if objective.max_pp_seconds is not None:
        pp = [(v, o.pp_seconds) for v, o in all_opts if o.pp_seconds]
        if objective.max_pp_seconds < 0:
            m.add(sum(v for v, _ in all_opts) < 0)          # even an all-GPU placement is too slow
        elif pp:
            pp_scale = RESOLUTION / max(c for _, c in pp)
            coupling.append(len(m.proto.constraints))
            m.add(sum(round(c * pp_scale) * v for v, c in pp) <= math.floor(objective.max_pp_seconds * pp_scale))
    if objective.max_loss is not None:
        coupling.append(len(m.proto.constraints))
        m.add(sum(round(o.loss * loss_scale) * v for v, o in all_opts if o.loss)
              <= math.floor(objective.max_loss * loss_scale))
    if objective.kind == "feasibility":
        coef = []                                   # any assignment that meets every constraint
    elif objective.kind == "speed":
        coef = [(v, o.seconds * sec_scale + o.loss * loss_scale * 1e-6) for v, o in all_opts]
    elif objective.kind == "quality":
        coef = [(v, o.loss * loss_scale + o.seconds * sec_scale * 1e-6) for v, o in all_opts]
    else:
        raise ValueError(f"unknown objective {objective.kind!r}")
    int_coef = [(v, round(c)) for v, c in coef]
    if int_coef:
        m.minimize(sum(c * v for v, c in int_coef if c))

    if hint is not None:
        # a previous solution (e.g. the best-quality plan, feasible for the balanced second step), hinted completely
        # (the auxiliary variables too) where it can be: a tightened solve then takes its objective as the bound
        # to cut by, and no probe when it lies within the probe's guess (planner.solver_bounds.tightened_search)
        value: dict[int, int] = {}
        for members, vs in zip(class_list, counts):
            opts = members[0].options
            chosen = [hint.choice.get(g.key) for g in members]
            for v, o in zip(vs, opts):
                value[v.index] = sum(1 for c in chosen if c == o)
                m.add_hint(v, value[v.index])
        for (y, _), aways in zip(handoff_vars, handoff_away):
            m.add_hint(y, max((sum(value.get(v.index, 0) for v in away) for away in aways), default=0))
        for z, cis in key_vars:
            used_types = {o.type_name for ci in cis for v, o in zip(counts[ci], class_list[ci][0].options)
                          if value.get(v.index)}
            for t, zt in z.items():
                m.add_hint(zt, int(used_types == {t}))
        if home_terms is not None and homes is not None and len(hint.layer_device) == homes.n_layer:
            home_terms.hint(m, hint.layer_device, homes, value)
    if objective.tighten and int_coef:
        from planner.solver_bounds import tightened_search

        # each class's count on each device: a neighbourhood that keeps the placement and re-chooses the types
        kept = [[v.index for v, o in zip(vs, members[0].options) if o.device == dev]
                for members, vs in zip(class_list, counts) for dev in sorted({o.device for o in members[0].options})]
        solver, status = tightened_search(cp_model, m, objective, coupling, kept)
    else:
        solver, status = _run(cp_model, m, objective, objective.work_limit)
    name = solver.status_name(status)
    if status == cp_model.INFEASIBLE:
        raise InfeasibleBudgetError("no assignment of types and devices fits the budgets",
                                    shortfall_bytes=_shortfall(class_list, capacity))
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise SolverError(f"CP-SAT ended with status {name} after {solver.wall_time:.1f} s",
                          hint="use a coarser --granularity or fewer --allow types")

    choice: dict[str, Option] = {}
    loss = seconds = 0.0
    used: dict[str, int] = {d: 0 for d in devices}
    layer_device: tuple[str, ...] = ()
    if home_terms is not None and homes is not None:
        layer_device = tuple(next(h for h, v in zip(homes.order, row) if solver.value(v)) for row in home_terms.x)
        for dev, vb in home_terms.bytes.items():
            used[dev] = used.get(dev, 0) + sum(solver.value(v) * b for v, b in vb)
        seconds += sum(solver.value(v) * o.seconds for v, o in home_terms.costs)
    for members, vs in zip(class_list, counts):
        opts = members[0].options
        n = [solver.value(v) for v in vs]
        # fill layers in ascending order: GPU options first, then by option order (type order); with layer
        # homes, each home's layers (contiguous) from that home's options
        order = sorted(range(len(opts)), key=lambda i: ((opts[i].device == "CPU") != objective.cpu_first, i))
        if layer_device:
            by_home: dict[str, list[Group]] = {}
            for g in members:
                by_home.setdefault(layer_device[g.layer] if g.layer is not None else "", []).append(g)
            its = {h: iter(gs) for h, gs in by_home.items()}
        else:
            its = {"": iter(members)}
        for oi in order:
            o = opts[oi]
            for _ in range(n[oi]):
                g = next(its[o.home if layer_device else ""])
                choice[g.key] = o
                loss += o.loss
                seconds += o.seconds
                used[o.device] = used.get(o.device, 0) + o.bytes
                if o.also_bytes:
                    used[o.also_device] = used.get(o.also_device, 0) + o.also_bytes
    seconds += sum(solver.value(y) * o.seconds for y, o in handoff_vars)
    err = 0.5 * sum(len(members) for members in class_list) / loss_scale
    obj = solver.objective_value / loss_scale if objective.kind != "speed" else solver.objective_value / sec_scale
    bound = solver.best_objective_bound / (loss_scale if objective.kind != "speed" else sec_scale)
    gap = abs(obj - bound) / max(abs(obj), 1e-30)
    if status == cp_model.OPTIMAL and gap > 1e-9:
        name = "OPTIMAL_WITHIN_GAP"      # CP-SAT says OPTIMAL when relative_gap_limit is met; we say which
    return Solution(choice=choice, status=name, objective=obj, bound=bound, gap=gap,
                    wall_s=time.perf_counter() - t_start, n_classes=len(class_list),
                    n_vars=sum(len(v) for v in counts), loss=loss, seconds=seconds + fixed_seconds,
                    bytes_by_device=used, scaling_error_bound=err,
                    steps=(SolveStep(objective.kind, name, gap, objective.relative_gap),), layer_device=layer_device)


def _run(cp_model: Any, m: Any, objective: Objective, work: float) -> tuple[Any, int]:
    """One CP-SAT search of ``m`` within ``work`` deterministic units."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = objective.workers
    # The limit is CP-SAT's deterministic time (work units), so the same inputs give the same plan on a slow
    # CI box and a fast desktop; wall time is only a far backstop against a hang: ~100x the ~5-6 wall s a unit
    # takes here unloaded, since a nearer one made plans depend on the machine's load (at load 7-10 on 2 cores a
    # 60 s-per-unit backstop cut runs short: another plan for qwen3-30b-a3b --vram 12, a multi-GPU golden failed).
    solver.parameters.max_deterministic_time = work
    solver.parameters.max_time_in_seconds = objective.work_limit * 600
    solver.parameters.random_seed = 0
    # full LP relaxation at every node: measured 1.5-2x faster to a proof on this multiple-choice knapsack
    solver.parameters.linearization_level = 2
    solver.parameters.relative_gap_limit = objective.relative_gap
    if lp_guided(objective):
        solver.parameters.search_branching = cp_model.LP_SEARCH
    return solver, solver.solve(m)


def lp_guided(objective: Objective) -> bool:
    """Whether a search branches the way the LP relaxation's solution points (CP-SAT's ``LP_SEARCH``) instead of
    its default: for a model whose objective or rows are the seconds terms (the speed objective; quality under
    ``--min-tg``/``--min-pp``), not tightened by reduced costs.  Only the search order changes, never the model: a
    proof is a proof either way.  Measured in CP-SAT work (deterministic time) on the Qwen3-235B instances: the
    headline's speed step 0.147 -> 0.073 (the same proven optimum), the six ``--pareto 8`` points under a time row
    4.60 -> 0.85 in all (each proven or within its 0.01 % gap, the same optima), 2x RTX 3090's speed step 0.514 ->
    0.347 and proven OPTIMAL (it stopped within its 0.1 % gap before); the best-quality step (default 0.090,
    LP-guided 0.209) and the tightened runs (DeepSeek-R1/Kimi-K2/4x RTX 3090: mixed) keep the default."""
    return (objective.kind == "speed" or (objective.kind == "quality" and (
        objective.max_seconds is not None or objective.max_pp_seconds is not None))) and not objective.tighten


@dataclass(frozen=True, slots=True)
class _HomeTerms:
    x: list[list[Any]]                              # x[layer][home index]: the layer lives there
    bytes: dict[str, list[tuple[Any, int]]]         # device -> (variable, bytes) capacity terms
    costs: list[tuple[Any, Option]]                 # (variable, pseudo-option carrying seconds / pp seconds)
    hold: dict[str, Any]                            # device -> holds at least one layer
    hosts: list[tuple[Any, Any, list[str]]]         # (any used, extra used, devices) per host with several
    alone: list[tuple[Any, list[Any], str]]         # (output alone on a GPU holding no layer, output counts, device)

    def hint(self, m: Any, layer_device: Sequence[str], homes: LayerHomes, counts: Mapping[int, int]) -> None:
        """Hint every variable of the homes from a layout and the hinted option counts (by variable index)."""
        for il, row in enumerate(self.x):
            for h, v in zip(homes.order, row):
                m.add_hint(v, int(layer_device[il] == h))
        for d, v in self.hold.items():
            m.add_hint(v, int(d in layer_device))
        for alone, outs, d in self.alone:
            # its row: alone >= outputs there - holds a layer (the least value: it only adds bytes)
            m.add_hint(alone, int(sum(counts.get(v.index, 0) for v in outs) > int(d in layer_device)))
        for any_used, extra, devs in self.hosts:
            used = sum(1 for d in devs if d in layer_device)
            m.add_hint(any_used, int(used > 0))
            m.add_hint(extra, max(0, used - 1))


def _add_homes(m: Any, homes: LayerHomes, class_list: list[list[Group]], counts: list[list[Any]]) -> _HomeTerms:
    """The layer-home variables of :class:`LayerHomes`: one Boolean per (layer, home), contiguous ranges in
    ``homes.order``, each class's per-home option counts tied to its layers there, the per-layer and per-held-device
    terms as capacity terms and pseudo-options (bytes 0: they are not weights, so ``max_total_bytes`` skips them)."""
    order = homes.order
    n = homes.n_layer
    x = [[m.new_bool_var(f"x{il}_{j}") for j in range(len(order))] for il in range(n)]
    for il in range(n):
        m.add_exactly_one(x[il])
    for il in range(n - 1):
        # contiguous ranges: the home index never decreases from one layer to the next
        for j in range(len(order) - 1):
            m.add(sum(x[il][:j + 1]) >= sum(x[il + 1][:j + 1]))
    for members, vs in zip(class_list, counts):
        g0 = members[0]
        if g0.home or g0.layer is None:
            continue
        layers = [g.layer for g in members if g.layer is not None]
        for j, h in enumerate(order):
            using = [v for v, o in zip(vs, g0.options) if o.home == h]
            m.add(sum(using) == sum(x[il][j] for il in layers))
    by_dev: dict[str, list[tuple[Any, int]]] = {}
    costs: list[tuple[Any, Option]] = []
    for il in range(n):
        for j, h in enumerate(order):
            by_dev.setdefault(h, []).append((x[il][j], int(homes.layer_bytes[il].get(h, 0))))
            s, pp = homes.layer_s[il].get(h, 0.0), homes.layer_pp_s[il].get(h, 0.0)
            if s or pp:
                costs.append((x[il][j], Option("layer", h, 0, 0.0, s, pp)))
    held = sorted(set(homes.hold_bytes) | set(homes.hold_s) | set(homes.hold_pp_s)
                  | {d for devs, _, _ in homes.shared for d in devs})
    hold = {}
    alones: list[tuple[Any, list[Any], str]] = []
    for d in held:
        if d not in order:
            continue
        j = order.index(d)
        hold[d] = m.new_bool_var(f"hold[{d}]")
        for il in range(n):
            m.add(hold[d] >= x[il][j])
        m.add(hold[d] <= sum(x[il][j] for il in range(n)))      # exactly "holds a layer": no phantom hold
        if homes.hold_bytes.get(d):
            by_dev.setdefault(d, []).append((hold[d], int(homes.hold_bytes[d])))
        outs = [v for members, vs in zip(class_list, counts) for v, o in zip(vs, members[0].options)
                if members[0].role == "output" and o.device == d]
        if homes.alone_bytes.get(d) and outs:
            alone = m.new_bool_var(f"alone[{d}]")
            m.add(alone >= sum(outs) - hold[d])
            alones.append((alone, outs, d))
            by_dev.setdefault(d, []).append((alone, int(homes.alone_bytes[d])))
        if homes.hold_s.get(d) or homes.hold_pp_s.get(d):
            costs.append((hold[d], Option("hold", d, 0, 0.0, homes.hold_s.get(d, 0.0), homes.hold_pp_s.get(d, 0.0))))
    hosts = []
    for k, (devs, s, pp) in enumerate(homes.shared):
        hs = [hold[d] for d in devs if d in hold]
        if len(hs) < 2:
            continue
        any_used = m.new_bool_var(f"host{k}")
        for h in hs:
            m.add(any_used >= h)
        extra = m.new_int_var(0, len(hs) - 1, f"extra{k}")
        m.add(extra == sum(hs) - any_used)
        costs.append((extra, Option("shared", "", 0, 0.0, s, pp)))
        hosts.append((any_used, extra, [d for d in devs if d in hold]))
    return _HomeTerms(x, by_dev, costs, hold, hosts, alones)


def _dominated(a: Option, b: Option) -> bool:
    """b is at least as good as a in every constraint and objective term (same device and home)."""
    return (a.device == b.device and a.home == b.home and b.bytes <= a.bytes and b.loss <= a.loss and b.seconds <= a.seconds
            and b.pp_seconds <= a.pp_seconds and a.also_device == b.also_device and b.also_bytes <= a.also_bytes
            and (b.bytes, b.loss, b.seconds, b.pp_seconds, b.also_bytes)
            != (a.bytes, a.loss, a.seconds, a.pp_seconds, a.also_bytes))


# Each class's kept options (:func:`_pruned`) from the previous solve, keyed on the options tuple itself (held, so
# that its id stays its own): the balanced plan prunes the same classes for its quality and speed steps (a two-GPU
# plan: ~50,000 option comparisons per solve).
_PRUNED: dict[tuple[int, bool], tuple[tuple[Option, ...], tuple[Option, ...]]] = {}


def _pruned(classes: Iterable[list[Group]]) -> list[list[Group]]:
    """Every class without its dominated options (exact: swapping a dominated choice never hurts); a class with a
    shared type key only within one type.  Equal options keep the first (candidate order = preference order)."""
    import dataclasses

    global _PRUNED
    memo: dict[tuple[int, bool], tuple[tuple[Option, ...], tuple[Option, ...]]] = {}
    out = []
    for members in classes:
        opts, same_type_only = members[0].options, bool(members[0].type_key)
        hit = _PRUNED.get((id(opts), same_type_only))
        keep = hit[1] if hit is not None and hit[0] is opts else _kept_options(opts, same_type_only)
        memo[(id(opts), same_type_only)] = (opts, keep)
        out.append(members if len(keep) == len(opts) else [dataclasses.replace(g, options=keep) for g in members])
    _PRUNED = memo
    return out


def _kept_options(opts: tuple[Option, ...], same_type_only: bool) -> tuple[Option, ...]:
    """The options of one class that :func:`_pruned` keeps."""
    keep = []
    for i, a in enumerate(opts):
        if any(_dominated(a, b) and (not same_type_only or a.type_name == b.type_name) for b in opts):
            continue
        if any((a.device, a.bytes, a.loss, a.seconds, a.pp_seconds, a.home, a.also_device, a.also_bytes)
               == (b.device, b.bytes, b.loss, b.seconds, b.pp_seconds, b.home, b.also_device, b.also_bytes)
               for b in opts[:i]):
            continue
        keep.append(a)
    return tuple(keep)


def _shortfall(class_list: list[list[Group]], capacity: Mapping[str, int]) -> dict[str, int]:
    """Lower bound of the bytes missing: every group at its smallest option, anywhere."""
    need = sum(min(o.bytes for o in members[0].options) * len(members) for members in class_list)
    have = sum(max(0, c) for c in capacity.values())
    if need > have:
        return {"all devices": need - have}
    return {d: -c for d, c in capacity.items() if c < 0}
