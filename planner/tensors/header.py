"""Tensor maps from a parsed GGUF header: every tensor as stored, the architecture numbers from the ``{arch}.*``
keys, and the attention/state layout keys that size the KV cache and recurrent state."""

from __future__ import annotations

import re
from typing import Any

from planner.tensors.model import ModelParams, TensorInfo, TensorMap
from planner.tensors.templates import _architectures, derived_fields

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
    layout = _gguf_layout(header, arch, tensors)
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
        n_ff_exp=num("expert_feed_forward_length", 0) or layout.pop("n_ff_exp", 0),
        n_ctx_train=num("context_length", 0) or 0,
        tied="output.weight" not in names,
        n_dense_lead=num("leading_dense_block_count", 0) or 0,
        kv_lora_rank=kv_lora_rank,
        # mainline llama_hparams::is_mla() is n_embd_head_k_mla != 0: only files with key_length_mla are MLA there
        mla_legacy=bool(kv_lora_rank) and num("attention.key_length_mla") is None,
        n_rot=n_rot,
        head_dim_v=0 if head_dim_v == head_dim else head_dim_v,
        q_lora_rank=num("attention.q_lora_rank", 0) or 0,
        qk_nope_head_dim=max(0, head_dim - n_rot) if kv_lora_rank else 0,
        n_shared_exp=num("expert_shared_count", 0) or 0,
        n_nextn=num("nextn_predict_layers", 0) or 0,
        qk_norm=_optional_qk_norm(arch) and any(t.role == "attn_q_norm" for t in tensors),
        # the routed weights' scale (mainline build_moe_ffn scales them unless 0 or 1, src/llama-graph.cpp:2163-2166)
        expert_weights_scale=_float(header.get(f"{arch}.expert_weights_scale")),
        **layout,
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


def _float(value: Any) -> float:
    """A float header value, 0.0 where absent or not a number."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _gguf_layout(header: Any, arch: str, tensors: tuple[TensorInfo, ...]) -> dict[str, Any]:
    """The attention/state layout keys of a GGUF header (what sizes the KV cache and recurrent state).

    Keys as the engines' loaders read them (ik src/llama-hparams.cpp @8337e4cd, llama_model_loader keys in
    src/llama-arch.cpp): ``attention.sliding_window`` (+ ``_pattern``, a period or a per-layer bool array),
    ``attention.key_length_swa``, per-layer ``attention.head_count_kv``, ``ssm.*`` and ``full_attention_interval``,
    ``attention.indexer.*``, ``attention.compress_ratios``, ``interleave_moe_layer_step``, ``attention.shared_kv_layers``.  Numbers an engine
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
    elif raw("attention.sliding_window") is not None:
        # written as 0: no window, whatever the architecture's default (llama4: 'found_swa && n_swa == 0' ->
        # LLAMA_SWA_TYPE_NONE, src/models/llama4.cpp:7 @0c1e57098; the converter writes 0 for MobileLLM)
        out["n_swa"] = 0
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
                            ("indexer_top_k", "attention.indexer.top_k"),
                            ("n_ff_shexp", "expert_shared_feed_forward_length"),
                            ("moe_every", "interleave_moe_layer_step")):
        if as_int(key):
            out[field_name] = as_int(key)
    recurrent = raw("attention.recurrent_layers")
    if isinstance(recurrent, (tuple, list)) and recurrent and out.get("full_attn_interval"):
        # the loaders read this array first and fall back to full_attention_interval only without it
        # (src/models/qwen35moe.cpp, qwen3next.cpp load_arch_hparams @0c1e57098); the converter writes it from
        # config.json layer_types (conversion/qwen.py:382-388)
        out["recurrent_layers"] = tuple(bool(x) for x in recurrent)
    tpl = _architectures().get(arch, {})
    # gguf_keys: a ModelParams field from a key of its own (KDA: ssm_d_state <- kda.head_dim), or a number only the
    # ``derived`` expressions use (RWKV: token_shift_count, wkv_head_size)
    scratch: dict[str, int] = {}
    for field_name, key in tpl.get("gguf_keys", {}).items():
        if as_int(key):
            (out if field_name in ModelParams.__dataclass_fields__ else scratch)[field_name] = as_int(key)
    recurrent = _recurrent_from(tpl.get("recurrent_from", ""), raw, as_int("block_count"))
    if recurrent:
        out["recurrent_layers"] = recurrent
        out["recurrent_attn"] = tpl.get("recurrent_from") == "all"
    known = {"n_head": as_int("attention.head_count"), "n_embd": as_int("embedding_length"), **scratch, **out}
    if as_int("expert_count"):
        # experts as wide as the FFN where the header has no expert width (the "n_ff_exp=n_ff" of Mixtral and
        # Jamba, whose converters write only feed_forward_length: conversion/jamba.py set_gguf_parameters)
        known["n_ff"] = as_int("feed_forward_length")
    out.update({k: v for k, v in derived_fields(tpl, known).items() if k in ModelParams.__dataclass_fields__})
    if as_int("expert_count") and not out.get("moe_every"):
        out.update(_moe_period(tensors, as_int("block_count")))
    if as_int("attention.shared_kv_layers"):
        # gemma4: n_layer_kv_from_start = n_layer - shared_kv_layers (llama.cpp src/models/gemma4.cpp:11
        # @0c1e57098; ik src/llama-hparams.cpp:858 @8337e4cd); the later layers allocate no cache (has_kv)
        out["n_layer_kv"] = as_int("block_count") - as_int("attention.shared_kv_layers")
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
    if state_roles and not (out.get("full_attn_interval") or out.get("recurrent_layers")):
        out["unknown_layout"] = "recurrent-state tensors " + ", ".join(state_roles[:6])
    if not out.get("n_swa"):
        out.pop("swa_period", None)
        out.pop("swa_layers", None)
    return out


