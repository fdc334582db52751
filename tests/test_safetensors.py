"""safetensors headers -> GGUF tensors, checked against two real checkpoints' index files.

The index's ``metadata.total_size`` is Hugging Face's own byte count of the real tensors: shard headers built
here from the captured names and the config must add up to it exactly, and their GGUF mapping must equal what
the architecture template builds from the same config.json.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import pytest

from planner.errors import GGUFFormatError, UnknownModelError
from planner.safetensors import HFTensor, header_length, parse_header, parse_index, to_gguf
from planner.tensors import from_config

HF = Path(__file__).parent / "fixtures" / "hf"


def _load(folder: str) -> tuple[dict, dict[str, str], int]:
    cfg = json.loads((HF / folder / "config.json").read_text())
    wm, total = parse_index(gzip.decompress((HF / folder / "model.safetensors.index.json.gz").read_bytes()))
    return cfg, wm, total


def _mixtral_shape(name: str, c: dict) -> tuple[int, ...]:
    """HF (row-major) shapes of MixtralForCausalLM parameters (transformers MixtralModel modules)."""
    h, heads, kv, ff, v, e = (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                              c["intermediate_size"], c["vocab_size"], c["num_local_experts"])
    hd = h // heads
    table = {r"embed_tokens\.weight|lm_head\.weight": (v, h), r"norm\.weight|layernorm\.weight": (h,),
             r"q_proj|o_proj": (h, h), r"k_proj|v_proj": (kv * hd, h), r"\.w1\.|\.w3\.": (ff, h), r"\.w2\.": (h, ff),
             r"block_sparse_moe\.gate\.": (e, h)}
    return next(shape for rx, shape in table.items() if re.search(rx, name))


def _qwen35_shape(name: str, c: dict) -> tuple[int, ...]:
    """HF shapes of Qwen3_5MoeForCausalLM parameters (transformers Qwen3_5Moe modules)."""
    h, v, hd = c["hidden_size"], c["vocab_size"], c["head_dim"]
    kd = c["linear_key_head_dim"] * c["linear_num_key_heads"]
    vd = c["linear_value_head_dim"] * c["linear_num_value_heads"]
    nv, fe, fs = c["linear_num_value_heads"], c["moe_intermediate_size"], c["shared_expert_intermediate_size"]
    table = [
        (r"embed_tokens\.weight|lm_head\.weight", (v, h)), (r"layernorm\.weight|language_model\.norm\.", (h,)),
        (r"in_proj_qkv", (2 * kd + vd, h)), (r"in_proj_z", (vd, h)), (r"in_proj_[ab]\.", (nv, h)),
        (r"conv1d", (2 * kd + vd, 1, c["linear_conv_kernel_dim"])), (r"A_log|dt_bias", (nv,)),
        (r"linear_attn\.norm", (c["linear_value_head_dim"],)), (r"out_proj", (h, vd)),
        (r"q_proj", (c["num_attention_heads"] * hd * 2, h)), (r"[kv]_proj", (c["num_key_value_heads"] * hd, h)),
        (r"o_proj", (h, c["num_attention_heads"] * hd)), (r"[qk]_norm", (hd,)),
        (r"experts\.\d+\.(gate|up)_proj", (fe, h)), (r"experts\.\d+\.down_proj", (h, fe)),
        (r"shared_expert\.(gate|up)_proj", (fs, h)), (r"shared_expert\.down_proj", (h, fs)),
        (r"shared_expert_gate", (1, h)), (r"mlp\.gate\.weight", (c["num_experts"], h)),
    ]
    return next(shape for rx, shape in table if re.search(rx, name))


def _elements(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.parametrize("folder,shape_of,bytes_per", [
    ("wizardlm-2-8x22b", _mixtral_shape, 2),         # BF16
    ("qwen3.5-18b-reap-a3b", _qwen35_shape, 2),      # F16
])
def test_index_names_and_config_give_the_real_total_size_and_the_template(folder, shape_of, bytes_per):
    cfg, wm, total = _load(folder)
    hf = tuple(HFTensor(n, "BF16", shape_of(n, cfg), bytes_per * _elements(shape_of(n, cfg))) for n in sorted(wm))
    assert sum(t.nbytes for t in hf) == total                       # Hugging Face's own count of the weights
    ref = from_config(cfg)
    tensors, dropped = to_gguf(ref.params.arch, hf, cfg)
    assert dropped == ()
    assert sorted((t.name, t.shape, t.dtype) for t in tensors) == sorted((t.name, t.shape, t.dtype)
                                                                         for t in ref.tensors)
    assert [t.name for t in tensors] == [t.name for t in ref.tensors]   # GGUF block order


def _st_bytes(entries: dict) -> bytes:
    body = json.dumps(entries).encode()
    return struct.pack("<Q", len(body)) + body


def test_parse_header_roundtrip_and_bounds():
    data = _st_bytes({"__metadata__": {"format": "pt"},
                      "model.norm.weight": {"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}})
    (t,) = parse_header(data)
    assert (t.name, t.dtype, t.shape, t.nbytes) == ("model.norm.weight", "BF16", (8,), 16)
    assert header_length(data[:8]) == len(data) - 8
    with pytest.raises(GGUFFormatError, match="out of range"):
        header_length(struct.pack("<Q", 1 << 40))
    with pytest.raises(GGUFFormatError, match="truncated"):
        parse_header(data[:20])


@pytest.mark.parametrize("entry,match", [
    ({"dtype": "Q4", "shape": [8], "data_offsets": [0, 16]}, "unknown dtype"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 16]}, "bad shape"),
    ({"dtype": "F32", "shape": [8], "data_offsets": [16, 0]}, "bad data_offsets"),
    ("not an object", "not an object"),
])
def test_parse_header_rejects_hostile_entries(entry, match):
    with pytest.raises(GGUFFormatError, match=match):
        parse_header(_st_bytes({"x": entry}))


def test_parse_index_rejects_path_tricks():
    bad = json.dumps({"weight_map": {"a": "../../etc/passwd.safetensors"}}).encode()
    with pytest.raises(GGUFFormatError, match="unexpected shard"):
        parse_index(bad)


def test_mla_kv_b_split_per_layout():
    # DeepSeek-V3-shaped attention for one block: ik's template keeps kv_b plus 2-D k_b/v_b,
    # glm-dsa (llama.cpp converter layout) gets 3-D k_b/v_b only
    cfg = {"num_hidden_layers": 1, "num_attention_heads": 4, "qk_nope_head_dim": 8, "v_head_dim": 6,
           "kv_lora_rank": 16}
    kv_b = HFTensor("model.layers.0.self_attn.kv_b_proj.weight", "BF16", (4 * 14, 16), 2 * 4 * 14 * 16)
    ik, _ = to_gguf("deepseek2", (kv_b,), cfg)
    assert {t.name: t.shape for t in ik} == {"blk.0.attn_kv_b.weight": (16, 56), "blk.0.attn_k_b.weight": (8, 64),
                                             "blk.0.attn_v_b.weight": (16, 24)}
    ml, _ = to_gguf("glm-dsa", (kv_b,), cfg)
    assert {t.name: t.shape for t in ml} == {"blk.0.attn_k_b.weight": (8, 16, 4), "blk.0.attn_v_b.weight": (16, 6, 4)}


def test_mtp_vision_and_fp8_scales_are_dropped():
    cfg = {"num_hidden_layers": 1}
    hf = (HFTensor("model.layers.0.input_layernorm.weight", "BF16", (8,), 16),
          HFTensor("model.layers.1.input_layernorm.weight", "BF16", (8,), 16),          # MTP block
          HFTensor("model.visual.blocks.0.attn.qkv.weight", "BF16", (8, 8), 128),
          HFTensor("model.layers.0.self_attn.q_proj.weight_scale_inv", "F32", (1, 1), 4))
    tensors, dropped = to_gguf("qwen3", hf, cfg)
    assert [t.name for t in tensors] == ["blk.0.attn_norm.weight"] and len(dropped) == 3


def test_gpt_oss_mxfp4_experts():
    cfg = {"num_hidden_layers": 1}
    hf = (HFTensor("model.layers.0.mlp.experts.gate_up_proj_blocks", "U8", (4, 2 * 64, 2, 16), 4 * 128 * 32),
          HFTensor("model.layers.0.mlp.experts.gate_up_proj_scales", "U8", (4, 128, 2), 4 * 128 * 2),
          HFTensor("model.layers.0.mlp.experts.gate_up_proj_bias", "BF16", (4, 128), 4 * 128 * 2),
          HFTensor("model.layers.0.mlp.experts.down_proj_blocks", "U8", (4, 64, 2, 16), 4 * 64 * 32),
          HFTensor("model.layers.0.mlp.experts.down_proj_scales", "U8", (4, 64, 2), 4 * 64 * 2),
          HFTensor("model.layers.0.mlp.experts.down_proj_bias", "BF16", (4, 64), 4 * 64 * 2))
    tensors, _ = to_gguf("gpt-oss", hf, cfg)
    got = {t.name: (t.shape, t.dtype) for t in tensors}
    assert got["blk.0.ffn_gate_exps.weight"] == ((64, 64, 4), "mxfp4")
    assert got["blk.0.ffn_up_exps.weight"] == ((64, 64, 4), "mxfp4")
    assert got["blk.0.ffn_down_exps.weight"] == ((64, 64, 4), "mxfp4")
    assert got["blk.0.ffn_gate_exps.bias"] == ((64, 4), "f32") and got["blk.0.ffn_down_exps.bias"] == ((64, 4), "f32")


def test_unmapped_tensor_is_named():
    with pytest.raises(UnknownModelError, match="no GGUF name for HF tensor 'model.layers.0.mystery.weight'"):
        to_gguf("qwen3", (HFTensor("model.layers.0.mystery.weight", "BF16", (2, 2), 8),), {"num_hidden_layers": 1})


# ------------------------------------------------------------------------------ hf:// reads, local server

class _RepoServer:
    """A Range-capable HTTP server on 127.0.0.1 serving one repository folder from memory."""

    def __init__(self, files: dict[str, bytes]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        served = self.served = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                body = files.get(name)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                m = re.match(r"^bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")
                start, end = (int(m.group(1)), min(int(m.group(2) or len(body) - 1), len(body) - 1)) if m else \
                    (0, len(body) - 1)
                part = body[start:end + 1]
                served.append((name, len(part)))
                self.send_response(206 if m else 200)
                if m:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/Qwen3.5-18B-REAP-A3B-Coding"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _shard_files(folder: str, shape_of) -> dict[str, bytes]:
    """The captured config/index plus shard files holding only their safetensors header (no data)."""
    cfg, wm, _total = _load(folder)
    shards: dict[str, dict] = {}
    for name in sorted(wm):
        entries = shards.setdefault(wm[name], {})
        shape = shape_of(name, cfg)
        start = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in entries.values())
        entries[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [start, start + 2 * _elements(shape)]}
    # each shard: its header, then 256 KiB standing in for the tensor data a header-only read must not fetch
    files = {shard: _st_bytes(dict(entries, __metadata__={"format": "pt"})) + bytes(256 << 10)
             for shard, entries in shards.items()}
    files["config.json"] = (HF / folder / "config.json").read_bytes()
    files["model.safetensors.index.json"] = gzip.decompress((HF / folder / "model.safetensors.index.json.gz")
                                                            .read_bytes())
    return files


def test_read_repo_over_http_reads_headers_only():
    from planner.safetensors import read_repo

    files = _shard_files("qwen3.5-18b-reap-a3b", _qwen35_shape)
    server = _RepoServer(files)
    try:
        tm = read_repo(server.url)
    finally:
        server.close()
    ref = from_config(json.loads(files["config.json"]))
    assert [(t.name, t.shape, t.dtype) for t in tm.tensors] == [(t.name, t.shape, t.dtype) for t in ref.tensors]
    assert tm.name == "Qwen3.5-18B-REAP-A3B-Coding"            # the repository, not Qwen3_5MoeForCausalLM
    shards = [s for s in files if s.endswith(".safetensors")]
    assert len(shards) == 7
    # per shard: the 8-byte length and the header, nothing past it
    header_bytes = sum(8 + header_length(files[s][:8]) for s in shards)
    got = sum(n for name, n in server.served if name.endswith(".safetensors"))
    assert header_bytes <= got <= header_bytes + 7 * (64 << 10) < sum(len(files[s]) for s in shards)


def test_read_repo_missing_config_is_a_remote_error():
    from planner.errors import RemoteReadError
    from planner.safetensors import read_repo

    server = _RepoServer({})
    try:
        with pytest.raises(RemoteReadError, match="404"):
            read_repo(server.url)
    finally:
        server.close()


def test_qwen3_next_qkvz_is_deinterleaved():
    # Qwen3-Next's fused in_proj_qkvz [2*key_dim + 2*value_dim, n_embd] -> attn_qkv + attn_gate (GGUFs in use)
    cfg = {"num_hidden_layers": 1, "linear_key_head_dim": 4, "linear_num_key_heads": 2,
           "linear_value_head_dim": 4, "linear_num_value_heads": 4}
    t = HFTensor("model.layers.0.linear_attn.in_proj_qkvz.weight", "BF16", (2 * 8 + 2 * 16, 32), 2 * 48 * 32)
    tensors, _ = to_gguf("qwen3next", (t,), cfg)
    assert {x.name: x.shape for x in tensors} == {"blk.0.attn_qkv.weight": (32, 32), "blk.0.attn_gate.weight": (32, 16)}


def test_hf_repo_without_a_file_reads_config_and_headers(monkeypatch):
    # MODEL = hf://owner/repo: the Hub endpoint (HF_ENDPOINT) serves config.json, the index and shard headers
    from planner.source import load_model

    files = _shard_files("qwen3.5-18b-reap-a3b", _qwen35_shape)
    server = _RepoServer(files)
    monkeypatch.setenv("HF_ENDPOINT", server.url.rsplit("/", 1)[0])
    try:
        tm = load_model("hf://bryce-hoehn/Qwen3.5-18B-REAP-A3B-Coding")
    finally:
        server.close()
    assert tm.name == "Qwen3.5-18B-REAP-A3B-Coding" and tm.params.arch == "qwen35moe"
    assert len(tm.tensors) == len(from_config(json.loads(files["config.json"])).tensors)
