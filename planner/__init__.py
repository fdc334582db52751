"""gguf-planner: exact GGUF size arithmetic and a quant-type x device optimizer.

The library API mirrors the pipeline: a model becomes a :class:`TensorMap`, a recipe its
:class:`Footprint`, a machine its :class:`Hardware`, and the planner a verified :class:`Plan`;
:mod:`planner.api` holds the few functions the commands call, over typed requests.

    >>> from planner import PlanRequest, RunConfig, api, resolve_hardware
    >>> hw = resolve_hardware(vram=[24.0], ram=96.0)
    >>> doc = api.plan(None, hw, PlanRequest(run=RunConfig(threads=hw.threads_default)))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from planner.errors import PlannerError

# Loaded on first use (PEP 562), so `gguf-planner --help` does not import the whole pipeline.
_LAZY = {
    "Hardware": "planner.hardware", "probe": "planner.hardware", "resolve_hardware": "planner.hardware",
    "RunConfig": "planner.runconfig", "Plan": "planner.planning", "PlanDocument": "planner.documents",
    "PlanRequest": "planner.request", "EmitOptions": "planner.request", "joint_plan": "planner.planning",
    "Footprint": "planner.quantize", "QuantizeSpec": "planner.quantize", "quantize": "planner.quantize",
    "catalogue": "planner.quants", "load_model": "planner.source", "TensorMap": "planner.tensors",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "api":
        return importlib.import_module("planner.api")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")


__all__ = [
    "EmitOptions", "Footprint", "Hardware", "Plan", "PlanDocument", "PlanRequest", "PlannerError", "QuantizeSpec",
    "RunConfig", "TensorMap", "__version__", "api", "catalogue", "joint_plan", "load_model", "probe", "quantize",
    "resolve_hardware",
]
__version__ = "0.1.0"
