"""Tensor maps: one model of a checkpoint's tensors, from a GGUF header, a config.json or a built-in.

Architectures are data (``data/architectures.toml``: tensor names, ``ne`` shapes as products of
parameter names, source dtypes); built-in models are their config numbers (``data/models.toml``).
"""

from __future__ import annotations

import functools
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from planner.errors import UnknownModelError
from planner.tables import DATA

_BLK = re.compile(r"^blk\.(\d+)\.(.+?)(?:\.(weight|bias|scale))?$")   # ssm_a has no suffix
_GLOBAL = re.compile(r"^(.+?)\.(weight|bias|scale)$")


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Architecture numbers the planner needs (GGUF ``{arch}.*`` keys / config.json fields)."""

    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff: int = 0
    n_ff_exp: int = 0
    n_ctx_train: int = 0
    tied: bool = False
    n_dense_lead: int = 0
    kv_lora_rank: int = 0       # MLA (deepseek2); 0 = not an MLA model
    n_rot: int = 0
    head_dim_v: int = 0         # 0 = same as head_dim
    q_lora_rank: int = 0        # MLA query compression (attn_q_a/attn_q_b); 0 = a plain attn_q
    qk_nope_head_dim: int = 0   # MLA: per-head Q/K width without RoPE (head_dim = qk_nope_head_dim + n_rot)
    n_shared_exp: int = 0       # shared experts per MoE layer: ffn_*_shexp are n_ff_exp * n_shared_exp wide
    n_nextn: int = 0            # trailing NextN/MTP blocks the file keeps (counted in n_layer)
    qk_norm: bool = False       # attn_q_norm/attn_k_norm where a template makes them optional (GLM-4.5)
    # --- attention / state layout (what sizes the KV cache; planner/kv_cache.py) ---
    n_swa: int = 0              # sliding-window (or chunked) attention window in tokens; 0 = none
    swa_period: int = 0         # layer il is SWA when il % swa_period < swa_period - 1 (llama.cpp set_swa_pattern)
    swa_layers: tuple[bool, ...] = ()   # explicit per-layer SWA flags (a header array); wins over swa_period
    head_dim_swa: int = 0       # key/value head width on SWA layers when it differs (key_length_swa); 0 = head_dim
    n_head_kv_layers: tuple[int, ...] = ()   # per-layer head_count_kv when the header stores an array
    full_attn_interval: int = 0  # hybrid models: layer il is full attention when (il + 1) % interval == 0, else
                                 # a recurrent (gated delta-net) layer; 0 = no recurrent layers
    ssm_d_conv: int = 0         # recurrent state sizes ({arch}.ssm.conv_kernel/inner_size/state_size/...)
    ssm_d_inner: int = 0
    ssm_d_state: int = 0
    ssm_dt_rank: int = 0
    ssm_n_group: int = 0
    indexer_n_head: int = 0     # DeepSeek sparse attention lightning indexer ({arch}.attention.indexer.*)
    indexer_head_size: int = 0
    compress_ratios: tuple[int, ...] = ()    # DeepSeek-V4 per-layer KV compression ratio (0, 4 or 128)
    o_groups: int = 0           # DeepSeek-V4 grouped output LoRA (attn_output_a/_b): groups and rank per group
    o_lora_rank: int = 0
    hc_mult: int = 0            # DeepSeek-V4 hyper-connection streams (hc_*_fn/base/scale)
    n_hash_layers: int = 0      # DeepSeek-V4 leading layers routed by a token-id table (ffn_gate_tid2eid)
    n_ff_shexp: int = 0         # shared-expert FFN width when it is not n_ff_exp * n_shared_exp (Qwen3-Next)
    moe_every: int = 0          # MoE only in layers where (il + 1) % moe_every == 0 (Llama-4 Maverick); 0 = all
    unknown_layout: str = ""    # what a GGUF carries that the KV/state model cannot size (named in its error)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    @property
    def n_loaded_layers(self) -> int:
        """Layers the engines load: trailing NextN/MTP blocks are skipped unless MTP is enabled (facts §5)."""
        return self.n_layer - self.n_nextn

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // max(1, self.n_head_kv)

    @property
    def n_embd_k_gqa(self) -> int:
        return self.head_dim * self.n_head_kv

    @property
    def n_embd_v_gqa(self) -> int:
        return (self.head_dim_v or self.head_dim) * self.n_head_kv

    def is_swa(self, il: int) -> bool:
        """Whether layer ``il`` uses sliding-window (or chunked) attention."""
        if self.n_swa <= 0:
            return False
        if self.swa_layers:
            return il < len(self.swa_layers) and self.swa_layers[il]
        return self.swa_period > 0 and il % self.swa_period < self.swa_period - 1

    def is_recurrent(self, il: int) -> bool:
        """Whether layer ``il`` is a recurrent (linear-attention) layer of a hybrid model; NextN blocks never are."""
        return (self.full_attn_interval > 0 and il < self.n_loaded_layers
                and (il + 1) % self.full_attn_interval != 0)

    def head_count_kv(self, il: int) -> int:
        if self.n_head_kv_layers and il < len(self.n_head_kv_layers):
            return self.n_head_kv_layers[il]
        return self.n_head_kv

    def layer_head_dim(self, il: int) -> int:
        return self.head_dim_swa if (self.head_dim_swa and self.is_swa(il)) else self.head_dim

    def is_moe_layer(self, il: int) -> bool:
        if not self.is_moe or il < self.n_dense_lead:
            return False
        return self.moe_every <= 1 or (il + 1) % self.moe_every == 0


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor: llama.cpp name, ggml ``ne`` shape, stored type name, and derived role/layer."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str = field(init=False)
    layer: int | None = field(init=False)
    n_elements: int = field(init=False)
    n_rows: int = field(init=False)

    def __post_init__(self) -> None:
        m = _BLK.match(self.name)
        if m:
            role, layer = m.group(2), int(m.group(1))
        else:
            g = _GLOBAL.match(self.name)
            role, layer = (g.group(1) if g else self.name), None
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "n_elements", math.prod(self.shape))
        object.__setattr__(self, "n_rows", math.prod(self.shape[1:]) if len(self.shape) > 1 else 1)

    @property
    def ne0(self) -> int:
        return self.shape[0]

    @property
    def n_dims(self) -> int:
        return len(self.shape)

    @property
    def is_expert(self) -> bool:
        return self.role.endswith("_exps") and len(self.shape) == 3

    @property
    def n_expert(self) -> int:
        return self.shape[2] if self.is_expert else 1


@dataclass(frozen=True, slots=True)
class TensorMap:
    """All tensors of a checkpoint plus the numbers that size its KV cache and compute."""

    name: str
    params: ModelParams
    tensors: tuple[TensorInfo, ...]
    source: str                       # "builtin:NAME", a path, or a URL
    file_bytes: int | None = None     # size of the source file(s) when known
    header: Any = field(default=None, compare=False, repr=False, metadata={"json": False})
    # built from an architecture template (built-in, config.json, hf://): the types are what the converter
    # writes, so a quantized tensor there (gpt-oss's or DeepSeek-V4's MXFP4 experts) is part of a source that
    # llama-quantize starts from, not the output of an earlier llama-quantize run
    converter_types: bool = False

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    def layers(self) -> range:
        return range(self.params.n_layer)

    @property
    def is_quantized(self) -> bool:
        """Whether this is an output of llama-quantize (a quantized GGUF: its types are fixed), not a source.

        A converter's output that already stores some tensors quantized (MXFP4 experts) is a source."""
        return not self.converter_types and bool(self.prequantized)

    @property
    def prequantized(self) -> frozenset[str]:
        """Names of the tensors stored in a quantized type."""
        from planner.quants import catalogue

        cat = catalogue()
        return frozenset(t.name for t in self.tensors if cat.get(t.dtype).is_quantized)

    def is_loaded(self, t: TensorInfo) -> bool:
        """False for tensors of NextN/MTP blocks, which ik and mainline skip at load time."""
        return t.layer is None or t.layer < self.params.n_loaded_layers


