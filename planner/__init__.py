"""gguf-planner: exact GGUF size arithmetic and a quant-type x device optimizer.

The library API mirrors the pipeline: a model becomes a :class:`TensorMap`, a recipe its
:class:`Footprint`, a machine its :class:`Hardware`, and the planner a verified :class:`Plan`.

    >>> from planner import load_model, resolve_hardware, plan_command_impl, RunConfig
    >>> hw = resolve_hardware(vram=[24.0], ram=96.0)
    >>> doc = plan_command_impl(None, hw, RunConfig(threads=hw.threads_default))   # doctest: +SKIP
"""

from planner.errors import PlannerError

# Loaded on first use (PEP 562), so `gguf-planner --help` does not import the whole pipeline.
_LAZY = {
    "Hardware": "planner.hardware", "probe": "planner.hardware", "resolve_hardware": "planner.hardware",
    "RunConfig": "planner.memory", "Plan": "planner.plan", "PlanDocument": "planner.plan",
    "PlanRequest": "planner.plan", "joint_plan": "planner.plan", "place": "planner.plan",
    "plan_command_impl": "planner.plan", "Footprint": "planner.quantize", "QuantizeSpec": "planner.quantize",
    "quantize": "planner.quantize", "catalogue": "planner.quants", "load_model": "planner.source",
    "TensorMap": "planner.tensors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")


__all__ = [
    "Footprint", "Hardware", "Plan", "PlanDocument", "PlanRequest", "PlannerError", "QuantizeSpec", "RunConfig",
    "TensorMap", "__version__", "catalogue", "joint_plan", "load_model", "place", "plan_command_impl", "probe",
    "quantize", "resolve_hardware",
]
__version__ = "0.1.0"
