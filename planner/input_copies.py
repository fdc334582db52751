"""What a device's compute buffer grows by per layer it holds: the leafs a layer creates (:func:`layer_leaf_bytes`)
and a layer's own copies of graph-input views, per layer it runs in one split.

ggml's scheduler copies a tensor another backend computed (or a graph input, which lives on the CPU) into the
split that reads it, once per (tensor, backend), and the copies are nodes at the start of that split (mainline and
ik ``ggml_backend_sched_split_graph``, pass 5 and the graph copy; ik ggml/src/ggml-backend.cpp:1830-1968 at
8337e4cd3).  A layer that reads a graph input through a view of its own gets its own copy of that view: ik's
DeepSeek-V4 makes each layer's own view of the n_ctx x T mask (dsv4_build_raw_mask_view, src/graphs/
build_deepseek4.cpp:145-198) and, on CSA layers, two of the CSA mask, so a device running a run of such layers in
one split holds all their copies at once (the tiny dsv4 model over one rpc-server at 16k: 132.52 MiB for 6 layers,
46.59 MiB with their experts on the CPU, which ends a split after each layer's attention).

The replay (:mod:`planner.engine_graph`) sizes this exactly for a placement; the solver, which decides whose
experts stay on a GPU, charges each layer's copies to its FFN down projection's option on the layer's GPU
(:func:`layer_copy_allowance`, planner/groups.py): a split runs from one layer with FFN work off the device to the
next, so the copies alive at once are at most those of the layers whose down projection is on the device, plus the
run's last layer, which the role's stand-in replay already holds (planner/role_compute.py ``_canonical``).
"""

from __future__ import annotations

from functools import cache

from planner.gallocr import ALIGN, VIEW_OPS
from planner.graph_shape import GraphShape
from planner.runconfig import RunConfig
from planner.tensors import TensorMap


def layer_leaf_bytes(engine: str, graph: str, shape: GraphShape) -> int:
    """Bytes of the tensors a layer of the template creates as leafs ("LEAF" rows: DSA's zeros,
    llama-graph.cpp:3071-3073).  ggml-alloc allocates every leaf before the first node (ggml-alloc.c
    ggml_gallocr_alloc_graph_impl), so a device's buffer grows by about this much per layer it holds: such graphs
    are replayed layer by layer (no :func:`planner.layer_kinds.compress`), and a role's stand-in adds it for the
    layers it leaves out (planner/role_compute.py).  On the RPC harness a GLM-DSA device logged 54.79, 54.91 and 55.05 MiB with 4, 5
    and 6 of its layers (128 KiB of zeros each)."""
    from planner.graph_select import _templates

    return sum(shape.size(row[2]) for row in _templates()[engine][graph]["layer"] if row[1] == "LEAF")


@cache
def input_rooted(engine: str, graph: str) -> frozenset[str]:
    """Names of a template's layer rows that are views rooted at a graph input ("in:NAME", or a view of one)."""
    from planner.graph_select import _templates

    out: set[str] = set()
    for row in _templates()[engine][graph]["layer"]:
        view = row[4] if len(row) > 4 else ""
        if row[1] in VIEW_OPS and (view.startswith("in:") or view in out):
            out.add(row[0])
    return frozenset(out)


def layer_copy_bytes(engine: str, graph: str, shape: GraphShape, tag: str) -> int:
    """Bytes of the graph-input views a layer with these tags copies to its device: rows of the template's layer
    that are views rooted at an "in:" input and read by a drawn compute row (the rows drawn by the layer's tags
    and the shape's flags, planner/engine_graph.py)."""
    from planner.engine_graph import _flags
    from planner.graph_select import _templates
    from planner.layer_kinds import TAGS

    have = set(tag.split("+")) if tag else set()

    def holds(f: str) -> bool:
        return any(g in have if g in TAGS else shape.has(g) for g in f.split("|"))

    rows = [r for r in _templates()[engine][graph]["layer"] if all(holds(f) for f in _flags(r))]
    rooted = input_rooted(engine, graph)
    of_input: dict[str, int] = {}
    total = 0
    for row in rows:
        name, expr, srcs = row[0], row[2], row[3]
        if name in rooted:
            of_input[name] = shape.size(expr)
            continue
        for s in srcs:
            for alt in s.split("|"):
                if alt in of_input:
                    total += -(-of_input.pop(alt) // ALIGN) * ALIGN
    return total


def layer_copy_allowance(tmap: TensorMap, cfg: RunConfig) -> list[int]:
    """Per loaded layer, :func:`layer_copy_bytes` of the engine's graph for the run (all 0 where there is none)."""
    from planner.compute_buffers import _shape, _tokens
    from planner.engine_graph import graph_of
    from planner.layer_kinds import layer_tags

    p = tmap.params
    n = p.n_loaded_layers
    graph = graph_of(cfg.engine, tmap, cfg.flash_attn, _tokens(cfg), cfg.mla)
    if graph is None or not input_rooted(cfg.engine, graph):
        return [0] * n
    shape = _shape(p, cfg)
    if not shape.drawn():
        return [0] * n
    by_tag: dict[str, int] = {}
    out = []
    for il in range(n):
        tag = layer_tags(p, il)
        if tag not in by_tag:
            by_tag[tag] = layer_copy_bytes(cfg.engine, graph, shape, tag)
        out.append(by_tag[tag])
    return out
