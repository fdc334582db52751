"""Memory model: bytes per device for a given mix and placement.

Exact terms: weights (Σ ggml_nbytes of the tensors placed there) and the KV cache / recurrent state
of each block on its device (:mod:`planner.kv_cache`: the engines' allocation code per attention kind).  Estimated terms (labelled): compute buffers, the per-GPU safety margin, the OS
reserve.  Constants cite their source in ``data/speed_constants.toml`` / comments.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from planner.constants import constants
from planner.devices import CPU
from planner.devices import is_gpu as devices_is_gpu, is_remote
from planner.quants import catalogue
from planner.roles import layer_copies, tied_output
from planner.mmproj import mmproj_device
from planner.runconfig import RunConfig
from planner.tensors import ModelParams, TensorInfo, TensorMap
from planner.units import GIB, MIB

__all__ = ["CPU", "MIB", "DeviceMemory", "MemoryReport", "Placement", "RunConfig", "Term", "compute_buffer_bytes",
           "constants", "kv_bytes_by_layer", "kv_bytes_per_layer", "memory_report", "loaded_shapes", "mix_bytes", "output_alone",
           "output_extra", "shape_bytes",
           "tensor_bytes"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where each tensor lives and which device holds each layer's attention and KV cache."""

    tensor_device: Mapping[str, str]
    layer_device: tuple[str, ...]       # per layer: "CPU" or "CUDA<i>"
    devices: tuple[str, ...]            # all devices considered, CPU last
    output_device: str | None = None    # the output layer's device (-ngl above n_layer: the last GPU); None: CPU

    def device_of(self, name: str) -> str:
        return self.tensor_device.get(name, CPU)

    def logits_device(self, tied: bool) -> str:
        """Where the logits are computed: ``output.weight``'s device, or for an output tied to ``token_embd`` the
        output layer's device, where both engines load a duplicate of ``token_embd`` (``TENSOR_DUPLICATED`` in
        ``create_tensor``: mainline llama-model-loader.cpp maps it to ``LLM_TENSOR_OUTPUT``'s layer, ik's
        ``create_embd_output`` creates it in the output context)."""
        if not tied:
            return self.device_of("output.weight")
        return self.output_device or self.device_of("token_embd.weight")

    def tied_duplicate_device(self, tied: bool, engine: str = "mainline", load: str = "mmap") -> str | None:
        """The device holding the duplicate of a tied ``token_embd`` beyond the input copy, or None.

        Mainline reuses a tensor its context already has (create_tensor, llama-model-loader.cpp @0c1e57098), so a
        duplicate on the input's device costs nothing. ik's ``create_embd_output`` (src/llama-load-tensors.cpp:536
        @8337e4cd3) creates the TENSOR_DUPLICATED ``token_embd`` in the output context, ``create_tensor_for``
        (src/llama-model-loader.cpp:910) dups it without a lookup, and with the output on the CPU the input and
        output buffer types are the same (``llama_default_buffer_type_cpu``, src/llama.cpp:4322/4635): one
        context, two tensors. Under mmap both point into the file (src/llama.cpp:4735); otherwise (``--no-mmap``,
        ``-rtr``, ik's ``-ot``) the CPU buffer holds ``token_embd`` twice (gemma-3 tiny, --no-mmap, output on the
        CPU: 262,144 bytes more; tests/fixtures/kv_kinds_ik). The planner keeps the input layer on the CPU.
        """
        if not tied:
            return None
        out = self.logits_device(True)
        if out != self.device_of("token_embd.weight"):
            return out
        return out if engine != "mainline" and load != "mmap" else None


@dataclass(frozen=True, slots=True)
class Term:
    name: str
    bytes: int
    exact: bool
    note: str = ""


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    device: str
    budget_bytes: int
    terms: tuple[Term, ...]
    total_bytes: int = field(init=False)
    free_bytes: int = field(init=False)
    fits: bool = field(init=False)

    def __post_init__(self) -> None:
        total = sum(t.bytes for t in self.terms)
        object.__setattr__(self, "total_bytes", total)
        object.__setattr__(self, "free_bytes", self.budget_bytes - total)
        object.__setattr__(self, "fits", total <= self.budget_bytes)

    def term(self, name: str) -> int:
        return sum(t.bytes for t in self.terms if t.name == name)

    @property
    def dominant(self) -> Term:
        return max(self.terms, key=lambda t: t.bytes)


