"""Architectures as data checked against the sources of truth, and the built-ins against their model cards.

* Tensor names: every name a template emits is one gguf-py (the ``gguf`` package, MODEL_TENSORS/TENSOR_NAMES)
  lists for that architecture.
* Parameter counts: the model card's published total/active figures (``published`` in data/models.toml, each
  with its source), within 0.5 %.  Where a card rounds so coarsely that 0.5 % cannot hold ("1 trillion",
  "3B activated") or counts parts a GGUF does not carry (a vision encoder, MTP blocks), the case is an xfail
  that names why; strict, so it is noticed if it ever starts to hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from planner.errors import UnknownModelError
from planner.model_list import CardFigure, card_figures, list_models, param_counts, summarize
from planner.tensors import _architectures, build, builtin, builtin_info, builtin_names, from_config, from_config_file

GGUF_ARCHS = {gguf.MODEL_ARCH_NAMES[a]: a for a in gguf.MODEL_ARCH}


FIXTURE_NAMES = Path(__file__).parent / "fixtures" / "gguf_names"


def _gguf_names(arch: str) -> set[str]:
    if arch not in GGUF_ARCHS:
        # newer than gguf 0.19: the names transcribed from llama.cpp's gguf-py (the file cites the commit)
        lines = (FIXTURE_NAMES / f"{arch}.txt").read_text().splitlines()
        return {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    return {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[GGUF_ARCHS[arch]]}


@pytest.mark.parametrize("arch", sorted(a for a, t in _architectures().items() if "block" in t))
def test_template_tensor_names_come_from_gguf(arch):
    assert arch in GGUF_ARCHS or (FIXTURE_NAMES / f"{arch}.txt").is_file(), \
        f"{arch} is not an architecture gguf {gguf.__name__} knows"
    known = _gguf_names(arch)
    tpl = _architectures()[arch]
    for part in ("head", "block", "tail"):
        for name, _shape, _dtype, _cond in tpl[part]:
            stem = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
            key = f"blk.{{bid}}.{stem}" if part == "block" else stem
            assert key in known, f"{arch}: {key} is not in gguf's MODEL_TENSORS[{arch}]"


# header-only hybrid architectures (no template: a GGUF of them is read from its header) -> the tiny file the
# engines ran (tests/fixtures/kv_kinds/KIND.header.gguf, tools/engine_harness/make_tiny_arch.py)
HEADER_KINDS = {"bailingmoe3": "kda", "kimi-linear": "kimilinear", "jamba": "jamba", "granitehybrid": "granitehybrid",
                "falcon-h1": "falconh1", "nemotron_h": "nemotronh"}


@pytest.mark.parametrize("arch", sorted(HEADER_KINDS))
def test_header_only_hybrids_tensor_names_come_from_gguf(arch):
    """Every tensor of the engine-run file of each per-layer hybrid architecture (roles from tensor names) is
    one gguf's MODEL_TENSORS lists for it, and the architecture's recurrent_from rule is data."""
    from planner.source import load_model

    assert _architectures()[arch]["recurrent_from"] in ("kv0", "kv0_ff0", "all")
    known = _gguf_names(arch)
    path = Path(__file__).parent / "fixtures" / "kv_kinds" / f"{HEADER_KINDS[arch]}.header.gguf"
    tmap = load_model(str(path), check_size=False)
    assert tmap.params.arch == arch and tmap.params.recurrent_layers
    for t in tmap.tensors:
        stem = t.name.rsplit(".", 1)[0] if t.name.endswith((".weight", ".bias")) else t.name
        key = f"blk.{{bid}}.{stem.split('.', 2)[2]}" if t.layer is not None else stem
        assert key in known, f"{arch}: {key} is not in gguf's MODEL_TENSORS[{arch}]"


# published figure -> why 0.5 % cannot hold for it.  Each figure is compared like for like: ours counted the way
# the figure counts (published.counts in data/models.toml: kv_b_proj once as the checkpoint holds it, the token
# embedding in the active count where the card includes it), loaded tensors only (MTP/NextN and vision towers
# are not in the text GGUF).
_GAPS: dict[tuple[str, str], str] = {
    ("glm-4.6", "total"): "355B counts differently from the 352.8B loaded blocks (356.8B with the NextN block, "
                          "which shares the main embedding and head)",
    ("glm-4.6", "active"): "card rounds to 32B; 32.86B with the output head, 32.08B without",
    ("glm-4.5", "total"): "355B counts differently from the 352.8B loaded blocks (358.3B with the NextN block)",
    ("glm-4.5", "active"): "card rounds to 32B; 32.86B with the output head, 32.08B without",
    ("glm-5", "active"): "card rounds to 40B; 40.83B with the output head, 39.88B without",
    # Kimi: the card rounds; the exact audited figures are matched to the parameter below
    ("kimi-k2-0905", "total"): "card rounds 1.026T (checkpoint tensors, kv_b once) to '1 trillion'",
    ("kimi-k2-0905", "active"): "card rounds 31.69B (32.86B with token_embd) to '32 billion'",
    ("kimi-k2-thinking", "total"): "card rounds 1.026T to '1 trillion'",
    ("kimi-k2-thinking", "active"): "card rounds 31.69B (32.86B with token_embd) to '32 billion'",
    ("kimi-k2.5", "total"): "card rounds the 1.026T language model to '1T' (the 0.47B MoonViT goes to the mmproj)",
    ("kimi-k2.5", "active"): "card rounds 31.69B (32.86B with token_embd) to '32B'",
    ("deepseek-v4-flash", "active"): "card rounds 13.27B to '13B' (the total is checked exactly against the Hub's "
                                     "safetensors count in test_safetensors_v4)",
    # deepseek-ai/DeepSeek-V3 README_WEIGHTS.md (b4e06d88 on GitHub) gives 36.7B 'which includes 0.9B for
    # Embedding and 0.9B for the Output Head'; the tensors give 37.55B with the embedding and 36.63B without, so
    # that parenthesis does not add up; a later copy reads '36.6B (including 0.9B for the output Head)', and header
    # recounts give 36,625,618,432 -- ours to the parameter (test_counts_equal_exact_published_figures)
    ("deepseek-v3.1", "active"): "card rounds 36.63B (kv_b once, no token_embd) to '37B'",
    ("deepseek-v3.2", "active"): "card rounds 36.63B (kv_b once, no token_embd) to '37B'",
    ("llama-4-scout", "total"): "109B counts the checkpoint with its vision encoder (the mmproj); the text model "
                                "is 107.77B, + 0.872B vision = the Hub's 108,641,793,536 exactly "
                                "(test_counts_equal_exact_published_figures)",
    ("llama-4-scout", "active"): "card rounds 17.17B (with token_embd, as the card counts) to '17B active'",
    ("llama-4-maverick", "active"): "card rounds 17.19B (with token_embd, as the card counts) to '17B active'",
    ("minimax-m2", "total"): "card rounds 228.7B to '230 billion'",
    ("minimax-m2", "active"): "card rounds 10.4B to '10 billion'",
    ("qwen3-next-80b-a3b", "active"): "card rounds to '3B activated' (3.56B with the output head and attention)",
    # checked, not a counting mistake: the qwen35moe template matches a Qwen3.5-MoE checkpoint's safetensors
    # index tensor for tensor (test_safetensors); 16.33B counts the shared expert, its gate and the doubled
    # attn_q (output gate), without token_embd; with it 17.35B; the MTP block is not loaded (test below)
    ("qwen3.5-397b-a17b", "active"): "card rounds: 16.33B (17.35B with token_embd) to '17B activated'",
    # Qwen3-MoE has no shared expert: 62 x (attention 163.6M + 8 of 160 experts 377.5M + router) + head 0.93B
    ("qwen3-coder-480b-a35b", "active"): "card rounds: 34.54B (35.48B with token_embd) to '35B activated'",
}
_PUBLISHED = [(m, f.which) for m in builtin_names() for f in card_figures(m)]


def _figure(model: str, which: str) -> CardFigure:
    return next(f for f in card_figures(model) if f.which == which)


@pytest.mark.parametrize("model,which", [
    pytest.param(m, w, marks=pytest.mark.xfail(strict=True, reason=_GAPS[(m, w)])) if (m, w) in _GAPS else (m, w)
    for m, w in _PUBLISHED])
def test_parameter_counts_match_the_model_card(model, which):
    f = _figure(model, which)
    assert abs(f.ours - f.published) / f.published <= 0.005, f"{model} {which}: {f.ours / 1e9:.3f}B vs {f.published / 1e9}B"


# a card figure our count does not reproduce even at the card's own precision, like for like
_MISSES_AT_CARD_PRECISION: dict[tuple[str, str], str] = {
    ("glm-4.6", "total"): "352.80B loaded, 356.8B with the NextN layer the converter keeps (it shares the main "
                          "embedding and head): '355B' is neither, and the report does not say how it counts the MTP "
                          "layer",
    ("glm-4.6", "active"): "32.86B with the output head (0.78B), 32.08B without; the card does not say which",
    ("glm-4.5", "total"): "352.80B loaded, 358.34B with the NextN layer and its own embedding and head: '355B' is "
                          "neither",
    ("glm-4.5", "active"): "32.86B with the output head (0.78B), 32.08B without; the card does not say which",
    ("qwen3-next-80b-a3b", "active"): "3.56B with the output head (0.31B), 3.25B without; '3B' holds only without "
                                      "it, which the card does not state",
    ("qwen3.5-397b-a17b", "total"): "396.35B text model (exact, test_counts_equal_exact_published_figures); "
                                    "'397B' is text + the 0.456B vision tower (396.80B), which the text GGUF lacks",
    ("qwen3.5-397b-a17b", "active"): "16.33B, 17.35B with token_embd: '17B' holds only with the embedding, which "
                                     "the card does not state",
    ("llama-4-scout", "total"): "107.77B text model; '109B' includes the vision encoder (the mmproj): 108.64B "
                                "with it, exactly the Hub's count",
}


@pytest.mark.parametrize("model,which", [
    pytest.param(m, w, marks=pytest.mark.xfail(strict=True, reason=_MISSES_AT_CARD_PRECISION[(m, w)]))
    if (m, w) in _MISSES_AT_CARD_PRECISION else (m, w) for m, w in _PUBLISHED])
def test_count_is_the_card_figure_at_its_stated_precision(model, which):
    """Where the card rounds too coarsely for 0.5 %, our count must still be the card's figure at the precision the
    card states it to ("32B": [31.5B, 32.5B); "1T": [0.5T, 1.5T); "230B": [225B, 235B)), counted like for like."""
    f = _figure(model, which)
    assert f.published - f.unit / 2 <= f.ours < f.published + f.unit / 2, \
        f"{model} {which}: {f.ours / 1e9:.3f}B is not {f.published / 1e9}B to the {f.unit / 1e9}B"


_EXACT = [m for m in builtin_names() if "exact" in builtin_info(m).get("published", {})]


def _moonvit_params(vision: dict, text_hidden: int) -> int:
    """MoonViT tower + patch merger, by hand from vision_config: nn.Conv2d patch embedding with bias, a learned
    init_pos_emb_height x width table, pre-norm blocks of fused qkv / out / fc0 / fc1 with biases and two
    LayerNorms, a final LayerNorm; the merger: LayerNorm, then (k*k*d -> k*k*d -> text_hidden) with biases."""
    d, ff, layers, patch = (vision["vt_hidden_size"], vision["vt_intermediate_size"], vision["vt_num_hidden_layers"],
                            vision["patch_size"])
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
    tower = 3 * patch * patch * d + d + vision["init_pos_emb_height"] * vision["init_pos_emb_width"] * d \
        + layers * block + 2 * d
    kk = vision["merge_kernel_size"][0] * vision["merge_kernel_size"][1] * d
    return tower + 2 * d + (kk * kk + kk) + (kk * text_hidden + text_hidden)


def _llama4_vision_params(v: dict, text_hidden: int) -> int:
    """Llama 4's vision encoder, pixel-shuffle adapter and projector, by hand from vision_config (transformers
    Llama4VisionModel): an unfolded 14x14x3 patch projection without bias, a class embedding, (336/14)^2 + 1
    position embeddings, pre/post LayerNorms, blocks of q/k/v/o with biases, fc1/fc2 with biases and two
    LayerNorms; the adapter (4*d after the 0.5 pixel shuffle -> 4096 -> 4096, no biases) and the projector
    4096 -> text hidden (no bias)."""
    d, ff, layers, patch = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"], v["patch_size"]
    n_pos = (v["image_size"] // patch) ** 2 + 1
    block = 2 * d + 4 * (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
    encoder = 3 * patch * patch * d + d + n_pos * d + 4 * d + layers * block
    shuffled = int(d / (v["pixel_shuffle_ratio"] ** 2))
    adapter = shuffled * v["projector_input_dim"] + v["projector_input_dim"] * v["projector_output_dim"]
    return encoder + adapter + v["projector_output_dim"] * text_hidden


def _qwen3vl_vision_params(v: dict) -> int:
    """Qwen3.5's vision tower and merger, by hand from vision_config (transformers Qwen3-VL vision model): a
    Conv3d patch embedding (temporal x 16 x 16 x 3) with bias, a learned position table, pre-norm blocks of fused
    qkv / proj / fc1 / fc2 with biases and two LayerNorms; the merger: LayerNorm, then (m*m*d -> m*m*d ->
    out_hidden) with biases."""
    d, ff, layers, patch = v["hidden_size"], v["intermediate_size"], v["depth"], v["patch_size"]
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
    tower = 3 * v["temporal_patch_size"] * patch * patch * d + d + v["num_position_embeddings"] * d + layers * block
    kk = v["spatial_merge_size"] ** 2 * d
    return tower + 2 * d + (kk * kk + kk) + (kk * v["out_hidden_size"] + v["out_hidden_size"])


def test_qwen35_card_total_is_text_plus_vision():
    """The header audit splits Qwen3.5-397B into text 396,346,350,336 (ours exactly), vision 456,010,480 and MTP;
    the vision part counted by hand from vision_config is exactly the audit's, and text + vision is the card's
    '397B' to its precision (and within 0.5 %)."""
    exact = builtin_info("qwen3.5-397b-a17b")["published"]["exact"]
    vision = _qwen3vl_vision_params(builtin_config("qwen3.5-397b-a17b")["vision_config"])
    assert vision == exact["vision"]
    both = _figure("qwen3.5-397b-a17b", "total").ours + vision
    assert 396.5e9 <= both < 397.5e9 and abs(both - 397e9) / 397e9 <= 0.005


@pytest.mark.parametrize("model", _EXACT)
def test_counts_equal_exact_published_figures(model):
    """Exact figures (published.exact in data/models.toml, each with what it counts): header recounts of the
    released checkpoints, the Hub's safetensors totals, the engine's own n_params of a GGUF.  Ours like for like
    (published.counts: kv_b_proj once).  Kimi's audit also gives a per-token linear proxy: our active count
    without the 1-D weights (norms, the selection bias).  K2.5's total holds the MoonViT tower and its merger."""
    exact = builtin_info(model)["published"]["exact"]
    tm = builtin(model)
    vision = 0
    cfg = builtin_config(model)
    if cfg.get("model_type") == "kimi_k25":
        vision = _moonvit_params(cfg["vision_config"], cfg["vision_config"]["text_hidden_size"])
    elif cfg.get("model_type") == "llama4":
        vision = _llama4_vision_params(cfg["vision_config"], cfg["text_config"]["hidden_size"])
    nextn = 0
    if exact.get("with_nextn"):                        # the Hub counts the NextN block the converter keeps
        c = param_counts(tm)
        nextn = c.total - c.loaded
        assert nextn > 0
    assert _figure(model, "total").ours + nextn + vision == exact["total"]
    if "active" in exact:
        assert _figure(model, "active").ours == exact["active"]
    if "linear_active" in exact:
        one_d = sum(t.n_elements for t in tm.tensors if len(t.shape) == 1 and tm.is_loaded(t))
        assert _figure(model, "active").ours - one_d == exact["linear_active"]


