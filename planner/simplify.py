"""Shorter recipes: merge a role's minor type groups into a neighbouring type when it costs no measurable quality.

The solver optimises bytes, time and loss per layer, so its mixes carry one-off exceptions (``blk\\.41\\.attn_q
\\.weight=iq4_k``) that buy a negligible loss.  :func:`simplify_mix` removes them greedily: a *type group* is the
tensors of one role stored in one type; merging it moves them to another type the role already uses (or, to meet
``max_rules`` with ``count_rules`` given, a type another rule writes when that removes a rule).  A merge is
taken when

* every device stays within its free bytes (the caller passes what is left after the plan), and
* the predicted ln PPL ratio rises by at most ``tolerance`` (default 0.001, i.e. 0.1 % of PPL: below what a
  wiki.test.raw run resolves, +-0.3 % to +-0.6 % for these models) summed over all merges,

cheapest loss per removed rule first, until ``max_rules`` is met (when given) or no merge is below the tolerance.
A ``max_rules`` the tolerance cannot reach is met anyway when memory allows, and the result says how much
predicted quality it cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from planner.tensors import TensorMap


@dataclass(frozen=True, slots=True)
class Merge:
    role: str
    from_type: str
    to_type: str
    tensors: int
    ln_ratio_cost: float
    bytes_delta: int


@dataclass(frozen=True, slots=True)
class Simplified:
    types: dict[str, str]
    merges: tuple[Merge, ...]
    groups_before: int
    groups_after: int
    ln_ratio_cost: float


def _groups(tmap: TensorMap, types: Mapping[str, str], movable: Callable[[str], bool]) -> dict[tuple[str, str], list[str]]:
    from planner.roles import TIED_ROLES

    out: dict[tuple[str, str], list[str]] = {}
    for t in tmap.tensors:
        if (t.layer is None or t.name not in types or not movable(t.name) or not tmap.is_loaded(t)
                or t.n_dims < 2 or not t.name.endswith(".weight")):
            continue
        # gate and up experts share one type (ik fuses them): they merge together
        out.setdefault((TIED_ROLES.get(t.role, t.role), types[t.name]), []).append(t.name)
    return out


def simplify_mix(tmap: TensorMap, types: Mapping[str, str], *, ln_ratio_of: Callable[[str, str], float],
                 bytes_of: Callable[[str, str], int], device_of: Callable[[str], str],
                 free_bytes: Mapping[str, int], allowed: Callable[[str, str], bool] | None = None,
                 max_rules: int | None = None, tolerance: float = 0.001,
                 count_rules: Callable[[Mapping[str, str]], int] | None = None) -> Simplified:
    """Greedy merges of minor per-role type groups (see the module docstring).

    ``ln_ratio_of(tensor, type)``: the tensor's predicted ln PPL contribution (k * tensor_loss);
    ``bytes_of(tensor, type)``; ``device_of(tensor)``; ``free_bytes[device]`` left after the plan;
    ``allowed(tensor, type)``: whether the type may store the tensor (candidates, floors, GPU support);
    ``count_rules(types)``: the recipe's rule count (default: the number of type groups).
    """
    allowed = allowed or (lambda _n, _t: True)
    cur = dict(types)
    free = dict(free_bytes)
    counter = count_rules or (lambda ty: len(_groups(tmap, ty, lambda _n: True)))
    before = counter(cur)
    spent = 0.0
    merges: list[Merge] = []
    while True:
        n_rules = counter(cur)
        need = max_rules is not None and n_rules > max_rules
        groups = _groups(tmap, cur, lambda _n: True)
        best: tuple[tuple[float, int], tuple[str, str], str, int, dict[str, int]] | None = None
        for (role, ty), names in groups.items():
            others = [t2 for (r2, t2) in groups if r2 == role and t2 != ty]
            if need and count_rules is not None:   # a role may take a type another rule writes: one rule fewer
                others += sorted({t2 for (r2, t2) in groups if r2 != role and t2 != ty} - set(others))
            for to in others:
                if not all(allowed(n, to) for n in names):
                    continue
                if need and count_rules is not None and to not in {t2 for (r2, t2) in groups if r2 == role}:
                    # only a move that removes a rule (otherwise two roles could trade types forever)
                    trial = dict(cur)
                    trial.update(dict.fromkeys(names, to))
                    if counter(trial) >= n_rules:
                        continue
                cost = sum(ln_ratio_of(n, to) - ln_ratio_of(n, ty) for n in names)
                per_dev: dict[str, int] = {}
                for n in names:
                    d = device_of(n)
                    per_dev[d] = per_dev.get(d, 0) + bytes_of(n, to) - bytes_of(n, ty)
                if any(delta > free.get(d, 0) for d, delta in per_dev.items()):
                    continue
                if not need and spent + max(cost, 0.0) > tolerance:
                    continue
                key: tuple[float, int] = (max(cost, 0.0), len(names))
                if best is None or key < best[0]:
                    best = (key, (role, ty), to, len(names), per_dev)
        if best is None:
            break
        (cost, _), (role, ty), to, n_merged, per_dev = best
        for name in groups[(role, ty)]:
            cur[name] = to
        for d, delta in per_dev.items():
            free[d] = free.get(d, 0) - delta
        spent += cost
        merges.append(Merge(role, ty, to, n_merged, cost, sum(per_dev.values())))
        if max_rules is not None and counter(cur) <= max_rules and spent >= tolerance:
            break
    return Simplified(cur, tuple(merges), before, counter(cur), spent)


def simplify_note(s: Simplified, max_rules: int | None) -> str:
    """The plan's note on what the merges did and cost, and whether ``max_rules`` was reached."""
    note = (f"recipe simplified: {len(s.merges)} type groups merged ({s.groups_before} -> {s.groups_after}), "
            f"predicted PPL +{(math.exp(s.ln_ratio_cost) - 1) * 100:.2f} %")
    if max_rules is not None and s.groups_after > max_rules:
        note += (f"; --max-rules {max_rules} not reached: {s.groups_after} rules are left where no further merge fits "
                 "in memory or is allowed for its tensors")
    elif max_rules is not None and s.ln_ratio_cost > 0.001:
        note += f" to meet --max-rules {max_rules} (above the 0.1 % a PPL run resolves)"
    return note


__all__ = ["Merge", "Simplified", "simplify_mix", "simplify_note"]
