"""A vision/audio projector (``--mmproj FILE``): the extra weights the server loads next to the model.

llama.cpp's and ik_llama.cpp's mtmd/clip loader reads every tensor of the mmproj GGUF (``general.architecture =
clip``) into one backend buffer (``clip_model_loader::load_tensors``: ``ggml_backend_alloc_ctx_tensors_from_buft``
with the default buffer type of the CLIP backend; ik examples/mtmd/clip.cpp:3876-3877 @8337e4cd).  The CLIP
backend is the first GPU backend unless ``--no-mmproj-offload`` (``mmproj_use_gpu = false``, ik
common/common.cpp:1763-1764) or no GPU is present, then the CPU: ik clip.cpp:488-510 takes
``ggml_backend_reg_init_backend(1)`` (the first non-CPU registry, device 0) unless MTMD_BACKEND_DEVICE names
another; mainline tools/mtmd/clip.cpp ``ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_GPU)``, the first GPU
device.  Exact: the sum of the tensors' ``ggml_nbytes``.

Its compute buffer (:func:`compute_estimate`) is reserved once at load for one warmup image (data/mmproj.toml
cites the engines' warmup sizes): an estimate, the largest live set of one encoder block in f32 for the warmup
image's patches, as ggml-alloc reuses memory between blocks (ik clip.cpp build_vit 2376-2520, build_attn
2716-2790 @8337e4cd):

* attention, flash attention on (mtmd's default, ``flash_attn_type`` AUTO, ik clip.cpp 3939-3942): the residual,
  the normed input and Q, K, V while V is computed -- 5 x n_embd x n_pos f32;
* the FFN: residual, normed input and the up projection (2 x n_embd + n_ff) x n_pos f32; gated FFNs (a
  ``v.blk.0.ffn_gate`` tensor) hold gate and up and their product (n_embd + 3 x n_ff) x n_pos;
* flash attention off (``-fa off``): plus KQ, f32 [n_pos, n_pos] per head; mainline materialises all heads,
  ik computes one head at a time once n_pos^2 x n_head reaches 256 Mi elements (ik clip.cpp 2758).

The CPU backend also holds the graph input, the f32 image (warmup^2 x 3 x 4 bytes), when the encoder runs on a
GPU.  Checked against one published log (mainline, Qwen3.6-27B mmproj-BF16, qwen3vl_merger, warmup 1472 x 1472,
flash attention on): CUDA0 248.10 MiB logged vs 213.4 estimated (-14 %), CPU 24.93 MiB vs 24.80 (-0.5 %).  Not
modelled: projector-specific tensors kept across blocks (e.g. deepstack features), the merger after the last
block, ``--image-max-tokens`` overrides and allocator fragmentation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import UnknownModelError
from planner.quants import catalogue

if TYPE_CHECKING:
    from planner.runconfig import RunConfig


@dataclass(frozen=True, slots=True)
class VisionShape:
    """The encoder numbers the compute estimate needs, from the mmproj header (clip.vision.*)."""

    image_size: int
    patch_size: int
    n_embd: int
    n_ff: int
    n_head: int
    merge: int                # clip.vision.projector.scale_factor / spatial_merge_size, 0 when absent
    max_pixels: int           # clip.vision.image_max_pixels, 0 when absent
    gated_ffn: bool           # a v.blk.0.ffn_gate tensor


@dataclass(frozen=True, slots=True)
class Mmproj:
    source: str
    projector: str            # clip.projector_type (e.g. "gemma3", "qwen3vl_merger"), "" when absent
    weight_bytes: int         # Σ ggml_nbytes of its tensors
    n_tensors: int
    vision: VisionShape | None = None     # None: no vision encoder numbers in the header (audio, legacy files)


@dataclass(frozen=True, slots=True)
class MmprojCompute:
    """The estimated compute buffers of the projector (see the module docstring)."""

    warmup: int               # warmup image side in pixels
    n_pos: int                # encoder positions (patches) for it
    device_bytes: int         # on the CLIP backend's device (the first GPU, or the CPU)
    input_bytes: int          # the f32 image on the CPU backend


def compute_estimate(vision: VisionShape, projector: str, engine: str, *, flash_attn: bool = True) -> MmprojCompute:
    """The projector's compute buffer for the engine's warmup image (an estimate; see the module docstring)."""
    import math

    from planner.tables import read_toml

    rules = read_toml("mmproj.toml")
    rule = rules["mainline" if engine == "mainline" else "ik"].get(projector, {"warmup": "image_size"})
    merge = vision.merge or int(rule.get("merge", 1))
    how = rule["warmup"] if rule["warmup"] != "max_pixels" or vision.max_pixels else rule["fallback"]
    if how == "image_size":
        side = vision.image_size
    elif how == "max_pixels":
        side = math.isqrt(vision.max_pixels)
    else:
        side = math.isqrt(int(how.removeprefix("tokens:"))) * vision.patch_size * merge
    n_pos = (side // vision.patch_size) ** 2
    d, ff = vision.n_embd, vision.n_ff
    ffn = (d + 3 * ff) if vision.gated_ffn else (2 * d + ff)
    live = max(5 * d, ffn) * n_pos * 4
    if not flash_attn:
        heads = vision.n_head
        if engine != "mainline" and n_pos * n_pos * heads >= 256 << 20:
            heads = 1                                   # ik: one head at a time (clip.cpp 2758)
        live += heads * n_pos * n_pos * 4
    return MmprojCompute(warmup=side, n_pos=n_pos, device_bytes=live, input_bytes=side * side * 3 * 4)


def read_mmproj(path: str | Path) -> Mmproj:
    """The projector file's weight bytes from its header alone.

    Raises:
        UnknownModelError: the file is a GGUF but not a clip/mmproj file.
        GGUFFormatError / RemoteReadError: from the header reader.
    """
    from planner.gguf_files import read_gguf

    header = read_gguf(path, check_size=False)
    if header.arch != "clip":
        raise UnknownModelError(f"{path}: general.architecture is {header.arch!r}, not 'clip'",
                                hint="--mmproj takes the projector file (mmproj-*.gguf), not the model")
    cat = catalogue()
    total = sum(cat.get(t.type_name).tensor_bytes(tuple(t.shape)) for t in header.tensors)
    projector = header.get("clip.vision.projector_type") or header.get("clip.projector_type")
    return Mmproj(source=str(path), projector=projector if isinstance(projector, str) else "",
                  weight_bytes=total, n_tensors=len(header.tensors), vision=_vision(header))


def _vision(header: Any) -> VisionShape | None:
    def num(key: str) -> int:
        v = header.get(f"clip.vision.{key}")
        return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    shape = VisionShape(image_size=num("image_size"), patch_size=num("patch_size"), n_embd=num("embedding_length"),
                        n_ff=num("feed_forward_length"), n_head=num("attention.head_count"),
                        merge=num("projector.scale_factor") or num("spatial_merge_size"),
                        max_pixels=num("image_max_pixels"),
                        gated_ffn=any(t.name == "v.blk.0.ffn_gate.weight" for t in header.tensors))
    needed = (shape.image_size, shape.patch_size, shape.n_embd, shape.n_ff, shape.n_head)
    return shape if all(needed) else None


def with_mmproj(run: RunConfig, path: str | None, *, offload: bool = True) -> RunConfig:
    """``run`` with the projector of ``path`` (its bytes read from the header); unchanged when ``path`` is None."""
    if not path:
        return run
    m = read_mmproj(path)
    device = host = 0
    if m.vision is not None:
        c = compute_estimate(m.vision, m.projector, run.engine, flash_attn=run.flash_attn)
        device, host = c.device_bytes, c.input_bytes
    return replace(run, mmproj=str(path), mmproj_bytes=m.weight_bytes, mmproj_offload=offload,
                   mmproj_compute_bytes=device, mmproj_input_bytes=host)


def mmproj_device(run: RunConfig, devices: Iterable[str]) -> str | None:
    """The device whose memory holds the projector: the first GPU, or the CPU with --no-mmproj-offload or no GPU;
    None when no projector is loaded."""
    from planner.devices import CPU, is_gpu, is_remote

    if not run.mmproj_bytes:
        return None
    gpus = sorted((d for d in devices if is_gpu(d) and not is_remote(d)), key=_gpu_index)
    return gpus[0] if run.mmproj_offload and gpus else CPU


def _gpu_index(dev: str) -> int:
    digits = "".join(ch for ch in dev if ch.isdigit())
    return int(digits) if digits else 0