def test_exact_figures_cover_the_rounded_cards():
    assert {"deepseek-v3.1", "kimi-k2-0905", "kimi-k2-thinking", "kimi-k2.5", "minimax-m2", "qwen3-coder-480b-a35b",
            "qwen3-next-80b-a3b", "mixtral-8x22b", "glm-4.5", "glm-4.6", "glm-5", "qwen3.5-397b-a17b",
            "llama-4-maverick", "llama-4-scout", "gemma-3-27b", "deepseek-v4-flash"} <= set(_EXACT)
    assert _moonvit_params(builtin_config("kimi-k2.5")["vision_config"], 7168) == 471_143_920
    # the same Llama 4 vision part closes both published totals (Scout's Hub count, Maverick's Fireworks count)
    assert _llama4_vision_params(builtin_config("llama-4-scout")["vision_config"], 5120) == 871_932_416


def test_card_conventions_are_applied():
    """kv_b_once removes exactly ik's k_b/v_b split (61 layers x (64 heads x (128 x 512) + 512 x (64 x 128)));
    active_token_embd adds exactly token_embd (Llama 4: 202048 x 5120)."""
    kimi = builtin("kimi-k2-0905")
    raw = param_counts(kimi)
    assert _figure("kimi-k2-0905", "total").ours == raw.loaded - 61 * 2 * 64 * 128 * 512
    scout = param_counts(builtin("llama-4-scout"))
    assert _figure("llama-4-scout", "active").ours == scout.active + 202048 * 5120