# ---------------------------------------------------------------------------- templates

@functools.cache
def _architectures() -> dict[str, Any]:
    return tomllib.loads((DATA / "architectures.toml").read_text())


@functools.cache
def _models() -> dict[str, Any]:
    return tomllib.loads((DATA / "models.toml").read_text())


def builtin_names() -> list[str]:
    return sorted(_models())


def _dim(expr: str, env: Mapping[str, int]) -> int:
    """A sum of products of parameter names and integers, e.g. ``kv_lora_rank + n_rot``; ``/`` divides exactly
    (left to right within a term: ``n_head*head_dim/o_groups``)."""
    total = 0
    for term in expr.split("+"):
        value, op = 1, "*"
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


@functools.cache
def builtin(name: str) -> TensorMap:
    """A built-in model by name (case-insensitive), e.g. ``qwen3-235b-a22b``."""
    models = _models()
    key = name.lower()
    if key not in models:
        raise UnknownModelError(f"unknown built-in model {name!r}",
                                hint=f"built-in models: {', '.join(builtin_names())}")
    spec = dict(models[key])
    display = spec.pop("display", key)
    for meta in ("source", "published", "notes"):
        spec.pop(meta, None)
    if "config" in spec:
        return from_config(spec["config"], source=f"builtin:{key}", name=display)
    params = ModelParams(**spec)
    return build(params, display, f"builtin:{key}")