@dataclass(frozen=True, slots=True)
class MemoryReport:
    devices: tuple[DeviceMemory, ...]
    kv_cache_bytes: int
    kv_size: int
    # memory per engine buffer as the engine's load log names them, in log order: (kind, buffer name, bytes) with
    # kind "weights" and "kv" (exact: planner.engine_buffers) and "compute" (estimate: planner.compute_buffers)
    buffers: tuple[tuple[str, str, int], ...] = ()
    fits: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fits", all(d.fits for d in self.devices))

    def device(self, name: str) -> DeviceMemory:
        return next(d for d in self.devices if d.device == name)

    def shortfall(self) -> dict[str, int]:
        return {d.device: -d.free_bytes for d in self.devices if not d.fits}

    def problems(self) -> list[str]:
        out = []
        for d in self.devices:
            if not d.fits:
                out.append(f"{d.device} over budget by {-d.free_bytes / GIB:.2f} GiB "
                           f"(largest term: {d.dominant.name} {d.dominant.bytes / GIB:.2f} GiB)")
        return out


# ----------------------------------------------------------------------------- exact terms

@functools.lru_cache(maxsize=16384)
def shape_bytes(type_name: str, shape: tuple[int, ...]) -> int:
    """ggml_nbytes of a ``shape`` tensor of ``type_name`` (remembered: the catalogue is loaded once, and a plan
    asks for the same few (type, shape) pairs thousands of times)."""
    return catalogue().get(type_name).tensor_bytes(shape)


def tensor_bytes(t: TensorInfo, type_name: str) -> int:
    return shape_bytes(type_name, t.shape)


def mix_bytes(tmap: TensorMap, mix: Mapping[str, str]) -> dict[str, int]:
    """ggml_nbytes of every tensor at its mix type."""
    get = mix.get
    return {t.name: shape_bytes(get(t.name, t.dtype), t.shape) for t in tmap.tensors}


def _cells(cfg: RunConfig) -> str:
    """The cells as the engine's cache line counts them: "4 x 1024" for mainline -np 4 without -kvu (one stream
    per sequence, planner.kv_cache.CacheConfig.n_stream), else the padded context."""
    from planner.kv_cache import CacheConfig

    cache = CacheConfig.from_run(cfg)
    return f"{cache.n_stream} x {cache.n_ctx_seq}" if cache.n_stream > 1 else str(cfg.kv_size)


def kv_bytes_by_layer(params: ModelParams, cfg: RunConfig) -> tuple[int, ...]:
    """KV cache / recurrent state bytes of every block, on the block's device (0 for blocks without one).

    The engines' own allocation code, per engine and attention kind (GQA, MLA per ``-mla``/FA, sliding window,
    gated delta-net state, DSA indexer keys, DeepSeek-V4 compressed caches, NextN/MTP): :mod:`planner.kv_cache`.

    Raises:
        UnknownModelError: a layout the planner cannot size exactly (named in the message).
    """
    from planner.kv_cache import CacheConfig, bytes_by_layer

    return bytes_by_layer(params, CacheConfig.from_run(cfg))


def kv_bytes_per_layer(params: ModelParams, cfg: RunConfig) -> int:
    """The largest block's cache (one figure for summaries); use :func:`kv_bytes_by_layer` for placement."""
    return max(kv_bytes_by_layer(params, cfg), default=0)


# ----------------------------------------------------------------------------- estimates

