"""Tensor maps from a Hugging Face ``config.json``: its fields mapped to :class:`ModelParams` (``_HF_FIELDS``, per
architecture ``hf_fields``/``defaults``/``derived`` in architectures.toml, as ``convert_hf_to_gguf.py`` writes the
GGUF keys), then the architecture template."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.errors import UnknownModelError
from planner.tensors.model import ModelParams, TensorMap
from planner.tensors.templates import _architectures, build, derived_fields

# HF config.json field -> ModelParams field (first present wins)
_HF_FIELDS: dict[str, tuple[str, ...]] = {
    "n_layer": ("num_hidden_layers",),
    "n_embd": ("hidden_size",),
    "n_vocab": ("vocab_size",),
    "n_head": ("num_attention_heads",),
    "n_head_kv": ("num_key_value_heads", "num_attention_heads"),
    "head_dim": ("head_dim",),
    "n_expert": ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts"),
    "n_expert_used": ("num_experts_per_tok", "experts_per_token", "moe_k"),
    "n_ff": ("intermediate_size",),
    "n_ff_exp": ("moe_intermediate_size",),
    "n_ctx_train": ("max_position_embeddings",),
    "tied": ("tie_word_embeddings",),
    "n_dense_lead": ("first_k_dense_replace", "moe_layer_start_index"),
    "n_shared_exp": ("n_shared_experts", "moe_num_shared_experts"),
    "q_lora_rank": ("q_lora_rank",),
    "kv_lora_rank": ("kv_lora_rank",),
    "qk_nope_head_dim": ("qk_nope_head_dim",),
    "n_rot": ("qk_rope_head_dim",),
    "head_dim_v": ("v_head_dim",),
    "qk_norm": ("use_qk_norm",),
    "full_attn_interval": ("full_attention_interval",),
    "ssm_d_conv": ("linear_conv_kernel_dim",),
    "ssm_d_state": ("linear_key_head_dim",),
    "ssm_n_group": ("linear_num_key_heads",),
    "ssm_dt_rank": ("linear_num_value_heads",),
    "indexer_n_head": ("index_n_heads",),
    "indexer_head_size": ("index_head_dim",),
    "indexer_top_k": ("index_topk",),
    "n_ff_shexp": ("shared_expert_intermediate_size",),
    "moe_every": ("interleave_moe_layer_step",),
    "compress_ratios": ("compress_ratios",),
    "o_groups": ("o_groups",),
    "o_lora_rank": ("o_lora_rank",),
    "hc_mult": ("hc_mult",),
    "n_hash_layers": ("num_hash_layers",),
}


def _flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Multimodal configs (Gemma 3, Llama 4, Qwen3.5) nest the language model in ``text_config``: it wins."""
    flat = dict(config)
    text = config.get("text_config")
    if isinstance(text, Mapping):
        flat.update({k: v for k, v in text.items() if v is not None})
    return flat


def config_arch(config: Mapping[str, Any]) -> str:
    """The GGUF architecture a config.json converts to (by ``model_type``, text_config first).

    Raises:
        UnknownModelError: no template maps this model_type (the message lists the supported ones).
    """
    flat = _flatten_config(config)
    classes = config.get("architectures") or ()
    for cls in classes if isinstance(classes, list) else ():
        # a transformers class a model_type shared by two architectures cannot tell apart ("bailing_hybrid")
        arch = next((a for a, t in _architectures().items() if cls in t.get("hf_architectures", ())), None)
        if arch is not None:
            return arch
    for model_type in (flat.get("model_type", ""), config.get("model_type", "")):
        arch = next((a for a, t in _architectures().items() if model_type in t.get("hf_model_types", ())), None)
        if arch is not None:
            return arch
    raise UnknownModelError(f"config.json model_type {config.get('model_type', '')!r} has no architecture template",
                            hint="supported: " + ", ".join(
                                sorted(m for t in _architectures().values() for m in t.get("hf_model_types", ()))))


