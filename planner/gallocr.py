"""A deterministic re-run of what ggml's scheduler and graph allocator do with one compute graph (mainline
llama.cpp 0c1e57098, ``ggml/src/ggml-backend.cpp`` and ``ggml/src/ggml-alloc.c``), to size each backend's compute
buffer the way the engine does: the high-water mark of a best-fit allocator, holes included.

Input: the graph's tensors in graph order (:class:`T`): pre-allocated ones (weights, KV cache: ``dev`` set, never
allocated here), graph inputs (``inp``: they live on the last backend, the CPU), views and compute nodes.  Steps:

1. backend of each node (``ggml_backend_sched_split_graph`` passes 1-4, ggml-backend.cpp:1087-1276): a pre-set
   backend (``pin``: llama's ``graph_get_cb`` pins the per-layer ``norm`` nodes, llama-context.cpp:2646-2657), the
   view source's buffer, graph inputs to the CPU, the first weight source's device (``backend_id_from_cur``,
   ggml-backend.cpp:921-985; op offload is not modelled: RPC devices never offload); then the expansions: GPU
   backends down and up the graph, then every backend down and up; views take their source's backend.
2. splits (pass 5, ggml-backend.cpp:1278-1398): a new split where the backend changes; a source on another
   backend gets one copy per (tensor, backend), listed as an input of the first split that needs it (with
   pipeline parallelism, ``copies`` copies flagged input+output).
3. the graph copy (ggml-backend.cpp:1510-1590): per split, for each input a dependency view of the source (on
   the source's backend) and the copy, then the split's nodes; with copies > 1 the graph inputs' and split inputs'
   copies come first as leafs.
4. ggml-alloc (``ggml_gallocr_alloc_graph_impl``, ggml-alloc.c:718-823): leafs, then per node its sources, the
   node (in place on a parent with one consumer, no views, same layout, not an output, for the ops of
   ``ggml_op_can_inplace``), then the parents whose last consumer this was are freed (never graph outputs);
   ``ggml_dyn_tallocr_alloc`` (ggml-alloc.c:202-310): best fit among the free blocks but the last, else the last
   block (growing the buffer), sizes padded to the buffer type's 32-byte alignment (TENSOR_ALIGNMENT,
   ggml-impl.h:44, the CPU buffer type and an rpc-server's CPU backend); freed bytes merge with their neighbours.

The result is each backend's ``max_size``: what ``sched_reserve`` logs as "<dev> compute buffer size".

A tensor list is read once into a :class:`Graph`, with what the passes do that does not depend on the devices
(:class:`_Passes`), and replayed per placement (:func:`replay`: the pre-allocated tensors' devices and the pins).

ik_llama.cpp 8337e4cd3 runs the same passes (ggml-backend.cpp:1439-1968: no CUDA op offload over RPC, and its
extra split rules, REDUCE/FAKE_CPY and 0xff-flagged ops, are not in the graphs drawn here) and the same allocator
(ggml-alloc.c:472-640, without mainline's ggml_gallocr_free_extra_space, which an in-place reuse of the same
layout never needs), but a shorter ``ggml_op_can_inplace`` (:data:`IK_INPLACE_OPS`, :func:`inplace_ops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

ALIGN = 32
# ggml-alloc.c:22-51 ggml_op_can_inplace (UNARY/GLU: GLU is not in the list)
INPLACE_OPS = frozenset({"FILL", "SCALE", "DIAG_MASK_ZERO", "DIAG_MASK_INF", "ADD", "ADD_ID", "ADD1", "SUB", "MUL",
                         "DIV", "SQR", "SQRT", "LOG", "UNARY", "ROPE", "ROPE_BACK", "SILU_BACK", "RMS_NORM",
                         "RMS_NORM_BACK", "CLAMP", "SOFT_MAX", "SOFT_MAX_BACK"})
# ik_llama.cpp 8337e4cd3 ggml/src/ggml-alloc.c:40-63: a shorter list (no FILL, CLAMP or *_BACK), and ik's fused
# ops (FUSED_RMS_NORM, MOE_FUSED_UP_GATE, MUL_MULTI_ADD) are not in it
IK_INPLACE_OPS = frozenset({"SCALE", "DIAG_MASK_ZERO", "DIAG_MASK_INF", "ADD", "ADD_ID", "ADD1", "SUB", "MUL", "DIV",
                            "SQR", "SQRT", "LOG", "UNARY", "ROPE", "RMS_NORM", "SOFT_MAX"})
VIEW_OPS = frozenset({"VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"})       # ggml_is_view_op
# GGML_OP_UNARY under the name its dump prints (ggml_op_desc): the templates may name the unary op itself
UNARY_OPS = frozenset({"SILU", "SIGMOID", "SOFTPLUS", "EXP", "NEG", "GELU", "TANH", "RELU", "ABS"})


def inplace_ops(engine: str) -> frozenset[str]:
    """The ops ggml-alloc may compute in place of a source, for an engine's ggml."""
    return IK_INPLACE_OPS if engine.startswith("ik") else INPLACE_OPS


