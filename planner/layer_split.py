"""The engines' own layer→device rule: which device holds each repeating layer, its KV cache and the output.

One pure function per engine profile, each transcribed from the engine's source at a named commit:

* :func:`split_ik` — ik_llama.cpp ``src/llama.cpp`` ``llm_load_tensors`` + ``get_layer_sizes`` at 8337e4cd
  (the rule since commit 0871ab29, "Take into account layer sizes for setting GPU layers", PR 1466, 2026-03-20):
  devices are filled greedily, in device order, by a per-layer size (weights + KV cache), each device first
  charged one maximal per-layer compute buffer, up to its share of ``-ts`` (or of the free memory less a 1 GiB
  margin when no ``-ts`` is given).
* :func:`split_ik_2025` — ik_llama.cpp ``src/llama.cpp`` ``llm_load_tensors`` at 17a5a809 (2025-12-29, the last
  2025 commit; the same rule holds from spring 2025 up to b56a3c2d, the parent of 0871ab29):
  ``layer_gpu = upper_bound(splits, (i - i_gpu_start) / act_gpu_layers)`` with
  ``i_gpu_start = max(n_layer - ngl, 0)``.
* :func:`split_mainline` — llama.cpp ``src/llama-model.cpp`` ``llama_model::load_tensors`` at 0c1e57098 (the tree
  vendored by llama-cpp-python 0.3.36): the same ``upper_bound`` rule, but ``i_gpu_start = max(n_layer + 1 - ngl,
  0)`` — ``-ngl`` counts the output layer too, so ``-ngl n_layer`` leaves layer 0 on the CPU and puts the output
  on a GPU.

The engines compute the split points in ``float`` (and ik its running sum in ``float``, its targets from a
``double``); both are emulated bit for bit here, so a layer that sits on a boundary lands where the engine puts it.

Everything else the plan needs follows from the layer→device map: a layer's KV cache lives on its device (ik
``llama_kv_cache_init``, mainline ``llama_kv_cache``: per layer on the layer's buffer type unless ``-nkvo``),
``token_embd`` always stays on the CPU (the "input layer"; ``buft_input`` / ``dev_input``), and the output layer
(``output_norm``, ``output``) is on a device only when ``-ngl`` reaches it. :func:`planner.engine_buffers.engine_buffers` turns a map,
a mix and ``-ot`` overrides into the per-buffer bytes the engines log (``<dev> buffer size``, ``KV buffer size``).

:mod:`planner.layer_sizes` computes the per-layer sizes ik's rule fills by; :mod:`planner.layer_split_flags`
finds the ``-ngl``/``-ts`` that make a rule reproduce a wanted map.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from planner.errors import UsageError

MIB = 1 << 20
# ik llm_load_tensors: k_default_mem_margin = 1 GiB, subtracted from each device's free memory (--fit-margin).
IK_DEFAULT_MARGIN_BYTES = 1 << 30
ENGINES = ("ik", "ik-2025", "mainline")
SPLIT_MODES = ("layer", "graph", "attn", "none", "row")

# ggml-backend.cpp TENSOR_ALIGNMENT (CPU and RPC-of-CPU buffers) and ggml-cuda.cu: alignment 128 and the last
# row of a quantized matrix padded to MATRIX_ROW_PADDING = 512 weights (ggml_backend_cuda_buffer_type_get_alloc_size).
HOST_ALIGNMENT = 32
CUDA_ALIGNMENT = 128
CUDA_MATRIX_ROW_PADDING = 512


def f32(x: float) -> float:
    """Round a double to the nearest IEEE single (what a C++ ``float`` store does)."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


# ----------------------------------------------------------------------------------------------- inputs / outputs

@dataclass(frozen=True, slots=True)
class SplitDevice:
    """One entry of the engine's offload device list, in the engine's order.

    ``free_bytes`` is what the backend reports as free at load (cudaMemGetInfo, or an rpc-server's host RAM); it only
    matters when no ``-ts`` is given (the default split is proportional to it) and, in ik, for its fit messages.
    """

    name: str
    free_bytes: int


