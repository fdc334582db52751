"""The compute buffer a device's role reserves before anything is placed (the solver's view,
:func:`planner.compute_buffers.estimate`): the engine's graph replayed over small stand-in placements that give the
device that role (what comes before it, the FFN on it or partly on the CPU, the output, pipeline copies, shared-KV
layers), and the per-layer allowances of graphs whose buffer grows with the layers a device holds.  Split out of
:mod:`planner.compute_buffers`, which keeps the live sets and the replay of a known placement.
"""

from __future__ import annotations

import math
from dataclasses import replace

from planner.compute_buffers import DeviceRole, _shape, _tokens
from planner.runconfig import RunConfig
from planner.tensors import ModelParams, TensorMap

__all__ = ["layer_leaf_allowance"]


_K = 3      # layers per device in the role's stand-in placement: the graph repeats per layer, so a device's
#             buffer is the same for any count from 2 on (tests/test_compute_buffers.py checks 3 against 40)
# MoE layers of a stand-in block whose experts alternate GPU/CPU (every other layer's -ot): ik's -mla 0 DeepSeek-R1
# at 4k needs 4 of them to reach the buffer of a whole alternating device (268.00 MiB; 3 give 254.54), 6, 24 and
# 56 give the same
_ALTERNATING = 6


def _block(p: ModelParams) -> int:
    """Layers per block of a stand-in placement: ``_K``, or two of the model's periods (:func:`_period`) after the
    layers that precede its repeating kinds (:func:`_periodic_from`: DeepSeek-V4's sliding-window-only layers, whose
    hidden state before the second CSA layer of a device leaves a hole: the tiny dsv4 model over one rpc-server at
    16k logs 28.61 MiB, a stand-in of two periods alone replays 28.11)."""
    per = _period(p)
    return _K if per == 1 else 2 * per + _periodic_from(p)


def _canonical(tmap: TensorMap, cfg: RunConfig, role: DeviceRole) -> int | None:
    """:func:`estimate` from the allocator replay, for a device whose neighbours are not known yet (the solver):
    the largest of the buffers the device gets in small placements that give it the role, over one other GPU
    ``O`` and the CPU, ``_K`` layers per block: whatever comes before it (``O``'s layers, CPU layers, nothing:
    unless ``role.entry`` says), and with the FFN on the device, or the experts of one of its layers on the CPU,
    or the up/gate experts of every other layer (partial ``-ot``s).  The CPU: running layers, or only the experts of GPU layers.  A model's dense lead layers
    (DeepSeek) are the first block's, with ``_K`` MoE layers after them when that block is the device's."""
    from planner.engine_graph import graph_of

    graph = graph_of(cfg.engine, tmap, cfg.flash_attn, _tokens(cfg), cfg.mla)
    if graph is None or not _shape(tmap.params, cfg).drawn():
        return None
    if role.copies > 1:
        # the solver reserves input copies when the plan might run with pipeline parallelism (groups.solver_copies)
        # but its answer may keep experts on the CPU (-ot, one copy): reserve for either
        one = replace(role, copies=1)
        return max(_pipelined(tmap, cfg, role, graph), _pipelined(tmap, cfg, one, graph),
                   _shared_kv(tmap, cfg, one, graph)) + _leaf_allowance(tmap, cfg, role, graph)
    return max(_pipelined(tmap, cfg, role, graph), _shared_kv(tmap, cfg, role, graph)) + _leaf_allowance(
        tmap, cfg, role, graph)


def _shared_kv(tmap: TensorMap, cfg: RunConfig, role: DeviceRole, graph: str) -> int:
    """The device holding every layer that reads an earlier layer's cache (gemma-4 ``shared_kv_layers``) with those
    caches on another device: each such layer copies its K and V views in at the start of the device's split
    (:func:`planner.engine_graph.kv_devices`), so the buffer grows with their number, which the stand-ins' few
    layers do not reach (the RPC harness: 73.02 MiB on the second of two devices, ``-ts 1,1``)."""
    from planner.engine_graph import compute_buffers, k_as_v

    p = tmap.params
    m, n = p.n_layer_kv, p.n_loaded_layers
    if not (role.attention and not role.host and 0 < m < n) or role.entry == "input":
        return 0            # a device holding layer 0 holds the cache owners of its layers too (layers are contiguous)
    d, o, c = 0, 1, 2
    ffn = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps") if p.n_expert else ("ffn_gate", "ffn_up", "ffn_down")
    moved = {} if role.ffn else {f"blk.{il}.{r}.weight": c for il in range(m, n) for r in ffn}
    return compute_buffers(cfg.engine, graph, p, _shape(p, cfg), [o] * m + [d] * (n - m), moved,
                           d if role.output else o, 3, role.copies, kev=k_as_v(tmap), shared_inputs=True)[d]


