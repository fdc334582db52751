"""Device names as the engines print them: ``CUDA0``, ``CUDA1``, ... and ``CPU`` (ggml backend names)."""

from __future__ import annotations

CPU = "CPU"


def gpu_name(index: int) -> str:
    """The ggml CUDA backend's device name for GPU ``index``."""
    return f"CUDA{index}"
