"""DeepSeek-V4-Flash safetensors headers -> GGUF, checked against the real checkpoint's published totals.

The checkpoint (deepseek-ai/DeepSeek-V4-Flash @60d8d707) names its tensors its own way (``layers.N.attn.wq_a``,
``layers.N.ffn.experts.E.w1`` + ``.scale``, ``mtp.0.*``), stores linears as FP8 E4M3 with UE8M0 block scales and
the routed experts as FP4 packed two per I8 byte.  Its shard headers could not be captured (GitHub mirrors hold
Git LFS pointers, the Hub is not reachable from here), so the header inventory is rebuilt from config.json by the
checkpoint's layout rules and must reproduce four real figures exactly (tests/fixtures/hf/deepseek-v4-flash/
checkpoint.json cites them): 69,187 tensors, the per-dtype tensor counts, the index's ``metadata.total_size``
159,609,485,896 bytes and the Hub's safetensors element total 158,069,433,298.  Mapped through the converter
rules (llama.cpp conversion/deepseek.py DeepseekV4Model @0c1e57098, transcribed in architectures.toml
``[deepseek4.hf]``) it must give the deepseek4 template tensor for tensor, and ``hf://`` reads it over a local
server header-only.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from test_safetensors import _RepoServer, _st_bytes

from planner.errors import UnknownModelError
from planner.model_list import param_counts
from planner.safetensors import HFTensor, header_length, to_gguf
from planner.tensors import _models, builtin

FACTS = json.loads((Path(__file__).parent / "fixtures" / "hf" / "deepseek-v4-flash" / "checkpoint.json").read_text())
BYTES = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "I64": 8}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _inventory(c: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, row-major shape) of every tensor of a DeepSeek-V4 checkpoint, from config.json alone.

    Layout as the checkpoint stores it (DeepSeek-V4 inference/model.py module tree; dtypes per the header
    contract cited in checkpoint.json): FP8 linears ``W [out, in]`` + ``scale [ceil(out/128), ceil(in/128)]``;
    routed experts FP4 ``W [out, in/2]`` I8 + ``scale [out, in/32]``; compressors of ratio-4 layers twice as wide
    plus the indexer; the first num_hash_layers carry ``tid2eid [vocab, k]`` I64 instead of the gate bias; the MTP
    block ``mtp.0`` is a full layer plus its e/h projections, norms and its own hyper-connection head."""
    d, heads, hd, q = c["hidden_size"], c["num_attention_heads"], c["head_dim"], c["q_lora_rank"]
    og, orank, ih, idim = c["o_groups"], c["o_lora_rank"], c["index_n_heads"], c["index_head_dim"]
    n_exp, ff, hc, vocab = c["n_routed_experts"], c["moe_intermediate_size"], c["hc_mult"], c["vocab_size"]
    out: dict[str, tuple[str, tuple[int, ...]]] = {}

    def add(name: str, dtype: str, *shape: int) -> None:
        out[name] = (dtype, shape)

    def fp8(name: str, rows: int, cols: int) -> None:
        add(f"{name}.weight", "F8_E4M3", rows, cols)
        add(f"{name}.scale", "F8_E8M0", -(-rows // 128), -(-cols // 128))

    add("embed.weight", "BF16", vocab, d)
    add("head.weight", "BF16", vocab, d)
    add("norm.weight", "BF16", d)
    add("hc_head_fn", "F32", hc, hc * d)
    add("hc_head_base", "F32", hc)
    add("hc_head_scale", "F32", 1)
    n_layer = c["num_hidden_layers"]
    for b in range(n_layer + c["num_nextn_predict_layers"]):
        mtp = b >= n_layer
        p, ratio = (f"mtp.{b - n_layer}" if mtp else f"layers.{b}"), c["compress_ratios"][b]
        add(f"{p}.attn_norm.weight", "BF16", d)
        add(f"{p}.ffn_norm.weight", "BF16", d)
        add(f"{p}.attn.q_norm.weight", "BF16", q)
        add(f"{p}.attn.kv_norm.weight", "BF16", hd)
        add(f"{p}.attn.attn_sink", "F32", heads)
        fp8(f"{p}.attn.wq_a", q, d)
        fp8(f"{p}.attn.wq_b", heads * hd, q)
        fp8(f"{p}.attn.wkv", hd, d)
        fp8(f"{p}.attn.wo_a", og * orank, heads * hd // og)
        fp8(f"{p}.attn.wo_b", d, og * orank)
        if ratio:
            width = (2 if ratio == 4 else 1) * hd
            add(f"{p}.attn.compressor.ape", "F32", ratio, width)
            add(f"{p}.attn.compressor.norm.weight", "BF16", hd)
            add(f"{p}.attn.compressor.wgate.weight", "BF16", width, d)
            add(f"{p}.attn.compressor.wkv.weight", "BF16", width, d)
            if ratio == 4:
                fp8(f"{p}.attn.indexer.wq_b", ih * idim, q)
                add(f"{p}.attn.indexer.weights_proj.weight", "BF16", ih, d)
                add(f"{p}.attn.indexer.compressor.ape", "F32", ratio, 2 * idim)
                add(f"{p}.attn.indexer.compressor.norm.weight", "BF16", idim)
                add(f"{p}.attn.indexer.compressor.wgate.weight", "BF16", 2 * idim, d)
                add(f"{p}.attn.indexer.compressor.wkv.weight", "BF16", 2 * idim, d)
        mix = (2 + hc) * hc
        for kind in ("attn", "ffn"):
            add(f"{p}.hc_{kind}_fn", "F32", mix, hc * d)
            add(f"{p}.hc_{kind}_base", "F32", mix)
            add(f"{p}.hc_{kind}_scale", "F32", 3)
        add(f"{p}.ffn.gate.weight", "BF16", n_exp, d)
        if not mtp and b < c["num_hash_layers"]:
            add(f"{p}.ffn.gate.tid2eid", "I64", vocab, c["num_experts_per_tok"])
        else:
            add(f"{p}.ffn.gate.bias", "F32", n_exp)
        for w in ("w1", "w2", "w3"):
            rows, cols = (d, ff) if w == "w2" else (ff, d)
            fp8(f"{p}.ffn.shared_experts.{w}", rows, cols)
            for e in range(n_exp):
                add(f"{p}.ffn.experts.{e}.{w}.weight", "I8", rows, cols // 2)
                add(f"{p}.ffn.experts.{e}.{w}.scale", "F8_E8M0", rows, cols // 32)
        if mtp:
            for norm in ("enorm", "hnorm", "norm"):
                add(f"{p}.{norm}.weight", "BF16", d)
            fp8(f"{p}.e_proj", d, d)
            fp8(f"{p}.h_proj", d, d)
            add(f"{p}.hc_head_fn", "F32", hc, hc * d)
            add(f"{p}.hc_head_base", "F32", hc)
            add(f"{p}.hc_head_scale", "F32", 1)
    return out


@pytest.fixture(scope="module")
def checkpoint() -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    config = dict(_models()["deepseek-v4-flash"]["config"])
    return config, _inventory(config)


def _hf(inv: dict[str, tuple[str, tuple[int, ...]]]) -> tuple[HFTensor, ...]:
    return tuple(HFTensor(n, dt, s, _numel(s) * BYTES[dt]) for n, (dt, s) in inv.items())


def test_inventory_reproduces_the_real_checkpoint_totals(checkpoint):
    _config, inv = checkpoint
    assert len(inv) == FACTS["tensors"]
    assert dict(Counter(dt for dt, _s in inv.values())) == FACTS["dtype_counts"]
    assert sum(name.startswith("mtp.0.") for name in inv) == FACTS["mtp_tensors"]
    assert sum(_numel(s) * BYTES[dt] for dt, s in inv.values()) == FACTS["index_total_size"]
    assert sum(_numel(s) for _dt, s in inv.values()) == FACTS["hub_safetensors_total"]


def test_converter_rules_give_the_template(checkpoint):
    """Every tensor maps by the [deepseek4.hf] table; the result is the deepseek4 template's map, in GGUF order,
    with the converter's types derived from the header dtypes (FP8 -> q8_0, 2-D BF16 -> bf16, 1-D -> f32,
    tid2eid I64 -> i32, packed FP4 -> mxfp4), not copied from the template."""
    config, inv = checkpoint
    tensors, dropped = to_gguf("deepseek4", _hf(inv), config)
    ref = builtin("deepseek-v4-flash")
    assert [(t.name, t.shape, t.dtype) for t in tensors] == [(t.name, t.shape, t.dtype) for t in ref.tensors]
    # dropped: the MTP block and every FP8/FP4 scale companion (folded into its weight); nothing else
    scales = sum(name.endswith(".scale") and not name.startswith("mtp.") for name in inv)
    assert len(dropped) == FACTS["mtp_tensors"] + scales


def test_total_parameters_match_the_hub_count_like_for_like(checkpoint):
    """The Hub's safetensors total (158,069,433,298 elements) counts every stored element: packed FP4 bytes once
    (two parameters each), the UE8M0/FP8 scales, and the MTP block.  Unpacked, without scales and MTP, it is the
    GGUF's parameter count exactly."""
    _config, inv = checkpoint
    scales = sum(_numel(s) for n, (dt, s) in inv.items() if n.endswith(".scale"))
    packed = sum(_numel(s) for _n, (dt, s) in inv.items() if dt == "I8")
    mtp_logical = sum(_numel(s) * (2 if dt == "I8" else 1) for n, (dt, s) in inv.items()
                      if n.startswith("mtp.") and not n.endswith(".scale"))
    like_for_like = FACTS["hub_safetensors_total"] - scales + packed - mtp_logical
    assert param_counts(builtin("deepseek-v4-flash")).total == like_for_like


def test_hf_repo_reads_deepseek_v4_headers_only(checkpoint, monkeypatch):
    from planner.source import load_model

    config, inv = checkpoint
    names = sorted(inv)
    shards: dict[str, dict] = {}
    for i, name in enumerate(names):
        shard = f"model-{i * FACTS['shards'] // len(names) + 1:05d}-of-{FACTS['shards']:05d}.safetensors"
        entries = shards.setdefault(shard, {})
        start = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in entries.values())
        dt, shape = inv[name]
        entries[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [start, start + _numel(shape) * BYTES[dt]]}
    files = {shard: _st_bytes(dict(e, __metadata__={"format": "pt"})) + bytes(256 << 10) for shard, e in shards.items()}
    files["config.json"] = json.dumps(config).encode()
    files["model.safetensors.index.json"] = json.dumps({
        "metadata": {"total_size": FACTS["index_total_size"]},
        "weight_map": {n: s for s, e in shards.items() for n in e}}).encode()
    server = _RepoServer(files)
    monkeypatch.setenv("HF_ENDPOINT", server.url.rsplit("/", 1)[0])
    try:
        tm = load_model("hf://deepseek-ai/DeepSeek-V4-Flash")
    finally:
        server.close()
    assert tm.name == "DeepSeek-V4-Flash" and tm.params.arch == "deepseek4"
    ref = builtin("deepseek-v4-flash")
    assert [(t.name, t.shape, t.dtype) for t in tm.tensors] == [(t.name, t.shape, t.dtype) for t in ref.tensors]
    assert len(shards) == FACTS["shards"]
    # per shard: the 8-byte length and the JSON header (read in 64 KiB blocks), none of the 256 KiB of data
    header_bytes = sum(8 + header_length(files[s][:8]) for s in shards)
    got = sum(n for name, n in server.served if name.endswith(".safetensors"))
    assert header_bytes <= got <= header_bytes + len(shards) * (64 << 10) < sum(len(files[s]) for s in shards)


def test_unknown_v4_tensor_is_named(checkpoint):
    config, _inv = checkpoint
    with pytest.raises(UnknownModelError, match="no GGUF name for HF tensor 'layers.0.attn.mystery.weight'"):
        to_gguf("deepseek4", (HFTensor("layers.0.attn.mystery.weight", "BF16", (2, 2), 8),), config)