def _leaf_allowance(tmap: TensorMap, cfg: RunConfig, role: DeviceRole, graph: str) -> int:
    """What the stand-ins leave out of a graph whose layers create leafs (:func:`planner.engine_graph.
    layer_leaf_bytes`: allocated up front, one set per layer the device holds): the stand-in's block holds ``_K``
    layers (a first device's block ``_K`` and the dense lead layers), the device ``role.layers`` (unknown: every
    layer, an upper bound), so the leafs of the rest are added."""
    from planner.engine_graph import layer_leaf_bytes

    per = layer_leaf_bytes(cfg.engine, graph, _shape(tmap.params, cfg))
    if not per or not role.attention:
        return 0
    held = tmap.params.n_loaded_layers if role.layers is None else role.layers
    return per * max(0, held - _K)


def layer_leaf_allowance(tmap: TensorMap, cfg: RunConfig) -> int:
    """Bytes one more layer adds to its device's compute buffer beyond a role's stand-in block: the leafs its
    graph creates (:func:`planner.engine_graph.layer_leaf_bytes`, GLM-DSA's zeros); 0 for the other graphs.  The
    layer-home model charges it per layer on the layer's device (layered_groups.build_layered_groups) and reserves the
    devices' buffers for ``layers=0``."""
    from planner.engine_graph import graph_of, layer_leaf_bytes

    graph = graph_of(cfg.engine, tmap, cfg.flash_attn, _tokens(cfg), cfg.mla)
    shape = _shape(tmap.params, cfg)
    return layer_leaf_bytes(cfg.engine, graph, shape) if graph is not None and shape.drawn() else 0


def _pipelined(tmap: TensorMap, cfg: RunConfig, role: DeviceRole, graph: str) -> int:
    """:func:`_canonical` for one number of input copies."""
    if role.host:
        # the CPU: running layers or not (the solver reserves for a CPU that may; a cluster's main CPU may hold
        # none), its own experts or a GPU layer's; under pipeline parallelism (every layer on the GPUs, no -ot:
        # sched_copies) it computes the token embeddings alone
        hosts = [replace(role, attention=False, ffn=False)] if role.copies > 1 else (
            [role, replace(role, attention=False)] if role.attention else [role])
        return max(_stand_in(tmap, cfg, h, graph, role.entry, k) for h in hosts
                   for k in ((0, 1, 2) if h.ffn else (0, 2)))
    # the device's block ending the model: the output's device, or (``last``) with the output on the CPU (ik's
    # -ngl n_layer, a tied output there); a block of the last layer alone as well
    lasts = (0, 1) if role.output else (0, _block(tmap.params), 1) if role.attention else (0,)
    if role.copies > 1:
        entries = [role.entry] if role.entry else ["", "input"]      # no CPU layers, no -ot
        variants = [(e, 0, last) for e in entries for last in (lasts if role.output else (0,))]
    else:
        entries = [role.entry] if role.entry else ["", "cpu", "input"]
        if "cpu" in entries and tmap.params.n_dense_lead > 1:
            entries.append("cpu1")          # the CPU holds the first dense layer only, the device the others
        # the mid-layer and alternating stand-ins: where a dense lead shifts the MoE layers (DeepSeek; enumerated
        # splits of Qwen3-30B-A3B and gpt-oss-20b with every other layer's experts on the CPU need none of them)
        splits = (0, 1, 2, 3) + ((4,) if tmap.params.n_ff_shexp else ()) + (
            (5, 6, 7) if tmap.params.n_expert and tmap.params.n_dense_lead else ()) + (
            (8,) if _period(tmap.params) > 1 else ()) + ((9,) if not tmap.params.n_expert else ())
        variants = [(e, k, last) for e in entries for k in (splits if role.attention and role.ffn else (0,))
                    for last in lasts if not (k in (6, 7) and last == 1)]
    return max(_stand_in(tmap, cfg, role, graph, entry, split, last) for entry, split, last in variants
               if not (entry in ("input", "cpu1") and last == 1))   # from the input on: a one-layer model


