"""Architecture templates: ``data/architectures.toml`` (tensor names, ``ne`` shapes as sums of products of
parameter names, source dtypes, conditions) expanded with a model's numbers into a :class:`TensorMap` in GGUF file
order (:func:`build`)."""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from planner.errors import UnknownModelError
from planner.tables import DATA
from planner.tensors.model import ModelParams, TensorInfo, TensorMap

@functools.cache
def _architectures() -> dict[str, Any]:
    return tomllib.loads((DATA / "architectures.toml").read_text())


def _dim(expr: str, env: Mapping[str, int]) -> int:
    """A sum of products of parameter names and integers, e.g. ``kv_lora_rank + n_rot``; ``/`` divides exactly
    (left to right within a term: ``n_head*head_dim/o_groups``); ``-`` subtracts a term (``n_embd*l_cache -
    n_embd``)."""
    total = 0
    parts = re.split(r"([+-])", expr)
    for sign, term in zip(["+", *parts[1::2]], parts[0::2]):
        value, op = (1 if sign == "+" else -1), "*"
        for i, part in enumerate(re.split(r"([*/])", term)):
            if i % 2:
                op = part
                continue
            part = part.strip()
            factor = int(part) if part.isdigit() else env[part]
            if op == "/":
                if factor == 0 or value % factor:
                    raise ValueError(f"{expr!r}: {value} is not divisible by {part} = {factor}")
                value //= factor
            else:
                value *= factor
        total += value
    return total


def _shape(spec: str, env: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(_dim(part, env) for part in spec.split(","))


def _cond(cond: str, params: ModelParams, layer: int | None) -> bool:
    """A template condition; several joined by ``&`` must all hold."""
    if "&" in cond:
        return all(_cond(c.strip(), params, layer) for c in cond.split("&"))
    if not cond:
        return True
    if cond == "untied":
        return not params.tied
    if cond == "dense":
        return layer is not None and not params.is_moe_layer(layer)
    if cond == "moe":
        return layer is not None and params.is_moe_layer(layer)
    if cond == "full_attn":
        return layer is not None and not params.is_recurrent(layer)
    if cond == "recurrent":
        return layer is not None and params.is_recurrent(layer)
    if cond == "swa":
        return layer is not None and params.is_swa(layer)
    if cond == "hash":            # DeepSeek-V4: the leading layers routed by a token-id table
        return layer is not None and layer < params.n_hash_layers
    if cond == "scored":          # ... and the others, routed by scores with a selection bias
        return layer is not None and layer >= params.n_hash_layers
    if cond.startswith("ratio:"):  # DeepSeek-V4: this layer's KV compression ratio
        ratios = params.compress_ratios
        return layer is not None and layer < len(ratios) and ratios[layer] == int(cond[6:])
    if cond == "nextn":
        return layer is not None and params.n_nextn > 0 and layer >= params.n_layer - params.n_nextn
    kind, _, name = cond.partition(":")
    if kind in ("has", "no") and name in ModelParams.__dataclass_fields__:
        return bool(getattr(params, name)) == (kind == "has")
    raise ValueError(f"unknown template condition {cond!r}")


def derived_fields(tpl: dict[str, Any], known: dict[str, Any]) -> dict[str, int]:
    """An architecture's ``derived`` entries of the form ``field=expression`` (architectures.toml) for the fields
    ``known`` lacks (or holds as 0), evaluated over ``known``'s numbers in order (a later entry may use an earlier
    one); entries whose expression names an unknown number are skipped."""
    env = {k: v for k, v in known.items() if isinstance(v, int) and not isinstance(v, bool)}
    out: dict[str, int] = {}
    for entry in tpl.get("derived", ()):
        target, eq, expr = entry.partition("=")
        if not eq or env.get(target.strip()):
            continue
        try:
            env[target.strip()] = out[target.strip()] = _dim(expr, env)
        except (KeyError, ValueError):      # a number it needs is unknown, or a division is not exact
            continue
    return out


def build(params: ModelParams, name: str, source: str) -> TensorMap:
    """Expand an architecture template into a TensorMap, in GGUF file order."""
    try:
        tpl = _architectures()[params.arch]
        tpl["block"]
    except KeyError:
        raise UnknownModelError(
            f"no built-in template for architecture {params.arch!r}",
            hint=f"known: {', '.join(sorted(a for a, t in _architectures().items() if 'block' in t))}; "
                 "or read the GGUF header instead") from None
    env = {f.name: getattr(params, f.name) for f in fields(params) if isinstance(getattr(params, f.name), int)}
    env["head_dim_v"] = params.head_dim_v or params.head_dim
    env["ssm_head_v_dim"] = params.ssm_d_inner // params.ssm_dt_rank if params.ssm_dt_rank else 0
    out: list[TensorInfo] = []
    for tname, spec, dtype, cond in tpl["head"]:
        if _cond(cond, params, None):
            out.append(TensorInfo(tname, _shape(spec, env), dtype))
    for il in range(params.n_layer):
        for tname, spec, dtype, cond in tpl["block"]:
            if _cond(cond, params, il):
                out.append(TensorInfo(f"blk.{il}.{tname}", _shape(spec, env), dtype))
    for tname, spec, dtype, cond in tpl["tail"]:
        if _cond(cond, params, None):
            out.append(TensorInfo(tname, _shape(spec, env), dtype))
    return TensorMap(name=name, params=params, tensors=tuple(out), source=source, converter_types=True)
