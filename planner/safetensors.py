"""Hugging Face safetensors headers -> the GGUF tensors a converter would write (exact shapes, no download).

Pure functions over bytes (:func:`header_length`, :func:`parse_header`, :func:`parse_index`) and one mapping
(:func:`to_gguf`) that follows convert_hf_to_gguf.py (ik_llama.cpp @8337e4cd and llama.cpp): names through gguf's
own ``TensorNameMap`` (``gguf.get_tensor_name_map``), then the converter's structural rules:

* per-expert tensors ``...experts.{e}.{proj}`` are stacked into one ``*_exps`` tensor ``[in, out, n_expert]``
  (``Model.modify_tensors`` merging ``experts.N``), fused expert parameters ``experts.gate_up_proj`` ``[E, in,
  2*ff]`` are split into gate and up (Llama 4, gpt-oss);
* ``e_score_correction_bias`` is renamed ``e_score_correction.bias`` and ``dt_bias`` ``dt_proj.bias``
  (DeepseekV2Model / Qwen3NextModel ``modify_tensors``);
* MLA ``kv_b_proj`` is written as the template of the architecture lays it out: ik's converter keeps
  ``attn_kv_b`` and adds 2-D ``attn_k_b``/``attn_v_b``; llama.cpp writes 3-D ``attn_k_b``/``attn_v_b`` only;
* blocks past ``num_hidden_layers`` (MTP) are dropped unless the architecture keeps NextN blocks; vision towers,
  projectors and MTP modules are dropped; FP8 ``weight_scale_inv`` companions are dropped (the converter
  dequantizes); gpt-oss MXFP4 ``*_blocks``/``*_scales`` become one MXFP4 tensor.

GGUF types: the architecture template's type for that tensor name when there is one (f32 norms and routers,
bf16 weights, MXFP4 experts), else f32 for 1-D tensors and bf16 otherwise (``--outtype bf16``).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import GGUFFormatError, UnknownModelError
from planner.tensors import TensorInfo

MAX_HEADER_BYTES = 100 << 20          # safetensors itself refuses headers over 100 MB
MAX_INDEX_BYTES = 64 << 20
_DTYPES = {"BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32",
           "F32", "F64", "I64", "U64", "F4"}
_EXPERT = re.compile(r"^(?P<head>.*\.experts)\.(?P<e>\d+)\.(?P<tail>.+)$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("model.text_model.", "model."), ("language_model.lm_head.", "lm_head."))
_DROP = re.compile(r"(^|\.)(visual|vision_tower|vision_model|multi_modal_projector|mm_projector|audio_tower)\.|"
                   r"^mtp\.|rotary_emb\.inv_freq$|\.weight_scale_inv$|\.weight_scale$|\.input_scale$")


@dataclass(frozen=True, slots=True)
class HFTensor:
    """One tensor of a safetensors header: HF name, dtype, row-major shape, byte length."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def header_length(first8: bytes, *, source: str = "safetensors") -> int:
    """The JSON header length from the first 8 bytes (u64 little endian), bounded.

    Raises:
        GGUFFormatError: fewer than 8 bytes, or a length over 100 MB.
    """
    if len(first8) < 8:
        raise GGUFFormatError("safetensors file shorter than its 8-byte header length", source=source)
    (n,) = struct.unpack("<Q", first8[:8])
    if n == 0 or n > MAX_HEADER_BYTES:
        raise GGUFFormatError(f"safetensors header length {n} is out of range (1..{MAX_HEADER_BYTES})",
                              source=source)
    return n


def parse_header(data: bytes, *, source: str = "safetensors") -> tuple[HFTensor, ...]:
    """The tensors of a safetensors file from its first ``8 + n`` bytes (length prefix included).

    Raises:
        GGUFFormatError: not JSON, or a tensor entry with a bad dtype/shape/offsets.
    """
    n = header_length(data, source=source)
    if len(data) < 8 + n:
        raise GGUFFormatError(f"safetensors header truncated ({len(data) - 8} of {n} bytes)", source=source)
    try:
        doc = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise GGUFFormatError(f"safetensors header is not JSON: {exc}", source=source) from exc
    if not isinstance(doc, dict):
        raise GGUFFormatError("safetensors header is not a JSON object", source=source)
    out = []
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise GGUFFormatError(f"safetensors entry {name!r} is not an object", source=source)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPES:
            raise GGUFFormatError(f"safetensors tensor {name!r} has unknown dtype {dtype!r}", source=source)
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)):
            raise GGUFFormatError(f"safetensors tensor {name!r} has a bad shape {shape!r}", source=source)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                or offsets[1] < offsets[0]):
            raise GGUFFormatError(f"safetensors tensor {name!r} has bad data_offsets {offsets!r}", source=source)
        out.append(HFTensor(name, dtype, tuple(shape), offsets[1] - offsets[0]))
    return tuple(out)