def _stand_in(tmap: TensorMap, cfg: RunConfig, role: DeviceRole, graph: str, entry: str, split: int,
              last: int = 0) -> int:
    """One placement for :func:`_canonical`: ``split`` 1 moves the experts of one of the device's layers to the
    CPU (the CPU: of one GPU layer, besides its own), 2 the up/gate experts of every other layer of the device, 3
    their down experts (up/gate stay: the SwiGLU product crosses to the CPU), 4 their shared experts (the solver
    places each expert tensor on its own: `plan qwen3.5-397b-a17b --vram 16,16 --ram 64 --ctx 8192 --kv q8_0
    --engine mainline` keeps layer 7's up/gate on CUDA0 and its down on the CPU, 192.30 MiB against 184.02
    reserved without these variants), 5 the experts of the device's second layer (mainline DeepSeek-R1: 48 MiB
    more than the first's), 6 and 7 all experts of every other layer over ``_ALTERNATING`` layers (from the first
    or the second), 8 (a periodic model) the FFN of the device's first layer, 9 (a dense model) its gate and up;
    for the CPU, ``split`` 2 puts the last GPU block on a second GPU (the CPU's buffer depends on whether the GPU
    its expert results go back to also holds the output).
    ``last`` (a GPU): its block ends the model with that many layers (1 or a whole block; 0: it does not, unless
    the role has the output), and the output is on the CPU unless the role has it.  The engines put CPU layers
    first (-ngl offloads the last layers), so the CPU's block never ends the model.  ``entry`` "cpu1": the CPU
    holds the first dense lead layer only."""
    from planner.engine_graph import compute_buffers, first_layer_own, k_as_v

    p = tmap.params
    d, o, c = 0, 1, 2
    lead = p.n_dense_lead
    per = _period(p)
    k = _block(p)                           # layers per block (a hybrid's: two periods, each ending in attention)
    if per == 1 and first_layer_own(cfg.engine, graph):
        k += 1      # a layer 0 of its own kind (recurrent state reads, RWKV's token-embedding norm): one steady layer
        #             less in a block from layer 0 (a periodic model's two periods already span it)
    first = k + lead                        # the first block: the dense layers and k MoE layers
    # a dense model's FFN weights move as the experts do (the solver places them per tensor: `plan` of the tiny
    # gemma-4 at --vram 1.04 put two layers' gate and up on the CPU, 2 MiB over a reservation without them)
    exps: tuple[str, ...] = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps") if p.n_expert else (
        "ffn_gate", "ffn_up", "ffn_down")
    cpu_exps: range = range(0)
    own_exps: range = range(0)
    if role.host:
        tail = [d] * k if split == 2 else [o] * k
        layers = ([c] if role.attention else [o]) * first + tail
        out = c if role.output else layers[-1]       # a CPU holding the output (ik: launch.engine_output_device)
        if role.ffn and not role.attention:
            cpu_exps = range(lead, first)
        elif role.ffn and split == 1:
            cpu_exps = range(first, first + 1)
        me = c
    else:
        # a hybrid's neighbours: one period before (the kinds stay aligned), one layer after
        n_before = first if per == 1 else per
        before = [c] * n_before if entry == "cpu" else [c] if entry == "cpu1" else [] if entry == "input" else (
            [o] * n_before)
        n_mine = first - 1 if entry == "cpu1" else first if not before else (last or k)
        n_moe = min(k, n_mine)
        if split in (6, 7):                 # a long run of layers alternating their experts GPU/CPU
            n_moe = _ALTERNATING
            n_mine += _ALTERNATING - k
        # the output alone (no attention, no FFN): every layer elsewhere, on another GPU or (entry "cpu") the CPU
        mine = [d] * n_mine if role.attention else [c if entry == "cpu" and not role.ffn else o] * n_mine
        after = [] if role.output or last else [o] * (k if per == 1 else 1)
        layers = before + mine + after
        out = d if role.output else c if last else o
        mine_moe = range(len(before) + n_mine - n_moe, len(before) + n_mine)
        if role.attention and not role.ffn:
            cpu_exps = mine_moe
        elif role.ffn and not role.attention:
            own_exps = mine_moe
        elif split == 1:
            # a hybrid: the first period's attention layer, whose mask copy the next period's keeps alive
            one = mine_moe.start + (per - 1 if per > 1 else 0)
            cpu_exps = range(one, one + 1)
        elif split == 8:                    # a periodic model: the FFN of the device's first layer alone (the
            # tiny gemma-4 K-as-V file, --vram 1.03 --ctx 8192 --kv q8_0: layer 5's FFN on the CPU after CPU layers
            # 0-4, 20.28 MiB against 19.27 reserved; moving more layers' FFNs gives less)
            cpu_exps = range(mine_moe.start, mine_moe.start + 1)
        elif split == 9:                    # a dense model: one layer's gate and up alone (the solver places the
            # FFN tensor by tensor: `plan rwkv6qwen2.gguf --vram 1.01 --ram 5 --ctx 8192` (make_tiny_arch.py) put
            # layer 0's on the CPU, 7016480 B replayed against 6949920 reserved; every other layer's: 6949920)
            cpu_exps = range(mine_moe.start, mine_moe.start + 1)
            exps = exps[:2]
        elif split == 5:                    # a layer's experts between two of the device's own
            mid = min(mine_moe.start + 1, mine_moe.stop - 1)
            cpu_exps = range(mid, mid + 1)
        elif split in (6, 7):               # either parity (-mla 0 DeepSeek-R1: 270.13 and 270.25 MiB)
            cpu_exps = range(mine_moe.start + split - 6, mine_moe.stop, 2)
        elif split >= 2:
            # a hybrid: every layer but the block's last (the mask copy stays alive through them all)
            cpu_exps = range(mine_moe.start, mine_moe.stop, 2) if per == 1 else range(mine_moe.start,
                                                                                     mine_moe.stop - 1)
            # 2: gate and up only, the down projection stays (the -ot split of up/gate); 3: down only; 4: shared
            exps = {2: exps[:2], 3: exps[2:]}.get(split, ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"))
        me = d
    moved = {f"blk.{il}.{r}.weight": c for il in cpu_exps for r in exps}
    moved.update({f"blk.{il}.{r}.weight": d for il in own_exps for r in exps})
    shape = _shape(p, cfg)
    # the layer kinds as the model's own last layers have them too: the last layer gathers the output rows, and
    # what else is alive then depends on its kind (ik gemma-3-27b's last layer is a window layer, 21 MiB more)
    bases = dict.fromkeys((0, (p.n_loaded_layers - len(layers)) % per))
    # the layers' own input-view copies read once: the solver charges them per layer (planner/input_copies.py)
    return max(compute_buffers(cfg.engine, graph, p, shape, layers, moved, out, 3, role.copies, layer_base=b,
                               kev=k_as_v(tmap), shared_inputs=True)[me]
               for b in bases)


def _periodic_from(p: ModelParams) -> int:
    """The first layer of the model's repeating kinds: DeepSeek-V4's first compressed layer (its leading
    sliding-window-only layers are not part of the 4/128 period, :func:`_period`); 0 for other models."""
    return next((il for il, r in enumerate(p.compress_ratios[:p.n_loaded_layers]) if r), 0)


def _period(p: ModelParams) -> int:
    """Layers per repeat of a model's layer kinds: a hybrid's recurrent layers with attention every
    ``full_attn_interval``-th, a sliding-window (or chunked) pattern's window layers with a full one, Llama-4's MoE
    every ``moe_every``-th layer (their least common multiple); 1 for a model whose layers are alike.  The
    stand-ins of :func:`_stand_in` span two periods: an attention mask's copy on a device lives from the device's
    first layer to its last layer of that kind (ggml-alloc frees it after its last consumer), so a layer's peak
    meets the other kind's mask only when a later layer of that kind is on the same device (Llama-4 Scout at 32k:
    three-layer stand-ins reserved 108.59 MiB where a 12-layer device replays 128.52).  Kinds from per-layer arrays
    (Nemotron-H, Granite-4.0-H) count by their attention layers: the largest gap between two of them."""
    from planner.engine_graph import ffn_only

    periods = [1]
    # a hybrid's attention layers (Nemotron-H's MLP layers have none; its kinds come from per-layer arrays)
    hybrid = p.full_attn_interval or p.recurrent_layers
    for flags in ([p.is_recurrent(il) or ffn_only(p, il) for il in range(p.n_loaded_layers)] if hybrid else [],
                  [p.is_swa(il) for il in range(p.n_loaded_layers)] if p.n_swa else []):
        plain = [i for i, f in enumerate(flags) if not f]
        if 0 < len(plain) < len(flags):
            periods.append(max((b - a for a, b in zip(plain, plain[1:])), default=plain[0] + 1))
    if p.moe_every > 1:
        periods.append(p.moe_every)
    if p.compress_ratios:
        # DeepSeek-V4: the compress ratios after the leading sliding-window-only layers (V4-Flash: 4, 128 repeated;
        # a device holding a CSA layer gets the CSA and indexer inputs, one holding an HCA layer the HCA ones)
        ratios = list(p.compress_ratios[:p.n_loaded_layers])
        tail = ratios[next((i for i, r in enumerate(ratios) if r), len(ratios)):]
        periods.append(next((k for k in range(1, len(tail) + 1)
                             if all(tail[i] == tail[i + k] for i in range(len(tail) - k))), 1))
    return math.lcm(*periods)
