"""The built-in models as a listing: architecture, total and active parameters, layers, attention kind.

Active parameters: every tensor the engines load except ``token_embd`` when the model has its own output matrix
(the embedding is a row lookup, not a matmul), with routed expert tensors (``*_exps``) weighted by
``n_expert_used / n_expert``.  This reproduces the one model card that publishes both figures to four digits
(gpt-oss: 116.83B total / 5.13B active, 20.91B / 3.61B).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.kv_cache import attention_kind
from planner.tensors import TensorMap, builtin, builtin_info, builtin_names


@dataclass(frozen=True, slots=True)
class ParamCounts:
    total: int          # every tensor in the file (NextN/MTP blocks included)
    loaded: int         # what the engines load (NextN/MTP blocks skipped)
    active: int         # per token (see the module docstring)


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    name: str           # the built-in's key, e.g. "gpt-oss-120b"
    display: str        # the model's own name, e.g. "gpt-oss-120b" / "GLM-4.6"
    arch: str           # GGUF general.architecture
    total_params: int
    active_params: int
    n_layer: int        # blocks the engines run (NextN/MTP excluded)
    n_expert: int
    n_expert_used: int
    attention: str
    published_total: float | None
    published_active: float | None
    source: str


def param_counts(tmap: TensorMap) -> ParamCounts:
    p = tmap.params
    has_output = any(t.name == "output.weight" for t in tmap.tensors)
    total = loaded = 0
    active = 0.0
    for t in tmap.tensors:
        total += t.n_elements
        if not tmap.is_loaded(t):
            continue
        loaded += t.n_elements
        if t.role == "token_embd" and has_output:
            continue
        if t.role.endswith("_exps") and p.n_expert:
            active += t.n_elements * p.n_expert_used / p.n_expert
        else:
            active += t.n_elements
    return ParamCounts(total=total, loaded=loaded, active=round(active))


COUNT_CONVENTIONS = ("kv_b_once", "active_token_embd")


@dataclass(frozen=True, slots=True)
class CardFigure:
    """One published parameter count and ours counted the way the figure counts (``published.counts``)."""

    which: str          # "total" or "active"
    published: float
    unit: float         # the precision it is stated to: the unit of its last digit ("32B": 1e9)
    ours: int           # this tool's count under the figure's convention


def card_figures(name: str) -> tuple[CardFigure, ...]:
    """The built-in's published figures, each with our count under the convention the figure states.

    ``kv_b_once``: drop the attn_k_b/attn_v_b tensors ik's converter derives from attn_kv_b (the checkpoint holds
    kv_b_proj once); ``active_token_embd``: the active figure includes token_embd.  Totals are the loaded tensors
    (NextN/MTP blocks excluded), as ``models`` lists them.

    Raises:
        ValueError: a ``counts`` entry that is not a known convention (a data error).
    """
    tm = builtin(name)
    pub = builtin_info(name).get("published", {})
    if not pub:
        return ()
    counts = tuple(pub.get("counts", ()))
    unknown = set(counts) - set(COUNT_CONVENTIONS)
    if unknown:
        raise ValueError(f"{name}: published.counts {sorted(unknown)} not in {COUNT_CONVENTIONS}")
    c = param_counts(tm)
    total, active = c.loaded, c.active
    if "kv_b_once" in counts:
        kv_b_layers = {t.layer for t in tm.tensors if t.role == "attn_kv_b"}
        split = sum(t.n_elements for t in tm.tensors
                    if tm.is_loaded(t) and t.role in ("attn_k_b", "attn_v_b") and t.layer in kv_b_layers)
        total, active = total - split, active - split
    if "active_token_embd" in counts:
        active += sum(t.n_elements for t in tm.tensors if t.role == "token_embd")
    return (CardFigure("total", float(pub["total"]), float(pub["total_unit"]), total),
            CardFigure("active", float(pub["active"]), float(pub["active_unit"]), active))


def summarize(name: str) -> BuiltinModel:
    tm = builtin(name)
    info = builtin_info(name)
    counts = param_counts(tm)
    pub = info.get("published", {})
    return BuiltinModel(
        name=name, display=tm.name, arch=tm.params.arch, total_params=counts.loaded,
        active_params=counts.active, n_layer=tm.params.n_loaded_layers, n_expert=tm.params.n_expert,
        n_expert_used=tm.params.n_expert_used, attention=attention_kind(tm.params),
        published_total=pub.get("total"), published_active=pub.get("active"), source=info.get("source", ""))


def list_models() -> tuple[BuiltinModel, ...]:
    """Every built-in, sorted by name (what ``gguf-planner models`` prints)."""
    return tuple(summarize(n) for n in builtin_names())
