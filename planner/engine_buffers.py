"""Per-buffer bytes the engines log, from a layer map: ``<dev> buffer size``, ``KV buffer size``, and the glue
that gives plan, place and check the engine's own layer map and buffers in planner device names.

Allocation rules transcribed from ggml ``ggml-backend.cpp`` (host buffers aligned to 32 bytes), ggml-cuda
``ggml_backend_cuda_buffer_type_get_alloc_size`` (quantized matrices padded to ``MATRIX_ROW_PADDING`` = 512 columns,
128-byte alignment) and the load logs of ik_llama.cpp 8337e4cd and llama.cpp 0c1e57098 (the layer rules
themselves are in :mod:`planner.layer_split`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.layer_sizes import _row_size, ik_layer_sizes, nbytes, type_of
from planner.memory import loaded_shapes, shape_bytes
from planner.layer_split import (CUDA_ALIGNMENT, CUDA_MATRIX_ROW_PADDING, HOST_ALIGNMENT, MIB, LayerSizes, LayerSplit,
                                 SplitDevice, SplitRequest, layer_split)
from planner.layer_split_flags import SplitFlags, flags_for
from planner.quants import catalogue
from planner.roles import PER_LAYER_GLOBALS, layer_copies, on_first_layer, tied_output
from planner.tensors import ModelParams, TensorInfo, TensorMap

# ----------------------------------------------------------------------------------------------- engine buffers

@dataclass(frozen=True, slots=True)
class EngineBuffer:
    """One buffer as the engine logs it: ``kind`` is "weights", "kv" or "compute"; ``device`` None = the CPU."""

    kind: str
    device: int | None
    bytes: int
    exact: bool = True


def alloc_bytes(type_name: str, shape: Sequence[int], nbytes: int, *, cuda: bool) -> int:
    """ggml_backend_alloc_ctx_tensors_from_buft: PAD(get_alloc_size, alignment) for one tensor."""
    if not cuda:
        return -(-nbytes // HOST_ALIGNMENT) * HOST_ALIGNMENT
    size = nbytes
    qt = catalogue().get(type_name)
    if qt.is_quantized and shape[0] % CUDA_MATRIX_ROW_PADDING:
        size += _row_size(type_name, CUDA_MATRIX_ROW_PADDING - shape[0] % CUDA_MATRIX_ROW_PADDING)
    return -(-size // CUDA_ALIGNMENT) * CUDA_ALIGNMENT


@functools.lru_cache(maxsize=16384)
def _alloc(type_name: str, shape: tuple[int, ...], cuda: bool) -> int:
    """:func:`alloc_bytes` of a ``shape`` tensor of ``type_name`` (remembered: a few (type, shape) pairs recur)."""
    return alloc_bytes(type_name, shape, shape_bytes(type_name, shape), cuda=cuda)


def tensor_devices(tmap: TensorMap, split: LayerSplit,
                   overrides: Sequence[tuple[str, int | None]] = ()) -> dict[str, int | None]:
    """Device of every loaded tensor: ``-ot`` (first matching regex, searched in the name) wins, else
    ``token_embd`` on the CPU, ``output``/``output_norm`` with the output layer, ``blk.i.*`` with layer i.
    Tensors of NextN blocks (not loaded) are left out."""
    compiled = [(re.compile(rx), dev) for rx, dev in overrides]
    out: dict[str, int | None] = {}
    for t in tmap.tensors:
        if not tmap.is_loaded(t):
            continue
        dev: int | None
        if t.layer is not None:
            dev = split.layer_device[t.layer] if t.layer < len(split.layer_device) else None
        elif t.name == "token_embd.weight":
            dev = None
        elif t.name in PER_LAYER_GLOBALS or on_first_layer(tmap, t.name):   # copies: engine_buffers / layer_copies
            dev = split.layer_device[0] if split.layer_device else None
        else:
            dev = split.output_device
        for rx, target in compiled:
            if rx.search(t.name):
                dev = target
                break
        out[t.name] = dev
    return out


def engine_buffers(tmap: TensorMap, mix: Mapping[str, str] | None, split: LayerSplit, *, n_devices: int,
                   kv_layer_bytes: Sequence[int], overrides: Sequence[tuple[str, int | None]] = (),
                   cuda: Sequence[bool] | None = None, cpu_mapped: bool = False,
                   engine: str = "mainline") -> tuple[EngineBuffer, ...]:
    """Weight and KV buffer bytes per device, as ``llm_load_tensors``/``llama_kv_cache_init`` allocate them.

    ``kv_layer_bytes[il]`` is the KV of layer ``il`` at the allocated (padded) context. ``cuda[d]`` says whether
    device ``d`` is a CUDA buffer (alignment 128, quantized rows padded to 512 weights) rather than a host or RPC
    buffer (alignment 32). CPU weights are an allocated buffer (``--no-mmap``; ik also whenever ``-ot`` is given,
    ``use_mmap_buffer &= !has_buft_overrides``) or, with ``cpu_mapped``, a buffer over the mmap'ed file from the
    first CPU tensor's offset to the last one's end (``llama_model_loader::get_mapping_range``: tensors of other
    devices in between count too; mainline logs it as ``CPU_Mapped``). When the output is tied to
    ``token_embd`` and offloaded, the engine loads a duplicate of ``token_embd`` on the output device; ik also on the
    CPU when its weights are allocated (:meth:`planner.memory.Placement.tied_duplicate_device`), and one copy of
    a per-layer global (``rope_freqs``) per loading layer (:func:`planner.roles.layer_copies`).
    """
    devs = tensor_devices(tmap, split, overrides)
    by_name = tmap.by_name()
    weights: dict[int | None, int] = {}
    p = tmap.params
    for name, dev0 in devs.items():
        t = by_name[name]
        # devices are indices here, the CPU None: mapped=-1 names no device
        for dev in layer_copies(name, p.arch, split.layer_device, p.is_swa, engine=engine,
                                mapped=None if cpu_mapped else -1) or [dev0]:
            is_cuda = dev is not None and bool(cuda and cuda[dev])
            weights[dev] = weights.get(dev, 0) + alloc_bytes(type_of(t, mix), t.shape, nbytes(t, mix), cuda=is_cuda)
    dup_on_cpu = engine != "mainline" and not cpu_mapped       # ik: see Placement.tied_duplicate_device
    embd = tmap.derived(tied_output)
    if embd is not None and (split.output_device is not None or dup_on_cpu):
        t = embd
        dev = split.output_device
        weights[dev] = weights.get(dev, 0) + alloc_bytes(type_of(t, mix), t.shape, nbytes(t, mix),
                                                         cuda=dev is not None and bool(cuda and cuda[dev]))
    header = getattr(tmap, "header", None)
    if cpu_mapped and header is not None and None in weights:
        cpu = {name for name, dev in devs.items() if dev is None}
        spans = [(g.offset, g.offset + g.nbytes) for g in header.tensors if g.name in cpu and g.shard == 0]
        if spans:
            weights[None] = max(e for _, e in spans) - min(b for b, _ in spans)
    kv: dict[int | None, int] = {}
    for il, dev in enumerate(split.kv_device):
        if il < len(kv_layer_bytes):
            kv[dev] = kv.get(dev, 0) + int(kv_layer_bytes[il])
    out = [EngineBuffer("weights", d, weights[d]) for d in [*range(n_devices), None] if d in weights]
    out += [EngineBuffer("kv", d, kv[d]) for d in [*range(n_devices), None] if d in kv and kv[d]]
    return tuple(out)


IK_HOST_ALLOC_EXTRA = 32
# ik llm_prepare_mla: a derived wk_b of a quantized wkv_b is Q8_0, or Q8_0_R8 when wkv_b is one of the _R8 repacks
# (GGML_TYPE_Q4_0_R8 .. GGML_TYPE_Q8_K_R8, src/llama.cpp:3054-3055 @8337e4cd3)
_R8_IDS = range(202, 400)


def ik_mla_derived(tmap: TensorMap, mix: Mapping[str, str] | None, mla_attn: int) -> dict[str, int]:
    """Weights ik computes at load for an MLA model beyond the file's tensors, each in a buffer of its own on
    the buffer type of the tensor it is computed from: source tensor name -> bytes (``llm_prepare_mla``,
    src/llama.cpp:2975-3470 @8337e4cd3; not part of any "buffer size" line of its log).

    * legacy layout (``attn_kv_b``, no ``attn_k_b``), ``-mla`` > 0: ``attn_k_b`` [nope, kv_lora, n_head] in Q8_0
      (the wkv_b type when not quantized) and ``attn_v_b`` [kv_lora, v_head, n_head] in the wkv_b type, from
      ``attn_kv_b``;
    * the converter's layout (``attn_k_b``/``attn_v_b``, no ``attn_kv_b``), ``-mla`` other than 1: ``attn_kv_b``
      [kv_lora, n_head * (nope + v_head)] in BF16 when both are BF16, F16 when both are F16, else Q8_0
      (``llm_compute_wkv_b``), from ``attn_k_b``.

    Under ``-sm graph``/``attn`` ik splits these per device instead: not modelled (ik's -sm graph is not).
    """
    return {src: ik_mla_derived_size(tmap.params, by, partner, type_of(by, mix),
                                     None if partner is None else type_of(partner, mix))
            for src, (by, partner) in ik_mla_sources(tmap, mla_attn).items()}


def ik_mla_sources(tmap: TensorMap, mla_attn: int) -> dict[str, tuple[TensorInfo, TensorInfo | None]]:
    """The tensors :func:`ik_mla_derived` computes from: source name -> (source, the attn_v_b it is combined with
    in the converter's layout, None for a legacy attn_kv_b)."""
    from planner.kv_cache import MLA_ARCHS

    p = tmap.params
    if p.arch not in MLA_ARCHS or not p.kv_lora_rank:
        return {}
    by_name = {t.name: t for t in tmap.tensors if tmap.is_loaded(t)}
    out: dict[str, tuple[TensorInfo, TensorInfo | None]] = {}
    for il in range(p.n_layer):
        kvb, kb, vb = (by_name.get(f"blk.{il}.attn_{n}.weight") for n in ("kv_b", "k_b", "v_b"))
        if kvb is not None and kb is None and mla_attn > 0:
            out[kvb.name] = (kvb, None)
        elif kb is not None and vb is not None and kvb is None and mla_attn != 1:
            out[kb.name] = (kb, vb)
    return out


def ik_mla_derived_size(p: ModelParams, src: TensorInfo, partner: TensorInfo | None, src_type: str,
                        partner_type: str | None) -> int:
    """Bytes ik derives from ``src`` (a source of :func:`ik_mla_sources`, with its ``partner`` attn_v_b) stored as
    ``src_type``, the partner as ``partner_type`` (None: assume ``src_type``, which never gives less than the
    engine: a mixed pair is Q8_0)."""
    qt = catalogue().get(src_type)
    if partner is None:
        k_type = ("q8_0_r8" if qt.id in _R8_IDS else "q8_0") if qt.is_quantized else qt.name
        nope = p.qk_nope_head_dim
        v_head = src.shape[1] // p.n_head - nope
        return (_row_size(k_type, nope) * p.kv_lora_rank * p.n_head
                + qt.row_bytes(p.kv_lora_rank) * v_head * p.n_head)
    types = {src_type, partner_type or src_type}
    wkv_type = "bf16" if types == {"bf16"} else "f16" if types == {"f16"} else "q8_0"
    return _row_size(wkv_type, p.kv_lora_rank) * p.n_head * (src.shape[0] + partner.shape[1])


def buffer_lines(engine: str, buffers: Sequence[EngineBuffer], device_names: Sequence[str], *,
                 cpu_mapped: bool = False, host_alloc_extra: int = 0) -> list[str]:
    """The engine's own load-log lines for these buffers, so a user can compare line by line.

    ik: ``llm_load_tensors: <dev> buffer size = X MiB`` and ``llama_kv_cache_init: <dev> KV buffer size``;
    mainline: ``load_tensors: <dev> model buffer size`` (``CPU_Mapped`` for a mmap'ed CPU buffer) and
    ``llama_kv_cache: <dev> KV buffer size``. Buffers of devices that share a name (an rpc-server listed twice)
    are summed, as the engine allocates one buffer per buffer type. ``host_alloc_extra`` is added once per
    allocated host buffer (:data:`IK_HOST_ALLOC_EXTRA` for ik's CPU backend and rpc-servers; not for a mmap'ed one).
    """
    cpu_name = "CPU_Mapped" if (cpu_mapped and engine == "mainline") else "CPU"
    sums: dict[tuple[str, str], int] = {}
    for b in buffers:
        name = cpu_name if b.device is None else device_names[b.device]
        if b.kind == "kv" and b.device is None:
            name = "CPU"
        sums[(b.kind, name)] = sums.get((b.kind, name), 0) + b.bytes
    lines = []
    for (kind, name), size in sums.items():
        if size and not (kind == "weights" and name == cpu_name and cpu_mapped):
            size += host_alloc_extra
        if kind == "weights":
            prefix, what = ("load_tensors", "model buffer size") if engine == "mainline" else ("llm_load_tensors",
                                                                                                "buffer size")
        elif kind == "kv":
            prefix, what = ("llama_kv_cache", "KV buffer size") if engine == "mainline" else ("llama_kv_cache_init",
                                                                                               "KV buffer size")
        else:
            prefix, what = ("sched_reserve" if engine == "mainline" else "llama_init_from_model",
                            "compute buffer size")
        lines.append(f"{prefix}: {name:>10} {what} = {size / MIB:8.2f} MiB")
    return lines


# ----------------------------------------------------------------------------------------------- glue for plan/check

CPU_NAME = "CPU"


@dataclass(frozen=True, slots=True)
class NamedSplit:
    """A layer map in the planner's device names ("CUDA0", ..., "CPU")."""

    layer_device: tuple[str, ...]
    output_device: str
    split: LayerSplit
    sizes: LayerSizes | None


def run_sizes(engine: str, tmap: TensorMap, mix: Mapping[str, str] | None, *, ctx: int, type_k: str, type_v: str,
              ubatch: int, batch: int, flash_attn: bool = True, amb: int = 0, n_seq: int = 1) -> LayerSizes | None:
    """ik's layer-size table for a run (None for the engines whose rule does not use it); ``n_seq`` is ``-np``."""
    if engine != "ik":
        return None
    return ik_layer_sizes(tmap, mix, ctx=ctx, type_k=type_k, type_v=type_v, n_ubatch=ubatch, n_batch=batch,
                          flash_attn=flash_attn, amb=amb, n_seq=n_seq)


def map_for_flags(engine: str, tmap: TensorMap, gpus: Sequence[str], gpu_free_bytes: Sequence[int], *,
                  n_gpu_layers: int | None, tensor_split: Sequence[float] | None, split_mode: str = "layer",
                  main_gpu: int = 0, sizes: LayerSizes | None = None) -> NamedSplit:
    """What ``-ngl``/``-ts``/``-sm``/``-mg`` do on this machine under ``engine``'s own rule, in planner names.

    ``gpus`` are the CUDA devices in engine order; ``gpu_free_bytes`` what each reports free at load (used when
    ``-ts`` is absent). ``n_gpu_layers`` None = the flag was not given (the engine default: all layers).
    On an RPC cluster ``gpus`` is the engine's whole offload list (:func:`planner.rpc.offload_list`): a device may
    appear twice (each entry has its own ``-ts`` position and share) and a ``CPU`` entry maps to the CPU.
    """
    devices = tuple(SplitDevice(g, int(b)) for g, b in zip(gpus, gpu_free_bytes))
    req = SplitRequest(n_layer=tmap.params.n_layer, n_gpu_layers=-1 if n_gpu_layers is None else n_gpu_layers,
                       devices=devices, tensor_split=tuple(tensor_split) if tensor_split else None,
                       split_mode=split_mode, main_gpu=main_gpu)
    split = layer_split(engine, req, sizes)
    names = tuple(CPU_NAME if d is None else gpus[d] for d in split.layer_device)
    out = CPU_NAME if split.output_device is None else gpus[split.output_device]
    return NamedSplit(names, out, split, sizes)


def flags_for_names(engine: str, tmap: TensorMap, gpus: Sequence[str], layer_device: Sequence[str],
                    output_device: str, *, sizes: LayerSizes | None = None) -> SplitFlags | None:
    """:func:`flags_for` in planner device names; the free memory is irrelevant since ``-ts`` is always given.

    A device listed twice in ``gpus`` (ik's offload list over RPC) is wanted at its first entry."""
    devices = tuple(SplitDevice(g, 0) for g in gpus)
    req = SplitRequest(n_layer=tmap.params.n_layer, n_gpu_layers=0, devices=devices)
    index: dict[str, int] = {}
    for i, g in enumerate(gpus):
        index.setdefault(g, i)
    want = tuple(None if d == CPU_NAME else index[d] for d in layer_device)
    out = None if output_device == CPU_NAME else index[output_device]
    return flags_for(engine, req, want, out, sizes)


def placement_buffers(engine: str, tmap: TensorMap, mix: Mapping[str, str] | None, tensor_device: Mapping[str, str],
                      layer_device: Sequence[str], kv_layer_bytes: Sequence[int], *, load: str = "mmap",
                      cuda_devices: bool = True,
                      tied_duplicate_device: str | None = None) -> list[tuple[str, str, int]]:
    """Memory per engine buffer for a placement in planner names: (kind, buffer name, bytes), in log order.

    Weights per device (GPU buffers with CUDA's alignment and row padding when ``cuda_devices``), the CPU split
    the way the engines log it: ``token_embd`` (the input layer) apart from the other CPU weights (``-ot``/CPU
    layers). Names: GPUs as given; ik puts the input layer in the host buffer of the GPU backend (``CUDA_Host``;
    ``CPU`` without a GPU or when mmap'ed), other CPU weights in ``CPU``; mainline logs a mmap'ed CPU buffer as
    ``CPU_Mapped`` (the span of the file from the first CPU tensor to the last when the header is known, see
    :func:`engine_buffers`). ``tied_duplicate_device``: the output layer's device when it holds the duplicate of a
    tied ``token_embd`` (:meth:`planner.memory.Placement.tied_duplicate_device`). KV per layer device. Bytes are exact for
    host/RPC buffers (checked against the harness logs); the CUDA padding follows ggml-cuda's get_alloc_size.
    """
    weights: dict[str, int] = {}
    order: list[str] = []
    has_gpu = any(d != CPU_NAME for d in (*layer_device, *tensor_device.values()))
    types = mix or {}
    p = tmap.params
    mapped = CPU_NAME if load == "mmap" else None
    for name_, shape, dtype in tmap.derived(loaded_shapes):
        for dev in layer_copies(name_, p.arch, layer_device, p.is_swa, engine=engine,
                                mapped=mapped) or [tensor_device.get(name_, CPU_NAME)]:
            if dev == CPU_NAME:
                if name_ == "token_embd.weight":
                    name = "CUDA_Host" if (engine != "mainline" and has_gpu and load != "mmap") else (
                        "CPU_Mapped" if (engine == "mainline" and load == "mmap") else "CPU")
                else:
                    name = "CPU_Mapped" if (engine == "mainline" and load == "mmap") else "CPU"
                size = _alloc(types.get(name_, dtype), shape, False)
            else:
                name = dev
                size = _alloc(types.get(name_, dtype), shape, cuda_devices)
            if name not in weights:
                order.append(name)
                weights[name] = 0
            weights[name] += size
        if name_ == "token_embd.weight" and tied_duplicate_device is not None:
            # ik, output on the CPU: the output's buffer type is the input's (llama_default_buffer_type_cpu,
            # src/llama.cpp:4322/4635 @8337e4cd3), so the duplicate shares the input's buffer and its name
            dup = name if tied_duplicate_device == CPU_NAME else tied_duplicate_device
            if dup not in weights:
                order.append(dup)
                weights[dup] = 0
            weights[dup] += _alloc(types.get(name_, dtype), shape, cuda_devices and dup not in (CPU_NAME, "CUDA_Host"))
    header = getattr(tmap, "header", None)
    if "CPU_Mapped" in weights and header is not None:
        cpu = {t.name for t in tmap.tensors if tmap.is_loaded(t) and tensor_device.get(t.name, CPU_NAME) == CPU_NAME}
        spans = [(g.offset, g.offset + g.nbytes) for g in header.tensors if g.name in cpu and g.shard == 0]
        if spans:
            weights["CPU_Mapped"] = max(e for _, e in spans) - min(b for b, _ in spans)
    kv: dict[str, int] = {}
    for il, dev in enumerate(layer_device):
        if il < len(kv_layer_bytes) and kv_layer_bytes[il]:
            kv[dev] = kv.get(dev, 0) + int(kv_layer_bytes[il])
    gpu_first = sorted(order, key=lambda n: (not n.startswith("CUDA") or n == "CUDA_Host", n))
    out = [("weights", n, weights[n]) for n in gpu_first]
    out += [("kv", d, b) for d, b in sorted(kv.items(), key=lambda x: (x[0] == CPU_NAME, x[0]))]
    return out