def compute_buffer_bytes(tmap: TensorMap, cfg: RunConfig, *, holds_layers: bool, holds_output: bool,
                         is_gpu: bool, holds_ffn: bool | None = None, entry: str = "", copies: int = 1,
                         n_layers: int | None = None) -> int:
    """Compute buffer of one device: the largest live set of the worst-case ubatch graph
    (:mod:`planner.compute_buffers`; scales with -ub, -c, -amb, vocab and expert width). Estimate.

    ``holds_layers``: the device runs layers' attention; ``holds_ffn``: it runs FFN/expert matmuls (None: same as
    ``holds_layers``); the CPU (``is_gpu`` False) also holds the graph inputs (KQ mask, token embeddings);
    ``copies``: the scheduler's input copies (:func:`planner.compute_buffers.placement_copies`); ``n_layers``:
    how many layers the device holds, where known (None: up to all; :attr:`planner.compute_buffers.DeviceRole.
    layers`).
    """
    from planner.compute_buffers import DeviceRole, estimate

    ffn = holds_layers if holds_ffn is None else holds_ffn
    if is_gpu and not (holds_layers or holds_output or ffn):
        return 0
    return estimate(tmap, cfg, DeviceRole(holds_layers, ffn, holds_output, host=not is_gpu,
                                          entry=entry, copies=copies, layers=n_layers)).bytes


def output_extra(tmap: TensorMap, cfg: RunConfig, d: str, copies: int) -> int:
    """The output's share of device ``d``'s compute buffer over a device holding layers, over every entry."""
    return max(compute_buffer_bytes(tmap, cfg, holds_layers=True, holds_output=True, is_gpu=devices_is_gpu(d), copies=copies,
                                    entry=e)
               - compute_buffer_bytes(tmap, cfg, holds_layers=True, holds_output=False, is_gpu=devices_is_gpu(d),
                                      copies=copies, entry=e) for e in ("", "input", "cpu"))


def output_alone(tmap: TensorMap, cfg: RunConfig, copies: int) -> int:
    """A GPU's compute buffer when it holds the output and no layer (DeepSeek-V4's hyper-connection head on the tiny
    dsv4 model's CUDA0: 5.04 MiB, where the output's share over a layer-holding device is 0)."""
    return compute_buffer_bytes(tmap, cfg, holds_layers=False, holds_output=True, is_gpu=True, copies=copies)


# ----------------------------------------------------------------------------- report

def loaded_shapes(tmap: TensorMap) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    """(name, shape, stored type) of every loaded tensor (NextN/MTP blocks are not), in map order."""
    return tuple((t.name, t.shape, t.dtype) for t in tmap.tensors if tmap.is_loaded(t))


def _ffn_matmuls(tmap: TensorMap) -> tuple[str, ...]:
    """Loaded tensors whose matmul produces the FFN intermediates (:func:`planner.compute_buffers.is_ffn_matmul`)."""
    from planner.compute_buffers import is_ffn_matmul

    return tuple(n for n, _, _ in tmap.derived(loaded_shapes) if is_ffn_matmul(n))


