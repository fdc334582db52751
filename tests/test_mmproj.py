"""--mmproj: the projector's weights from its GGUF header (sum of ggml_nbytes)."""

import pytest
from conftest import gguf_bytes

from planner.errors import UnknownModelError
from planner.mmproj import read_mmproj


def test_mmproj_weight_bytes(tmp_path):
    kv = {"general.architecture": "clip", "clip.projector_type": "gemma3", "clip.has_vision_encoder": True}
    tensors = [("v.patch_embd.weight", (14, 14, 3, 1152), "f16"),        # 2 bytes x 677,376
               ("v.blk.0.attn_q.weight", (1152, 1152), "q8_0"),          # 1152/32*34 bytes per row x 1152
               ("mm.input_projection.weight", (1152, 5376), "bf16")]
    p = tmp_path / "mmproj-model-f16.gguf"
    p.write_bytes(gguf_bytes(kv, tensors))
    m = read_mmproj(p)
    assert m.projector == "gemma3" and m.n_tensors == 3
    assert m.weight_bytes == 2 * 14 * 14 * 3 * 1152 + 1152 // 32 * 34 * 1152 + 2 * 1152 * 5376


def test_model_file_is_not_an_mmproj(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(gguf_bytes({"general.architecture": "llama"}, [("token_embd.weight", (8, 4), "f32")]))
    with pytest.raises(UnknownModelError, match="not 'clip'"):
        read_mmproj(p)


# ------------------------------------------------------------------------- --mmproj through plan / place / check

def _write_mmproj(path):
    """A tiny real mmproj GGUF written by gguf-py's own writer (f16, f32 and Q8_0 tensors)."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_string("clip.projector_type", "gemma3")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_tensor("v.patch_embd.weight", np.ones((64, 3, 14, 14), dtype=np.float16))
    w.add_tensor("v.blk.0.ln1.bias", np.ones((64,), dtype=np.float32))
    q = gguf.quants.quantize(np.ones((256, 1024), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("mm.input_projection.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # gguf-py's reader is the independent count: the bytes of each tensor's data in the file
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors)


def test_mmproj_bytes_match_gguf_py(tmp_path):
    p = tmp_path / "mmproj-tiny.gguf"
    nbytes = _write_mmproj(p)
    assert nbytes == 64 * 3 * 14 * 14 * 2 + 64 * 4 + 256 * (1024 // 32 * 34)
    assert read_mmproj(p).weight_bytes == nbytes


def _terms(doc_json, device):
    memory = doc_json["plan"]["memory"] if "plan" in doc_json else doc_json["memory"]
    dev = next(d for d in memory["devices"] if d["device"] == device)
    return {t["name"]: t["bytes"] for t in dev["terms"]}


def _cli(args):
    import json

    from click.testing import CliRunner

    from planner.cli import main

    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)         # notes go to stderr


def test_place_charges_the_projector_to_the_first_gpu(tmp_path):
    p = tmp_path / "mmproj-tiny.gguf"
    nbytes = _write_mmproj(p)
    base = ["place", "qwen3-30b-a3b", "--base-type", "Q4_K_M", "--vram", "80,80", "--ram", "128", "--ub", "512",
            "--ctx", "8192", "--json"]
    plain, with_mm = _cli(base), _cli([*base, "--mmproj", str(p)])
    assert "mmproj" not in _terms(plain, "CUDA0")
    assert _terms(with_mm, "CUDA0")["mmproj"] == nbytes            # mtmd's CLIP backend: the first GPU
    assert "mmproj" not in _terms(with_mm, "CUDA1") and "mmproj" not in _terms(with_mm, "CPU")
    assert with_mm["plan"]["devices"] == plain["plan"]["devices"]   # same placement, one more buffer
    argv = with_mm["launch"]["argv"]
    assert argv[argv.index("--mmproj") + 1] == str(p) and "--no-mmproj-offload" not in argv
    assert "mmproj" not in plain["plan"]["run"]                      # the plan JSON is unchanged without it

    cpu = _cli([*base, "--mmproj", str(p), "--no-mmproj-offload"])
    assert _terms(cpu, "CPU")["mmproj"] == nbytes and "mmproj" not in _terms(cpu, "CUDA0")
    assert "--no-mmproj-offload" in cpu["launch"]["argv"]


def test_check_reads_the_commands_mmproj(tmp_path):
    p = tmp_path / "mmproj-tiny.gguf"
    nbytes = _write_mmproj(p)
    doc = _cli(["check", "qwen3-30b-a3b", "--base-type", "Q4_K_M", "--vram", "24", "--ram", "64", "--json", "--",
                "llama-server", "-c", "8192", "-ngl", "99", "--mmproj", str(p)])
    assert _terms(doc, "CUDA0")["mmproj"] == nbytes
    assert not any("--mmproj" in w for w in doc.get("warnings", []))


# ------------------------------------------------------------------------- the projector's compute buffer

def _published_logs() -> dict:
    import tomllib
    from pathlib import Path

    return tomllib.loads((Path(__file__).parent / "fixtures" / "mmproj" / "published_logs.toml").read_text())


@pytest.mark.parametrize("name", sorted(_published_logs()))
def test_compute_estimate_against_published_logs(name):
    """The warmup image side is exact (the engine logs it); the encoder's compute buffer is an estimate that
    leaves out the patch-embedding input stage: it must stay within 15 % under the logged buffer; the CPU side
    (the f32 warmup image) within 1 %."""
    from planner.mmproj import VisionShape, compute_estimate

    log = _published_logs()[name]
    vision = VisionShape(image_size=log["image_size"], patch_size=log["patch_size"], n_embd=log["n_embd"],
                         n_ff=log["n_ff"], n_head=log["n_head"], merge=log["n_merge"],
                         max_pixels=log["image_max_pixels"], gated_ffn=False)
    c = compute_estimate(vision, log["projector"], log["engine"])
    assert c.warmup == log["warmup_logged"]
    logged = log["cuda0_mib"] * 2**20
    assert 0.85 * logged <= c.device_bytes <= logged, f"{c.device_bytes / 2**20:.2f} vs {log['cuda0_mib']} MiB"
    if "cpu_mib" in log:
        assert abs(c.input_bytes - log["cpu_mib"] * 2**20) <= 0.01 * log["cpu_mib"] * 2**20


def test_gemma3_attention_matrix_without_flash_attention_per_engine():
    """gemma3 warms up at its image_size (896 / 14 = 64 x 64 = 4096 patches).  Without flash attention mainline
    materialises KQ for all 16 heads: 16 x 4096^2 x 4 B = 1 GiB (the figure ollama37 #63 reports for gemma3's
    attention matrix); ik computes one head at a time once n_pos^2 x n_head reaches 256 Mi (clip.cpp 2758): 64 MiB."""
    from planner.mmproj import VisionShape, compute_estimate

    v = VisionShape(image_size=896, patch_size=14, n_embd=1152, n_ff=4304, n_head=16, merge=0, max_pixels=0,
                    gated_ffn=False)
    fa = compute_estimate(v, "gemma3", "mainline")
    assert fa.warmup == 896 and fa.n_pos == 4096
    assert fa.device_bytes == (2 * 1152 + 4304) * 4096 * 4                  # the FFN block dominates
    assert compute_estimate(v, "gemma3", "mainline", flash_attn=False).device_bytes - fa.device_bytes == 1 << 30
    assert compute_estimate(v, "gemma3", "ik", flash_attn=False).device_bytes - fa.device_bytes == 64 << 20
    assert compute_estimate(v, "gemma3", "ik").device_bytes == fa.device_bytes


def test_kimi_k25_warmup_differs_per_engine():
    """ik overrides the max-pixels warmup with 256 tokens (clip.cpp 3326-3342); mainline keeps sqrt(max_pixels)."""
    from planner.mmproj import VisionShape, compute_estimate

    v = VisionShape(image_size=896, patch_size=14, n_embd=1152, n_ff=4304, n_head=16, merge=2,
                    max_pixels=1792 * 1792, gated_ffn=False)
    assert compute_estimate(v, "kimik25", "ik").warmup == 16 * 14 * 2
    assert compute_estimate(v, "kimik25", "mainline").warmup == 1792


def _write_vision_mmproj(path):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_string("clip.projector_type", "gemma3")
    w.add_bool("clip.has_vision_encoder", True)
    for key, value in (("image_size", 896), ("patch_size", 14), ("embedding_length", 1152),
                       ("feed_forward_length", 4304), ("attention.head_count", 16), ("block_count", 27)):
        w.add_uint32(f"clip.vision.{key}", value)
    w.add_tensor("v.patch_embd.weight", np.ones((64, 3, 14, 14), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_place_charges_the_projector_compute_buffer(tmp_path):
    p = tmp_path / "mmproj-gemma3.gguf"
    _write_vision_mmproj(p)
    base = ["place", "qwen3-30b-a3b", "--base-type", "Q4_K_M", "--vram", "80,80", "--ram", "128", "--ub", "512",
            "--ctx", "8192", "--json"]
    doc = _cli([*base, "--mmproj", str(p)])
    # by hand: 896 / 14 = 64 patches a side; the FFN block (2 x 1152 + 4304) x 4096 f32 dominates attention
    assert _terms(doc, "CUDA0")["mmproj_compute"] == (2 * 1152 + 4304) * 4096 * 4
    assert _terms(doc, "CPU")["mmproj_input"] == 896 * 896 * 3 * 4
    assert "mmproj_compute" not in _terms(doc, "CUDA1")
    cpu = _cli([*base, "--mmproj", str(p), "--no-mmproj-offload"])
    assert _terms(cpu, "CPU")["mmproj_compute"] == (2 * 1152 + 4304) * 4096 * 4
    assert "mmproj_compute" not in _terms(cpu, "CUDA0")
