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