@dataclass(frozen=True, slots=True)
class SplitRequest:
    """The flags that decide the layer→device map."""

    n_layer: int                          # hparams.n_layer / n_layer_all: the GGUF block_count (NextN included)
    n_gpu_layers: int                     # -ngl; negative = the engine default (all layers)
    devices: tuple[SplitDevice, ...]      # the offload devices in engine order; empty = CPU only
    tensor_split: tuple[float, ...] | None = None   # -ts values as given (padded with zeros to the device count)
    split_mode: str = "layer"             # -sm: layer | graph | attn (ik) | none | row (mainline)
    main_gpu: int = 0                     # -mg
    margin_bytes: int = IK_DEFAULT_MARGIN_BYTES      # ik --fit-margin (MiB on the command line)

    def __post_init__(self) -> None:
        if self.n_layer < 1:
            raise UsageError(f"n_layer must be positive, got {self.n_layer}")
        if self.split_mode not in SPLIT_MODES:
            raise UsageError(f"unknown split mode {self.split_mode!r}", hint=f"one of {', '.join(SPLIT_MODES)}")
        if self.tensor_split is not None and any(x < 0 for x in self.tensor_split):
            raise UsageError("-ts values must not be negative")
        if self.devices and not 0 <= self.main_gpu < len(self.devices):
            raise UsageError(f"-mg {self.main_gpu} is not one of the {len(self.devices)} devices")


@dataclass(frozen=True, slots=True)
class LayerSizes:
    """ik ``get_layer_sizes`` at 8337e4cd: the per-layer table it prints as "Layer sizes" (bytes).

    ``weights[il]`` is Σ ggml_nbytes of the layer's tensors as stored in the file (before ``-ot``: the engine sizes
    a layer by all its weights wherever ``-ot`` sends them), plus for MLA models the ``wk_b``/``wv_b`` the engine
    derives at load. ``kv[il]`` is ``llama_model::cache_size`` at the unpadded ``-c``. ``output_weights`` is
    ``output.weight`` (``token_embd`` when tied); ``output_extra`` the logits buffer beyond the largest per-layer
    compute buffer.
    """

    weights: tuple[int, ...]
    kv: tuple[int, ...]
    compute: tuple[int, ...]
    output_weights: int
    output_extra: int

    @property
    def n_layer(self) -> int:
        return len(self.weights)

    @property
    def max_compute(self) -> int:
        return max(self.compute, default=0)

    def total(self, il: int) -> int:
        """What the greedy fill charges for layer ``il`` (``il == n_layer``: the output layer)."""
        if il == self.n_layer:
            return self.output_weights + self.output_extra
        return self.weights[il] + self.kv[il]


@dataclass(frozen=True, slots=True)
class LayerSplit:
    """Where the engine puts each layer: device indices into ``SplitRequest.devices``, ``None`` = CPU."""

    engine: str
    split_mode: str
    layer_device: tuple[int | None, ...]   # per repeating layer
    output_device: int | None              # output_norm + output (+ the logits compute)
    splits: tuple[float, ...]              # the cumulative split points the engine used (float32 values)
    graph_split: bool = False              # -sm graph/attn in ik: each layer's matrices are spread over all devices

    @property
    def kv_device(self) -> tuple[int | None, ...]:
        """A layer's KV cache lives on the layer's device (with -nkvo everything is on the CPU instead)."""
        return self.layer_device

    def layers_on(self, device: int | None) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.layer_device) if d == device)

    def counts(self, n_devices: int) -> tuple[int, ...]:
        """Layers per device, the output layer included (what ik logs as "offloaded N/M layers")."""
        out = [0] * n_devices
        for d in (*self.layer_device, self.output_device):
            if d is not None:
                out[d] += 1
        return tuple(out)

    def compute_devices(self) -> tuple[int, ...]:
        """Devices that get a compute buffer: every device holding a layer or the output (the CPU always has one)."""
        return tuple(sorted({d for d in (*self.layer_device, self.output_device) if d is not None}))


# ----------------------------------------------------------------------------------------------- split points

def _cumulative(values: Sequence[float]) -> tuple[float, ...]:
    """The engines' split normalisation, in float: running float sum, then each divided by the total.

    All zero (only possible for free memory: the engines divide 0 by 0 and index past the device list) is
    taken as equal shares, so a caller that does not know the free memory still gets a usable map."""
    if not any(values):
        values = [1.0] * len(values)
    acc = 0.0
    cum = []
    for v in values:
        acc = f32(acc + f32(v))
        cum.append(acc)
    return tuple(f32(c / acc) if acc else float("nan") for c in cum)


def _requested(req: SplitRequest) -> tuple[float, ...] | None:
    """-ts padded with zeros to the device count, or None when all zero (= not given)."""
    n = len(req.devices)
    if req.tensor_split is None:
        return None
    ts = tuple(f32(x) for x in req.tensor_split[:n]) + (0.0,) * max(0, n - len(req.tensor_split))
    return None if all(x == 0.0 for x in ts) else ts