def test_gpt_oss_counts_to_the_digit():
    # OpenAI's gpt-oss model card, table 1: 116.83B total / 5.13B active; 20.91B / 3.61B
    big, small = param_counts(builtin("gpt-oss-120b")), param_counts(builtin("gpt-oss-20b"))
    assert round(big.total / 1e7) == 11683 and round(big.active / 1e7) == 513
    assert round(small.total / 1e7) == 2091 and round(small.active / 1e7) == 361


def test_listing_covers_every_builtin():
    rows = {m.name: m for m in list_models()}
    assert set(rows) == set(builtin_names())
    assert rows["gpt-oss-120b"].attention.startswith("GQA 64/8, SWA 128")
    assert rows["glm-5"].attention == "MLA + DSA indexer" and rows["glm-5"].n_layer == 78
    assert "delta-net 3:1" in rows["qwen3-next-80b-a3b"].attention
    assert rows["mixtral-8x22b"].arch == "llama" and rows["mixtral-8x22b"].n_expert == 8


# ------------------------------------------------------------------------------ shapes from the loaders

def test_gpt_oss_shapes_and_types():
    by = builtin("gpt-oss-120b").by_name()
    # ik create_openai_moe_tensors: wo {n_head * n_rot, n_embd}, sinks {n_head}, exps biases {n_ff_exp, n_expert}
    assert by["blk.0.attn_output.weight"].shape == (4096, 2880)
    assert by["blk.0.attn_sinks.weight"].shape == (64,)
    assert by["blk.0.ffn_up_exps.weight"].shape == (2880, 2880, 128) and by["blk.0.ffn_up_exps.weight"].dtype == "mxfp4"
    assert by["blk.0.ffn_down_exps.bias"].shape == (2880, 128)
    assert by["blk.0.ffn_gate_inp.bias"].shape == (128,)