def builtin_info(name: str) -> dict[str, Any]:
    """A built-in's metadata: display name, config source, published parameter counts, notes."""
    models = _models()
    key = name.lower()
    if key not in models:
        raise UnknownModelError(f"unknown built-in model {name!r}",
                                hint=f"built-in models: {', '.join(builtin_names())}")
    spec = models[key]
    return {k: spec[k] for k in ("display", "source", "published", "notes") if k in spec}


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
    for model_type in (flat.get("model_type", ""), config.get("model_type", "")):
        arch = next((a for a, t in _architectures().items() if model_type in t.get("hf_model_types", ())), None)
        if arch is not None:
            return arch
    raise UnknownModelError(f"config.json model_type {config.get('model_type', '')!r} has no architecture template",
                            hint="supported: " + ", ".join(
                                sorted(m for t in _architectures().values() for m in t.get("hf_model_types", ()))))


def from_config(config: Mapping[str, Any], source: str = "config.json", *, name: str | None = None) -> TensorMap:
    """A TensorMap from a Hugging Face ``config.json`` dict.

    Field names: :data:`_HF_FIELDS`, overridden per architecture by ``hf_fields`` in ``architectures.toml``;
    fixed per-architecture numbers (SWA period, full-attention interval) come from its ``defaults``.
    """
    arch = config_arch(config)
    tpl = _architectures()[arch]
    flat = _flatten_config(config)
    values: dict[str, Any] = {"arch": arch}
    fields_map = dict(_HF_FIELDS)
    fields_map.update({k: tuple(v) for k, v in tpl.get("hf_fields", {}).items()})
    for target, keys in fields_map.items():
        for k in keys:
            if k in flat and flat[k] is not None:
                values[target] = flat[k]
                break
    missing = [f for f in ("n_layer", "n_embd", "n_vocab", "n_head") if f not in values]
    if missing:
        raise UnknownModelError(f"{source}: config.json lacks {', '.join(missing)}")
    for key, value in tpl.get("defaults", {}).items():
        values.setdefault(key, value)
    for key in tpl.get("ignore", ()):
        values.pop(key, None)
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
    if "n_ff_exp=n_ff" in tpl.get("derived", ()) and "n_ff_exp" not in values and values.get("n_ff"):
        values["n_ff_exp"] = values["n_ff"]                      # Mixtral: experts are intermediate_size wide
    if not values.get("n_swa"):
        values.pop("swa_period", None)
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
    try:
        params = ModelParams(**values)
    except TypeError as exc:
        raise UnknownModelError(f"{source}: config.json field has the wrong type: {exc}") from exc
    if name is None:
        name = model_display_name(config)
    return build(params, name, source)


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


def with_tensors(tmap: TensorMap, tensors: tuple[TensorInfo, ...]) -> TensorMap:
    return replace(tmap, tensors=tensors)


# ---------------------------------------------------------------------------- from a GGUF header

def _optional_qk_norm(arch: str) -> bool:
    """Whether ``arch``'s template makes attn_q_norm conditional on ``qk_norm`` (else the flag stays False)."""
    tpl = _architectures().get(arch, {})
    return any("qk_norm" in cond for _, _, _, cond in tpl.get("block", ()))


