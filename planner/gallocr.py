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

ik_llama.cpp 8337e4cd3 runs the same passes (ggml-backend.cpp:1439-1968: no CUDA op offload over RPC, and its
extra split rules, REDUCE/FAKE_CPY and 0xff-flagged ops, are not in the graphs drawn here) and the same allocator
(ggml-alloc.c:472-640, without mainline's ggml_gallocr_free_extra_space, which an in-place reuse of the same
layout never needs), but a shorter ``ggml_op_can_inplace`` (:data:`IK_INPLACE_OPS`, :func:`inplace_ops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    two parallel lists (offsets ascending, sizes), the last one the unbounded tail."""

    __slots__ = ("offs", "sizes", "max_size")

    def __init__(self) -> None:
        self.offs: list[int] = [0]
        self.sizes: list[int] = [1 << 62]
        self.max_size = 0

    def alloc(self, size: int) -> int:
        size = -(-size // ALIGN) * ALIGN
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
        size = -(-size // ALIGN) * ALIGN
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


def _assign(ts: Sequence[T], nodes: Sequence[int], cpu: int) -> list[int]:
    """Backend of every tensor: passes 1-4 of ggml_backend_sched_split_graph."""
    be = [-1] * len(ts)
    for i, t in enumerate(ts):
        if t.dev is not None:
            be[i] = t.dev
        elif t.pin is not None:
            be[i] = t.pin
        elif t.inp:
            be[i] = cpu                                       # leafs: graph inputs go to the CPU (1.inp)
    dev = [t.dev for t in ts]
    for i in nodes:                                           # pass 1: backend_id_from_cur
        if be[i] != -1:
            continue
        t = ts[i]
        vdev = dev[t.view_src] if t.view_src is not None else None
        if vdev is not None:
            be[i] = vdev
        elif t.inp:
            be[i] = cpu
        else:
            for s in t.srcs:
                d = dev[s]
                if d is not None and ts[s].weight:
                    be[i] = d
                    break
    plain = [i for i in nodes if ts[i].op not in VIEW_OPS]
    for order, skip_cpu in ((plain, True), (plain[::-1], True), (plain, False), (plain[::-1], False)):
        cur = -1
        for i in order:                                       # pass 2: expand
            b = be[i]
            if b != -1:
                cur = -1 if (skip_cpu and b == cpu) else b
            elif cur != -1:
                be[i] = cur
    for i in nodes:                                           # pass 4: views and sources
        t = ts[i]
        if be[i] == -1 and t.view_src is not None:
            be[i] = be[t.view_src]
        for s in t.srcs:
            if be[s] == -1:
                v = ts[s].view_src
                be[s] = be[v] if v is not None else be[i]
        if be[i] == -1:
            be[i] = 0
    return be


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


def schedule(ts: Sequence[T], n_backends: int, *, copies: int = 1) -> Schedule:
    """Passes 1-5 of ggml_backend_sched_split_graph and the graph copy (see the module docstring)."""
    cpu = n_backends - 1
    nodes = [i for i, t in enumerate(ts) if t.op != "NONE"]
    be = _assign(ts, nodes, cpu)
    ts = list(ts)
    splits: list[tuple[int, int, list[int]]] = []
    # pass 5: splits and their input copies
    copy_of: dict[tuple[int, int], list[int]] = {}
    graph: list[tuple[int, int]] = []            # (tensor, backend) in graph-copy order
    split_inputs: list[int] = []                 # copies (all of them) in creation order
    srcs = [t.srcs for t in ts]                  # a node's own tuple until one of its sources is copied
    split: list[int] = []
    split_be = -1
    deps: list[tuple[int, int]] = []

    def flush() -> None:
        graph.extend(deps)
        graph.extend((i, be[i]) for i in split)
        deps.clear()
        split.clear()

    for i in nodes:
        t = ts[i]
        if t.op in VIEW_OPS:
            split.append(i)
            continue
        if be[i] != split_be:
            flush()
            split_be = be[i]
            splits.append((split_be, i, []))
        split.append(i)
        copied: list[int] | None = None
        for j, s in enumerate(t.srcs):
            if be[s] == split_be:
                continue
            key = (s, split_be)
            if key not in copy_of:
                made = []
                for c in range(copies):
                    ts.append(T(f"{ts[s].name}#{split_be}#{c}", "CPY", ts[s].size, layout=ts[s].layout,
                                inp=copies > 1, out=copies > 1))
                    be.append(split_be)
                    srcs.append(())
                    made.append(len(ts) - 1)
                copy_of[key] = made
                split_inputs.extend(made)
                splits[-1][2].append(s)
                ts.append(T(f"{ts[s].name} (dep)", "DEP", 0, srcs=(s,), view_src=s))
                be.append(be[s])
                srcs.append((s,))
                deps.append((len(ts) - 1, be[s]))
                deps.append((made[0], split_be))
            if copied is None:
                copied = list(t.srcs)
            copied[j] = copy_of[key][0]
        if copied is not None:
            srcs[i] = tuple(copied)
    flush()
    return Schedule(ts, be, srcs, graph, split_inputs, splits)


def buffer_sizes(ts: Sequence[T], n_backends: int, *, copies: int = 1,
                 inplace: frozenset[str] = INPLACE_OPS) -> list[int]:
    """Each backend's compute buffer (bytes) for the graph ``ts`` (every tensor that is not pre-allocated and
    not a graph input is a node, in graph order).  The last backend is the CPU; ``inplace``: the engine's
    ggml_op_can_inplace (:func:`inplace_ops`)."""
    cpu = n_backends - 1
    leafs = [i for i, t in enumerate(ts) if t.op == "NONE"]
    sc = schedule(ts, n_backends, copies=copies)
    ts, be, srcs, graph, split_inputs = sc.ts, sc.be, sc.srcs, sc.graph, sc.split_inputs
    # ggml-alloc
    allocs = [_Alloc() for _ in range(n_backends)]
    n = len(ts)
    children = [0] * n
    views = [0] * n
    own = [False] * n
    addr = [0] * n
    where = [0] * n

    def allocate(i: int, b: int) -> None:
        t = ts[i]
        if own[i] or t.dev is not None or t.view_src is not None or (t.op == "NONE" and not (t.inp or t.leaf)):
            return
        place(i, b)

    def place(i: int, b: int) -> None:
        """:func:`allocate` for a tensor known to need memory (not yet allocated, not pre-allocated, not a view)."""
        t = ts[i]
        if ("UNARY" if t.op in UNARY_OPS else t.op) in inplace:
            for p in srcs[i]:
                pt = ts[p]
                if not own[p] or pt.out or pt.view_src is not None or pt.layout != t.layout:
                    continue
                if children[p] == 1 and views[p] == 0:
                    own[i], addr[i], where[i] = True, addr[p], where[p]
                    own[p] = False
                    return
        own[i] = True
        where[i] = b
        addr[i] = allocs[b].alloc(t.size)

    def free(i: int) -> None:
        if ts[i].out:
            return
        allocs[where[i]].free(addr[i], ts[i].size)
        own[i] = False

    if copies > 1:
        for i in leafs:
            if ts[i].inp:
                extra = []
                for c in range(1, copies):
                    ts.append(T(f"{ts[i].name}#{c}", "NONE", ts[i].size, layout=ts[i].layout, inp=True, out=True))
                    be.append(cpu)
                    srcs.append(())
                    extra.append(len(ts) - 1)
                ts[i].out = True
                allocate(i, cpu)
                for e in extra:
                    children.append(0)
                    views.append(0)
                    own.append(False)
                    addr.append(0)
                    where.append(0)
                    allocate(e, cpu)
        for c in split_inputs:
            allocate(c, be[c])
    for i in leafs:
        allocate(i, be[i])
    vsrc = [t.view_src for t in ts]
    for i, _b in graph:
        if vsrc[i] is not None and ts[i].op != "DEP":
            views[vsrc[i]] += 1      # type: ignore[index]
        for s in srcs[i]:
            children[s] += 1
    # what allocate() would return at once for, hoisted: pre-allocated tensors, views and other graphs' leafs
    fixed = [t.dev is not None or t.view_src is not None or (t.op == "NONE" and not (t.inp or t.leaf)) for t in ts]
    for i, b in graph:
        si = srcs[i]
        for s in si:
            if not (own[s] or fixed[s]):
                place(s, b)
        if not (own[i] or fixed[i]):
            place(i, b)
        for s in si:
            children[s] -= 1
            if children[s] == 0 and views[s] == 0:
                v = vsrc[s]
                if v is not None:
                    views[v] -= 1
                    if views[v] == 0 and children[v] == 0 and own[v]:
                        free(v)
                elif own[s]:
                    free(s)
    return [a.max_size for a in allocs]