def test_qwen3_next_layer_kinds():
    tm = builtin("qwen3-next-80b-a3b")
    by = tm.by_name()
    assert "blk.3.attn_q.weight" in by and "blk.0.attn_q.weight" not in by
    # attn_q is query + gate: {n_embd, n_embd_head_k * n_head * 2}
    assert by["blk.3.attn_q.weight"].shape == (2048, 256 * 16 * 2)
    # conv1d {d_conv, 2*key_dim + value_dim}
    # attn_qkv {n_embd, 2*key_dim + value_dim} + attn_gate {n_embd, value_dim} (the de-interleaved in_proj_qkvz)
    assert by["blk.0.attn_qkv.weight"].shape == (2048, 2 * 2048 + 4096)
    assert by["blk.0.attn_gate.weight"].shape == (2048, 4096)
    assert by["blk.0.ssm_conv1d.weight"].shape == (4, 2 * 2048 + 4096)
    assert by["blk.0.ssm_a"].shape == (32,) and by["blk.0.ssm_a"].layer == 0
    assert by["blk.0.ssm_norm.weight"].shape == (128,)
    assert by["blk.0.ffn_gate_inp_shexp.weight"].shape == (2048,)


def test_llama4_maverick_interleaves_moe():
    by = builtin("llama-4-maverick").by_name()
    assert "blk.0.ffn_gate.weight" in by and by["blk.0.ffn_gate.weight"].shape == (5120, 16384)
    assert by["blk.1.ffn_gate_exps.weight"].shape == (5120, 8192, 128)
    assert by["blk.1.ffn_up_shexp.weight"].shape == (5120, 8192)
    assert "blk.1.ffn_gate.weight" not in by