@dataclass(slots=True)
class T:
    """One tensor of the graph.  ``size``: ggml_nbytes; ``layout``: a key equal for tensors of the same type,
    shape and strides (``ggml_are_same_layout``); ``dev``: the device of a pre-allocated tensor (weights: set
    ``weight``; KV cache: not); ``pin``: a backend set before scheduling."""

    name: str
    op: str = "NONE"
    size: int = 0
    srcs: tuple[int, ...] = ()
    view_src: int | None = None
    layout: object = None
    dev: int | None = None
    weight: bool = False
    inp: bool = False
    out: bool = False
    pin: int | None = None
    leaf: bool = False      # a leaf the graph creates itself (ggml_new_tensor, no data): allocated with the others,
    #                         on its consumer's backend (DeepSeek sparse attention's zeros, llama-graph.cpp:3073)


class _Alloc:
    """ggml_dyn_tallocr with one chunk (the CPU and RPC buffer types report no maximum size): its free blocks as
    two parallel lists (offsets ascending, sizes), the last one the unbounded tail.  Sizes come padded to
    ``ALIGN`` (:attr:`Graph.asize`)."""

    __slots__ = ("offs", "sizes", "max_size")

    def __init__(self) -> None:
        self.offs: list[int] = [0]
        self.sizes: list[int] = [1 << 62]
        self.max_size = 0

    def alloc(self, size: int) -> int:
        sizes = self.sizes
        best, best_size = -1, 0
        for i in range(len(sizes) - 1):
            bs = sizes[i]
            if bs >= size and (best == -1 or bs <= best_size):
                best, best_size = i, bs
        if best == -1:
            best = len(sizes) - 1
        off = self.offs[best]
        if sizes[best] == size:
            del self.offs[best], sizes[best]
        else:
            self.offs[best] = off + size
            sizes[best] -= size
        if off + size > self.max_size:
            self.max_size = off + size
        return off

    def free(self, off: int, size: int) -> None:
        offs, sizes = self.offs, self.sizes
        n = len(offs)
        for i in range(n):
            if offs[i] + sizes[i] == off:
                sizes[i] += size
                if i + 1 < n and offs[i] + sizes[i] == offs[i + 1]:
                    sizes[i] += sizes[i + 1]
                    del offs[i + 1], sizes[i + 1]
                return
            if off + size == offs[i]:
                offs[i] = off
                sizes[i] += size
                if i > 0 and offs[i - 1] + sizes[i - 1] == off:
                    sizes[i - 1] += sizes[i]
                    del offs[i], sizes[i]
                return
        pos = 0
        while pos < n and offs[pos] < off:
            pos += 1
        offs.insert(pos, off)
        sizes.insert(pos, size)


