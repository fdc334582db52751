"""A model's layer kinds as the engine graphs of :mod:`planner.engine_graph` draw them (which layers take a
template's "dense", "recr", "sharedkv" or tagged rows), and :func:`compress`, which cuts runs of identical layers
out of a placement before it is replayed."""

from __future__ import annotations

from collections.abc import Sequence

from planner.tensors import ModelParams

__all__ = ["RUN", "TAGS", "compress", "dense_flags", "ffn_only", "kv_devices", "layer_tags"]


def kv_devices(p: ModelParams, layer_dev: Sequence[int], layer_base: int = 0, elsewhere: int = -1) -> list[int]:
    """:func:`planner.engine_graph.build`'s ``kv_dev``: per layer of a placement, -1 where the layer stores its own K/V, else the backend
    of the cache it reads.  From ``n_layer_kv`` on (gemma-4 ``shared_kv_layers``) a layer reads the last own
    window layer's cache (``n_layer_kv - 2``) if it is a window layer, else the last full one's (``n_layer_kv -
    1``): mainline src/llama-model.cpp:2780-2788 (the reuse callback, 0c1e57098), ik src/llama-build-context.cpp:
    2015-2020 (llm_build_kqv, 8337e4cd3).  ``layer_base``: the model layer the placement's first layer stands for;
    a cache owner before it (a stand-in placement) is on ``elsewhere`` (-1: the layer's own backend)."""
    m = p.n_layer_kv
    if not m:
        return []
    out = []
    for il, dev in enumerate(layer_dev):
        g = il + layer_base
        if g < m:
            out.append(-1)
            continue
        owner = m - (2 if p.is_swa(g) else 1) - layer_base
        out.append(layer_dev[owner] if 0 <= owner < len(layer_dev) else elsewhere if elsewhere >= 0 else dev)
    return out


# layer tags a template's rows may be flagged with (:func:`layer_tags`)
TAGS = frozenset({"raw", "csa", "hca", "hash", "nohash", "first", "rescale"})


def layer_tags(p: ModelParams, il: int) -> str:
    """A layer's kind tags, "+"-joined (rows flagged with one are drawn only on layers that have it): DeepSeek-V4's
    attention by compress ratio ("raw" 0, "csa" 4, "hca" 128: mainline deepseek4.cpp:1200-1221) and its routing
    ("hash": the first ``n_hash_layers`` take their experts from ffn_gate_tid2eid, 1320-1323; "nohash"); "first"
    on the model's layer 0 (rows flagged "nofirst" are drawn on the others: RWKV-7's value of layer 0 is every
    later layer's residual, rwkv7-base.cpp:74-85, and the token-embedding norm is built with layer 0, rwkv6.cpp:102,
    on its device: TOKEN_EMBD_NORM is a layer-0 tensor, llama-arch.cpp:732); "rescale" on the layers whose output
    RWKV-6 halves (every ``rescale_every``-th, rwkv6.cpp:164-166); all at 0c1e57098."""
    tags = []
    if p.compress_ratios:
        ratio = p.compress_ratios[il % len(p.compress_ratios)]
        tags += [{4: "csa", 128: "hca"}.get(ratio, "raw"), "hash" if il < p.n_hash_layers else "nohash"]
    if il == 0:
        tags.append("first")
    if p.rescale_every and (il + 1) % p.rescale_every == 0:
        tags.append("rescale")
    return "+".join(tags)


def dense_flags(p: ModelParams, n: int) -> list[bool]:
    """Which of the first ``n`` layers take a template's "dense" rows: a MoE model's layers without experts (the
    dense lead layers, Llama-4's every other layer: ModelParams.is_moe_layer); a dense model's lead layers and its
    FFN-only layers (:func:`ffn_only`).  Rows flagged "moe" or "nodense" are drawn on the others."""
    return [not p.is_moe_layer(il) if p.is_moe else il < p.n_dense_lead or ffn_only(p, il) for il in range(n)]


def ffn_only(p: ModelParams, il: int) -> bool:
    """A layer with neither a recurrent mixer nor attention, only an FFN: Nemotron-H's MLP layers, where the header's
    per-layer head_count_kv is 0 and the layer is not recurrent (nemotron-h.cpp:13-16, 110-128)."""
    return bool(p.n_head_kv_layers) and not p.is_recurrent(il) and p.head_count_kv(il) == 0


RUN = 3     # identical layers in a row kept by :func:`compress` (tests/test_engine_graph.py: 2 is not enough)


def compress(layer_dev: Sequence[int], weight_dev: dict[str, int], dense: Sequence[bool] = (),
             swa: Sequence[bool] = (), recr: Sequence[bool] = (), kv_dev: Sequence[int] = (),
             kev: Sequence[bool] = (), tags: Sequence[str] = ()
             ) -> tuple[list[int], dict[str, int], list[bool], list[bool], list[bool], list[int], list[bool],
                        list[str]]:
    """The same placement with every run of identical layers (same device, same weights moved where) cut to
    ``RUN`` layers.  The graph repeats per layer, so the allocator reaches its steady state within a run and a
    longer run changes no buffer (checked on every harness placement, tests/test_engine_graph.py); the last layer
    stays the last (it alone gathers the output rows).  A layer's kind is its FFN (``dense``), its cache
    (``swa``), its mixer (``recr``), the cache it reads (``kv_dev``), its V (``kev``) and its tags (``tags``,
    :func:`layer_tags`: layer 0 is a kind of its own, so a run after it keeps ``RUN`` more layers; the allocator is
    not steady yet after the layer that follows the graph's inputs: mainline Mamba-2 over two rpc-servers replayed
    12.35 MiB on the first device with layer 0 counted in the run, 12.77 as logged without): alternating kinds are
    kept as they are."""
    moved: dict[int, list[tuple[str, int]]] = {}
    for name, dev in weight_dev.items():
        if name.startswith("blk."):
            moved.setdefault(int(name.split(".")[1]), []).append((name.split(".", 2)[2], dev))
    kinds = [il < len(dense) and dense[il] for il in range(len(layer_dev))]
    windows = [il < len(swa) and swa[il] for il in range(len(layer_dev))]
    mixers = [il < len(recr) and recr[il] for il in range(len(layer_dev))]
    caches = [kv_dev[il] if il < len(kv_dev) else -1 for il in range(len(layer_dev))]
    # a layer reading another device's cache is never cut: each adds its own copies of the cache views, all made
    # at the start of the device's split (ggml-backend.cpp:1510-1590), so the buffer grows with every such layer
    kvs = [il < len(kev) and kev[il] for il in range(len(layer_dev))]
    tag = [tags[il] if il < len(tags) else "" for il in range(len(layer_dev))]
    sig = [(d, kinds[il], windows[il], mixers[il], caches[il] if caches[il] in (-1, d) else (caches[il], il),
            kvs[il], tag[il], tuple(sorted(moved.get(il, ())))) for il, d in enumerate(layer_dev)]
    keep = [il for il in range(len(sig))
            if il < RUN or any(sig[j] != sig[il] for j in range(il - RUN, il)) or il == len(sig) - 1]
    new_dev = [layer_dev[il] for il in keep]
    new_w = {name: dev for name, dev in weight_dev.items() if not name.startswith("blk.")}
    for k, il in enumerate(keep):
        new_w.update({f"blk.{k}.{rest}": dev for rest, dev in moved.get(il, ())})
    return (new_dev, new_w, [kinds[il] for il in keep], [windows[il] for il in keep], [mixers[il] for il in keep],
            [caches[il] for il in keep] if kv_dev else [], [kvs[il] for il in keep] if kev else [],
            [tag[il] for il in keep])
