"""Quality model, importance prior: how much each tensor's error costs, from its role and layer position
(data/quality_prior.toml), scaled by role weights measured from per-tensor KLD files where the model (or one of its
shapes or architecture) has them, optionally sharpened by an imatrix.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.quality_error import _measured, _prior
from planner.roles import active_fraction, tied_output
from planner.tensors import ModelParams, TensorInfo, TensorMap, builtin_params

if TYPE_CHECKING:
    from planner.imatrix import Imatrix

_SHAPE_FIELDS = ("arch", "n_layer", "n_embd", "n_vocab", "n_head", "n_head_kv", "head_dim", "n_expert",
                 "n_expert_used", "n_ff", "n_ff_exp")


def _shape_key(tmap: TensorMap) -> tuple:
    return _params_key(tmap.params)


def _params_key(params: ModelParams) -> tuple:
    return tuple(getattr(params, f) for f in _SHAPE_FIELDS)


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    group: str
    factor: float


@functools.cache
def _rules() -> tuple[_Rule, ...]:
    return tuple(_Rule(re.compile(r["match"]), r["group"], float(r["factor"])) for r in _prior()["roles"])


@functools.lru_cache(maxsize=4096)
def _role_rule(role: str) -> tuple[str, float, bool]:
    for rule in _rules():
        if rule.pattern.search(role):
            return rule.group, rule.factor, True
    return "other", 1.0, False


def quantizable(t: TensorInfo) -> bool:
    """Whether the prior gives the tensor any weight: a 2-D+ ``.weight`` that is not a norm."""
    if not t.name.endswith(".weight") or t.n_dims < 2:
        return False
    if t.layer is None:
        return True
    return _role_rule(t.role)[1] > 0


def _branch(role: str) -> str:
    if role.startswith("ffn_gate_inp"):
        return "router"
    if role.endswith("_exps") or role.endswith("_chexps"):
        return "routed"
    if role.endswith("_shexp"):
        return "shared"
    return "dense"


def _active_fraction(t: TensorInfo, tmap: TensorMap) -> float:
    """Fraction of the tensor's weights one token touches (the one rule: :func:`planner.roles.active_fraction`)."""
    return active_fraction(t, tmap.params.n_expert_used)


def _layer_factor(layer: int, n_layer: int) -> float:
    cfg = _prior()["layers"]
    edge = cfg["edge_fraction"] * n_layer
    return cfg["edge_factor"] if layer < edge or layer >= n_layer - edge else 1.0


@functools.cache
def _role_weight_entries() -> tuple[tuple[str, tuple, str, dict[str, float]], ...]:
    out = []
    for e in _measured().get("role_weights", ()):
        params = builtin_params(e["builtin"])      # the numbers only: expanding the tensors is not needed
        out.append((e["model"], _params_key(params), params.arch, {r: float(w) for r, w in e["w"].items()}))
    return tuple(out)


def role_weights_for(tmap: TensorMap, entries: Sequence[tuple[str, tuple, str, Mapping[str, float]]] | None = None
                     ) -> tuple[dict[str, float], str]:
    """Measured role multipliers for ``tmap`` and where they come from: the model's own per-tensor KLD file, else
    a model of the same shapes, else one of the same architecture; none otherwise (they do not transfer across
    families: GLM's per-tensor ranks get worse with Qwen3/DeepSeek weights, docs/quality.md)."""
    entries = _role_weight_entries() if entries is None else entries
    name, shape = _norm_name(tmap.name), _shape_key(tmap)
    for test, label in ((lambda e: _norm_name(e[0]) == name, "measured for {}"),
                        (lambda e: e[1] == shape, "measured for {} (same shapes)"),
                        (lambda e: e[2] == tmap.params.arch, "transferred from {} (same architecture)")):
        hit = [e for e in entries if test(e)]
        if hit:
            return dict(hit[0][3]), label.format(hit[0][0])
    return {}, "prior only"


def prior_importance(tmap: TensorMap, variant: str = "matrix", role_weights: Mapping[str, float] | None = None
                     ) -> tuple[dict[str, float], tuple[str, ...]]:
    """Normalised importance (sums to 1 over quantizable tensors) and notes on guesses it had to make.

    ``variant`` "matrix" (default prior: each matrix on a residual write path counts) or "active_weight"
    (importance proportional to the weights a token touches). Both apply the layer-edge factor, then the measured
    role multipliers (``role_weights``; None: those of data/quality_measured.toml, {}: none).
    """
    if role_weights is None:     # the measured multipliers: the same answer per model and variant, remembered
        imp, notes = tmap.derived(_prior_importance, variant, None)
        return dict(imp), notes
    return _prior_importance(tmap, variant, role_weights)