class Graph:
    """A graph's tensors as the scheduler and the allocator read them, the pre-allocated tensors' devices and the
    pinned nodes' backends aside (:func:`replay` takes those): read once per tensor list, since a template's
    skeleton (planner.engine_graph) is replayed under tens of placements a plan (DeepSeek-R1 on 2x RTX 3090: 110
    replays of 7 skeletons).  Lists are per tensor unless named per node; ``nodes`` rows are (node, is a view op,
    view source, sources) in graph order; ``first``: (node, the tensor whose device pass 1 gives it, -2 the CPU)."""

    __slots__ = ("ts", "nodes", "plain", "leafs", "in_leafs", "pre", "inp", "first", "srcs", "vsrc", "asize",
                 "layout", "out", "fixed", "held", "live", "children", "views", "_inplace", "_passes")

    def __init__(self, ts: Sequence[T]) -> None:
        self.ts = ts
        self.srcs = [t.srcs for t in ts]
        self.vsrc = [t.view_src for t in ts]
        # the sources ggml-alloc's counts can change anything for: a pre-allocated tensor is never allocated or
        # freed, and skipping them saves a fifth of the allocation loop's steps (DeepSeek-R1's graphs: 20 % of
        # sources are weights or caches)
        held = self.held = [t.dev is not None for t in ts]
        not_held = [not h for h in held]
        self.live = [tuple(filter(not_held.__getitem__, s)) if s else s for s in self.srcs]
        self.leafs = [i for i, t in enumerate(ts) if t.op == "NONE"]
        self.in_leafs = [i for i in self.leafs if ts[i].inp]
        self.pre = [i for i, h in enumerate(held) if h]
        self.inp = [i for i, t in enumerate(ts) if t.inp]
        self.nodes: list[tuple[int, bool, int | None, tuple[int, ...]]] = []
        self.plain: list[int] = []
        self.first: list[tuple[int, int]] = []
        # ggml-alloc's counts before the scheduler's copies: every node is in the graph copy, so each source is
        # counted once per reading node and each view once against its source (replay adjusts for the copies)
        self.children = [0] * len(ts)
        self.views = [0] * len(ts)
        for i, t in enumerate(ts):
            if t.op != "NONE":
                self._node(i, t, held, ts)
        self.asize = [-(-t.size // ALIGN) * ALIGN for t in ts]
        self.layout = [t.layout for t in ts]
        self.out = [t.out for t in ts]
        # what ggml-alloc never allocates: pre-allocated tensors, views and other graphs' leafs
        self.fixed = [t.dev is not None or t.view_src is not None or (t.op == "NONE" and not (t.inp or t.leaf))
                      for t in ts]
        self._inplace: dict[frozenset[str], list[bool]] = {}
        self._passes: dict[tuple[int, ...], _Passes] = {}

    def _node(self, i: int, t: T, held: list[bool], ts: Sequence[T]) -> None:
        """Node ``i``'s rows and counts; pass 1 (backend_id_from_cur): the tensor whose device it takes (its view
        source's if pre-allocated, else -2 for a graph input (the CPU), else its first weight source's)."""
        view = t.op in VIEW_OPS
        v = t.view_src
        self.nodes.append((i, view, v, t.srcs))
        if not view:
            self.plain.append(i)
        if v is not None and held[v]:
            self.first.append((i, v))
        elif t.inp:
            self.first.append((i, -2))
        else:
            for s in t.srcs:
                if held[s] and ts[s].weight:
                    self.first.append((i, s))
                    break
        children = self.children
        for p in t.srcs:
            children[p] += 1
        if v is not None:
            self.views[v] += 1

    def passes(self, pinned: tuple[int, ...]) -> _Passes:
        """:class:`_Passes` with the nodes ``pinned`` pinned (worked out once per set)."""
        got = self._passes.get(pinned)
        if got is None:
            got = self._passes[pinned] = _passes(self, pinned)
        return got

    def inplace(self, ops: frozenset[str]) -> list[bool]:
        """Per tensor: whether its op may reuse a source's memory under the engine's ``ops``."""
        got = self._inplace.get(ops)
        if got is None:
            got = self._inplace[ops] = [("UNARY" if t.op in UNARY_OPS else t.op) in ops for t in self.ts]
        return got


class _Passes(NamedTuple):
    """What passes 1, 2 and 4 of the scheduler do to a :class:`Graph` with some nodes pinned, the devices aside:
    which tensors have a backend after each step does not depend on them (a graph input's is the CPU, a pre-allocated
    tensor's its device, a node's with a weight source or a pre-allocated view source that device), only which
    backend.  ``first``: pass 1's (node, the tensor whose device it takes, -2 the CPU); ``gaps``: the runs of
    non-view nodes pass 1 leaves without one, as (the node before the run or -1, the node after it or -1, the run);
    ``fill``: pass 4's assignments in order, (tensor, the tensor whose backend it takes, -1 backend 0)."""

    first: list[tuple[int, int]]
    gaps: list[tuple[int, int, tuple[int, ...]]]
    fill: list[tuple[int, int]]


def _passes(g: Graph, pinned: tuple[int, ...]) -> _Passes:
    """:meth:`Graph.passes`: passes 1, 2 and 4 run on whether each tensor has a backend yet."""
    known = set(g.inp).union(g.pre, pinned)
    first = [(i, j) for i, j in g.first if i not in known]
    known.update(i for i, _j in first)
    gaps: list[tuple[int, int, tuple[int, ...]]] = []
    run: list[int] = []
    before = -1
    for i in g.plain:
        if i not in known:
            run.append(i)
            continue
        if run:
            gaps.append((before, i, tuple(run)))
            run = []
        before = i
    if run:
        gaps.append((before, -1, tuple(run)))
    unset = [True] * len(g.srcs)
    for i in known:
        unset[i] = False
    for before, after, run_ in gaps:
        if before >= 0 or after >= 0:               # a neighbour with a backend: the run gets one
            for i in run_:
                unset[i] = False
    fill: list[tuple[int, int]] = []
    for i, _view, v, _srcs in g.nodes:              # pass 4: views and sources (pre-allocated: set)
        if unset[i] and v is not None:
            fill.append((i, v))
            unset[i] = unset[v]
        for s in g.live[i]:
            if unset[s]:
                w = g.vsrc[s]
                fill.append((s, i if w is None else w))
                unset[s] = unset[i if w is None else w]
        if unset[i]:
            fill.append((i, -1))
            unset[i] = False
    return _Passes(first, gaps, fill)



def _assign(g: Graph, devs: Sequence[int], pins: Sequence[tuple[int, int]], cpu: int) -> list[int]:
    """Backend of every tensor: passes 1-4 of ggml_backend_sched_split_graph; ``devs``: per tensor, the device of a
    pre-allocated one (any value for the others); ``pins``: (node, backend) set before scheduling."""
    steps = g.passes(tuple(i for i, _b in pins))
    be = [-1] * len(g.srcs)
    for i in g.inp:
        be[i] = cpu                                           # leafs: graph inputs go to the CPU (1.inp)
    for i, b in pins:
        be[i] = b
    for i in g.pre:
        be[i] = devs[i]
    for i, j in steps.first:                                  # pass 1: backend_id_from_cur
        be[i] = cpu if j == -2 else devs[j]
    # pass 2: expand the GPU backends down, then up, then every backend down, then up.  A run of unassigned
    # nodes takes, from its neighbours with a backend, the one before if not the CPU, else the one after if not
    # the CPU, else the one before, else the one after: the four sweeps' result, in one pass over the runs only
    for before, after, run in steps.gaps:
        b, a = (be[before] if before >= 0 else -1), (be[after] if after >= 0 else -1)
        got = b if b not in (-1, cpu) else a if a not in (-1, cpu) else b if b != -1 else a
        if got != -1:
            for i in run:
                be[i] = got
    for i, j in steps.fill:                                   # pass 4: views and sources
        be[i] = be[j] if j >= 0 else 0
    return be


@dataclass(slots=True)
class _Split:
    """Pass 5 and the graph copy over a :class:`Graph`: ``be`` and ``srcs`` extended by the tensors it adds, listed
    in ``added`` as (source, backend, copy index) for a copy and (source, -1, 0) for a dependency view; ``order``:
    the graph copy's tensors in order; ``copied``: (node, source, its copy) for each source a node reads from a
    copy."""

    be: list[int]
    srcs: list[tuple[int, ...]]
    order: list[int]
    split_inputs: list[int]
    splits: list[tuple[int, int, list[int]]]
    added: list[tuple[int, int, int]]
    copied: list[tuple[int, int, int]]


def _split(g: Graph, be: list[int], copies: int) -> _Split:
    """Pass 5 of ggml_backend_sched_split_graph and the graph copy (see the module docstring)."""
    n = len(be)
    splits: list[tuple[int, int, list[int]]] = []
    copy_of: dict[tuple[int, int], int] = {}       # (tensor, backend) -> its first copy
    order: list[int] = []                          # tensors in graph-copy order
    split_inputs: list[int] = []                   # copies (all of them) in creation order
    added: list[tuple[int, int, int]] = []
    read_copies: list[tuple[int, int, int]] = []
    srcs = g.srcs.copy()                           # a node's own tuple until one of its sources is copied
    split: list[int] = []
    split_be = -1
    deps: list[int] = []
    for i, view, _v, tsrcs in g.nodes:
        if view:
            split.append(i)
            continue
        if be[i] != split_be:
            order.extend(deps)
            order.extend(split)
            deps.clear()
            split.clear()
            split_be = be[i]
            splits.append((split_be, i, []))
        split.append(i)
        copied: dict[int, int] | None = None        # source -> its copy on this backend
        for s in tsrcs:
            if be[s] == split_be:
                continue
            key = (s, split_be)
            first = copy_of.get(key)
            if first is None:
                first = copy_of[key] = n + len(added)
                for c in range(copies):
                    added.append((s, split_be, c))
                    be.append(split_be)
                    srcs.append(())
                split_inputs.extend(range(first, first + copies))
                splits[-1][2].append(s)
                added.append((s, -1, 0))
                be.append(be[s])
                srcs.append((s,))
                deps.append(n + len(added) - 1)
                deps.append(first)
            if copied is None:
                copied = {}
            copied[s] = first
            read_copies.append((i, s, first))
        if copied is not None:
            srcs[i] = tuple(copied.get(s, s) for s in tsrcs)
    order.extend(deps)
    order.extend(split)
    return _Split(be, srcs, order, split_inputs, splits, added, read_copies)


@dataclass(slots=True)
class Schedule:
    """The scheduler's result: every tensor (the copies and dependency views it adds appended), its backend, its
    sources (copies in place of other backends' tensors), the graph copy in order as (tensor, backend), the split
    inputs' copies in creation order, and each split as (backend, its first non-view node, the tensors it copies
    in)."""

    ts: list[T]
    be: list[int]
    srcs: list[tuple[int, ...]]
    graph: list[tuple[int, int]]
    split_inputs: list[int]
    splits: list[tuple[int, int, list[int]]]


def _devices(ts: Sequence[T]) -> tuple[list[int], list[tuple[int, int]]]:
    """The tensors' own devices (-1: none) and pins, as :func:`replay` takes them."""
    return [-1 if t.dev is None else t.dev for t in ts], [(i, t.pin) for i, t in enumerate(ts) if t.pin is not None]


def schedule(ts: Sequence[T], n_backends: int, *, copies: int = 1) -> Schedule:
    """Passes 1-5 of ggml_backend_sched_split_graph and the graph copy (see the module docstring)."""
    g = Graph(ts)
    sp = _split(g, _assign(g, *_devices(ts), n_backends - 1), copies)
    out = list(ts)
    for s, b, c in sp.added:
        t = ts[s]
        out.append(T(f"{t.name}#{b}#{c}", "CPY", t.size, layout=t.layout, inp=copies > 1, out=copies > 1) if b >= 0
                   else T(f"{t.name} (dep)", "DEP", 0, srcs=(s,), view_src=s))
    return Schedule(out, sp.be, sp.srcs, [(i, sp.be[i]) for i in sp.order], sp.split_inputs, sp.splits)


def buffer_sizes(ts: Sequence[T], n_backends: int, *, copies: int = 1,
                 inplace: frozenset[str] = INPLACE_OPS) -> list[int]:
    """Each backend's compute buffer (bytes) for the graph ``ts`` (every tensor that is not pre-allocated and
    not a graph input is a node, in graph order).  The last backend is the CPU; ``inplace``: the engine's
    ggml_op_can_inplace (:func:`inplace_ops`)."""
    return replay(Graph(ts), *_devices(ts), n_backends, copies=copies, inplace=inplace)


def replay(g: Graph, devs: Sequence[int], pins: Sequence[tuple[int, int]], n_backends: int, *,
           copies: int = 1, inplace: frozenset[str] = INPLACE_OPS) -> list[int]:
    """:func:`buffer_sizes` of the graph ``g`` with its pre-allocated tensors on ``devs`` (per tensor) and its
    pinned nodes on ``pins`` ((node, backend) pairs)."""
    cpu = n_backends - 1
    sp = _split(g, _assign(g, devs, pins, cpu), copies)
    be, srcs, order = sp.be, sp.srcs, sp.order
    # the added tensors: a copy is allocated as any node; a dependency view (DEP) never is, and its source's view
    # count leaves it out
    asize, layout, out, fixed, vsrc = g.asize.copy(), g.layout.copy(), g.out.copy(), g.fixed.copy(), g.vsrc.copy()
    inpl, children, live, held = g.inplace(inplace).copy(), g.children.copy(), g.live.copy(), g.held
    for s, b, _c in sp.added:
        copy = b >= 0
        asize.append(asize[s] if copy else 0)
        layout.append(layout[s] if copy else None)
        out.append(copy and copies > 1)
        fixed.append(not copy)
        vsrc.append(None)
        inpl.append(False)
        children.append(0)
        if copy:
            live.append(())
        else:
            children[s] += 1                # the dependency view reads its source
            live.append(() if held[s] else (s,))
    for i, s, c in sp.copied:
        children[s] -= 1
        children[c] += 1
        live[i] = tuple(x for x in srcs[i] if x >= len(held) or not held[x])
    allocs = [_Alloc() for _ in range(n_backends)]
    n = len(be)
    views = g.views + [0] * (n - len(g.views))
    own = [False] * n
    busy = fixed.copy()                     # own or fixed: what the allocation loop skips
    addr = [0] * n
    where = [0] * n

    def place(i: int, b: int) -> None:
        """Allocate a tensor known to need memory (not yet allocated, not pre-allocated, not a view)."""
        if inpl[i]:
            for p in live[i]:
                if not own[p] or out[p] or vsrc[p] is not None or layout[p] != layout[i]:
                    continue
                if children[p] == 1 and views[p] == 0:
                    own[i] = busy[i] = True
                    addr[i], where[i] = addr[p], where[p]
                    own[p] = busy[p] = False
                    return
        own[i] = busy[i] = True
        where[i] = b
        addr[i] = allocs[b].alloc(asize[i])

    if copies > 1:
        for i in g.in_leafs:
            out[i] = True
            if not busy[i]:
                place(i, cpu)
            for _c in range(1, copies):
                allocs[cpu].alloc(asize[i])      # the input's other copies: leafs of the CPU, never freed
        for c in sp.split_inputs:
            if not busy[c]:
                place(c, be[c])
    for i in g.leafs:
        if not busy[i]:
            place(i, be[i])
    for i in order:
        si = live[i]
        b = be[i]
        for s in si:
            if not busy[s]:
                place(s, b)
        if not busy[i]:
            place(i, b)
        for s in si:
            children[s] -= 1
            if children[s] == 0 and views[s] == 0:
                v = vsrc[s]
                if v is not None:
                    views[v] -= 1
                    if views[v] == 0 and children[v] == 0 and own[v] and not out[v]:
                        allocs[where[v]].free(addr[v], asize[v])
                        own[v] = busy[v] = False
                elif own[s] and not out[s]:
                    allocs[where[s]].free(addr[s], asize[s])
                    own[s] = busy[s] = False
    return [a.max_size for a in allocs]
