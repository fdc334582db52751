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