def test_glm5_shapes():
    by = builtin("glm-5").by_name()
    assert by["blk.0.indexer.attn_q_b.weight"].shape == (2048, 32 * 128)
    assert by["blk.0.indexer.attn_k.weight"].shape == (6144, 128)
    assert by["blk.0.attn_k_b.weight"].shape == (192, 512, 64)
    assert by["blk.0.attn_v_b.weight"].shape == (512, 256, 64)
    assert by["blk.78.nextn.eh_proj.weight"].shape == (2 * 6144, 6144)
    assert not builtin("glm-5").is_loaded(by["blk.78.nextn.eh_proj.weight"])


def test_glm46_nextn_block_shares_the_embedding_and_head():
    """GLM-4.6's checkpoint stores no model.layers.92.embed_tokens / shared_head.head (vllm-project/vllm issue
    25993: MTP "works fine with GLM-4.5, but not in GLM-4.6"), so its GGUF's NextN block has neither; GLM-4.5's
    has both.  ubergarm's GLM-4.6 BF16 (664.707 GiB, 16.003 BPW) is 2 x 151552 x 5120 bf16 elements smaller than
    the block with them would make it (test_published_sizes_cli sizes it through the CLI)."""
    g46, g45 = builtin("glm-4.6").by_name(), builtin("glm-4.5").by_name()
    for name in ("blk.92.nextn.embed_tokens.weight", "blk.92.nextn.shared_head_head.weight"):
        assert name not in g46 and g45[name].shape == (5120, 151552)
    assert g46["blk.92.nextn.eh_proj.weight"].shape == g45["blk.92.nextn.eh_proj.weight"].shape == (2 * 5120, 5120)
    assert len(g45) - len(g46) == 2