def parse_index(data: bytes, *, source: str = "model.safetensors.index.json") -> tuple[dict[str, str], int | None]:
    """``weight_map`` (tensor -> shard file) and ``metadata.total_size`` of a sharded checkpoint's index.

    Raises:
        GGUFFormatError: not JSON, or no usable weight_map.
    """
    if len(data) > MAX_INDEX_BYTES:
        raise GGUFFormatError(f"index file over {MAX_INDEX_BYTES} bytes", source=source)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise GGUFFormatError(f"index is not JSON: {exc}", source=source) from exc
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
        raise GGUFFormatError("index has no weight_map of tensor -> file", source=source)
    for shard in set(wm.values()):
        if "/" in shard or "\\" in shard or shard.startswith(".") or not shard.endswith(".safetensors"):
            raise GGUFFormatError(f"index names an unexpected shard file {shard!r}", source=source)
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    total = meta.get("total_size")
    return dict(wm), (int(total) if isinstance(total, int) and not isinstance(total, bool) else None)


# ------------------------------------------------------------------------------------- HF -> GGUF

def _normalize(name: str) -> str | None:
    """Converter-side renames before the name map; None for tensors the converter drops."""
    for old, new in _PREFIXES:
        if name.startswith(old):
            name = new + name[len(old):]
            break
    if _DROP.search(name):
        return None
    name = name.replace("e_score_correction_bias", "e_score_correction.bias")
    name = re.sub(r"\.dt_bias$", ".dt_proj.bias", name)
    return name


