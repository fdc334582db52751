"""Network cost of running across hosts with the RPC backend (an ESTIMATE, with every constant's source).

What crosses a link, from the engines' source (ggml-org/llama.cpp 0c1e57098 ``ggml/src/ggml-rpc/ggml-rpc.cpp``
and ``ggml/src/ggml-backend.cpp``; ik_llama.cpp 8337e4cd ``ggml/src/ggml-rpc.cpp`` and
``ggml/src/ggml-backend.cpp``):

* The main host drives every remote device.  ``ggml_backend_sched_compute_splits`` copies each split's inputs
  to the split's backend with ``ggml_backend_tensor_copy``: into an RPC buffer that is ``RPC_CMD_SET_TENSOR``
  (one way, no reply); out of one it is ``RPC_CMD_GET_TENSOR`` (a request and a reply carrying the data).
  Between two devices of one rpc-server it is ``RPC_CMD_COPY_TENSOR`` (a round trip without payload); between
  two servers it is a GET from one and a SET to the other, through the main host (the RPC backend's
  ``cpy_tensor`` refuses buffers of different servers).  So a link is crossed each time consecutive work of
  one token moves between hosts, and every crossing costs the link's one-way latency plus its bytes over its
  bandwidth: entering a remote host and leaving it again is one latency each way (the GET request overlaps
  the remote computation, the reply does not).
* ``RPC_CMD_GRAPH_COMPUTE`` sends the serialized split graph; when the graph is unchanged the engines send
  ``RPC_CMD_GRAPH_RECOMPUTE`` instead (ik: ``graph_cache::is_cached`` compares the nodes byte for byte;
  mainline: the graph ``uid``), a few bytes, so it is not charged per token.
* What a crossing carries: the residual stream, ``n_embd`` f32 per token; the logits ``n_vocab`` f32 per
  output row when the output layer is remote; and graph inputs copied once per remote device that uses them:
  the KQ mask (ik ``llm_build_context::build_inp_KQ_mask``: ``n_kv x GGML_PAD(n_tokens, 16)``, f16 with flash
  attention, f32 without; mainline ``build_attn_inp_kq_mask``: ``n_kv x n_tokens``) and the positions
  (``n_tokens`` i32).  ``n_kv`` is the used part of the cache padded to 256 cells.
* At load, every weight of a remote device is sent with SET_TENSOR.  Tensors above 10 MiB are first offered by
  hash (``RPC_CMD_SET_TENSOR_HASH``, a round trip); an ``rpc-server -c`` that has them cached loads them from
  its own disk instead.

Not modelled (stated in the assumptions): overlap of network and compute (mainline's pipeline parallelism over
ubatches, async sends), TCP slow start, and the MoE router's small tensors (selected expert ids and weights)
when experts and attention sit on different hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.cluster import MAIN, Cluster, Link, network_table
from planner.memory import CPU, Placement, RunConfig, mix_bytes
from planner.roles import tied_output
from planner.tensors import TensorMap

F32 = 4
KV_PAD_CELLS = 256   # n_kv padding with flash attention (ik llama_kv_cache::get_padding; mainline get_n_kv)


@dataclass(frozen=True, slots=True)
class Traversal:
    """One crossing of one link in one direction during one pass (a token or a ubatch)."""

    host: str            # the remote host whose link is crossed
    direction: str       # "to" (main -> host) | "from" (host -> main) | "within" (COPY_TENSOR on the host)
    what: str            # "activations" | "logits" | "inputs" (mask and positions)
    bytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class PassCost:
    seconds: float
    bytes: int
    traversals: tuple[Traversal, ...]

    def by_host(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.traversals:
            out[t.host] = out.get(t.host, 0.0) + t.seconds
        return out


@dataclass(frozen=True, slots=True)
class LoadCost:
    """Time to upload the remote devices' weights at load (estimate)."""

    bytes_by_host: dict[str, int]
    cold_s: float                 # first load (or without -c): every byte over the link
    warm_s: float | None          # a later load with rpc-server -c: hashes + small tensors + local cache reads
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NetworkCost:
    tg_s: float                   # per generated token, depth 0
    tg_s_ctx: float               # per generated token at the full context
    pp_s: float                   # per ubatch at depth 0
    pp_s_ctx: float               # per ubatch at the full context
    tg: PassCost
    load: LoadCost
    assumptions: tuple[str, ...]
    label: str = "estimate"


def is_remote(device: str) -> bool:
    return "/" in device


def token_path(tmap: TensorMap, placement: Placement) -> tuple[str, ...]:
    """The devices one token's work visits in order: the input embedding, per layer its attention device then
    its FFN tensors' devices, the output layer, and the main host's CPU that receives the logits.

    Consecutive repeats are kept (callers compare neighbours).
    """
    by_layer: dict[int, list[str]] = {}
    for t in tmap.tensors:
        if t.layer is not None and t.n_dims >= 2 and t.role.startswith("ffn_") and t.role != "ffn_gate_inp":
            by_layer.setdefault(t.layer, []).append(t.name)
    seq = [placement.device_of("token_embd.weight")]
    for il in range(tmap.params.n_loaded_layers):
        seq.append(placement.layer_device[il] if il < len(placement.layer_device) else CPU)
        seq.extend(placement.device_of(n) for n in by_layer.get(il, ()))
    seq.append(placement.logits_device(tmap.derived(tied_output) is not None))   # a tied output: its layer's
    seq.append(CPU)   # sampling reads the logits on the main host
    return tuple(seq)


