"""Model summaries for `inspect`: counts, parameters, bytes per type, role and layer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from planner.quants import catalogue
from planner.tensors import TensorMap


@dataclass(frozen=True, slots=True)
class RoleRow:
    role: str
    tensors: int
    n_elements: int
    bytes: int
    types: str


@dataclass(frozen=True, slots=True)
class ModelSummary:
    name: str
    arch: str
    source: str
    n_layer: int
    n_expert: int
    n_expert_used: int
    n_tensors: int
    n_elements: int
    total_bytes: int          # Σ ggml_nbytes (what llama.cpp prints as "model size")
    bpw: float
    file_bytes: int | None    # size on disk when the model is a file
    type_counts: dict[str, int]
    roles: tuple[RoleRow, ...]
    layer_bytes: tuple[int, ...]
    nonlayer_bytes: int


def type_order(name: str) -> int:
    return catalogue().get(name).id


def summarize(tmap: TensorMap) -> ModelSummary:
    cat = catalogue()
    sizes = {t.name: cat.get(t.dtype).tensor_bytes(t.shape) for t in tmap.tensors}
    counts = Counter(t.dtype for t in tmap.tensors)
    roles: dict[str, list] = {}
    layer_bytes = [0] * tmap.params.n_layer
    nonlayer = 0
    for t in tmap.tensors:
        r = roles.setdefault(t.role, [0, 0, 0, Counter()])
        r[0] += 1
        r[1] += t.n_elements
        r[2] += sizes[t.name]
        r[3][t.dtype] += 1
        if t.layer is not None and t.layer < len(layer_bytes):
            layer_bytes[t.layer] += sizes[t.name]
        else:
            nonlayer += sizes[t.name]
    total = sum(sizes.values())
    return ModelSummary(
        name=tmap.name, arch=tmap.params.arch, source=tmap.source, n_layer=tmap.params.n_layer,
        n_expert=tmap.params.n_expert, n_expert_used=tmap.params.n_expert_used, n_tensors=len(tmap.tensors),
        n_elements=tmap.n_elements, total_bytes=total, bpw=8.0 * total / tmap.n_elements,
        file_bytes=tmap.file_bytes,
        type_counts=dict(sorted(counts.items(), key=lambda kv: type_order(kv[0]))),
        roles=tuple(RoleRow(role, v[0], v[1], v[2], ", ".join(f"{k} {n}" for k, n in sorted(v[3].items())))
                    for role, v in roles.items()),
        layer_bytes=tuple(layer_bytes), nonlayer_bytes=nonlayer)
