"""Tensor maps: one model of a checkpoint's tensors, from a GGUF header, a config.json or a built-in.

Architectures are data (``data/architectures.toml``: tensor names, ``ne`` shapes as products of
parameter names, source dtypes); built-in models are their config numbers (``data/models.toml``).

Modules: :mod:`~planner.tensors.model` (the dataclasses), :mod:`~planner.tensors.templates` (architecture templates),
:mod:`~planner.tensors.config` (config.json), :mod:`~planner.tensors.known_models` (built-ins) and
:mod:`~planner.tensors.header` (GGUF headers).
"""

from __future__ import annotations

from planner.tensors.config import _HF_FIELDS, _flatten_config, config_arch, from_config, from_config_file, \
    model_display_name
from planner.tensors.header import from_gguf
from planner.tensors.known_models import _models, builtin, builtin_info, builtin_names, builtin_params
from planner.tensors.model import ModelParams, TensorInfo, TensorMap, with_tensors
from planner.tensors.templates import _architectures, build

__all__ = ["_HF_FIELDS", "ModelParams", "TensorInfo", "TensorMap", "_architectures", "_flatten_config", "_models",
           "build", "builtin", "builtin_info", "builtin_names", "builtin_params", "config_arch", "from_config", "from_config_file",
           "from_gguf", "model_display_name", "with_tensors"]