def _ngl(req: SplitRequest, *, mainline: bool) -> int:
    if not req.devices:
        return 0
    if req.n_gpu_layers < 0:
        # ik llama_load_model_from_file: -1 -> 999 with a GPU; mainline llama_model::n_gpu_layers(): n_layer_all + 1
        return req.n_layer + 1 if mainline else 999
    return req.n_gpu_layers


def _upper_bound_split(req: SplitRequest, splits: tuple[float, ...], i_gpu_start: int, act: int,
                       layers: range) -> list[int]:
    return [bisect.bisect_right(splits, f32((il - i_gpu_start) / act)) for il in layers]


# ----------------------------------------------------------------------------------------------- the rules

def split_mainline(req: SplitRequest) -> LayerSplit:
    """llama.cpp ``src/llama-model.cpp`` ``llama_model::load_tensors`` at 0c1e57098.

    ``splits`` = cumulative ``-ts`` (or free memory per device when ``-ts`` is absent or all zero) normalised in
    float; ``i_gpu_start = max(n_layer + 1 - ngl, 0)``, ``act_gpu_layers = min(ngl, n_layer + 1)``; layer ``il``
    (the output layer is ``il = n_layer``) goes to ``upper_bound(splits, float(il - i_gpu_start) / act)``, layers
    below ``i_gpu_start`` to the CPU. ``-sm none``: every offloaded layer on ``-mg`` (``llama_prepare_model_devices``
    reduces the device list to the main GPU). ``-sm row``: the same layer map, with each layer's matrices row-split
    over the devices (``graph_split``). ``-sm tensor`` (the meta device) is not modelled.
    """
    n = req.n_layer
    ngl = _ngl(req, mainline=True)
    if not req.devices or ngl == 0:
        return LayerSplit("mainline", req.split_mode, (None,) * n, None, (1.0,))
    if req.split_mode == "none":
        i_gpu_start = max(n + 1 - ngl, 0)
        dev = [None if il < i_gpu_start else req.main_gpu for il in range(n + 1)]
        return LayerSplit("mainline", req.split_mode, tuple(dev[:n]), dev[n], (1.0,))
    ts = _requested(req)
    splits = _cumulative(ts if ts is not None else [float(d.free_bytes) for d in req.devices])
    i_gpu_start = max(n + 1 - ngl, 0)
    act = min(ngl, n + 1)
    out: list[int | None] = []
    for il in range(n + 1):
        if il < i_gpu_start or il - i_gpu_start >= act:
            out.append(None)
        else:
            out.append(_upper_bound_split(req, splits, i_gpu_start, act, range(il, il + 1))[0])
    # -sm row: the same layer map; the layers' matrices are row-split over the devices by -ts (split buffer)
    return LayerSplit("mainline", req.split_mode, tuple(out[:n]), out[n], splits,
                      graph_split=req.split_mode == "row" and len(req.devices) > 1)


def split_ik_2025(req: SplitRequest) -> LayerSplit:
    """ik_llama.cpp ``src/llama.cpp`` ``llm_load_tensors`` at 17a5a809 (same rule from spring 2025 to b56a3c2d).

    ``splits`` as mainline (free memory with no margin when ``-ts`` is absent); ``i_gpu_start = max(n_layer - ngl,
    0)`` (``-ngl`` counts repeating layers only), ``act_gpu_layers = min(ngl, n_layer + 1)``; layer ``i`` →
    ``upper_bound(splits, float(i - i_gpu_start) / act)``; the output layer is offloaded when ``ngl > n_layer``, to
    ``upper_bound(splits, float(act - 1) / act)``. ``-sm graph``/``attn``/``none``: every offloaded layer's
    non-split part and the output on ``-mg`` (graph: the matrices split by ``splits`` over all devices).
    """
    n = req.n_layer
    ngl = _ngl(req, mainline=False)
    if not req.devices or ngl == 0:
        return LayerSplit("ik-2025", req.split_mode, (None,) * n, None, (1.0,))
    i_gpu_start = max(n - ngl, 0)
    act = min(ngl, n + 1)
    if len(req.devices) > 1:
        ts = _requested(req)
        splits = _cumulative(ts if ts is not None else [float(d.free_bytes) for d in req.devices])
    else:
        splits = (1.0,)
    if req.split_mode != "layer":
        layers = tuple(None if il < i_gpu_start else req.main_gpu for il in range(n))
        out = req.main_gpu if ngl > n else None
        return LayerSplit("ik-2025", req.split_mode, layers, out, splits,
                          graph_split=req.split_mode in ("graph", "attn") and len(splits) > 1)
    layers = tuple(None if il < i_gpu_start else bisect.bisect_right(splits, f32((il - i_gpu_start) / act))
                   for il in range(n))
    out = bisect.bisect_right(splits, f32((act - 1) / act)) if ngl > n else None
    return LayerSplit("ik-2025", req.split_mode, layers, out, splits)