def _moe_period(tensors: tuple[TensorInfo, ...], n_layer: int) -> dict[str, int]:
    """``moe_every`` from the layers that carry a router (ffn_gate_inp) when they are exactly every k-th layer,
    (il + 1) % k == 0 (Jamba's experts on odd layers: the loader makes a layer MoE iff its ffn_gate_inp exists,
    src/models/jamba.cpp:88-100 @0c1e57098, and the header has no key for it); {} when every layer, or another
    pattern (DeepSeek's dense lead layers: leading_dense_block_count), carries them."""
    moe = {t.layer for t in tensors if t.role == "ffn_gate_inp" and t.layer is not None and t.layer < n_layer}
    for k in range(2, n_layer + 1):
        if moe and moe == {il for il in range(n_layer) if (il + 1) % k == 0}:
            return {"moe_every": k}
    return {}


_STATE_ROLE_PREFIXES = ("ssm_", "time_mix_", "channel_mix_", "shortconv", "conv1d")


def _recurrent_from(rule: str, raw: Any, n_layer: int) -> tuple[bool, ...]:
    """Per-layer recurrent flags by an architecture's ``recurrent_from`` rule (architectures.toml), from the
    per-layer header arrays the converters write; () when the rule or its arrays are absent.

    ``kv0``: recurrent iff head_count_kv[il] == 0 (jamba.cpp:11-13, granite-hybrid.cpp:22-25, kimi-linear.cpp:17-19,
    bailingmoe3.cpp:34-36 @0c1e57098; ik src/llama-hparams.cpp:1467-1469 @8337e4cd3); ``kv0_ff0``: and
    feed_forward_length[il] == 0 (nemotron-h.cpp load_arch_hparams); ``all``: every layer, beside its attention
    (falcon-h1.cpp:14); ``every``: every layer, no attention (the purely recurrent architectures of
    llm_arch_is_recurrent, src/llama-arch.cpp:1071-1081: is_recr_impl filled for all layers,
    src/llama-model.cpp:1384, and one llama_memory_recurrent for them, :2669-2678 @0c1e57098)."""
    if rule in ("all", "every"):
        return (True,) * n_layer
    kv, ff = raw("attention.head_count_kv"), raw("feed_forward_length")
    if rule not in ("kv0", "kv0_ff0") or not isinstance(kv, (tuple, list)) or len(kv) < n_layer:
        return ()
    if rule == "kv0":
        return tuple(int(kv[il]) == 0 for il in range(n_layer))
    if not isinstance(ff, (tuple, list)) or len(ff) < n_layer:
        return ()
    return tuple(int(kv[il]) == 0 and int(ff[il]) == 0 for il in range(n_layer))

