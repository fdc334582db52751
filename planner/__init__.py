"""gguf-planner: exact GGUF size arithmetic and a quant-type x device optimizer."""

from planner.errors import PlannerError

__all__ = ["PlannerError", "__version__"]
__version__ = "0.1.0"
