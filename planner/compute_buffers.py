"""Compute buffers per device: the largest set of intermediate tensors alive at once for one ubatch.

The engines reserve their compute buffers by building the worst-case graph (one ubatch of
``T = min(n_ctx, n_ubatch)`` tokens against a full cache of ``n_kv`` cells, every token an output) and letting
ggml-alloc place it (``ggml_backend_sched_reserve``; ik ``src/llama.cpp`` llama_new_context_with_model at 8337e4cd,
mainline ``src/llama-context.cpp`` sched_reserve at 0c1e57098). ggml-alloc frees a tensor after its last consumer
and reuses the memory, so each backend's buffer is the high-water mark of the tensors alive together on it. This
module names those live sets (all f32 activations, 4 bytes, ``E = n_embd * T * 4``):

* **output** (the device holding ``output.weight``): the logits ``n_vocab x T`` plus the final norm's input and
  output (2 E): ik ``llm_build_context`` ``result_norm`` / ``result_output``; mainline ``llm_graph_context``
  ``res->t_logits``.  Matches the published ik logs to the 0.01 MiB (see tests/test_compute_buffers.py).
* **attention** (a device holding a layer's attention): Q and the attention output (``n_head * head_dim * T``
  each), the residual and the normed input (2 E; ik 3 E: the split's input copy as well, on every ik harness
  log), and without flash attention ``KQ = n_kv * T * n_head`` (ik: ``-amb`` caps one KQ chunk at that many MiB,
  ``llm_build_kqv`` splits the heads).  MLA in ik (``-mla 3``): a prompt batch decompresses the latent cache
  per chunk of heads (:func:`_ik_mla_attention`).
* **ffn** (the device computing a layer's FFN: where its up/gate/down weights are, ``-ot`` included): the larger
  of two steps, (residual, normed input, up/gate products) and (residual, SwiGLU product, per-expert down
  projection ``n_embd * n_expert_used * T``); ik ``ggml_moe_up_gate`` writes one fused ``n_ff_exp *
  n_expert_used * T`` tensor, mainline keeps up and gate (the product reuses gate's memory); ik
  ``llm_build_moe_ffn``, mainline ``build_moe_ffn``.  Dense FFN layers: ``n_ff * T`` for up, gate, product.
* **inputs**: the KQ mask ``n_kv x pad(T, GGML_KQ_MASK_PAD)`` (ik 8337e4cd and mainline 0c1e57098 build it f16
  under flash attention, mainline unpadded; ik-2025 builds it f32 and casts it to f16) lives in the CPU backend's
  buffer as a graph input (ggml-backend ``ggml_backend_sched_backend_id_from_cur``: inputs go to the last
  backend, the CPU) and a copy on each device that runs attention or the FFN; the token embeddings (``get_rows``,
  E) on the CPU; mainline also allocates ``inp_embd`` (E), a second input its graph selects away but keeps as a
  leaf.  ik-2025: the device of layer 0 also holds the f32 mask it casts (published #297: CUDA0 144.00 MiB);
  the first device after CPU-resident layers holds the residual it receives (E).
* **pipeline parallelism** (mainline, every layer and the output on more than one device, no ``-ot``:
  :func:`sched_copies`): the scheduler keeps ``GGML_SCHED_MAX_COPIES`` = 4 copies of every split input and graph
  input, flagged as outputs so ggml-alloc never frees them.  This was the 1.5-2.6x the RPC harness logged for
  mainline full offload.

Where ``data/engine_graphs.toml`` has the engine's graph for the architecture (mainline and ik: Qwen3-MoE shapes
and DeepSeek; see :func:`planner.engine_graph.graph_of`), the live sets are not used: :func:`placement_compute` rebuilds the graph node by node and replays ggml's scheduler
and best-fit allocator over it (:mod:`planner.engine_graph`, :mod:`planner.gallocr`), holes and reuse included,
for the placement itself; :func:`estimate` (a device's role, what the solver knows before it places anything)
replays a small placement that gives the device that role (:func:`_canonical`).  Elsewhere the live sets summed
are the estimate, the buffer their maximum; holes the allocator leaves make the engines log up to about two
hidden states (2 E) more on some devices; tests/test_compute_buffers.py lists every miss against the engine logs
we have (RPC harness, published CUDA logs) and checks that 2 E stays inside the per-GPU margin for the built-in
models.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from planner.runconfig import RunConfig
from planner.tensors import ModelParams, TensorMap

if TYPE_CHECKING:
    from planner.engine_graph import GraphShape

F32 = 4
# GGML_KQ_MASK_PAD: ik ggml.h 8337e4cd (16); ik-2025 assumed 64 (the value before ik lowered it); mainline 0c1e57098
# has no padding: build_attn_inp_kq_mask allocates n_kv x n_tokens (src/llama-graph.cpp:29-45)
KQ_MASK_PAD = {"ik": 16, "ik-2025": 64, "mainline": 1}
I32 = 4


@dataclass(frozen=True, slots=True)
class DeviceRole:
    """What a device computes in the worst-case graph."""

    attention: bool          # holds at least one layer (attention and KV)
    ffn: bool                # computes at least one layer's FFN (its FFN/expert weights are there)
    output: bool             # holds the output layer
    host: bool = False       # the CPU backend (graph inputs live there)
    # the scheduler's input copies (:func:`sched_copies`): 1, or GGML_SCHED_MAX_COPIES under pipeline parallelism
    copies: int = 1
    # where the graph enters this device: "input" = it holds layer 0 (ik-2025 casts the f32 KQ mask to f16
    # there), "cpu" = it holds the first offloaded layer after CPU-resident ones (receives the residual stream)
    entry: str = ""
    # how many of the model's layers the device holds, where the caller knows it (a layout); None: up to all of
    # them.  Only graphs whose layers create leafs depend on it (:func:`layer_leaf_allowance`)
    layers: int | None = None


@dataclass(frozen=True, slots=True)
class ComputeEstimate:
    bytes: int
    dominant: str            # which live set sets the size
    sets: tuple[tuple[str, int], ...]


def entry_of(layer_device: Sequence[object], dev: object, cpu: object) -> str:
    """:attr:`DeviceRole.entry` of ``dev`` for a layer map (``cpu`` is the map's name for the CPU)."""
    if not layer_device or dev == cpu:
        return ""
    if layer_device[0] == dev:
        return "input"
    first = next((d for d in layer_device if d != cpu), None)
    return "cpu" if first == dev else ""


def placement_copies(engine: str, devices: Sequence[str], layer_device: Sequence[str],
                     tensor_device: Mapping[str, str], output_device: str, cpu: str) -> int:
    """:func:`sched_copies` for a placement: ``devices`` are all the devices the model is given (mainline
    ``model.n_devices()`` counts a GPU that ``-ts`` leaves empty), "every layer offloaded" means no layer and not
    the output on ``cpu``, and a tensor override is a layer tensor away from its layer's device (what ``-ot``
    expresses; the emitted commands write ``-ot`` only for those)."""
    gpus = {d for d in (*devices, *layer_device, output_device) if d != cpu}
    offloaded = cpu not in layer_device and output_device != cpu
    overrides = False
    for name, dev in tensor_device.items():
        parts = name.split(".")
        if parts[0] == "blk" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(layer_device):
            if dev != layer_device[int(parts[1])]:
                overrides = True
                break
    return sched_copies(engine, n_devices=len(gpus), all_offloaded=offloaded, overrides=overrides)


def is_ffn_matmul(name: str) -> bool:
    """A tensor whose matmul produces the FFN intermediates (up/gate/down, experts, shared experts, dense): the
    FFN live set is on the device that holds these (``-ot`` decides); the router (``ffn_gate_inp``) and the norms
    produce n_expert x T or n_embd x T only."""
    if not name.startswith("blk."):
        return False
    part = name.split(".")[2] if name.count(".") >= 2 else ""
    return part.startswith(("ffn_up", "ffn_gate", "ffn_down")) and not part.startswith("ffn_gate_inp")


def _tokens(cfg: RunConfig) -> int:
    return max(1, min(cfg.ubatch, cfg.batch, cfg.ctx))


def _pad(x: int, p: int) -> int:
    return -(-x // p) * p


def mask_bytes(p: ModelParams, cfg: RunConfig, *, on_host: bool) -> int:
    """The KQ mask: n_kv x pad(T); f16 when flash attention is on (ik and mainline build it f16: ik
    build_inp_KQ_mask, mainline src/llama-graph.cpp:38 "flash attention requires an f16 mask"; ik-2025 casts its
    f32 input to f16, so the host holds the f32 tensor and the devices the f16 copy)."""
    t = _pad(_tokens(cfg), KQ_MASK_PAD.get(cfg.engine, 64))
    n_kv = cfg.kv_size
    if not cfg.flash_attn:
        return n_kv * t * F32
    if on_host and cfg.engine == "ik-2025":
        return n_kv * t * F32
    return n_kv * t * 2


def sched_copies(engine: str, *, n_devices: int, all_offloaded: bool, overrides: bool) -> int:
    """The scheduler's input copies for a run: ``GGML_SCHED_MAX_COPIES`` (``sched_copies`` in
    ``data/engines.toml``) when the engine turns on pipeline parallelism, else 1.

    mainline ``src/llama-context.cpp:430-457`` @0c1e57098: more than one device, ``n_gpu_layers > n_layer`` (every
    layer and the output offloaded), ``-sm layer``, the KV cache offloaded, no tensor overrides (``-ot``), and
    every device with async compute and events (CUDA; RPC too, ``ggml-rpc.cpp:2192-2195``).  ik ``src/llama.cpp:
    8610-8619`` @8337e4cd: the same test, CUDA builds only (and ik builds one copy since PR 751)."""
    from planner.engines import engine_profile

    if n_devices > 1 and all_offloaded and not overrides:
        return int(engine_profile(engine).get("sched_copies", 1))
    return 1


def live_sets(tmap: TensorMap, cfg: RunConfig, role: DeviceRole) -> list[tuple[str, int]]:
    """The live sets (name, bytes) that can set this device's compute buffer."""
    p = tmap.params
    t = _tokens(cfg)
    e = p.n_embd * t * F32
    small = 3 * t * I32          # the I32 inputs: token ids, positions, output ids (n_outputs = T when reserving)
    out: list[tuple[str, int]] = []
    # the f16 mask every attention op reads stays alive through the graph on each backend that runs attention or
    # the FFN between them; the f32 input (ik-2025, mainline) is freed once cast, so it only joins the inputs
    mask = mask_bytes(p, cfg, on_host=False) if (role.attention or role.ffn) else 0
    if role.entry == "input" and not role.host and cfg.engine == "ik-2025" and cfg.flash_attn:
        mask += mask_bytes(p, cfg, on_host=True)     # the f32 input copied over for the cast (published #297)
    if role.entry == "cpu" and not role.host:
        mask += e                                    # the CPU layers' residual handed over (RPC harness logs,
        # mainline and ik: every device after CPU layers there is within 10 % with it, 3 ik ones only with it)
    if role.output:
        out.append(("output", p.n_vocab * t * F32 + 2 * e))
    if role.attention:
        e_in = (2 if cfg.engine == "mainline" else 3) * e
        if cfg.engine != "mainline" and p.kv_lora_rank:
            attn = e_in + _ik_mla_attention(p, cfg, t)
        elif p.kv_lora_rank and any(x.role == "attn_kv_b" for x in tmap.tensors):
            # mainline on the legacy attn_kv_b layout runs plain multi-head attention: the compressed KV
            # (kv_lora_rank + n_rot), its decompression (n_head x (qk_nope + v)) and the K and V built from it
            # stay alive with Q and the output (llm_build_deepseek2, not is_mla)
            nope = p.qk_nope_head_dim or (p.head_dim - p.n_rot)
            hv = p.head_dim_v or p.head_dim
            attn = e_in + t * F32 * (p.n_head * p.head_dim * 2 + p.n_head * hv * 2 + p.n_head * (nope + hv)
                                     + p.kv_lora_rank + p.n_rot)
        else:
            q = p.n_head * p.head_dim * t * F32
            o = p.n_head * (p.head_dim_v or p.head_dim) * t * F32
            attn = e_in + q + o + (0 if cfg.flash_attn else _kq(p, cfg, t))
        out.append(("attention", attn + mask))
    if role.ffn:
        out.append(("ffn", _ffn_bytes(p, cfg, t, e) + mask))
    if role.copies > 1 and not role.host and out:
        # pipeline parallelism: each split input gets `copies` copies flagged input+output, which ggml-alloc
        # never frees (ggml-backend.cpp:1379-1390 and 1563-1590 @0c1e57098; ggml-alloc.c ggml_gallocr_free_node:
        # "graph outputs are never freed").  The mask and positions are alive through the split anyway (one
        # copy is in the sets above), the residual handed in is freed after the split's first layer without them.
        held = (role.copies - 1) * (mask + small) + role.copies * e
        out = [(name, size + held) for name, size in out]
    if role.host:
        if cfg.engine == "mainline":
            # graph inputs live on the CPU (ggml_backend_sched_backend_id_from_cur, ggml-backend.cpp:944-948):
            # token ids, positions, the f16 mask, output ids and inp_embd, an f32 n_embd x T input that
            # build_inp_embd adds with ggml_build_forward_select (src/llama-graph.cpp:2389-2436) beside the
            # token path: a leaf without consumers, allocated and never freed (ggml-alloc.c:723-728).  With
            # pipeline parallelism each of them `copies` times (ggml-backend.cpp:1411-1436).  ggml-alloc places
            # the leafs first, then the token embeddings' get_rows output (E) beside them.
            inputs = role.copies * (e + mask_bytes(p, cfg, on_host=True) + small) + e
        else:
            inputs = role.copies * mask_bytes(p, cfg, on_host=True) + e
        out.append(("inputs", inputs))
    return out


def _ik_mla_attention(p: ModelParams, cfg: RunConfig, t: int) -> int:
    """ik MLA (``-mla 3``, the default) for a prompt batch (``src/graphs/build_deepseek2.cpp`` at 8337e4cd,
    ``pp_opt = n_tokens >= 128 && mla_attn > 1`` with flash attention): per chunk of heads the latent cache is
    decompressed, ``kv_f32 = n_heads x (qk_nope + v) x n_kv`` f32, and cast to f16 V, K_nope and the repeated
    K_rope, beside the concatenated Q ``n_head x (qk_nope + rope) x T`` f32; ``-amb`` picks the chunk: the fewest
    iterations (a divisor of n_head) that keep ``kv_f32`` under -amb MiB.  Smaller batches (``T < 128``) keep
    the compressed cache: KQ per ``-amb`` chunk.  ik PR 260 (FlashMLA-2) describes the same three tensors:
    X = W_kv K in f32 and its f16 V and K_nope "all need to exist" at once, -amb bounding X."""
    nope = p.qk_nope_head_dim or max(p.head_dim - p.n_rot, 0)
    hv = p.head_dim_v or p.head_dim
    if t < 128 or not cfg.flash_attn:
        return _kq(p, cfg, t)
    n_kv = cfg.kv_size
    heads = p.n_head
    kv_f32_mib = p.n_head * (nope + hv) * n_kv * F32 // (1 << 20)
    if cfg.amb and kv_f32_mib > cfg.amb:
        heads = 1
        for niter in range(2, p.n_head):
            if p.n_head % niter == 0 and kv_f32_mib // niter <= cfg.amb:
                heads = p.n_head // niter
                break
    q = p.n_head * (nope + p.n_rot) * t * F32
    chunk = heads * n_kv * ((nope + hv) * F32 + (hv + nope + p.n_rot) * 2)
    return q + chunk


def _kq(p: ModelParams, cfg: RunConfig, t: int) -> int:
    """KQ = n_kv x T x n_head f32; ik splits the heads so one chunk stays under -amb MiB (llm_build_kqv)."""
    kq = cfg.kv_size * t * p.n_head * F32
    if cfg.amb and cfg.engine != "mainline":
        kq = min(kq, cfg.amb * (1 << 20))
    return kq


def _ffn_bytes(p: ModelParams, cfg: RunConfig, t: int, e: int) -> int:
    """The MoE's largest step: the residual with either the up/gate products (mainline keeps up and gate, the
    SwiGLU product reuses gate's memory; ik writes one fused tensor) or the SwiGLU product with the per-expert
    down projection."""
    if p.n_expert and p.n_ff_exp:
        used = max(1, p.n_expert_used)
        up = p.n_ff_exp * used * t * F32
        down = p.n_embd * used * t * F32
        shared = (p.n_ff_shexp or (p.n_ff_exp * p.n_shared_exp)) * t * F32
        up_gate = 2 * e + (2 * up if cfg.engine == "mainline" else up)
        moe = max(up_gate, e + up + down) + shared
    else:
        moe = 0
    dense = 2 * e + 3 * p.n_ff * t * F32 if (p.n_ff and (p.n_dense_lead or not p.n_expert)) else 0
    return max(moe, dense)


def placement_compute(tmap: TensorMap, cfg: RunConfig, devices: Sequence[str], layer_device: Sequence[str],
                      device_of: Callable[[str], str], out_dev: str, cpu: str, copies: int) -> dict[str, int] | None:
    """Each device's compute buffer (bytes) for a whole placement, from the engine's graph replayed through its
    allocator (:mod:`planner.engine_graph`); None where no graph of this engine and architecture is in the data.
    ``devices``: every device the engine is given (the CPU is put last, as ggml's scheduler has it);
    ``device_of``: where each weight is loaded (``-ot`` included)."""
    from planner.engine_graph import compute_buffers, graph_of, k_as_v

    p = tmap.params
    graph = graph_of(cfg.engine, tmap, cfg.flash_attn, _tokens(cfg), cfg.mla)
    if graph is None or not _shape(p, cfg).drawn():
        return None
    away: dict[str, str] = {}
    for t in tmap.tensors:
        if not tmap.is_loaded(t):
            continue
        home = cpu if t.role == "token_embd" else (layer_device[t.layer] if t.layer is not None else out_dev)
        dev = device_of(t.name)
        if dev != home:
            away[t.name] = dev
    # a device that only holds moved weights is a backend too (explain's "next GiB" moves units onto a GPU the plan
    # left empty: the tiny dsv4 model at --vram 1.005,1.005)
    order = [d for d in dict.fromkeys((*devices, *layer_device, out_dev, *away.values())) if d != cpu] + [cpu]
    idx = {d: i for i, d in enumerate(order)}
    ld = [idx[d] for d in layer_device[:p.n_loaded_layers]]
    out = idx[out_dev]
    moved = {name: idx[dev] for name, dev in away.items()}
    shape = _shape(p, cfg)
    sizes = compute_buffers(cfg.engine, graph, p, shape, ld, moved, out, len(order), copies, kev=k_as_v(tmap))
    return {d: sizes[i] for d, i in idx.items()}


def replayed(tmap: TensorMap, cfg: RunConfig) -> bool:
    """Whether this run's compute buffers come from the engine's graph (:func:`placement_compute`), not the
    live-set estimate."""
    from planner.engine_graph import graph_of

    return graph_of(cfg.engine, tmap, cfg.flash_attn, _tokens(cfg), cfg.mla) is not None and _shape(
        tmap.params, cfg).drawn()


def _shape(p: ModelParams, cfg: RunConfig) -> GraphShape:
    from planner.engine_graph import GraphShape

    # ik raises an -amb below 128 MiB to 128 (common/common.cpp:1966-1970)
    amb = max(cfg.amb, 128) if cfg.engine == "ik" and cfg.amb > 0 else 0
    n_kv_swa = 0
    if p.n_swa:
        # the window cache's cells (planner/kv_cache.py: the engine's SWA cache size), its mask's rows
        from planner.kv_cache import CacheConfig, layer_caches

        n_kv_swa = next((c.cells for c in layer_caches(p, CacheConfig.from_run(cfg)) if c.kind == "swa"), 0)
    n_kv = cfg.kv_size
    n_seq = max(1, cfg.n_parallel)
    if cfg.engine == "mainline" and n_seq > 1:
        # mainline without --kv-unified: one stream per sequence over n_ctx_seq = GGML_PAD(n_ctx / n_seq_max, 256)
        # cells (src/llama-context.cpp:290-296), the mask [n_kv, T / n_stream, 1, n_stream] (llama-graph.cpp:29-45)
        n_kv = _pad(cfg.kv_size // n_seq, 256)
    return GraphShape.of(p, _tokens(cfg), n_kv, cfg.flash_attn, cfg.type_k, cfg.type_v,
                         mask_pad=KQ_MASK_PAD.get(cfg.engine, 1), amb=amb, n_kv_swa=n_kv_swa, n_seqs=n_seq,
                         mla=cfg.mla)


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
    layer-home model charges it per layer on the layer's device (groups.build_layered_groups) and reserves the
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


def estimate(tmap: TensorMap, cfg: RunConfig, role: DeviceRole) -> ComputeEstimate:
    sim = _canonical(tmap, cfg, role) if (role.attention or role.ffn or role.output or role.host) else None
    if sim is not None:
        return ComputeEstimate(sim, "graph", (("graph", sim),))
    sets = live_sets(tmap, cfg, role)
    if not sets:
        return ComputeEstimate(0, "", ())
    name, size = max(sets, key=lambda s: s[1])
    return ComputeEstimate(size, name, tuple(sets))
