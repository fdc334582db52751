"""The built-in models: ``data/models.toml`` (config numbers or a config.json body per model, with the published
parameter counts they are checked against), each expanded once into a :class:`TensorMap`."""

from __future__ import annotations

import functools
import tomllib
from typing import Any

from planner.errors import UnknownModelError
from planner.tables import DATA
from planner.tensors.config import from_config, params_from_config
from planner.tensors.model import ModelParams, TensorMap
from planner.tensors.templates import build

@functools.cache
def _models() -> dict[str, Any]:
    return tomllib.loads((DATA / "models.toml").read_text())


def builtin_names() -> list[str]:
    return sorted(_models())


def _spec(name: str) -> tuple[str, str, dict[str, Any]]:
    """(key, display name, config numbers or ``config``) of a built-in model."""
    models = _models()
    key = name.lower()
    if key not in models:
        raise UnknownModelError(f"unknown built-in model {name!r}",
                                hint=f"built-in models: {', '.join(builtin_names())}")
    spec = dict(models[key])
    display = spec.pop("display", key)
    for meta in ("source", "published", "notes"):
        spec.pop(meta, None)
    return key, display, spec


@functools.cache
def builtin(name: str) -> TensorMap:
    """A built-in model by name (case-insensitive), e.g. ``qwen3-235b-a22b``."""
    key, display, spec = _spec(name)
    if "config" in spec:
        return from_config(spec["config"], source=f"builtin:{key}", name=display, overrides=spec.get("params"))
    return build(ModelParams(**spec), display, f"builtin:{key}")


@functools.cache
def builtin_params(name: str) -> ModelParams:
    """A built-in model's architecture numbers, without expanding its tensors (what :func:`builtin` would give as
    ``.params``)."""
    key, _, spec = _spec(name)
    if "config" in spec:
        return params_from_config(spec["config"], source=f"builtin:{key}", overrides=spec.get("params"))
    return ModelParams(**spec)


def builtin_info(name: str) -> dict[str, Any]:
    """A built-in's metadata: display name, config source, published parameter counts, notes."""
    models = _models()
    key = name.lower()
    if key not in models:
        raise UnknownModelError(f"unknown built-in model {name!r}",
                                hint=f"built-in models: {', '.join(builtin_names())}")
    spec = models[key]
    return {k: spec[k] for k in ("display", "source", "published", "notes") if k in spec}
