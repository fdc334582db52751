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

_BLK = re.compile(r"^blk\.(\d+)\.(.+?)\.(weight|bias|scale)$")
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

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    def layers(self) -> range:
        return range(self.params.n_layer)

    @property
    def is_quantized(self) -> bool:
        """Whether any tensor is stored in a quantized type (an output of llama-quantize, not a source)."""
        from planner.quants import catalogue

        return any(catalogue().get(t.dtype).is_quantized for t in self.tensors)

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
    """A sum of products of parameter names and integers, e.g. ``kv_lora_rank + n_rot``."""
    total = 0
    for term in expr.split("+"):
        value = 1
        for factor in term.split("*"):
            factor = factor.strip()
            value *= int(factor) if factor.isdigit() else env[factor]
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
        return layer is not None and (layer < params.n_dense_lead or not params.is_moe)
    if cond == "moe":
        return layer is not None and layer >= params.n_dense_lead and params.is_moe
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
    except KeyError:
        raise UnknownModelError(
            f"no built-in template for architecture {params.arch!r}",
            hint=f"known: {', '.join(sorted(_architectures()))}; or read the GGUF header instead") from None
    env = {f.name: getattr(params, f.name) for f in fields(params) if isinstance(getattr(params, f.name), int)}
    env["head_dim_v"] = params.head_dim_v or params.head_dim
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
    return TensorMap(name=name, params=params, tensors=tuple(out), source=source)


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
    spec.pop("source", None)
    params = ModelParams(**spec)
    return build(params, display, f"builtin:{key}")


# HF config.json field -> ModelParams field (first present wins)
_HF_FIELDS: dict[str, tuple[str, ...]] = {
    "n_layer": ("num_hidden_layers",),
    "n_embd": ("hidden_size",),
    "n_vocab": ("vocab_size",),
    "n_head": ("num_attention_heads",),
    "n_head_kv": ("num_key_value_heads", "num_attention_heads"),
    "head_dim": ("head_dim",),
    "n_expert": ("num_experts", "n_routed_experts", "num_local_experts"),
    "n_expert_used": ("num_experts_per_tok",),
    "n_ff": ("intermediate_size",),
    "n_ff_exp": ("moe_intermediate_size",),
    "n_ctx_train": ("max_position_embeddings",),
    "tied": ("tie_word_embeddings",),
    "n_dense_lead": ("first_k_dense_replace",),
    "n_shared_exp": ("n_shared_experts",),
    "q_lora_rank": ("q_lora_rank",),
    "kv_lora_rank": ("kv_lora_rank",),
    "qk_nope_head_dim": ("qk_nope_head_dim",),
    "n_rot": ("qk_rope_head_dim",),
    "head_dim_v": ("v_head_dim",),
    "qk_norm": ("use_qk_norm",),
}


def from_config(config: Mapping[str, Any], source: str = "config.json") -> TensorMap:
    """A TensorMap from a Hugging Face ``config.json`` dict."""
    model_type = config.get("model_type", "")
    arch = next((a for a, t in _architectures().items() if model_type in t.get("hf_model_types", ())), None)
    if arch is None:
        raise UnknownModelError(f"config.json model_type {model_type!r} has no architecture template",
                                hint="supported: " + ", ".join(
                                    sorted(m for t in _architectures().values() for m in t["hf_model_types"])))
    values: dict[str, Any] = {"arch": arch}
    for target, keys in _HF_FIELDS.items():
        for k in keys:
            if k in config and config[k] is not None:
                values[target] = config[k]
                break
    missing = [f for f in ("n_layer", "n_embd", "n_vocab", "n_head") if f not in values]
    if missing:
        raise UnknownModelError(f"{source}: config.json lacks {', '.join(missing)}")
    if values.get("kv_lora_rank"):
        # MLA: Q/K heads are qk_nope + qk_rope wide, as convert_hf_to_gguf writes attention.key_length
        # (transformers' DeepseekV3Config may serialize head_dim = qk_rope_head_dim, which is not that)
        values["head_dim"] = values.get("qk_nope_head_dim", 0) + values.get("n_rot", 0)
    elif "head_dim" not in values:
        values["head_dim"] = values["n_embd"] // values["n_head"]
    if "n_rot" not in values and config.get("partial_rotary_factor"):
        values["n_rot"] = int(values["head_dim"] * config["partial_rotary_factor"])   # GLM-4.5: 0.5
    if values.get("head_dim_v") == values["head_dim"]:
        values["head_dim_v"] = 0
    if _architectures()[arch].get("keeps_nextn"):
        # the converter appends the NextN/MTP block(s) after the decoder blocks (block_count = L + nextn)
        values["n_nextn"] = int(config.get("num_nextn_predict_layers") or 0)
        values["n_layer"] += values["n_nextn"]
    if arch in ("qwen3", "llama"):
        values.pop("n_expert", None), values.pop("n_expert_used", None)
    values["tied"] = bool(values.get("tied", False))
    values["qk_norm"] = bool(values.get("qk_norm", False))
    params = ModelParams(**values)
    name = config.get("_name_or_path") or (config.get("architectures") or [model_type])[0]
    return build(params, str(name), source)


def from_config_file(path: Path) -> TensorMap:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnknownModelError(f"cannot read {path} as config.json: {exc}") from exc
    return from_config(config, source=str(path))


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

    arch = header.arch
    if not arch:
        raise GGUFFormatError("the header has no general.architecture", field="general.architecture",
                              source=header.source)

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
        if isinstance(tokens, tuple) and tokens:
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
    )
    name = header.get("general.name")
    if not isinstance(name, str) or not name:
        name = re.sub(r"(-\d{5}-of-\d{5})?\.gguf$", "", header.source.rstrip("/").rsplit("/", 1)[-1])
    return TensorMap(name=name, params=params, tensors=tensors, source=header.source,
                     file_bytes=header.file_bytes, header=header)