def memory_report(tmap: TensorMap, mix: Mapping[str, str], placement: Placement, budgets: Mapping[str, int],
                  cfg: RunConfig) -> MemoryReport:
    """Per-device memory for a mix and placement against per-device budgets (bytes).

    ``budgets`` maps "CUDA<i>" to the GPU's memory and "CPU" to usable RAM (both before margins).
    """
    get = mix.get
    sizes = {n: shape_bytes(get(n, dtype), shape) for n, shape, dtype in tmap.derived(loaded_shapes)}
    weights: dict[str, int] = {d: 0 for d in placement.devices}
    device_of = placement.device_of
    p = tmap.params
    mapped = CPU if cfg.load == "mmap" else None
    for name, nbytes in sizes.items():
        for dev in layer_copies(name, p.arch, placement.layer_device, p.is_swa, engine=cfg.engine,
                                mapped=mapped) or [device_of(name)]:
            weights[dev] = weights.get(dev, 0) + nbytes
    kv_by_layer = kv_bytes_by_layer(tmap.params, cfg)
    kv: dict[str, int] = {d: 0 for d in placement.devices}
    for dev, nbytes in zip(placement.layer_device, kv_by_layer):
        kv[dev] = kv.get(dev, 0) + nbytes
    tied = tmap.derived(tied_output) is not None
    out_dev = placement.logits_device(tied)
    dup_dev = placement.tied_duplicate_device(tied, cfg.engine, cfg.load)
    if dup_dev is not None:
        weights[dup_dev] = weights.get(dup_dev, 0) + sizes["token_embd.weight"]
    if cfg.engine != "mainline":
        # ik's MLA tensors derived at load (attn_kv_b from attn_k_b/attn_v_b, or these from attn_kv_b), each in a
        # buffer of its own beside its source (planner.engine_buffers.ik_mla_derived)
        from planner.engine_buffers import ik_mla_derived

        for src, nbytes in ik_mla_derived(tmap, mix, cfg.mla).items():
            weights[device_of(src)] = weights.get(device_of(src), 0) + nbytes
    mm_dev = mmproj_device(cfg, budgets or placement.devices)
    devices = []
    from planner.compute_buffers import entry_of, placement_compute, placement_copies

    ffn_devs = {device_of(n) for n in tmap.derived(_ffn_matmuls)}
    copies = placement_copies(cfg.engine, placement.devices, placement.layer_device,
                              {n: device_of(n) for n in sizes}, out_dev, CPU)
    graph = placement_compute(tmap, cfg, placement.devices, placement.layer_device, device_of, out_dev, CPU, copies)
    for dev in placement.devices:
        is_gpu = devices_is_gpu(dev)
        holds_layers = dev in placement.layer_device
        terms = [Term("weights", weights.get(dev, 0), True,
                      "" if is_gpu else _ram_mode_note(cfg))]
        terms.append(Term("kv_cache", kv.get(dev, 0), True,
                          f"{cfg.type_k}/{cfg.type_v}, {_cells(cfg)} cells"))
        if graph is not None:
            compute = graph.get(dev, 0)
            how = f"engine graph of one -ub {min(cfg.ubatch, cfg.batch)} ubatch through ggml's allocator"
        else:
            compute = compute_buffer_bytes(
                tmap, cfg, holds_layers=holds_layers, holds_output=(out_dev == dev), is_gpu=is_gpu,
                holds_ffn=dev in ffn_devs, entry=entry_of(placement.layer_device, dev, CPU), copies=copies)
            how = f"estimate: largest live set of one -ub {min(cfg.ubatch, cfg.batch)} graph"
        terms.append(Term("compute", compute, False,
                          how + (f", {copies} input copies (pipeline parallelism)" if copies > 1 else "")))
        if dev == mm_dev:
            terms.append(Term("mmproj", cfg.mmproj_bytes, True,
                              f"--mmproj {Path(cfg.mmproj or '').name}: projector weights from its header"))
            if cfg.mmproj_compute_bytes:
                terms.append(Term("mmproj_compute", cfg.mmproj_compute_bytes, False,
                                  "estimate: projector's largest live set for the engine's warmup image"))
        if mm_dev is not None and dev == CPU and cfg.mmproj_input_bytes:
            terms.append(Term("mmproj_input", cfg.mmproj_input_bytes, False, "projector's f32 warmup image"))
        if is_gpu:
            terms.append(Term("margin", cfg.gpu_margin_bytes, False, "safety margin (CUDA context, fragmentation)"))
        else:
            terms.append(Term("os_reserve", cfg.os_reserve_bytes, False, "OS and server process"))
        devices.append(DeviceMemory(dev, int(budgets.get(dev, 0)), tuple(terms)))
    from planner.engine_buffers import placement_buffers

    buffers = placement_buffers(cfg.engine, tmap, mix, placement.tensor_device, placement.layer_device, kv_by_layer,
                                load=cfg.load, tied_duplicate_device=dup_dev)
    has_gpu = any(devices_is_gpu(d) for d in (*placement.layer_device, *placement.tensor_device.values()))
    for d in devices:
        if d.term("compute"):
            # the local CPU's compute buffer is the GPU backend's host buffer; an rpc-server host's CPU is its own
            name = d.device if devices_is_gpu(d.device) or is_remote(d.device) else ("CUDA_Host" if has_gpu else "CPU")
            buffers.append(("compute", name, d.term("compute")))
    return MemoryReport(tuple(devices), sum(kv.values()), cfg.kv_size, tuple(buffers))


def _ram_mode_note(cfg: RunConfig) -> str:
    if cfg.load == "mmap":
        return "mmap: page cache (must stay resident for speed)"
    return f"{cfg.load}: copied into RAM (pinned CUDA_Host when built with CUDA)"
