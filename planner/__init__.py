"""gguf-planner: exact GGUF size arithmetic and a quant-type x device optimizer.

The library API mirrors the pipeline: a model becomes a :class:`TensorMap`, a recipe its
:class:`Footprint`, a machine its :class:`Hardware`, and the planner a verified :class:`Plan`;
:mod:`planner.api` holds the few functions the commands call, over typed requests.

    >>> from planner import PlanRequest, RunConfig, api, resolve_hardware
    >>> hw = resolve_hardware(vram=[24.0], ram=96.0)
    >>> doc = api.plan(None, hw, PlanRequest(run=RunConfig(threads=hw.threads_default)))   # doctest: +SKIP
"""

from __future__ import annotations

import os as _os
import sys as _sys
from typing import Any

from planner.errors import PlannerError

# One BLAS thread, set before numpy loads its BLAS: the Gomory cuts invert an LP basis (planner.solver_cuts), and
# OpenBLAS splits that inverse over as many threads as the machine has cores, which changes its last bits, so the
# cuts, CP-SAT's search from them and in the end the plan would depend on the core count (measured: Kimi-K2 on
# 2x RTX 3090's speed step 1.672 work with 2 threads, 1.873 with one).  The planner's matrices are small (at most
# 200 rows), and the threads a multi-threaded BLAS leaves spinning after each call cost more CPU than they save
# (the headline plan 1.03-1.37 -> 0.93 CPU s, best of 3-5, December 2026).  A program that imported numpy before
# the planner keeps its own setting.
if "numpy" not in _sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        _os.environ[_var] = "1"

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