def from_config(config: Mapping[str, Any], source: str = "config.json", *, name: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> TensorMap:
    """A TensorMap from a Hugging Face ``config.json`` dict.

    Field names: :data:`_HF_FIELDS`, overridden per architecture by ``hf_fields`` in ``architectures.toml``;
    fixed per-architecture numbers (SWA period, full-attention interval) come from its ``defaults``.
    ``overrides``: ModelParams fields a config.json cannot say (a built-in's ``params`` in models.toml, e.g.
    which tensors the checkpoint leaves out), applied last.
    """
    params = params_from_config(config, source, overrides=overrides)
    if name is None:
        name = model_display_name(config)
    return build(params, name, source)


def params_from_config(config: Mapping[str, Any], source: str = "config.json", *,
                       overrides: Mapping[str, Any] | None = None) -> ModelParams:
    """The architecture numbers of a Hugging Face ``config.json`` dict (:func:`from_config` without the tensors;
    ``overrides`` as there)."""
    arch = config_arch(config)
    tpl = _architectures()[arch]
    flat = _flatten_config(config)
    values: dict[str, Any] = {"arch": arch}
    fields_map = dict(_HF_FIELDS)
    fields_map.update({k: tuple(v) for k, v in tpl.get("hf_fields", {}).items()})
    for target, keys in fields_map.items():
        for k in keys:
            v = _lookup(flat, k)
            if v is not None:
                values[target] = v
                break
    missing = [f for f in ("n_layer", "n_embd", "n_vocab", "n_head") if f not in values]
    if missing:
        raise UnknownModelError(f"{source}: config.json lacks {', '.join(missing)}")
    for key, value in tpl.get("defaults", {}).items():
        values.setdefault(key, value)
    for key in tpl.get("ignore", ()):
        values.pop(key, None)
    for key in [k for k, v in values.items() if k != "arch" and isinstance(v, str)]:
        values.pop(key)                         # "auto" (Jamba's mamba_dt_rank): derived below, as the converter does
    if values.get("kv_lora_rank"):
        # MLA: Q/K heads are qk_nope + qk_rope wide, as convert_hf_to_gguf writes attention.key_length
        # (transformers' DeepseekV3Config may serialize head_dim = qk_rope_head_dim, which is not that)
        values["head_dim"] = values.get("qk_nope_head_dim", 0) + values.get("n_rot", 0)
    elif "head_dim" not in values:
        values["head_dim"] = values["n_embd"] // values["n_head"]
    if "n_rot" not in values and flat.get("partial_rotary_factor"):
        values["n_rot"] = int(values["head_dim"] * flat["partial_rotary_factor"])   # GLM-4.5: 0.5
    if values.get("head_dim_v") == values["head_dim"]:
        values["head_dim_v"] = 0
    if "ssm_d_inner" in tpl.get("derived", ()):
        # gated delta-net: value width = linear_value_head_dim * linear_num_value_heads (GGUF ssm.inner_size)
        values["ssm_d_inner"] = int(flat["linear_value_head_dim"]) * int(flat["linear_num_value_heads"])
    values.update(derived_fields(tpl, values))                  # Mixtral: n_ff_exp=n_ff (experts as wide)
    if not values.get("n_swa"):
        values.pop("swa_period", None)
    layers = _hf_recurrent_layers(tpl.get("hf_layers", {}), flat, int(values["n_layer"]))
    if layers:
        values["recurrent_layers"] = layers
    if "hf_moe" in tpl:
        values["moe_every"] = _hf_moe_period(tpl["hf_moe"], flat)
    if tpl.get("keeps_nextn"):
        # the converter appends the NextN/MTP block(s) after the decoder blocks (block_count = L + nextn)
        values["n_nextn"] = int(flat.get("num_nextn_predict_layers") or 0)
        values["n_layer"] += values["n_nextn"]
    if not values.get("n_expert"):
        values.pop("n_expert", None), values.pop("n_expert_used", None)
    if arch == "qwen3":
        values.pop("n_expert", None), values.pop("n_expert_used", None)
    values["tied"] = bool(values.get("tied", tpl.get("tied_default", False)))
    values["qk_norm"] = bool(values.get("qk_norm", False))
    for key in ("n_swa", "n_expert", "n_expert_used", "n_dense_lead", "n_shared_exp", "full_attn_interval"):
        if key in values:
            values[key] = int(values[key])
    if isinstance(values.get("compress_ratios"), list):
        values["compress_ratios"] = tuple(int(r) for r in values["compress_ratios"])
    values.update(overrides or {})
    try:
        return ModelParams(**values)
    except TypeError as exc:
        raise UnknownModelError(f"{source}: config.json field has the wrong type: {exc}") from exc


def _lookup(flat: Mapping[str, Any], key: str) -> Any:
    """``flat[key]``, where a dotted key names a field of a nested object (``linear_attn_config.head_dim``);
    None when absent."""
    value: Any = flat
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _hf_recurrent_layers(rule: Mapping[str, Any], flat: Mapping[str, Any], n_layer: int) -> tuple[bool, ...]:
    """Per-layer recurrent flags of a per-layer hybrid's decoder blocks from config.json (``hf_layers`` in
    architectures.toml), as its converter writes head_count_kv; () without a rule.

    ``group``: attention where (il + 1) % config[key] == 0 or il >= n_layer // g * g, recurrent elsewhere
    (llama.cpp conversion/bailingmoe3.py BailingMoeV3Model.is_full_attention @0c1e57098); ``period``: attention
    where il >= config[offset] and (il - offset) % config[period] == 0 (conversion/jamba.py n_kv_vec); ``list1``:
    attention on the 1-based layer numbers config[key] lists (conversion/kimi_linear.py: il + 1 in
    linear_attn_config.full_attn_layers).

    Raises:
        UnknownModelError: the config lacks the key the rule reads.
    """
    if not rule:
        return ()
    if rule["rule"] == "types":
        types = _lookup(flat, rule["key"])
        if not isinstance(types, list) or len(types) < n_layer:
            raise UnknownModelError(f"config.json lacks {rule['key']} (which layers are attention layers)")
        return tuple(types[il] != rule["attention"] for il in range(n_layer))
    if rule["rule"] == "list1":
        listed = _lookup(flat, rule["key"])
        if not isinstance(listed, list) or not all(isinstance(x, int) for x in listed):
            raise UnknownModelError(f"config.json lacks {rule['key']} (which layers are attention layers)")
        return tuple(il + 1 not in listed for il in range(n_layer))
    if rule["rule"] == "period":
        period, offset = flat.get(rule["period"]), flat.get(rule["offset"])
        if not isinstance(period, int) or period <= 0 or not isinstance(offset, int):
            raise UnknownModelError(f"config.json lacks {rule['period']}/{rule['offset']} (which layers are "
                                    "attention layers)")
        return tuple(not (il >= offset and (il - offset) % period == 0) for il in range(n_layer))
    g = flat.get(rule["key"])
    if rule["rule"] != "group" or not isinstance(g, int) or g <= 0:
        raise UnknownModelError(f"config.json lacks {rule['key']} (which layers are attention layers)")
    return tuple(not ((il + 1) % g == 0 or il >= n_layer // g * g) for il in range(n_layer))


def _hf_moe_period(rule: Mapping[str, str], flat: Mapping[str, Any]) -> int:
    """``moe_every`` from a period/offset pair (``hf_moe``: Jamba's expert_layer_period/offset; experts where
    (il - offset) % period == 0, conversion/jamba.py modify_tensors), which the planner's (il + 1) % moe_every == 0
    expresses when offset = period - 1.

    Raises:
        UnknownModelError: another offset (or no period)."""
    period, offset = flat.get(rule["period"]), flat.get(rule["offset"], 0)
    if not isinstance(period, int) or period <= 0 or offset != period - 1:
        raise UnknownModelError(f"config.json {rule['period']} = {period}, {rule['offset']} = {offset}: only "
                                "experts on every period-th layer ending each period are modelled")
    return period


def model_display_name(config: Mapping[str, Any], folder: str | None = None) -> str:
    """The name users know the model by (``GLM-4.6``), not its transformers class (``Glm4MoeForCausalLM``).

    ``_name_or_path``'s last component when the config carries one, else the folder (or Hub repo) the
    config.json came from, else the architecture class as a last resort.
    """
    named = config.get("_name_or_path")
    if isinstance(named, str) and named.strip("/ "):
        return named.rstrip("/").rsplit("/", 1)[-1]
    if folder and folder.strip("/ .") and folder not in ("snapshots", "main"):
        return folder.rstrip("/").rsplit("/", 1)[-1]
    return str((config.get("architectures") or [config.get("model_type") or "model"])[0])


def from_config_file(path: Path) -> TensorMap:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnknownModelError(f"cannot read {path} as config.json: {exc}") from exc
    if not isinstance(config, dict):
        raise UnknownModelError(f"{path} is not a config.json object")
    parent = path.resolve().parent
    folder = parent.name
    if parent.parent.name == "snapshots" and parent.parent.parent.name.startswith("models--"):
        folder = parent.parent.parent.name.split("--")[-1]        # Hugging Face cache: models--org--name
    return from_config(config, source=str(path), name=model_display_name(config, folder))
