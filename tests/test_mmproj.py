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
