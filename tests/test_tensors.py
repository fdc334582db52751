import json

import pytest

from planner.errors import UnknownModelError
from planner.source import load_model
from planner.tensors import TensorInfo, builtin, from_config


def test_qwen3_235b_matches_seed_card_table():
    tm = builtin("qwen3-235b-a22b")
    assert len(tm.tensors) == 1131 and tm.params.n_layer == 94
    by = tm.by_name()
    # ggml ne order, as the seed card prints them
    assert by["blk.1.ffn_down_exps.weight"].shape == (1536, 4096, 128)
    assert by["blk.1.ffn_gate_exps.weight"].shape == (4096, 1536, 128)
    assert by["blk.1.attn_q.weight"].shape == (4096, 8192)
    assert by["blk.1.attn_k.weight"].shape == (4096, 512)
    assert by["blk.1.attn_output.weight"].shape == (8192, 4096)
    assert by["blk.1.ffn_gate_inp.weight"].shape == (4096, 128) and by["blk.1.ffn_gate_inp.weight"].dtype == "f32"
    assert by["token_embd.weight"].shape == (4096, 151936)
    assert tm.tensors[0].name == "token_embd.weight" and tm.tensors[-1].name == "output.weight"


QWEN3_30B_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
    "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768, "intermediate_size": 6144,
    "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
}


def test_config_json_equals_builtin(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(QWEN3_30B_CONFIG))
    from_file = load_model(str(p))
    ref = builtin("qwen3-30b-a3b")
    assert [(t.name, t.shape, t.dtype) for t in from_file.tensors] == [(t.name, t.shape, t.dtype) for t in ref.tensors]
    assert from_file.params.n_expert_used == 8 and from_file.params.n_ctx_train == 40960
    # the folder holding config.json works too
    assert len(load_model(str(tmp_path)).tensors) == len(ref.tensors)


def test_tied_embeddings_drop_output():
    cfg = dict(QWEN3_30B_CONFIG, tie_word_embeddings=True)
    tm = from_config(cfg)
    assert "output.weight" not in tm.by_name() and tm.params.tied


def test_dense_config_uses_dense_template():
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
           "max_position_embeddings": 131072}
    tm = from_config(cfg)
    assert tm.by_name()["blk.0.ffn_down.weight"].shape == (14336, 4096)
    assert tm.by_name()["blk.0.attn_k.weight"].shape == (4096, 1024)     # head_dim from hidden/heads = 128
    assert tm.params.n_expert == 0 and len(tm.tensors) == 2 + 32 * 9 + 1


@pytest.mark.parametrize("spec,msg", [
    ("no-such-model", "unknown model 'no-such-model'"),     # a name: list the built-ins
    ("/nope/model.gguf", "no such file"),                   # a path that does not exist
])
def test_unknown_model_errors(spec, msg):
    with pytest.raises(UnknownModelError, match=msg):
        load_model(spec)


def test_unsupported_config_model_type():
    with pytest.raises(UnknownModelError, match="model_type 'mamba'"):
        from_config({"model_type": "mamba"})


def test_role_and_layer_parsing():
    t = TensorInfo("blk.17.ffn_up_exps.weight", (4096, 1536, 128), "bf16")
    assert (t.role, t.layer, t.is_expert, t.n_expert, t.n_rows) == ("ffn_up_exps", 17, True, 128, 1536 * 128)
    g = TensorInfo("output_norm.weight", (4096,), "f32")
    assert (g.role, g.layer, g.n_rows) == ("output_norm", None, 1)