def from_gguf(header: Any) -> TensorMap:
    """A TensorMap from a parsed :class:`planner.gguf_header.GGUFHeader` (every tensor as stored).

    Raises:
        GGUFFormatError: the header lacks ``general.architecture`` or a required ``{arch}.*`` number.
    """
    from planner.errors import GGUFFormatError
    from planner.validate import display_name, validate_header, validate_model

    arch = header.arch
    if not arch:
        raise GGUFFormatError("the header has no general.architecture", field="general.architecture",
                              source=header.source)
    validate_header(header)

    def num(key: str, default: int | None = None) -> int | None:
        value = header.get(f"{arch}.{key}")
        if isinstance(value, (tuple, list)):       # per-layer arrays (e.g. head_count_kv): the largest
            value = max(value) if value else None
        if value is None or isinstance(value, str):
            return default
        return int(value)

    def required(key: str) -> int:
        value = num(key)
        if value is None:
            raise GGUFFormatError(f"the header lacks {arch}.{key}", field=f"{arch}.{key}", source=header.source)
        return value

    names = {t.name: t for t in header.tensors}
    n_embd, n_head = required("embedding_length"), required("attention.head_count")
    n_vocab = num("vocab_size")
    if n_vocab is None:
        tokens = header.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, (str, type(None))) and hasattr(tokens, "__len__") and len(tokens):
            n_vocab = len(tokens)
        elif "token_embd.weight" in names and len(names["token_embd.weight"].shape) > 1:
            n_vocab = names["token_embd.weight"].shape[1]
        else:
            n_vocab = 0
    # MLA files from newer converters store the latent widths in key_length/value_length (576/512) and the
    # per-head ones in key_length_mla/value_length_mla (192/128); older ones only the per-head widths
    head_dim = (num("attention.key_length_mla") or num("attention.key_length")
                or (n_embd // n_head if n_head else 0))
    head_dim_v = num("attention.value_length_mla", 0) or num("attention.value_length", 0) or 0
    kv_lora_rank = num("attention.kv_lora_rank", 0) or 0
    n_rot = num("rope.dimension_count", 0) or 0
    tensors = tuple(TensorInfo(t.name, tuple(t.shape), t.type_name) for t in header.tensors)
    params = ModelParams(
        arch=arch,
        n_layer=required("block_count"),
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_head=n_head,
        n_head_kv=num("attention.head_count_kv") or n_head,
        head_dim=head_dim,
        n_expert=num("expert_count", 0) or 0,
        n_expert_used=num("expert_used_count", 0) or 0,
        n_ff=num("feed_forward_length", 0) or 0,
        n_ff_exp=num("expert_feed_forward_length", 0) or 0,
        n_ctx_train=num("context_length", 0) or 0,
        tied="output.weight" not in names,
        n_dense_lead=num("leading_dense_block_count", 0) or 0,
        kv_lora_rank=kv_lora_rank,
        n_rot=n_rot,
        head_dim_v=0 if head_dim_v == head_dim else head_dim_v,
        q_lora_rank=num("attention.q_lora_rank", 0) or 0,
        qk_nope_head_dim=max(0, head_dim - n_rot) if kv_lora_rank else 0,
        n_shared_exp=num("expert_shared_count", 0) or 0,
        n_nextn=num("nextn_predict_layers", 0) or 0,
        qk_norm=_optional_qk_norm(arch) and any(t.role == "attn_q_norm" for t in tensors),
        **_gguf_layout(header, arch, tensors),
    )
    name = header.get("general.name")
    if isinstance(name, str) and name.strip():
        # converters title-case the folder name with spaces ("Qwen3 235B A22B"): a file-name-safe spelling
        name = re.sub(r"[^\w.+-]+", "-", name.strip()).strip("-")
    else:
        name = re.sub(r"(-\d{5}-of-\d{5})?\.gguf$", "", header.source.rstrip("/").rsplit("/", 1)[-1])
    tmap = TensorMap(name=display_name(name), params=params, tensors=tensors, source=header.source,
                     file_bytes=header.file_bytes, header=header)
    validate_model(tmap)
    return tmap


def _gguf_layout(header: Any, arch: str, tensors: tuple[TensorInfo, ...]) -> dict[str, Any]:
    """The attention/state layout keys of a GGUF header (what sizes the KV cache and recurrent state).

    Keys as the engines' loaders read them (ik src/llama-hparams.cpp @8337e4cd, llama_model_loader keys in
    src/llama-arch.cpp): ``attention.sliding_window`` (+ ``_pattern``, a period or a per-layer bool array),
    ``attention.key_length_swa``, per-layer ``attention.head_count_kv``, ``ssm.*`` and ``full_attention_interval``,
    ``attention.indexer.*``, ``attention.compress_ratios``, ``interleave_moe_layer_step``.  Numbers an engine
    hard-codes for an architecture (Llama 4's 8192-token chunks every 3 of 4 layers, gpt-oss's alternation) come
    from ``gguf_defaults`` in architectures.toml.
    """
    def raw(key: str) -> Any:
        return header.get(f"{arch}.{key}")

    def as_int(key: str) -> int:
        value = raw(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    out: dict[str, Any] = dict(_architectures().get(arch, {}).get("gguf_defaults", {}))
    if as_int("attention.sliding_window"):
        out["n_swa"] = as_int("attention.sliding_window")
    pattern = raw("attention.sliding_window_pattern")
    if isinstance(pattern, (tuple, list)) and pattern:
        out["swa_layers"] = tuple(bool(x) for x in pattern)
    elif isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        out["swa_period"] = int(pattern)
    if as_int("attention.key_length_swa"):
        out["head_dim_swa"] = as_int("attention.key_length_swa")
    kv_heads = raw("attention.head_count_kv")
    if isinstance(kv_heads, (tuple, list)) and len(set(kv_heads)) > 1:
        out["n_head_kv_layers"] = tuple(int(x) for x in kv_heads)
    for field_name, key in (("ssm_d_conv", "ssm.conv_kernel"), ("ssm_d_inner", "ssm.inner_size"),
                            ("ssm_d_state", "ssm.state_size"), ("ssm_dt_rank", "ssm.time_step_rank"),
                            ("ssm_n_group", "ssm.group_count"), ("full_attn_interval", "full_attention_interval"),
                            ("indexer_n_head", "attention.indexer.head_count"),
                            ("indexer_head_size", "attention.indexer.key_length"),
                            ("n_ff_shexp", "expert_shared_feed_forward_length"),
                            ("moe_every", "interleave_moe_layer_step")):
        if as_int(key):
            out[field_name] = as_int(key)
    ratios = raw("attention.compress_ratios")
    if isinstance(ratios, (tuple, list)):
        out["compress_ratios"] = tuple(int(x) for x in ratios)
    elif arch == "deepseek4":
        # no compress_ratios key: ik infers each layer's ratio from its tensors (src/llama-hparams.cpp @8337e4cd,
        # LLM_ARCH_DEEPSEEK4): an indexer -> 4 (CSA), an attention compressor only -> 128 (HCA), else 0
        roles: dict[int, set[str]] = {}
        for t in tensors:
            if t.layer is not None:
                roles.setdefault(t.layer, set()).add(t.role)
        n_layer = as_int("block_count")
        comp = {"attn_compress_kv", "attn_compressor_kv"}
        index = {"indexer.attn_q_b", "indexer.compress_kv", "indexer_compressor_kv"}
        out["compress_ratios"] = tuple(4 if roles.get(il, set()) & index else 128 if roles.get(il, set()) & comp
                                       else 0 for il in range(n_layer))
    # Recurrent/state tensors the planner has no state formula for: a hybrid needs its full-attention interval
    # and ssm sizes; anything else (Mamba, RWKV time-mix, LFM2 short-conv, KDA) is named, never guessed.
    state_roles = sorted({t.role for t in tensors if t.role.startswith(_STATE_ROLE_PREFIXES)})
    if state_roles and not out.get("full_attn_interval"):
        out["unknown_layout"] = "recurrent-state tensors " + ", ".join(state_roles[:6])
    if not out.get("n_swa"):
        out.pop("swa_period", None)
        out.pop("swa_layers", None)
    return out


_STATE_ROLE_PREFIXES = ("ssm_", "time_mix_", "channel_mix_", "shortconv", "conv1d")
