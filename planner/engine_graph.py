"""The compute graph an engine builds for one worst-case ubatch, rebuilt from ``data/engine_graphs.toml`` and
replayed through ggml's scheduler and allocator (:mod:`planner.gallocr`) to size every backend's compute buffer
as the engine logs it.

Which graphs exist: ``engine_graphs.toml`` has a table per (engine, architecture); :func:`graph_of`
(:mod:`planner.graph_select`) says which one applies (mainline: Qwen3-MoE-shaped models, DeepSeek on the legacy ``attn_kv_b`` layout or with
``attn_k_b``/``attn_v_b`` (MLA), gpt-oss and gemma-3 with their sliding-window and full caches, the Qwen3.5-MoE
gated delta-net hybrid, GLM-5 DSA (flash attention), Llama-4 with chunked attention, Nemotron-H, Granite-4.0-H and
Falcon-H1 (Mamba-2, attention and dense FFN layers), dense gemma-4 with its shared-KV layers reading another
layer's (another device's) cache and its K-as-V (attention_k_eq_v) layers, Jamba (Mamba-1, attention, MoE every
other layer), LFM2 and LFM2-MoE (gated short convolutions and attention), PLaMo-2 (Mamba and attention),
Ling-3.0 and Kimi-Linear (Kimi Delta Attention and MLA), DeepSeek-V4 (hyper-connections, raw/CSA/HCA attention by
compress ratio as per-layer tags, :func:`layer_tags`), RWKV-6/7 and their Qwen2-trunk forms (rwkv6qwen2 in the
QRWKV6 layout, arwkv7); ik 8337e4cd3: gpt-oss, gemma-3, the same
Qwen3-MoE shapes, Qwen3.5-MoE, Ling-3.0 (``-mla`` >= 1), DeepSeek under every ``-mla`` and GLM-DSA (its dense MLA
graph: no ``--dsa``), DeepSeek-V4 (its fused ops; each layer copies its own mask views: planner/input_copies.py),
with flash attention (DeepSeek, GLM-DSA, gpt-oss, gemma-4 and Ling-3.0: with or without) and fused up/gate experts,
dense gemma-4).  Others keep the live-set estimate of
:mod:`planner.compute_buffers`.

The worst-case ubatch (mainline ``llama_context::sched_reserve``, src/llama-context.cpp; ik
``llama_init_from_model``, src/llama.cpp): ``T = min(n_ctx, n_ubatch)`` tokens, every one an output, against
``n_kv`` cache cells; the buffer the engine keeps is the largest over the graphs it reserves, and the prompt-sized
one is the largest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cache
from typing import Any

from planner.gallocr import Graph, T, inplace_ops, replay
from planner.graph_memo import Row, Skeleton, keep_skeleton, memo_of, skeleton_of, source
from planner.graph_select import _templates, graph_of, has_graph, k_as_v
from planner.graph_shape import GraphShape
from planner.input_copies import input_rooted, layer_leaf_bytes
from planner.layer_kinds import TAGS, compress, dense_flags, ffn_only, kv_devices, layer_tags
from planner.tensors import ModelParams

__all__ = ["GraphShape", "build", "compress", "compute_buffers", "dense_flags", "ffn_only", "first_layer_own",
           "graph_of", "has_graph", "k_as_v", "kv_devices", "layer_leaf_bytes", "layer_tags"]


_ITER = ("iter", "iter0", "iterN")


def _chunked(rows: list[list[Any]], n_iter: int) -> list[tuple[list[Any], int]]:
    """The layer's rows with each run of rows flagged "iter"/"iter0"/"iterN" repeated once per -amb chunk (ik
    build_deepseek2.cpp:969-1012): (row, chunk index); "iter0" rows only in the first chunk, "iterN" in the
    others."""
    out: list[tuple[list[Any], int]] = []
    i = 0
    while i < len(rows):
        if not _flags(rows[i]) & set(_ITER):
            out.append((rows[i], 0))
            i += 1
            continue
        j = i
        while j < len(rows) and _flags(rows[j]) & set(_ITER):
            j += 1
        for k in range(n_iter):
            out.extend((r, k) for r in rows[i:j]
                       if not ("iter0" in _flags(r) and k > 0) and not ("iterN" in _flags(r) and k == 0))
        i = j
    return out


def _flags(row: list[Any]) -> set[str]:
    return set(row[5].split("+")) if len(row) > 5 and row[5] else set()


def build(engine: str, graph: str, shape: GraphShape, layer_dev: Sequence[int], device_of: Callable[[str], int],
          out_dev: int, cpu: int, dense: Sequence[bool] = (), swa: Sequence[bool] = (),
          recr: Sequence[bool] = (), kv_dev: Sequence[int] = (), kev: Sequence[bool] = (),
          tags: Sequence[str] = (), shared_inputs: bool = False) -> list[T]:
    """The graph's tensors in graph order for template ``graph`` (:func:`graph_of`); devices are backend indices
    (``cpu`` the last).  ``device_of`` maps a weight's GGUF name to its device (``-ot`` included); ``dense``: the
    layers with a dense FFN (rows flagged "dense"; the others take the "moe" rows); ``swa``: the sliding-window
    layers, whose "in:NAME" sources are the window cache's inputs "in:NAME_swa" where the template has them
    (mainline build_attn with llm_graph_input_attn_kv_iswa, src/llama-graph.cpp:3425-3455); ``recr``: the
    recurrent layers of a hybrid (rows flagged "recr"; the others take the "full" rows).  A source "sh:NAME" is
    a row of the template's ``shared`` list (views of a graph input that every layer reads), put into the graph
    where it is first read, as ggml's depth-first walk does (ggml.c ggml_visit_parents).  ``kv_dev``: per layer,
    the backend of another layer's cache it reads (gemma-4's shared-KV layers, :func:`kv_devices`), -1 for a
    layer with its own; such a layer drops the rows flagged "ownkv" (its K/V projections and cache stores) and
    draws those flagged "sharedkv", and its "kv:" cache views are of that cache, on that backend.  ``kev``: the
    layers that store K as V (no V projection, gemma-4's attention_k_eq_v): rows flagged "ownv" are drawn on layers
    with their own KV and V projection, "kev" on these, "noownv" on these and the shared-KV layers.  A template
    with ``window = true`` sizes a sliding-window layer's rows by :meth:`GraphShape.window` (its own cells and
    head widths).  ``tags``: each layer's kind tags (:func:`layer_tags`, "+"-joined: a row flagged with a tag is
    drawn only on layers that have it).  ``shared_inputs``: every layer reads the first one's views of the graph
    inputs (drawn "once"), so a device copies each in once (planner/input_copies.py: the solver's role stand-ins)."""
    sk = skeleton(engine, graph, shape, len(layer_dev), tuple(dense), tuple(swa), tuple(recr),
                  tuple(d >= 0 for d in kv_dev), tuple(kev), tuple(tags), shared_inputs)
    devs, pins = placed(sk, layer_dev, device_of, out_dev, cpu, kv_dev)
    pin = dict(pins)
    return [replace(t, dev=None if t.dev is None else devs[i], pin=pin.get(i)) for i, t in enumerate(sk.ts)]


def placed(sk: Skeleton, layer_dev: Sequence[int], device_of: Callable[[str], int], out_dev: int, cpu: int,
           kv_dev: Sequence[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """A placement's devices for the skeleton's tensors (per tensor, -1 for those not pre-allocated) and its pinned
    nodes as (node, backend), as :func:`planner.gallocr.replay` takes them (see :func:`build`)."""
    devs = [-1] * len(sk.ts)
    for i, name, il in sk.weights:
        devs[i] = layer_dev[il] if il >= 0 else device_of(name)
    for i, il in sk.caches:
        devs[i] = kv_dev[il] if 0 <= il < len(kv_dev) and kv_dev[il] >= 0 else layer_dev[il]
    if sk.pin_all or (cpu not in layer_dev and out_dev != cpu):
        return devs, [(i, layer_dev[il]) for i, il in sk.norms]
    return devs, []


def skeleton(engine: str, graph: str, shape: GraphShape, n_layer: int, dense: tuple[bool, ...] = (),
             swa: tuple[bool, ...] = (), recr: tuple[bool, ...] = (), kv_shared: tuple[bool, ...] = (),
             kev: tuple[bool, ...] = (), tags: tuple[str, ...] = (), shared_inputs: bool = False) -> Skeleton:
    """The graph :func:`build` draws for ``n_layer`` layers of these kinds, devices aside (``kv_shared``: the
    layers reading another layer's cache), drawn once per (engine, template, shape) and kinds while remembered
    (:func:`planner.graph_memo.skeleton_of`)."""
    kinds = (n_layer, dense, swa, recr, kv_shared, kev, tags, shared_inputs)
    got = skeleton_of(engine, graph, shape, kinds)
    if got is None:
        got = _draw(engine, graph, shape, n_layer, dense, swa, recr, kv_shared, kev, tags, shared_inputs)
        keep_skeleton(engine, graph, shape, kinds, got)
    return got


def _draw(engine: str, graph: str, shape: GraphShape, n_layer: int, dense: tuple[bool, ...],
          swa: tuple[bool, ...], recr: tuple[bool, ...], kv_shared: tuple[bool, ...], kev: tuple[bool, ...],
          tags: tuple[str, ...], shared_inputs: bool) -> Skeleton:
    """:func:`skeleton` drawn from the template (see :func:`build`)."""
    tpl = _templates()[engine][graph]
    shared_views = input_rooted(engine, graph) if shared_inputs else frozenset()
    k_seqs = tpl.get("reserve_seqs", 0)
    if k_seqs and shape.ns > k_seqs:
        # the engine reserves this architecture's prompt graph with k sequences whatever -np (Kimi-Linear:
        # llama-context.cpp:716-722); the other states are the rs input's extra states
        shape = replace(shape, ns=k_seqs, nx=shape.nx + shape.ns - k_seqs,
                        tc=shape.tc - (shape.dc - 1) * (shape.ns - k_seqs))
    windowed = bool(tpl.get("window"))
    ts: list[T] = []
    ids: dict[str, int] = {}
    weight_at: list[tuple[int, str, int]] = []      # the skeleton's device slots (see Skeleton)
    cache_at: list[tuple[int, int]] = []
    norm_at: list[tuple[int, int]] = []

    # graph order: a tensor's key; rows flagged "pre" go right after the last row flagged "exp" (see below)
    keys: list[tuple[int, int]] = []
    nxt = [(0, 0)]          # the key of the next tensor (minor 0: its own index)
    mark = [(0, 0)]         # after the last expanded row

    def add(t: T) -> int:
        ts.append(t)
        n = nxt[0]
        if n[1]:
            keys.append(n)
            nxt[0] = (n[0], n[1] + 1)
        else:
            keys.append((len(ts), 0))
        return len(ts) - 1

    for name, expr, *flag in tpl["inputs"]:
        if shape.has(flag[0] if flag else ""):
            ids["in:" + name] = add(T(f"inp_{name}", "NONE", shape.size(expr), layout=expr, inp=True))
    weights: dict[str, int] = {}

    def weight(name: str, il: int = -1) -> int:
        if name not in weights:
            weights[name] = add(T(name, "NONE", 0, dev=0, weight=True))
            # the token-embedding norm is loaded with layer 0 (LLM_TENSOR_LAYER_REPEATING, mainline
            # llama-arch.cpp:732 @0c1e57098), whatever device holds the other model-level weights
            weight_at.append((weights[name], name, il if il >= 0 and name.startswith("token_embd_norm.") else -1))
        return weights[name]

    shared: dict[str, int] = {}
    shared_rows = {row[0]: row for row in tpl.get("shared", [])}

    memo = memo_of(engine, graph, shape)
    sizes = memo.sizes
    win_shape = shape.window() if windowed else shape

    def size(expr: str, k1: int = 1, win: bool = False) -> int:
        key = (expr, k1, win)
        got = sizes.get(key)
        if got is None:
            got = sizes[key] = (win_shape if win else shape).size(expr, k1)
        return got

    def shared_kv(il: int) -> bool:
        return 0 <= il < len(kv_shared) and kv_shared[il]

    def cache_node(s: str, il: int, local: dict[str, int]) -> int:
        """The cache a "kv:" source names: the layer's own, or the one it shares (on that layer's backend)."""
        key = f"{s}{il}"
        if key not in local:
            local[key] = add(T(f"cache_{s[3:]}_l{il}", "NONE", 0, dev=0))
            cache_at.append((local[key], il))
        return local[key]

    # keyed by the row list's id: the list is kept with its rows (memo.parts), so no other list takes that id
    kept = memo.kept

    def rows_of(rows: list[tuple[list[Any], int]], il: int) -> list[Row]:
        """The rows a layer of this kind draws (its flags hold), with their flags and their sources' alternatives;
        parsed once per kind."""
        is_last, is_dense = il == n_layer - 1, il >= 0 and il < len(dense) and dense[il]
        is_recr = 0 <= il < len(recr) and recr[il]
        is_swa = 0 <= il < len(swa) and swa[il]
        is_shared = shared_kv(il)
        is_kev = not is_shared and 0 <= il < len(kev) and kev[il]
        own_v = not is_shared and not is_kev
        tag = tags[il] if 0 <= il < len(tags) else ""
        key = (id(rows), is_last, is_dense, is_recr, is_swa, is_shared, is_kev, tag)
        if key not in kept:
            out = []
            lshape = win_shape if is_swa else shape
            have = set(tag.split("+")) if tag else set()
            for row, k in rows:
                flags = _flags(row)
                # a flag naming a layer tag holds where the layer has it ("a|b": either, tags or shape flags)
                if not all(any(g in have if g in TAGS else lshape.has(g) for g in f.split("|"))
                           for f in flags if TAGS.intersection(f.split("|"))):
                    continue
                if ("last" in flags and not is_last) or ("nofirst" in flags and "first" in have):
                    continue
                if not all(lshape.has(f) for f in flags):
                    continue
                if ("dense" in flags and not is_dense) or (flags & {"moe", "nodense"} and is_dense):
                    continue
                if ("recr" in flags and not is_recr) or ("full" in flags and is_recr):
                    continue
                if ("swa" in flags and not is_swa) or ("noswa" in flags and is_swa):
                    continue
                if ("ownkv" in flags and is_shared) or ("sharedkv" in flags and not is_shared):
                    continue
                if ("ownv" in flags and not own_v) or ("noownv" in flags and own_v) or ("kev" in flags and not is_kev):
                    continue
                # a node's bytes, and its layout: a window layer's has another only where its size differs (its
                # own head widths); the views/sums of EXPERT_SUM and LEAF rows are sized where they are drawn
                expr, win = row[2], windowed and is_swa
                drawn_here = row[1] in ("EXPERT_SUM", "LEAF")
                sz = 0 if drawn_here else size(expr, k + 1, win)
                layout = (expr, True) if not drawn_here and win and sz != size(expr, k + 1) else expr
                out.append((row, k, flags, [source(tuple(x.split("|"))) for x in row[3]], sz, layout))
            kept[key] = (rows, out)
        return kept[key][1]

    once: dict[str, int] = {}       # rows drawn by the first layer that has them, read by the others
    moved = [False]                 # a row flagged "pre" was drawn: the graph order is not the drawing order

    def nodes(rows: list[tuple[list[Any], int]], il: int, local: dict[str, int]) -> None:
        win = windowed and 0 <= il < len(swa) and swa[il]
        for row, _k, flags, srcs, sz, layout in rows_of(rows, il):
            name, op, expr = row[0], row[1], row[2]
            if ("once" in flags or name in shared_views) and name in once:
                local[name] = once[name]
                continue
            view = row[4] if len(row) > 4 else ""
            resolved: list[int] = []
            for own, s, kind in srcs:
                for a in own:           # "a|b": the last alternative that exists (graph_memo.source)
                    if a in local:
                        s, kind = a, ""
                        break
                if not kind:            # a node of the layer (the most common source)
                    resolved.append(local[s])
                elif kind == "self":    # ggml_cast: a CPY into a new tensor, which is its own second source
                    resolved.append(-1)
                elif kind == "sh:":
                    if s not in shared:
                        if (s, 0) not in memo.parts:
                            memo.parts[s, 0] = [(shared_rows[s[3:]], 0)]
                        nodes(memo.parts[s, 0], il, shared)  # noqa: F821  (deleted after the last layer: see below)
                        shared[s] = shared[s[3:]]
                    resolved.append(shared[s])
                elif kind == "w:":      # a layer's weight, its name in the layer (graph_memo.source)
                    resolved.append(weight(f"blk.{il}.{s}" if il >= 0 else s, il))
                elif kind == "wm:":     # a model-level weight
                    resolved.append(weight(s, il))
                elif kind == "kv:":
                    resolved.append(cache_node(s, il, local))
                else:                   # "in:"
                    is_swa = 0 <= il < len(swa) and swa[il]
                    resolved.append(ids[s + "_swa"] if is_swa and s + "_swa" in ids else ids[s])
            if -1 in resolved:
                resolved = [len(ts) if r == -1 else r for r in resolved]
            if op == "EXPERT_SUM":      # build_moe_ffn: n_used views of `weighted`, summed by n_used - 1 ADDs
                views = [add(T(f"{name}{j}-{il}", "VIEW", size(expr, 1, win), srcs=(resolved[0],),
                               view_src=resolved[0])) for j in range(shape.n_used)]
                cur = views[0]
                for v in views[1:]:
                    cur = add(T(f"moe_out-{il}", "ADD", size(expr, 1, win), srcs=(cur, v), layout=expr))
                local["moe_out"] = cur
                if "exp" in flags:      # each view and sum expanded (mainline llama-graph.cpp:2353, 2362)
                    mark[0] = keys[-1]
                continue
            v_src = None
            if view:
                if view.startswith("kv:"):
                    v_src = cache_node(view, il, local)
                elif view.startswith("in:"):
                    v_src = ids[view]
                else:
                    root = local[[a for a in view.split("|") if a in local][-1]]
                    while (up := ts[root].view_src) is not None:    # ggml keeps a view's root (ggml.c)
                        root = up
                    v_src = root
            if op == "LEAF":          # a tensor the graph creates (ggml_new_tensor): allocated as a leaf
                local[name] = add(T(f"{name}-{il}", "NONE", size(expr, 1, win), layout=expr, leaf=True))
                continue
            if "norm" in flags and il >= 0:
                norm_at.append((len(ts), il))
            if "pre" in flags:      # drawn where the last expanded row left off
                nxt[0] = (mark[0][0], mark[0][1] + 1)
                moved[0] = True
            # positional: name, op, size, srcs, view_src, layout, dev, weight, inp, out, pin (the hottest call)
            local[name] = add(T(f"{name}-{il}", op, sz, tuple(resolved), v_src, layout, None, False, False,
                                "out" in flags, None))
            if "once" in flags or name in shared_views:
                once[name] = local[name]
            if "pre" in flags:
                mark[0] = keys[-1]
                nxt[0] = (0, 0)
            elif "exp" in flags:
                mark[0] = keys[-1]
            if "glob" in flags:
                glob[name] = local[name]

    def part(name: str, n_iter: int = 1) -> list[tuple[list[Any], int]]:
        if (name, n_iter) not in memo.parts:
            memo.parts[name, n_iter] = _chunked(tpl[name], n_iter)
        return memo.parts[name, n_iter]

    head: dict[str, int] = {}
    glob: dict[str, int] = {}           # rows flagged "glob": read by every later layer by name
    nodes(part("head"), -1, head)
    inp = head[tpl["head"][-1][0]]           # the last head row is layer 0's input (gemma-3: the scaled embeddings)
    layer = part("layer", shape.nit)
    for il in range(n_layer):
        local = {"inpL": inp, **glob}
        nodes(layer, il, local)
        inp = local["l_out"]
    nodes(part("tail"), -1, {"inpL": inp})
    # nodes() calls itself, so its closure refers to it: a reference cycle that would keep every tensor of this
    # graph alive until the cyclic collector finds it (~17,000 tensors a headline plan); cut it here
    del nodes
    if moved[0]:
        ts, new = _reordered(ts, keys)
        weight_at = [(new[i], name, il) for i, name, il in weight_at]
        cache_at = [(new[i], il) for i, il in cache_at]
        norm_at = [(new[i], il) for i, il in norm_at]
    # llama-context.cpp:2646-2657 graph_get_cb: the norms are pinned for a short ubatch (or a full offload)
    return Skeleton(ts, tuple(weight_at), tuple(cache_at), tuple(norm_at), shape.T < 32, Graph(ts))


def _reordered(ts: list[T], keys: list[tuple[int, int]]) -> tuple[list[T], list[int]]:
    """The tensors sorted by their keys, sources and view sources renumbered.  ggml orders a graph by its
    ``ggml_build_forward_expand`` calls, each adding the unvisited ancestors of the expanded tensor depth first
    (ggml.c ggml_visit_parents): a node built early but expanded later lands late.  Templates are written in
    the order of the rows' own dependencies; a row flagged "pre" reads no node of its layer and is expanded
    before the layer's input is (a Mamba layer's conv-state build_rs, mamba-base.cpp:184 and llama-graph.cpp:
    3512-3547), so it lands right after the last row flagged "exp" (an expanded node) of the graph so far.  Also
    returned: each old index's new one."""
    order = sorted(range(len(ts)), key=keys.__getitem__)
    new = [0] * len(ts)
    for i, old in enumerate(order):
        new[old] = i
    out = []
    for old in order:
        t = ts[old]
        t.srcs = tuple(new[s] for s in t.srcs)
        t.view_src = None if t.view_src is None else new[t.view_src]
        out.append(t)
    return out, new


@cache
def _sizes(engine: str, graph: str, shape: GraphShape, layer_dev: tuple[int, ...], dense: tuple[bool, ...],
           weight_dev: tuple[tuple[str, int], ...], out_dev: int, n_backends: int, copies: int,
           swa: tuple[bool, ...] = (), recr: tuple[bool, ...] = (), kv_dev: tuple[int, ...] = (),
           kev: tuple[bool, ...] = (), tags: tuple[str, ...] = (), shared_inputs: bool = False) -> tuple[int, ...]:
    wd = dict(weight_dev)
    cpu = n_backends - 1

    def device_of(name: str) -> int:
        if name in wd:
            return wd[name]
        if name.startswith("blk."):
            return layer_dev[int(name.split(".")[1])]
        return cpu if name == "token_embd.weight" else out_dev

    sk = skeleton(engine, graph, shape, len(layer_dev), dense, swa, recr, tuple(d >= 0 for d in kv_dev), kev, tags,
                  shared_inputs)
    devs, pins = placed(sk, layer_dev, device_of, out_dev, cpu, kv_dev)
    return tuple(replay(sk.graph, devs, pins, n_backends, copies=copies, inplace=inplace_ops(engine)))


@cache
def first_layer_own(engine: str, graph: str) -> bool:
    """Whether the model's layer 0 is a kind of its own for the allocator: the template draws it unlike the others
    (rows flagged "first" or "nofirst", :func:`layer_tags`), or a layer's "pre" rows (its recurrent state's reads)
    land among the previous layer's rows, which layer 0 has none of.  A stand-in placement from layer 0 then needs
    one more layer to reach the steady state (the tiny RWKV-6 on the CPU: 7.1309 MiB with 4 layers or more, 2 KiB
    less with 3; the tiny Mamba-2's first of two rpc-servers, 4 layers: 12.77 MiB as logged, 12.35 with 3)."""
    return any(_flags(row) & {"first", "nofirst", "pre"} for row in _templates()[engine][graph]["layer"])


def compute_buffers(engine: str, graph: str, p: ModelParams, shape: GraphShape, layer_dev: Sequence[int],
                    weight_dev: dict[str, int], out_dev: int, n_backends: int, copies: int = 1,
                    *, exact_layers: bool = False, layer_base: int = 0, kv_elsewhere: int = -1,
                    kev: Sequence[bool] = (), shared_inputs: bool = False) -> tuple[int, ...]:
    """Each backend's compute buffer in bytes (backend ``n_backends - 1`` is the CPU) for template ``graph``.
    ``weight_dev``: the weights away from their layer's device (``-ot``), by GGUF name; token_embd is on the CPU,
    the output's tensors on ``out_dev``.  The placement is :func:`compress`-ed unless ``exact_layers`` or its
    layers create leafs or copy their own input views (the buffer grows per layer held).
    ``layer_base``: the model layer the placement's first layer stands for (its kind: sliding-window, recurrent,
    dense; a stand-in placement of a few layers, :func:`planner.compute_buffers.estimate`); ``kv_elsewhere``: the
    backend of a shared cache whose layer is before the stand-in (:func:`kv_devices`); ``kev``: per model layer,
    whether it stores K as V (:func:`k_as_v`); ``shared_inputs``: see :func:`build`."""
    n = len(layer_dev)
    dense = dense_flags(p, n + layer_base)[layer_base:]
    swa = [p.is_swa(il + layer_base) for il in range(n)] if p.n_swa else []
    recr = [p.is_recurrent(il + layer_base) for il in range(n)]
    m = p.n_loaded_layers
    if p.recurrent_layers and n + layer_base > m:
        # a role's stand-in longer than the model (role_compute._stand_in): kinds from per-layer arrays repeat
        # the model's own pattern rather than turning into the attention layers of no array
        model_dense = dense_flags(p, m)
        dense = [model_dense[(il + layer_base) % m] for il in range(n)]
        recr = [p.is_recurrent((il + layer_base) % m) for il in range(n)]
    kv_dev = kv_devices(p, layer_dev, layer_base, kv_elsewhere)
    layer_kev = [bool(kev) and kev[(il + layer_base) % len(kev)] for il in range(n)]
    tags = [layer_tags(p, il + layer_base) for il in range(n)]
    if not exact_layers and not layer_leaf_bytes(engine, graph, shape) and not input_rooted(engine, graph):
        layer_dev, weight_dev, dense, swa, recr, kv_dev, layer_kev, tags = compress(
            layer_dev, weight_dev, dense, swa, recr, kv_dev, layer_kev, tags)
    return _sizes(engine, graph, shape, tuple(layer_dev), tuple(dense), tuple(sorted(weight_dev.items())), out_dev,
                  n_backends, copies, tuple(swa), tuple(recr), tuple(kv_dev), tuple(layer_kev), tuple(tags),
                  shared_inputs)