def _prior_importance(tmap: TensorMap, variant: str, role_weights: Mapping[str, float] | None
                      ) -> tuple[dict[str, float], tuple[str, ...]]:
    rw = role_weights_for(tmap)[0] if role_weights is None else role_weights
    cfg = _prior()
    raw: dict[str, float] = {t.name: 0.0 for t in tmap.tensors}
    unknown_roles: set[str] = set()
    tied_output_share = 0.0
    # NextN/MTP blocks (the last n_nextn layers) are in the file but never loaded by the engines: no importance
    n_layer = tmap.params.n_layer - tmap.params.n_nextn
    if variant == "active_weight":
        tied = tmap.derived(tied_output)     # a tied output multiplies all of token_embd every token
        for t in tmap.tensors:
            if quantizable(t) and (t.layer is None or t.layer < n_layer):
                lf = _layer_factor(t.layer, n_layer) if t.layer is not None else 1.0
                raw[t.name] = t.n_elements * (1.0 if t is tied else _active_fraction(t, tmap)) * lf
    elif variant == "matrix":
        tied = tmap.derived(tied_output)     # token_embd when there is no output.weight
        groups: dict[tuple[int, str], list[TensorInfo]] = {}
        for t in tmap.tensors:
            if not quantizable(t) or (t.layer is not None and t.layer >= n_layer):
                continue
            if t.layer is None:
                share = cfg["globals"].get(t.role)
                if share is None:
                    share = cfg["globals"]["other"]
                    unknown_roles.add(t.role)
                raw[t.name] = float(share)
                if t is tied:   # also the output matrix: its error reaches the logits directly (added below)
                    tied_output_share = float(cfg["globals"]["output"])
                continue
            group, _, known = _role_rule(t.role)
            if not known:
                unknown_roles.add(t.role)
            groups.setdefault((t.layer, group), []).append(t)
        for (layer, group), members in groups.items():
            active: dict[str, float] = {}
            for t in members:
                b = _branch(t.role)
                if b != "router":
                    active[b] = active.get(b, 0.0) + t.n_elements * _active_fraction(t, tmap)
            total_active = sum(active.values()) or 1.0
            weights = {t.name: _role_rule(t.role)[1] * (1.0 if _branch(t.role) == "router"
                                                         else active[_branch(t.role)] / total_active)
                       for t in members}
            norm = sum(weights.values()) or 1.0
            scale = _layer_factor(layer, n_layer) * cfg["sublayer"].get(group, cfg["sublayer"]["other"])
            for name, w in weights.items():
                raw[name] = scale * w / norm
    else:
        raise ValueError(f"unknown prior variant {variant!r}")
    if rw:
        for t in tmap.tensors:
            if raw[t.name] > 0:
                raw[t.name] *= rw.get(t.role, 1.0)
    if tied_output_share:   # the tied token_embd's output share, with the output's role multiplier
        raw["token_embd.weight"] += tied_output_share * (rw or {}).get("output", 1.0)
    total = sum(raw.values())
    imp = {k: (v / total if total > 0 else 0.0) for k, v in raw.items()}
    notes: tuple[str, ...] = ()
    if unknown_roles:
        notes = (f"roles not in the prior table, treated as generic matrices: {', '.join(sorted(unknown_roles))}",)
    return imp, notes


def _sharpen(imp: dict[str, float], tmap: TensorMap, imatrix: Imatrix) -> tuple[dict[str, float], int]:
    """Move importance between tensors of one role by imatrix mean importance / role median (role totals kept)."""
    cfg = _prior()["imatrix"]
    lo, hi = cfg["ratio_min"], cfg["ratio_max"]
    by_role: dict[str, list[tuple[str, float]]] = {}
    for t in tmap.tensors:
        if imp.get(t.name, 0.0) > 0 and t.name in imatrix.entries:
            by_role.setdefault(t.role, []).append((t.name, imatrix.tensor_importance(t.name)))
    out = dict(imp)
    used = 0
    for items in by_role.values():
        ref = statistics.median(m for _, m in items)     # the role's typical layer; robust to outlier layers
        if ref <= 0:
            continue
        before = sum(imp[n] for n, _ in items)
        scaled = {n: imp[n] * min(hi, max(lo, m / ref)) for n, m in items}
        after = sum(scaled.values())
        for n, v in scaled.items():
            out[n] = v * before / after
        used += len(items)
    return out, used