def split_ik(req: SplitRequest, sizes: LayerSizes) -> LayerSplit:
    """ik_llama.cpp ``src/llama.cpp`` ``llm_load_tensors`` (with ``get_layer_sizes``) at 8337e4cd.

    ``device_mem[i]`` = free memory less the 1 GiB margin (0 when below it). ``splits`` = cumulative ``-ts``, or
    ``device_mem`` when ``-ts`` is absent or all zero, normalised in float. ``default_layer_device`` starts at the
    last device for every layer and the output. With more than one device, for ``i_gpu_start = max(n_layer - ngl,
    0)`` up to ``n_last`` (``n_layer``, plus the output layer when ``ngl > n_layer``), with
    ``sum = max_compute * n_devices + Σ layer_size``: each device in turn first adds ``max_compute`` to a running
    float ``loaded_sum``, then takes layers while ``loaded_sum + size <= splits[id] * sum``; the first layer that
    does not fit is still taken when that overshoots by less than the room left. Layers nobody took stay on the
    last device. Layers below ``i_gpu_start`` are on the CPU; the output is offloaded (to its default device) only
    when ``ngl > n_layer``. ``-sm graph``/``attn`` use the same default devices for the non-split tensors and
    spread each layer's matrices over the devices by ``splits``.

    Not modelled: ``--fit`` (adds ``-ot`` overrides of its own), the Gemma-4 MTP assistant, and the
    split-adjustment branch that needs a null ``tensor_split`` pointer (common always passes an array).
    """
    n = req.n_layer
    ngl = _ngl(req, mainline=False)
    if sizes.n_layer != n:
        raise UsageError(f"layer sizes cover {sizes.n_layer} layers, the model has {n}")
    if not req.devices or ngl == 0:
        return LayerSplit("ik", req.split_mode, (None,) * n, None, (1.0,))
    count = len(req.devices)
    device_mem = [d.free_bytes - req.margin_bytes if d.free_bytes > req.margin_bytes else 0 for d in req.devices]
    if count > 1:
        ts = _requested(req)
        splits = _cumulative(ts if ts is not None else [float(m) for m in device_mem])
    else:
        splits = (1.0,)
    i_gpu_start = max(n - ngl, 0)
    default = [count - 1] * (n + 1)
    if count > 1:
        max_compute = float(sizes.max_compute)
        n_last = n + 1 if ngl > n else n
        total = max_compute * count
        for il in range(i_gpu_start, n_last):
            total += float(sizes.total(il))
        last = i_gpu_start
        loaded = 0.0                                   # float loaded_sum
        for dev in range(count):
            loaded = f32(loaded + max_compute)
            target = f32(splits[dev] * total)          # float split_size = model.splits[id]*sum
            il = last
            while il < n_last:
                size = float(sizes.total(il))
                if loaded + size <= target:
                    default[il] = dev
                    loaded = f32(loaded + size)
                    il += 1
                    continue
                if loaded + size - target < f32(target - loaded):     # right side: float - float, in float
                    default[il] = dev
                    loaded = f32(loaded + size)
                    il += 1
                break
            last = il
    layers = tuple(None if il < i_gpu_start else default[il] for il in range(n))
    out = default[n] if ngl > n else None
    graph = req.split_mode in ("graph", "attn") and count > 1
    if req.split_mode in ("graph", "attn") and ngl <= n and ngl > 0:
        # partial -ngl with -sm graph: the output goes to the device of the last layer (to avoid a CPU sync)
        out = max(0, default[n - 1])
    return LayerSplit("ik", req.split_mode, layers, out, splits, graph_split=graph)


def layer_split(engine: str, req: SplitRequest, sizes: LayerSizes | None = None) -> LayerSplit:
    """The layer→device map ``engine`` (ik | ik-2025 | mainline) makes for ``req``.

    Raises:
        UsageError: unknown engine, or ik without its layer-size table.
    """
    if engine == "mainline":
        return split_mainline(req)
    if engine == "ik-2025":
        return split_ik_2025(req)
    if engine == "ik":
        if not req.devices or req.n_gpu_layers == 0:
            return LayerSplit("ik", req.split_mode, (None,) * req.n_layer, None, (1.0,))
        if sizes is None:
            raise UsageError("the ik rule needs the per-layer sizes (ik_layer_sizes)")
        return split_ik(req, sizes)
    raise UsageError(f"unknown engine profile {engine!r}", hint=f"one of {', '.join(ENGINES)}")