def test_mixtral_is_llama_with_experts():
    by = builtin("mixtral-8x22b").by_name()
    assert by["blk.0.ffn_gate_exps.weight"].shape == (6144, 16384, 8)
    assert "blk.0.ffn_gate.weight" not in by


def test_gemma3_tied_and_swa():
    tm = builtin("gemma-3-27b")
    assert tm.params.tied and "output.weight" not in tm.by_name()
    assert [tm.params.is_swa(i) for i in range(6)] == [True] * 5 + [False]


# ----------------------------------------------------------------------------------- config.json inputs

def test_config_of_a_family_without_a_builtin_plans(tmp_path):
    # Qwen3-Coder-30B-A3B (qwen3_moe): no built-in, the template covers it
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
           "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
           "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768, "vocab_size": 151936}
    folder = tmp_path / "Qwen3-Coder-30B-A3B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    tm = from_config_file(folder / "config.json")
    assert tm.name == "Qwen3-Coder-30B-A3B-Instruct"          # the folder, not Qwen3MoeForCausalLM
    assert len(tm.tensors) == 3 + 48 * 12


def test_config_name_from_name_or_path():
    cfg = dict(builtin_config("glm-4.6"), _name_or_path="zai-org/GLM-4.6")
    assert from_config(cfg).name == "GLM-4.6"


def builtin_config(name: str) -> dict:
    from planner.tensors import _models

    return dict(_models()[name]["config"])


def test_unknown_model_type_names_the_supported_ones():
    with pytest.raises(UnknownModelError, match="model_type 'phi3'.*supported: .*gpt_oss"):
        from_config({"model_type": "phi3", "hidden_size": 8})


def test_builtin_from_its_own_config_roundtrip():
    for name in ("gpt-oss-20b", "qwen3-next-80b-a3b", "llama-4-scout", "glm-5"):
        ref = builtin(name)
        again = build(ref.params, ref.name, ref.source)
        assert [(t.name, t.shape) for t in again.tensors] == [(t.name, t.shape) for t in ref.tensors]


def test_models_command_json():
    from click.testing import CliRunner

    from planner.cli import main

    r = CliRunner().invoke(main, ["models", "--json"])
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.output)}
    assert set(rows) == set(builtin_names())
    g = rows["gpt-oss-120b"]
    assert (g["arch"], g["n_layer"], g["n_expert"], g["n_expert_used"]) == ("gpt-oss", 36, 128, 4)
    assert round(g["total_params"] / 1e7) == 11683                 # the card's 116.83B