def _ne(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(reversed(shape)) if shape else (1,)


def to_gguf(arch: str, hf_tensors: tuple[HFTensor, ...], config: Mapping[str, Any]) -> tuple[
        tuple[TensorInfo, ...], tuple[str, ...]]:
    """GGUF tensors (names, ggml ``ne`` shapes, types) for a checkpoint's safetensors tensors.

    Returns the tensors in GGUF block order and the HF names the converter would drop.

    Raises:
        UnknownModelError: a tensor no rule maps (named), or an architecture gguf does not know.
    """
    import gguf  # names only, from gguf-py's tables

    from planner.tensors import _architectures, _flatten_config

    flat = _flatten_config(config)
    tpl = _architectures().get(arch, {})
    if "hf" in tpl:
        return _by_table(arch, hf_tensors, flat, tpl)
    gguf_arch = next((a for a in gguf.MODEL_ARCH if gguf.MODEL_ARCH_NAMES[a] == arch), None)
    if gguf_arch is None:
        raise UnknownModelError(f"gguf {gguf.__name__} has no tensor name table for architecture {arch!r}")
    n_layer = int(flat.get("num_hidden_layers") or 0)
    n_nextn = int(flat.get("num_nextn_predict_layers") or 0) if tpl.get("keeps_nextn") else 0
    name_map = gguf.get_tensor_name_map(gguf_arch, n_layer + n_nextn + 1)
    tpl_types = _template_types(tpl)
    tpl_dims = {name: len(spec.split(",")) for part in ("head", "block", "tail")
                for name, spec, _dtype, _cond in tpl.get(part, ())}
    split_kv_b = any(e[0] == "attn_kv_b.weight" for e in tpl.get("block", ()))   # ik layout keeps kv_b

    dropped: list[str] = []
    experts: dict[str, dict[int, HFTensor]] = {}
    plain: list[tuple[str, HFTensor]] = []
    for t in hf_tensors:
        name = _normalize(t.name)
        m = _LAYER.match(name or "")
        if name is None or (m and int(m.group(1)) >= n_layer + n_nextn):
            dropped.append(t.name)
            continue
        e = _EXPERT.match(name)
        if e:
            experts.setdefault(f"{e['head']}.{e['tail']}", {})[int(e["e"])] = t
        else:
            plain.append((name, t))

    out: dict[str, TensorInfo] = {}

    def emit(gguf_name: str, ne: tuple[int, ...], src_dtype: str) -> None:
        short = re.sub(r"^blk\.\d+\.", "", gguf_name)
        if short in tpl_dims and len(ne) > tpl_dims[short] and 1 in ne:
            # size-1 axes the converter squeezes (conv1d [C, 1, K] -> [K, C]; shared_expert_gate [1, n] -> [n])
            ne = tuple(d for d in ne if d != 1) or (1,)
        out[gguf_name] = TensorInfo(gguf_name, ne, _gguf_type(gguf_name, ne, src_dtype, tpl_types))

    def mapped(hf_name: str) -> str:
        got = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if got is None:
            raise UnknownModelError(f"{arch}: no GGUF name for HF tensor {hf_name!r}",
                                    hint="gguf's TensorNameMap and the converter rules do not cover it")
        return got

    for stacked, per_expert in experts.items():
        n_exp = max(per_expert) + 1
        if set(per_expert) != set(range(n_exp)):
            raise UnknownModelError(f"{arch}: experts of {stacked} are not numbered 0..{n_exp - 1}")
        first = per_expert[0]
        emit(mapped(stacked), _ne(first.shape) + (n_exp,), first.dtype)
    pending_mxfp4: dict[str, dict[str, HFTensor]] = {}
    for name, t in plain:
        if name.endswith(("_blocks", "_scales")) and ".experts." in name:       # gpt-oss MXFP4
            base, _, part = name.rpartition("_")
            pending_mxfp4.setdefault(base, {})[part] = t
            continue
        if name.endswith((".experts.gate_up_proj", ".experts.gate_up_proj_bias")):
            _split_gate_up(name, t, mapped, emit)
            continue
        if name.endswith(".experts.down_proj") and len(t.shape) == 3:            # [E, ff, in] parameter
            e_, ff, d = t.shape
            emit(mapped(name + ".weight"), (ff, d, e_), t.dtype)
            continue
        if name.endswith(".experts.down_proj_bias") and len(t.shape) == 2:
            emit(mapped(name.removesuffix("_bias") + ".bias"), _ne(t.shape), t.dtype)
            continue
        if name.endswith("linear_attn.in_proj_qkvz.weight"):
            # Qwen3-Next: the converter de-interleaves the fused projection into attn_qkv + attn_gate
            kd = int(flat["linear_key_head_dim"]) * int(flat["linear_num_key_heads"])
            vd = int(flat["linear_value_head_dim"]) * int(flat["linear_num_value_heads"])
            if t.shape[0] != 2 * kd + 2 * vd:
                raise UnknownModelError(f"{name}: {t.shape[0]} rows, expected 2*key_dim + 2*value_dim")
            stem = name.removesuffix("in_proj_qkvz.weight")
            emit(mapped(stem + "in_proj_qkv.weight"), (t.shape[1], 2 * kd + vd), t.dtype)
            emit(mapped(stem + "in_proj_z.weight"), (t.shape[1], vd), t.dtype)
            continue
        if name.endswith("kv_b_proj.weight") and flat.get("kv_lora_rank"):
            _split_kv_b(name, t, flat, mapped, emit, keep_kv_b=split_kv_b)
            continue
        emit(mapped(name), _ne(t.shape), t.dtype)
    for base, parts in pending_mxfp4.items():
        blocks = parts.get("blocks")
        if blocks is None or len(blocks.shape) != 4:
            raise UnknownModelError(f"{arch}: MXFP4 {base} without a [E, out, n_blocks, 16] *_blocks tensor")
        e_, rows, nb, _ = blocks.shape
        if base.endswith("gate_up_proj"):     # interleaved gate/up rows, split by the converter
            for proj in ("gate_proj", "up_proj"):
                emit(mapped(base.replace("gate_up_proj", proj) + ".weight"), (nb * 32, rows // 2, e_), "MXFP4")
        else:
            emit(mapped(base + ".weight"), (nb * 32, rows, e_), "MXFP4")
    return _ordered(out, tpl), tuple(dropped)


def _by_table(arch: str, hf_tensors: tuple[HFTensor, ...], flat: Mapping[str, Any],
              tpl: Mapping[str, Any]) -> tuple[tuple[TensorInfo, ...], tuple[str, ...]]:
    """Checkpoints with their own tensor names, mapped by the template's ``hf`` table (architectures.toml cites
    the converter it is transcribed from): root and per-layer names, dropped patterns, per-expert tensors stacked
    (packed FP4 bytes widened to their element count and repacked to MXFP4), and the converter's output types
    from the header dtype (``types``; 1-D tensors f32, as gguf's writer stores them)."""
    rules = tpl["hf"]
    layer_rx = re.compile("^" + rules["layer"] + "(?P<rest>.+)$")
    drops = [re.compile(rx) for rx in rules.get("drop", ())]
    expert_rx = re.compile("^" + rules["experts"]) if "experts" in rules else None
    n_layer, n_hash = int(flat.get("num_hidden_layers") or 0), int(flat.get("num_hash_layers") or 0)
    types, packed = rules.get("types", {}), rules.get("packed", {})
    out: dict[str, TensorInfo] = {}
    dropped: list[str] = []
    experts: dict[tuple[int, str], dict[int, HFTensor]] = {}

    def emit(name: str, ne: tuple[int, ...], src: str) -> None:
        dtype = "f32" if len(ne) == 1 else types.get(src)
        if dtype is None:
            raise UnknownModelError(f"{arch}: {name}: no converter type for a {src} tensor")
        out[name] = TensorInfo(name, ne, dtype)

    for t in hf_tensors:
        if any(rx.search(t.name) for rx in drops):
            dropped.append(t.name)
            continue
        if t.name in rules["root"]:
            emit(rules["root"][t.name], _ne(t.shape), t.dtype)
            continue
        m = layer_rx.match(t.name)
        if m is None:
            raise UnknownModelError(f"{arch}: no GGUF name for HF tensor {t.name!r}")
        bid, rest = int(m.group(1)), m.group("rest")
        if bid >= n_layer or (bid < n_hash and rest in rules.get("hash_layer_drop", ())):
            dropped.append(t.name)
            continue
        e = expert_rx.match(rest) if expert_rx else None
        if e:
            experts.setdefault((bid, e.group(2)), {})[int(e.group(1))] = t
            continue
        if rest not in rules["block"]:
            raise UnknownModelError(f"{arch}: no GGUF name for HF tensor {t.name!r}")
        emit(f"blk.{bid}.{rules['block'][rest]}", _ne(t.shape), t.dtype)
    for (bid, proj), per_expert in experts.items():
        n_exp = max(per_expert) + 1
        if set(per_expert) != set(range(n_exp)):
            raise UnknownModelError(f"{arch}: experts of layer {bid} {proj} are not numbered 0..{n_exp - 1}")
        first = per_expert[0]
        ne = _ne(first.shape)
        per_byte = int(packed.get(first.dtype, 1))
        emit(f"blk.{bid}.{rules['expert_names'][proj]}", (ne[0] * per_byte,) + ne[1:] + (n_exp,),
             "MXFP4" if per_byte > 1 else first.dtype)
    return _ordered(out, tpl), tuple(dropped)


def _split_gate_up(name: str, t: HFTensor, mapped: Callable[[str], str],
                   emit: Callable[[str, tuple[int, ...], str], None]) -> None:
    base = name.removesuffix("_bias").removesuffix(".experts.gate_up_proj") + ".experts."
    if name.endswith("_bias"):               # [E, 2*ff]
        e_, two_ff = t.shape
        for proj in ("gate_proj", "up_proj"):
            emit(mapped(base + proj + ".bias"), (two_ff // 2, e_), t.dtype)
        return
    e_, d, two_ff = t.shape                  # [E, in, 2*ff] parameter (transposed by the converter)
    for proj in ("gate_proj", "up_proj"):
        emit(mapped(base + proj + ".weight"), (d, two_ff // 2, e_), t.dtype)


def _split_kv_b(name: str, t: HFTensor, flat: Mapping[str, Any], mapped: Callable[[str], str],
                emit: Callable[[str, tuple[int, ...], str], None], *, keep_kv_b: bool) -> None:
    """MLA ``kv_b_proj [n_head*(nope+v), kv_lora]``: ik keeps it and adds 2-D k_b/v_b; mainline writes 3-D."""
    n_head = int(flat["num_attention_heads"])
    nope, v, rank = int(flat["qk_nope_head_dim"]), int(flat["v_head_dim"]), int(flat["kv_lora_rank"])
    if tuple(t.shape) != (n_head * (nope + v), rank):
        raise UnknownModelError(f"{name}: shape {t.shape} is not [n_head*(qk_nope+v), kv_lora_rank]")
    k_b, v_b = mapped(name.replace("kv_b_proj", "k_b_proj")), mapped(name.replace("kv_b_proj", "v_b_proj"))
    if keep_kv_b:
        emit(mapped(name), _ne(t.shape), t.dtype)
        emit(k_b, (nope, n_head * rank), t.dtype)
        emit(v_b, (rank, n_head * v), t.dtype)
    else:
        emit(k_b, (nope, rank, n_head), t.dtype)
        emit(v_b, (rank, v, n_head), t.dtype)


def _template_types(tpl: Mapping[str, Any]) -> dict[str, str]:
    types = {}
    for part in ("head", "block", "tail"):
        for name, _shape, dtype, _cond in tpl.get(part, ()):
            types[name] = dtype
    return types


def _gguf_type(gguf_name: str, ne: tuple[int, ...], src: str, tpl_types: Mapping[str, str]) -> str:
    if src == "MXFP4":
        return "mxfp4"
    key = re.sub(r"^blk\.\d+\.", "", gguf_name)
    if key in tpl_types:
        return tpl_types[key]
    return "f32" if len(ne) == 1 else "bf16"


def _ordered(tensors: Mapping[str, TensorInfo], tpl: Mapping[str, Any]) -> tuple[TensorInfo, ...]:
    """GGUF order: token_embd, blocks in layer order (template order inside a block), then the rest."""
    rank: dict[str, int] = {}
    for i, (name, *_rest) in enumerate(tpl.get("block", ())):
        rank.setdefault(name, i)          # a name listed per condition (deepseek4 compressors) ranks at its first
    tail = {name: i for i, (name, *_rest) in enumerate(tpl.get("tail", ()))}

    def key(t: TensorInfo) -> tuple:
        if t.layer is None:
            return (0 if t.name.startswith("token_embd") else 2, 0, tail.get(t.name, len(tail)), t.name)
        short = t.name.split(".", 2)[2]
        return (1, t.layer, rank.get(short, len(rank)), short)

    return tuple(sorted(tensors.values(), key=key))


# ------------------------------------------------------------------------------------- remote reader

def read_repo(location: str, *, open_source: Callable[[str], Any] | None = None) -> Any:
    """A TensorMap for a model repository from its config.json and safetensors headers only.

    ``location`` is ``hf://owner/repo[@revision]`` (no file) or an http(s) URL of the repository folder.
    Reads ``config.json``, ``model.safetensors.index.json`` (or the single ``model.safetensors``) and, per shard,
    the 8-byte length and the JSON header with Range requests; no tensor data.  ``open_source(url)`` returns an
    object with ``read(offset, n)`` and ``size()`` (default: :class:`planner.remote.HTTPRangeSource`).

    Raises:
        RemoteReadError: a file cannot be fetched.
        GGUFFormatError: a header or index is malformed.
        UnknownModelError: the config's model_type has no template, or a tensor no rule maps.
    """
    from dataclasses import replace

    from planner.errors import RemoteReadError
    from planner.tensors import config_arch, from_config, model_display_name

    opener: Callable[[str], Any]
    if open_source is None:
        from planner.remote import HTTPRangeSource

        opener = HTTPRangeSource
    else:
        opener = open_source
    base = location.rstrip("/")

    def whole(name: str, limit: int) -> bytes:
        src = opener(f"{base}/{name}")
        size = src.size()
        if size is not None and size > limit:
            raise GGUFFormatError(f"{name} is {size} bytes, over the {limit}-byte limit", source=f"{base}/{name}")
        chunks, offset = [], 0
        while offset < limit:
            piece = src.read(offset, min(1 << 20, limit - offset))
            if not piece:
                break
            chunks.append(piece)
            offset += len(piece)
            if size is not None and offset >= size:
                break
        return b"".join(chunks)

    try:
        config = json.loads(whole("config.json", 1 << 20).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise GGUFFormatError(f"config.json is not JSON: {exc}", source=f"{base}/config.json") from exc
    if not isinstance(config, dict):
        raise GGUFFormatError("config.json is not a JSON object", source=f"{base}/config.json")
    arch = config_arch(config)
    try:
        weight_map, _total = parse_index(whole("model.safetensors.index.json", MAX_INDEX_BYTES),
                                         source=f"{base}/model.safetensors.index.json")
        shards = sorted(set(weight_map.values()))
    except RemoteReadError as exc:
        if getattr(exc, "status", None) != 404:
            raise
        shards = ["model.safetensors"]
    hf: list[HFTensor] = []
    for shard in shards:
        src = opener(f"{base}/{shard}")
        if hasattr(src, "chunk_bytes"):
            src.chunk_bytes = 64 << 10          # a shard header is a few KB: no 1 MiB first block per shard
        n = header_length(src.read(0, 8), source=f"{base}/{shard}")
        hf.extend(parse_header(src.read(0, 8 + n), source=f"{base}/{shard}"))
    tensors, _dropped = to_gguf(arch, tuple(hf), config)
    repo = re.sub(r"@.*$", "", base.rsplit("/", 1)[-1])
    tmap = from_config(config, source=location, name=model_display_name(config, repo))
    return replace(tmap, tensors=tensors)
