"""What :func:`planner.engine_graph.build` derives from a template and a graph shape alone, kept across builds: a
role's stand-in placements (:mod:`planner.role_compute`) replay the same template tens of times per plan, so
each layer kind's rows, their sources and their sizes are worked out once per (engine, template, shape).
tests/test_replay_memo.py checks that replays with this memory warm equal replays without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.gallocr import Graph, T
from planner.graph_shape import GraphShape

__all__ = ["Memo", "Row", "Skeleton", "Source", "keep_skeleton", "memo_of", "skeleton_of", "source"]

_STATIC = ("in:", "w:", "kv:", "sh:")       # sources that exist whatever the layer drew before
# a source's alternatives "a|b" as the runtime needs them: the layer's own nodes among the alternatives after the
# last static one (last first), the source taken when none of them exists, and that source's kind
Source = tuple[tuple[str, ...], str, str]
# a row as a layer kind draws it: the template row, its -amb chunk, its flags, its sources, its bytes and layout
Row = tuple[list[Any], int, set[str], list[Source], int, object]


@dataclass(frozen=True, slots=True)
class Skeleton:
    """One graph of a template, shape and sequence of layer kinds, its devices aside: the tensors (pre-allocated
    ones on a placeholder device 0, no node pinned) and where a placement's devices go.  ``weights``: (tensor, GGUF
    name, the layer whose device it takes or -1: its name says, ``device_of``); ``caches``: (tensor, layer);
    ``norms``: (node, layer) pinned to the layer's device when ``pin_all`` or the model is fully offloaded
    (llama-context.cpp:2646-2657 graph_get_cb); ``graph``: the tensors as the allocator reads them."""

    ts: list[T]
    weights: tuple[tuple[int, str, int], ...]
    caches: tuple[tuple[int, int], ...]
    norms: tuple[tuple[int, int], ...]
    pin_all: bool
    graph: Graph


class Memo:
    """What :func:`planner.engine_graph.build` derives from the template and the shape alone, kept across the
    builds of one (engine, template, shape): a role's stand-in placements replay the same template tens of times
    (DeepSeek-V4 with ~260 rows a layer: 110 builds in one plan).  ``parts``: the chunked head/layer/tail rows and each shared row
    as a one-row list (persistent objects: ``kept`` is keyed by their ids); ``kept``: each layer kind's rows;
    ``sizes``: each size expression's bytes."""

    __slots__ = ("parts", "kept", "sizes")

    def __init__(self) -> None:
        self.parts: dict[tuple[str, int], list[tuple[list[Any], int]]] = {}
        self.kept: dict[tuple[int, bool, bool, bool, bool, bool, bool, str],
                        tuple[object, list[Row]]] = {}
        self.sizes: dict[tuple[str, int, bool], int] = {}


_MEMOS: dict[tuple[str, str, GraphShape], Memo] = {}
_MEMO_KEEP = 16         # shapes remembered (a plan uses one or two; a test session thousands)
# the graph of each (engine, template, shape) and sequence of layer kinds: the placements of one plan differ in
# devices far more than in kinds (DeepSeek-R1 on 2x RTX 3090: 110 placements of 7 kind sequences; 15 plans of
# the built-in models: 18 at most, gemma-3 mainline); one takes 1-2.5 MiB (DeepSeek-R1, DeepSeek-V4), so 24 at most
_SKELETONS: dict[tuple[str, str, GraphShape, tuple[object, ...]], Skeleton] = {}
_SKELETONS_KEEP = 24


def memo_of(engine: str, graph: str, shape: GraphShape) -> Memo:
    """The memory of one (engine, template, shape), the least recently used one forgotten past ``_MEMO_KEEP``."""
    key = (engine, graph, shape)
    memo = _MEMOS.pop(key, None) or Memo()
    _MEMOS[key] = memo                      # most recent last
    while len(_MEMOS) > _MEMO_KEEP:
        del _MEMOS[next(iter(_MEMOS))]
    return memo


def skeleton_of(engine: str, graph: str, shape: GraphShape, kinds: tuple[object, ...]) -> Skeleton | None:
    """The skeleton drawn for these kinds (:func:`planner.engine_graph.skeleton`), now the most recent one."""
    got = _SKELETONS.pop((engine, graph, shape, kinds), None)
    if got is not None:
        _SKELETONS[engine, graph, shape, kinds] = got
    return got


def keep_skeleton(engine: str, graph: str, shape: GraphShape, kinds: tuple[object, ...], sk: Skeleton) -> None:
    """Remember a drawn skeleton, the least recently used one forgotten past ``_SKELETONS_KEEP``."""
    _SKELETONS[engine, graph, shape, kinds] = sk
    while len(_SKELETONS) > _SKELETONS_KEEP:
        del _SKELETONS[next(iter(_SKELETONS))]


# model-level weights: a "w:" source naming one of these is not a layer's (no "blk.N." prefix)
_MODEL_WEIGHTS = ("output", "output_norm", "token_embd", "token_embd_norm")


def source(choices: tuple[str, ...]) -> Source:
    """``choices`` resolved as far as they can be before a layer is drawn: the last alternative that exists (a
    static source always does; a node of the layer if drawn), else the last one.  A weight source ("w:ROLE") comes
    back as the weight's name within its layer (kind "w:": "w:exp_probs_b.bias" as named, "w:ssm_a." a weight
    without a suffix, blk.N.ssm_a, else ROLE.weight) or, for a model-level weight, its whole name (kind "wm:")."""
    if choices == ("self",):
        return (), "self", "self"
    static = [i for i, a in enumerate(choices) if a.startswith(_STATIC)]
    last = static[-1] if static else -1
    s = choices[last]
    kind = next((p for p in _STATIC if s.startswith(p)), "") if last >= 0 else ""
    if kind == "w:":
        s = (s[2:].rstrip(".") if s.endswith(".") else s[2:]) if "." in s else s[2:] + ".weight"
        kind = "wm:" if s.split(".")[0] in _MODEL_WEIGHTS else "w:"
    return tuple(reversed(choices[last + 1:])), s, kind
