"""Test helper: call the library API the way the `plan` command does, with PlanRequest fields as keywords."""

from __future__ import annotations

from typing import Any

from planner import api
from planner.documents import ParetoSet, PlanDocument
from planner.hardware import Hardware
from planner.request import EmitOptions, PlanRequest
from planner.runconfig import RunConfig


def plan_doc(model: str | None, hw: Hardware, run: RunConfig, *, model_path: str | None = None,
             **request: Any) -> Any:
    """``api.plan(model, hw, PlanRequest(run=run, **request))``: a PlanDocument, or a ParetoSet with pareto=N."""
    doc: PlanDocument | ParetoSet = api.plan(model, hw, PlanRequest(run=run, **request),
                                             EmitOptions(model_path=model_path))
    return doc
