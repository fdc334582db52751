"""A vision/audio projector (``--mmproj FILE``): the extra weights the server loads next to the model.

llama.cpp's and ik_llama.cpp's mtmd/clip loader reads every tensor of the mmproj GGUF (``general.architecture =
clip``) into one backend buffer (``clip_model_loader::load_tensors``: ``ggml_backend_alloc_ctx_tensors_from_buft``
with the default buffer type of the CLIP backend; ik examples/mtmd/clip.cpp:3876-3877 @8337e4cd).  The CLIP
backend is the first GPU backend unless ``--no-mmproj-offload`` (``mmproj_use_gpu = false``, ik
common/common.cpp:1763-1764) or no GPU is present, then the CPU: ik clip.cpp:488-510 takes
``ggml_backend_reg_init_backend(1)`` (the first non-CPU registry, device 0) unless MTMD_BACKEND_DEVICE names
another; mainline tools/mtmd/clip.cpp ``ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_GPU)``, the first GPU
device.  Exact: the sum of the tensors' ``ggml_nbytes``.  Not modelled: the projector's own compute buffer, which
depends on the image size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import UnknownModelError
from planner.quants import catalogue

if TYPE_CHECKING:
    from planner.runconfig import RunConfig


@dataclass(frozen=True, slots=True)
class Mmproj:
    source: str
    projector: str            # clip.projector_type (e.g. "gemma3", "qwen3vl_merger"), "" when absent
    weight_bytes: int         # Σ ggml_nbytes of its tensors
    n_tensors: int


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
    projector = header.get("clip.projector_type")
    return Mmproj(source=str(path), projector=projector if isinstance(projector, str) else "",
                  weight_bytes=total, n_tensors=len(header.tensors))


def with_mmproj(run: RunConfig, path: str | None, *, offload: bool = True) -> RunConfig:
    """``run`` with the projector of ``path`` (its bytes read from the header); unchanged when ``path`` is None."""
    if not path:
        return run
    return replace(run, mmproj=str(path), mmproj_bytes=read_mmproj(path).weight_bytes, mmproj_offload=offload)


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
