"""`check` proposes the fix: the smallest change that makes a command fit, or a faster one, each re-checked.

Expected bytes are computed here by hand from the model's published shapes (Qwen3-30B-A3B config.json:
hidden_size 2048, 32 query heads / 4 KV heads of head_dim 128, moe_intermediate_size 768, 128 experts, 48 layers,
vocab 151936) and ggml's type sizes (ggml-common.h: block_q8_0 = ggml_half d + int8_t qs[32] = 34 bytes per 32
weights; f32 4 bytes, f16 2 bytes), never read back from the planner's output.
"""

import json
import math
import shlex

import pytest
from click.testing import CliRunner

from planner.cli import main

GIB = 1 << 30
Q8 = 34 / 32                                   # bytes per weight of q8_0 (ggml-common.h block_q8_0)
N_LAYER, N_EMBD, N_FF_EXP, N_EXPERT, VOCAB = 48, 2048, 768, 128, 151936
EXPERT_LAYER = int(3 * N_EMBD * N_FF_EXP * N_EXPERT * Q8)          # gate, up, down of one layer: 641,728,512
MIX = ["qwen3-30b-a3b", "--base-type", "Q8_0", "--pure", "--vram", "24", "--ram", "64"]
BASE = ["llama-server", "-m", "q.gguf", "-c", "32768", "-ngl", "99"]


def check(*cmd: str) -> tuple[int, dict]:
    r = CliRunner().invoke(main, ["check", *MIX, "--json", "--", *cmd])
    assert r.exit_code in (0, 2), r.output
    return r.exit_code, json.loads(r.stdout)


def cuda0_non_compute_bytes() -> int:
    """Everything but token_embd on CUDA0 under -ngl 99, and the f16 KV cache, by hand."""
    q8 = lambda *shape: int(math.prod(shape) * Q8)   # noqa: E731
    attn = q8(N_EMBD, 4096) + 2 * q8(N_EMBD, 512) + q8(4096, N_EMBD)
    norms = 4 * (2 * N_EMBD + 2 * 128)                          # attn_norm, ffn_norm, q_norm, k_norm (f32)
    router = 4 * N_EMBD * N_EXPERT                              # ffn_gate_inp stays f32 (never quantized)
    weights = N_LAYER * (attn + norms + router + EXPERT_LAYER) + q8(N_EMBD, VOCAB) + 4 * N_EMBD
    kv = N_LAYER * 32768 * (512 + 512) * 2                      # K and V rows of 4 x 128, f16
    return weights + kv


def test_overflowing_command_gets_the_fewest_expert_layers_and_the_fix_fits():
    code, doc = check(*BASE)
    assert code == 2
    cuda0 = next(d for d in doc["memory"]["devices"] if d["device"] == "CUDA0")
    compute = next(t["bytes"] for t in cuda0["terms"] if t["name"] == "compute")   # the one estimate
    overflow = cuda0_non_compute_bytes() + compute + GIB - 24 * GIB          # margin: the 1 GiB default
    assert -cuda0["free_bytes"] == overflow
    k = math.ceil(overflow / EXPERT_LAYER)                                    # 18 layers of 0.598 GiB
    fix = doc["fix"]
    assert fix["reason"].startswith("does not fit: CUDA0 over by")
    best = fix["fix"]
    assert best["kind"] == "experts-to-cpu" and best["fits"]
    assert best["moved_bytes"] == k * EXPERT_LAYER
    assert best["free_bytes"]["CUDA0"] == k * EXPERT_LAYER - overflow
    # the last k layers go (ik PR 2262: CPU experts last measured faster PP than first)
    moved = [a for a in best["argv"] if "exps=CPU" in a]
    assert moved == [r"blk\.(3[0-9]|4[0-7])\.ffn_(down|gate|up)_exps=CPU"] and N_LAYER - k == 30
    # fed back to check, the fixed command fits and proposes nothing more (less than a layer is left)
    code2, doc2 = check(*best["argv"])
    assert code2 == 0 and doc2["fix"] is None
    # one layer fewer does not fit: the fix is the smallest of its kind
    fewer = [a.replace("3[0-9]", "3[1-9]") for a in best["argv"]]
    assert check(*fewer)[0] == 2
    # the plan's own command for the same mix and machine, checked the same way
    assert fix["plan"]["fits"] and "-ot" in fix["plan"]["argv"]


def test_fitting_but_slow_command_gets_experts_back_on_the_gpu():
    code, doc = check(*BASE, "-ot", "exps=CPU")
    assert code == 0
    free = next(d["free_bytes"] for d in doc["memory"]["devices"] if d["device"] == "CUDA0")
    k = free // EXPERT_LAYER                                                  # whole layers that fit
    best = doc["fix"]["fix"]
    assert best["kind"] == "experts-to-gpu" and best["fits"]
    assert best["moved_bytes"] == k * EXPERT_LAYER and best["free_bytes"]["CUDA0"] == free - k * EXPERT_LAYER
    assert best["tg_tps"] > doc["speed"]["tg_tps"] * 1.02
    assert best["argv"].index(next(a for a in best["argv"] if a.endswith("=CUDA0"))) < best["argv"].index("exps=CPU")
    code2, doc2 = check(*best["argv"])
    assert code2 == 0 and doc2["speed"]["tg_tps"] == pytest.approx(best["tg_tps"])


def test_text_output_names_the_change_and_the_command():
    r = CliRunner().invoke(main, ["check", *MIX, "--", *BASE])
    assert r.exit_code == 2
    assert "fix (does not fit: CUDA0 over by" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("llama-server") and "exps=CPU" in x)
    assert check(*shlex.split(line))[0] == 0
