"""Device names as the engines print them: ``CUDA0``, ``CUDA1``, ... and ``CPU`` (ggml backend names)."""

from __future__ import annotations

CPU = "CPU"


def gpu_name(index: int) -> str:
    """The ggml CUDA backend's device name for GPU ``index``."""
    return f"CUDA{index}"


def is_gpu(name: str) -> bool:
    """``CUDA0`` and a remote host's ``box2/CUDA1`` are GPUs; ``CPU`` and ``box2/CPU`` are not."""
    return name.rsplit("/", 1)[-1].startswith("CUDA")


def is_remote(name: str) -> bool:
    """A device of an rpc-server host: ``<host>/<device>`` (planner.cluster names them so)."""
    return "/" in name