def _host(cluster: Cluster, device: str) -> str:
    return cluster.host_of(device)


def _n_kv(depth: int, n_tokens: int, cfg: RunConfig) -> int:
    """Cells the attention reads: the used cells padded (mainline ``llama_kv_cache::get_n_kv``: to at least 256;
    ik ``llama_kv_cache::get_padding``: 256 with flash attention, 32 without), at most the cache size."""
    pad = KV_PAD_CELLS if (cfg.flash_attn or cfg.engine == "mainline") else 32
    cells = depth + n_tokens
    padded = max(pad, -(-cells // pad) * pad)
    return min(cfg.kv_size, padded)


def input_bytes(tmap: TensorMap, cfg: RunConfig, n_tokens: int, depth: int) -> int:
    """Graph inputs one remote device with attention layers receives per pass: KQ mask + positions."""
    k = network_table()["protocol"]
    pad = k["kq_mask_pad_mainline"] if cfg.engine == "mainline" else k["kq_mask_pad_ik"]
    elem = 2 if cfg.flash_attn else F32
    rows = -(-n_tokens // pad) * pad
    return _n_kv(depth, n_tokens, cfg) * rows * elem + n_tokens * 4


def sends_s(link: Link, sends: int) -> float:
    """Time ``sends`` of ggml-rpc's ``send_data`` calls take on ``link``, in series on the critical path.

    From the source (ggml-org/llama.cpp 0c1e57098 ``ggml/src/ggml-rpc/transport.cpp`` ``socket_t::impl``;
    ik_llama.cpp 8337e4cd ``ggml/src/ggml-rpc.cpp`` ``send_data``): over TCP each call is one ``send()`` on a
    ``TCP_NODELAY`` socket, so one segment through both kernels, without waiting for the peer (the per-segment
    cost is ASSUMED, ``[tcp] segment_us``); over RDMA (mainline's Linux transport, ``rdma_send``) each call posts
    one signaled SEND and polls for its completion, which a reliable-connection queue pair reports only after the
    peer's acknowledgement: one round trip of the link per call.  ik_llama.cpp has no RDMA transport.
    """
    if link.transport == "rdma":
        return sends * 2 * link.latency_s
    return sends * network_table()["tcp"]["segment_us"] * 1e-6


def pass_cost(tmap: TensorMap, placement: Placement, cluster: Cluster, cfg: RunConfig, *, n_tokens: int,
              depth: int, n_outputs: int = 1) -> PassCost:
    """Network time of one pass of ``n_tokens`` tokens at ``depth`` cached tokens (TG: 1; PP: the ubatch)."""
    p = tmap.params
    path = token_path(tmap, placement)
    act = p.n_embd * n_tokens * F32
    logits = p.n_vocab * n_outputs * F32
    trav: list[Traversal] = []

    proto = network_table()["protocol"]
    per_cmd, per_reply = proto["sends_per_command"], proto["sends_per_reply"]

    def cross(host: str, direction: str, what: str, nbytes: int) -> None:
        link = cluster.link_to(host)
        assert link is not None
        if direction == "to":          # SET_TENSOR of the activations, then GRAPH_(RE)COMPUTE: one way
            t = link.latency_s + nbytes / link.bandwidth_bytes_s + sends_s(link, 2 * per_cmd)
        elif direction == "from":      # GET_TENSOR: the request, the server's reply with the data
            t = link.latency_s + nbytes / link.bandwidth_bytes_s + sends_s(link, per_cmd + per_reply)
        else:                          # COPY_TENSOR inside one rpc-server: half of its round trip each
            t = link.latency_s + sends_s(link, per_cmd + per_reply) / 2
        trav.append(Traversal(host, direction, what, nbytes, t))

    last = len(path) - 1
    for i, (a, b) in enumerate(zip(path, path[1:])):
        if a == b:
            continue
        ha, hb = _host(cluster, a), _host(cluster, b)
        what = "logits" if i + 1 == last else "activations"
        nbytes = logits if what == "logits" else act
        if ha == hb:
            if ha != MAIN:        # two devices of one rpc-server: COPY_TENSOR, a round trip, no payload
                cross(ha, "within", what, 0)
                cross(ha, "within", what, 0)
            continue
        if ha != MAIN:
            cross(ha, "from", what, nbytes)
        if hb != MAIN:
            cross(hb, "to", what, nbytes)
    attn_remote = sorted({d for d in placement.layer_device[:p.n_loaded_layers] if is_remote(d)})
    if attn_remote:
        per_dev = input_bytes(tmap, cfg, n_tokens, depth)
        n_inputs = proto["set_tensors_per_split"] - 1          # the residual's SET is counted with the crossing
        for d in attn_remote:
            host = _host(cluster, d)
            link = cluster.link_to(host)
            assert link is not None
            # one SET_TENSOR per graph input, sent in the stream before the activations: no latency of their own
            trav.append(Traversal(host, "to", "inputs", per_dev,
                                  per_dev / link.bandwidth_bytes_s + sends_s(link, n_inputs * per_cmd)))
    return PassCost(sum(t.seconds for t in trav), sum(t.bytes for t in trav), tuple(trav))


def load_cost(tmap: TensorMap, mix: Mapping[str, str], placement: Placement, cluster: Cluster) -> LoadCost:
    """Time to send the remote devices' weights at load, cold and (with ``rpc-server -c``) warm."""
    k = network_table()
    threshold = k["protocol"]["hash_threshold_bytes"]
    cache_bps = k["load"]["cache_read_gbs"] * 1e9
    sizes = mix_bytes(tmap, mix)
    loaded = {t.name for t in tmap.tensors if tmap.is_loaded(t)}
    per_host: dict[str, list[int]] = {}
    for name in sorted(loaded):
        dev = placement.device_of(name)
        if is_remote(dev):
            per_host.setdefault(_host(cluster, dev), []).append(sizes[name])
    cold = warm = 0.0
    all_cached = True
    notes = []
    for host, tensor_sizes in per_host.items():
        h = cluster.host(host)
        bw, lat = h.link.bandwidth_bytes_s, h.link.latency_s
        total = sum(tensor_sizes)
        big = [s for s in tensor_sizes if s > threshold]
        small = total - sum(big)
        # cold: hashes offered for big tensors (a round trip each, answered "not cached"), then every byte sent
        cold_h = total / bw + len(big) * 2 * lat
        warm_h = small / bw + len(big) * 2 * lat + sum(big) / cache_bps
        # the loader sets tensors one after the other (llama_model_loader::load_all_data), so hosts add up
        cold += cold_h
        if h.cache:
            warm += warm_h
        else:
            all_cached = False
            warm += cold_h
        notes.append(f"{host}: {total / 2**30:.1f} GiB of weights over {h.link.bandwidth_gbs:.2f} GB/s "
                     f"= {cold_h / 60:.1f} min" + (f"; with its -c cache warm {warm_h / 60:.1f} min"
                                                  if h.cache else "; no -c cache: every load sends it again"))
    return LoadCost(bytes_by_host={h: sum(s) for h, s in per_host.items()}, cold_s=cold,
                    warm_s=warm if (per_host and all_cached) else (None if per_host else 0.0), notes=tuple(notes))


def network_cost(tmap: TensorMap, mix: Mapping[str, str], placement: Placement, cluster: Cluster,
                 cfg: RunConfig) -> NetworkCost:
    """Per-token (TG), per-ubatch (PP) and load-time network terms of a placement on a cluster."""
    ub = min(cfg.ubatch, cfg.batch)
    tg0 = pass_cost(tmap, placement, cluster, cfg, n_tokens=1, depth=0)
    tgc = pass_cost(tmap, placement, cluster, cfg, n_tokens=1, depth=cfg.ctx)
    pp0 = pass_cost(tmap, placement, cluster, cfg, n_tokens=ub, depth=0)
    ppc = pass_cost(tmap, placement, cluster, cfg, n_tokens=ub, depth=max(0, cfg.ctx - ub))
    load = load_cost(tmap, mix, placement, cluster)
    links = [f"{h.name}: {h.link.bandwidth_gbs:.3f} GB/s payload, {h.link.latency_us:g} us one way, "
             f"{h.link.transport} ({h.link.source})" for h in cluster.remotes]
    n_cross = sum(1 for t in tg0.traversals if t.what != "inputs")
    assumptions = (
        *links,
        f"{n_cross} link crossings per token (residual stream {tmap.params.n_embd} x f32 each); KQ mask and "
        f"positions copied to each remote device with attention layers",
        "no overlap of network and compute (conservative for mainline's pipeline parallelism)",
    )
    return NetworkCost(tg_s=tg0.seconds, tg_s_ctx=tgc.seconds, pp_s=pp0.seconds, pp_s_ctx=ppc.seconds, tg=tg0,
                       load=load, assumptions=assumptions)


def host_bytes(weights_by_device: Mapping[str, int], cluster: Cluster) -> dict[str, int]:
    """Sum per host of a per-device mapping (weights, KV...)."""
    out: dict[str, int] = {}
    for dev, n in weights_by_device.items():
        h = _host(cluster, dev)
        out[h] = out.get(h, 0) + n
    return out


def remote_device_order(cluster: Cluster) -> Sequence[str]:
    """Planner names of the remote devices in the engines' device order (``--rpc`` order, server order)."""
    return tuple(d.name for d in cluster.remote_devices)