def test_deepseek_v4_flash_shapes_from_the_loader():
    """Shapes as llama.cpp src/models/deepseek4.cpp load_arch_tensors @00395eb2 creates them for the config's
    numbers (n_embd 4096, n_head 64, head_dim 512, q_lora 1024, o_groups 8, o_lora 1024, hc_mult 4, 256 experts
    of 2048, 6 used, indexer 64 x 128, num_hash_layers 3)."""
    tm = builtin("deepseek-v4-flash")
    by = tm.by_name()
    assert tm.params.compress_ratios[:5] == (0, 0, 4, 128, 4) and tm.params.n_layer == 43
    assert by["blk.0.attn_q_b.weight"].shape == (1024, 64 * 512)
    assert by["blk.0.attn_kv.weight"].shape == (4096, 512)                       # one K=V head
    assert by["blk.0.attn_output_a.weight"].shape == (64 * 512 // 8, 1024 * 8)
    assert by["blk.0.attn_output_b.weight"].shape == (8 * 1024, 4096)
    assert by["blk.0.hc_attn_fn.weight"].shape == (4 * 4096, (2 + 4) * 4)
    assert by["blk.0.hc_ffn_scale.weight"].shape == (3,)
    assert by["output_hc_fn.weight"].shape == (4 * 4096, 4) and by["output_hc_scale.weight"].shape == (1,)
    # ratio 0 (layers 0, 1): no compressor; ratio 4: coff 2 plus the indexer; ratio 128: coff 1, no indexer
    assert "blk.1.attn_compressor_kv.weight" not in by
    assert by["blk.2.attn_compressor_kv.weight"].shape == (4096, 2 * 512)
    assert by["blk.2.attn_compressor_ape.weight"].shape == (2 * 512, 4)
    assert by["blk.2.indexer.attn_q_b.weight"].shape == (1024, 64 * 128)
    assert by["blk.2.indexer_compressor_kv.weight"].shape == (4096, 2 * 128)
    assert by["blk.3.attn_compressor_kv.weight"].shape == (4096, 512)
    assert by["blk.3.attn_compressor_ape.weight"].shape == (512, 128)
    assert "blk.3.indexer.proj.weight" not in by
    # hash-routed layers carry tid2eid {n_expert_used, n_vocab} and no selection bias, the others the reverse
    assert by["blk.2.ffn_gate_tid2eid.weight"].shape == (6, 129280) and "blk.2.exp_probs_b.bias" not in by
    assert "blk.3.ffn_gate_tid2eid.weight" not in by and by["blk.3.exp_probs_b.bias"].shape == (256,)
    assert by["blk.0.ffn_gate_exps.weight"].dtype == "mxfp4"          # the converter repacks the FP4 experts
    assert "blk.43.attn_norm.weight" not in by                        # mtp.* skipped by the converter


def test_kimi_k25_text_model_is_kimi_k2():
    """Kimi-K2.5's text_config is Kimi-K2's (DeepseekV3ForCausalLM, 61 layers, 384 experts): the GGUF of the
    language model has the same tensors; the MoonViT tower goes to the mmproj (read with --mmproj)."""
    a, b = builtin("kimi-k2.5"), builtin("kimi-k2-thinking")
    assert a.params.arch == "deepseek2" and a.params.n_ctx_train == 262144
    assert [(t.name, t.shape) for t in a.tensors] == [(t.name, t.shape) for t in b.tensors]
    assert not any(t.name.startswith(("v.", "mm.")) for t in a.tensors)


def test_qwen_active_counts_decompose_from_the_config():
    """The active counts behind the two Qwen gaps, rebuilt by hand from config.json (HF names), not from the
    template: Qwen3-Coder-480B (Qwen3MoeForCausalLM: no shared expert) and Qwen3.5-397B (gated delta-net 3:1,
    gated attention with q doubled for the output gate, a shared expert with a sigmoid gate)."""
    h, L, heads, kv, hd, e, k, fe, vocab = 6144, 62, 96, 8, 128, 160, 8, 2560, 151936
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 2 * hd + h   # q, k, v, o, q/k norms, attn_norm
    moe = k * 3 * h * fe + h * e + h                                          # 8 experts, router, ffn_norm
    coder = L * (attn + moe) + h + h * vocab                                  # output_norm, output
    assert summarize("qwen3-coder-480b-a35b").active_params == coder

    h, L, vocab, e, k, fe, fs = 4096, 60, 248320, 512, 10, 1024, 1024
    heads, kv, hd = 32, 2, 256
    kd, vd, nv, conv = 16 * 128, 64 * 128, 64, 4
    full = h * 2 * heads * hd + 2 * h * kv * hd + heads * hd * h + 2 * hd
    linear = h * (2 * kd + vd) + h * vd + conv * (2 * kd + vd) + 2 * nv + 2 * h * nv + 128 + vd * h
    ffn = k * 3 * h * fe + h * e + h + 3 * h * fs                             # routed, router, shared gate, shared
    q35 = 15 * full + 45 * linear + L * (ffn + 2 * h) + h + h * vocab         # 2 norms per layer, output
    assert summarize("qwen3.5-397b-a17b").active_params == q35
