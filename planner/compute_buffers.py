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
replays small placements that give the device that role (:mod:`planner.role_compute`).  Elsewhere the live sets summed
are the estimate, the buffer their maximum; holes the allocator leaves make the engines log up to about two
hidden states (2 E) more on some devices; tests/test_compute_buffers.py lists every miss against the engine logs
we have (RPC harness, published CUDA logs) and checks that 2 E stays inside the per-GPU margin for the built-in
models.
"""

from __future__ import annotations


from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    """The worst-case reserve's tokens: min(-c, -ub, -b); mainline rounds them up to a multiple of its n_seq_max
    sequences (src/llama-context.cpp:2528-2530 @0c1e57098: -np 3 reserves 513 tokens at -ub 512)."""
    t = max(1, min(cfg.ubatch, cfg.batch, cfg.ctx))
    n_seq = max(1, cfg.n_parallel)
    return -(-t // n_seq) * n_seq if cfg.engine == "mainline" else t


def _pad(x: int, p: int) -> int:
    return -(-x // p) * p


def _n_kv(cfg: RunConfig) -> int:
    """Cells one attention stream reads (:attr:`planner.kv_cache.CacheConfig.n_ctx_seq`: mainline -np without -kvu
    splits -c into one stream per sequence)."""
    from planner.kv_cache import CacheConfig

    return CacheConfig.from_run(cfg).n_ctx_seq


def mask_bytes(p: ModelParams, cfg: RunConfig, *, on_host: bool) -> int:
    """The KQ mask: n_kv x pad(T); f16 when flash attention is on (ik and mainline build it f16: ik
    build_inp_KQ_mask, mainline src/llama-graph.cpp:38 "flash attention requires an f16 mask"; ik-2025 casts its
    f32 input to f16, so the host holds the f32 tensor and the devices the f16 copy)."""
    t = _pad(_tokens(cfg), KQ_MASK_PAD.get(cfg.engine, 64))
    n_kv = _n_kv(cfg)
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
    n_kv = _n_kv(cfg)
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
    kq = _n_kv(cfg) * t * p.n_head * F32
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


# the last (params, run) -> shape of :func:`_shape`: a role's stand-ins ask it for the same two objects over and over
# (the headline plan ~150 times); kept with the objects themselves (both frozen), so an id reused by another object
# never hits
_LAST_SHAPE: tuple[ModelParams, RunConfig, GraphShape] | None = None


def _shape(p: ModelParams, cfg: RunConfig) -> GraphShape:
    global _LAST_SHAPE
    last = _LAST_SHAPE
    if last is not None and last[0] is p and last[1] is cfg:
        return last[2]
    shape = _graph_shape(p, cfg)
    _LAST_SHAPE = (p, cfg, shape)
    return shape


def _graph_shape(p: ModelParams, cfg: RunConfig) -> GraphShape:
    from planner.engine_graph import GraphShape

    # ik raises an -amb below 128 MiB to 128 (common/common.cpp:1966-1970)
    amb = max(cfg.amb, 128) if cfg.engine == "ik" and cfg.amb > 0 else 0
    from planner.kv_cache import CacheConfig, layer_caches

    cache = CacheConfig.from_run(cfg)
    n_kv_swa = 0
    if p.n_swa:
        # the window cache's cells per stream (planner/kv_cache.py: the engine's SWA cache size), its mask's rows
        n_kv_swa = next((c.cells for c in layer_caches(p, cache) if c.kind == "swa"), 0)
    # the cells one stream's attention reads: mainline -np without -kvu has one stream per sequence of n_ctx_seq
    # cells (src/llama-context.cpp:290-300) and the reserve ubatch one sequence per stream, the mask [n_kv,
    # T / n_stream, 1, n_stream] (llama-graph.cpp:29-45: n_stream = kv_unified ? 1 : n_seqs_unq); with -kvu (and
    # in ik) one stream of all -c cells.  The reserve's ubatch has n_seq_max sequences either way
    # (llama-context.cpp:628-674): the recurrent layers' n_seqs.
    n_kv = cache.n_ctx_seq
    n_seq = max(1, cfg.n_parallel)
    return GraphShape.of(p, _tokens(cfg), n_kv, cfg.flash_attn, cfg.type_k, cfg.type_v,
                         mask_pad=KQ_MASK_PAD.get(cfg.engine, 1), amb=amb, n_kv_swa=n_kv_swa, n_seqs=n_seq,
                         mla=cfg.mla)


# the estimates of the last tensor map, per (run, role): the solver's capacities and the output's share ask for the
# same roles on every GPU and again per entry (DeepSeek-R1 on 2x RTX 3090: 21 calls, 14 roles, 0.25 CPU s of
# replays saved); kept with the map itself (a map is never changed once built), so a reused id never hits
_ESTIMATES: tuple[TensorMap, dict[tuple[RunConfig, DeviceRole], ComputeEstimate]] | None = None


def estimate(tmap: TensorMap, cfg: RunConfig, role: DeviceRole) -> ComputeEstimate:
    """A device's compute buffer from its role alone (the solver's reservation, before anything is placed): the
    allocator replay of stand-in placements where the engine's graph is drawn (:mod:`planner.role_compute`), else
    the largest live set."""
    global _ESTIMATES
    if _ESTIMATES is None or _ESTIMATES[0] is not tmap:
        _ESTIMATES = (tmap, {})
    memo = _ESTIMATES[1]
    got = memo.get((cfg, role))
    if got is None:
        got = memo[(cfg, role)] = _estimate(tmap, cfg, role)
    return got


def _estimate(tmap: TensorMap, cfg: RunConfig, role: DeviceRole) -> ComputeEstimate:
    """:func:`estimate`, computed."""
    from planner.role_compute import _canonical

    sim = _canonical(tmap, cfg, role) if (role.attention or role.ffn or role.output or role.host) else None
    if sim is not None:
        return ComputeEstimate(sim, "graph", (("graph", sim),))
    sets = live_sets(tmap, cfg, role)
    if not sets:
        return ComputeEstimate(0, "", ())
    name, size = max(sets, key=lambda s: s[1])
    return ComputeEstimate(size, name, tuple(sets))
