"""A vision/audio projector (``--mmproj FILE``): the extra weights the server loads next to the model.

llama.cpp's and ik_llama.cpp's mtmd/clip loader reads every tensor of the mmproj GGUF (``general.architecture =
clip``) into one backend buffer, on the first GPU unless ``--no-mmproj-offload`` (tools/mtmd/clip.cpp
``clip_model_loader::load_tensors``: ``ggml_backend_alloc_ctx_tensors_from_buft``).  Exact: the sum of the
tensors' ``ggml_nbytes``.  Not modelled: the projector's own compute buffer, which depends on the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.errors import UnknownModelError
from planner.quants import catalogue


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
    from planner.gguf_header import read_gguf

    header = read_gguf(path, check_size=False)
    if header.arch != "clip":
        raise UnknownModelError(f"{path}: general.architecture is {header.arch!r}, not 'clip'",
                                hint="--mmproj takes the projector file (mmproj-*.gguf), not the model")
    cat = catalogue()
    total = sum(cat.get(t.type_name).tensor_bytes(tuple(t.shape)) for t in header.tensors)
    projector = header.get("clip.projector_type")
    return Mmproj(source=str(path), projector=projector if isinstance(projector, str) else "",
                  weight_bytes=total, n_tensors=len(header.tensors))
