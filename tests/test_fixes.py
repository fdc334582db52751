"""`check` proposes the fix: the smallest change that makes a command fit, or a faster one, each re-checked.

Expected bytes are computed here by hand from the model's published shapes (Qwen3-30B-A3B config.json:
hidden_size 2048, 32 query heads / 4 KV heads of head_dim 128, moe_intermediate_size 768, 128 experts, 48 layers,
vocab 151936) and ggml's type sizes (ggml-common.h: block_q8_0 = ggml_half d + int8_t qs[32] = 34 bytes per 32
weights; f32 4 bytes, f16 2 bytes), never read back from the planner's output.
"""

import json
import math
import re
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


def test_two_gpus_one_over_budget_gets_a_rebalanced_split_and_it_is_minimal():
    """-ts 3,1 on 2 x 16 GiB overfills CUDA0; the fix keeps more on the GPUs than moving experts to the CPU only,
    and one expert layer fewer on the CPU no longer fits (the engine's own layer rule maps the new -ts)."""
    argv = ["llama-server", "-m", "q.gguf", "-c", "32768", "-ngl", "99", "-ts", "3,1"]
    r = CliRunner().invoke(main, ["check", "qwen3-30b-a3b", "--base-type", "Q8_0", "--pure", "--vram", "16,16",
                                  "--ram", "64", "--json", "--", *argv])
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    best, alts = doc["fix"]["fix"], doc["fix"]["alternatives"]
    assert best["fits"] and best["moved_bytes"] % EXPERT_LAYER == 0
    cpu_only = next(a for a in alts if a["kind"] == "experts-to-cpu")
    assert best["tg_tps"] > cpu_only["tg_tps"] and best["moved_bytes"] < cpu_only["moved_bytes"]

    def check2(cmd):
        res = CliRunner().invoke(main, ["check", "qwen3-30b-a3b", "--base-type", "Q8_0", "--pure", "--vram",
                                        "16,16", "--ram", "64", "--json", "--", *cmd])
        assert res.exit_code in (0, 2), res.output
        return json.loads(res.stdout)["memory"]["fits"]

    assert check2(best["argv"]) is True
    rule = next(a for a in best["argv"] if a.endswith("exps=CPU"))
    layers = [i for i in range(N_LAYER) if re.search(rule.split("=")[0], f"blk.{i}.ffn_up_exps.weight")]
    assert len(layers) * EXPERT_LAYER == best["moved_bytes"]
    for drop in (layers[0], layers[-1]):          # one layer fewer, from either end: over budget again
        keep = "|".join(str(i) for i in layers if i != drop)
        fewer = [a if a != rule else rf"blk\.({keep})\.ffn_(down|gate|up)_exps=CPU" for a in best["argv"]]
        assert check2(fewer) is False


def test_partial_offload_gets_all_layers_and_the_fewest_experts_on_the_cpu():
    """-ngl 10 fits but leaves attention of 38 layers on the CPU: the fix offloads every layer and moves the same
    18 expert layers as the overflowing -ngl 99 command needs (k computed by hand in the first test)."""
    code, doc = check("llama-server", "-m", "q.gguf", "-c", "32768", "-ngl", "10")
    assert code == 0
    best = doc["fix"]["fix"]
    assert best["argv"][best["argv"].index("-ngl") + 1] == str(N_LAYER + 1)
    assert r"blk\.(3[0-9]|4[0-7])\.ffn_(down|gate|up)_exps=CPU" in best["argv"]
    assert best["tg_tps"] > doc["speed"]["tg_tps"] * 1.02
    assert check(*best["argv"])[0] == 0


def test_kv_and_context_alternatives_are_listed_with_their_cost_and_checked():
    """17 of the 18 needed layers moved: 0.31 GiB over. A q8_0 KV cache (34 bytes per 32 values instead of 2 per
    value) or a shorter context also fit; they are listed, not chosen, and each fits when fed back."""
    rule = r"blk\.(3[1-9]|4[0-7])\.ffn_(down|gate|up)_exps=CPU"
    code, doc = check(*BASE, "-ot", rule)
    assert code == 2
    over = -next(d["free_bytes"] for d in doc["memory"]["devices"] if d["device"] == "CUDA0")
    alts = {a["kind"]: a for a in doc["fix"]["alternatives"]}
    kv = alts["kv"]
    saved = N_LAYER * 32768 * 1024 * 2 - N_LAYER * 32768 * 1024 * 34 // 32
    assert kv["fits"] and "q8_0" in kv["cost"]
    assert kv["free_bytes"]["CUDA0"] == saved - over
    ctx = alts["ctx"]
    n = int(ctx["argv"][ctx["argv"].index("-c") + 1])
    assert ctx["fits"] and n % 256 == 0 and n < 32768 and "context 32768 ->" in ctx["cost"]
    assert check(*ctx["argv"])[0] == 0
    longer = [str(n + 256) if a == str(n) else a for a in ctx["argv"]]
    assert check(*longer)[0] == 2
    assert doc["fix"]["fix"]["kind"] != "kv" and doc["fix"]["fix"]["kind"] != "ctx"


def test_ncmoe_command_gets_its_own_knob_turned_minimally():
    """mainline -ncmoe keeps the FIRST N layers' experts on the CPU (common/arg.cpp --n-cpu-moe); the fix raises N
    to the smallest value that fits. gpt-oss-20b (config.json: hidden 2880, intermediate 2880, 32 experts) stores its
    experts as MXFP4, block_mxfp4 = e + qs[16] = 17 bytes per 32 weights (ggml-common.h)."""
    layer = 3 * 2880 * 2880 * 32 // 32 * 17                          # gate, up, down of one layer
    args = ["gpt-oss-20b", "--vram", "8", "--ram", "32", "--engine", "mainline", "--json", "--"]
    cmd = ["llama-server", "-m", "q.gguf", "-c", "16384", "-ngl", "99", "-ncmoe", "2"]

    def run(c):
        r = CliRunner().invoke(main, ["check", *args, *c])
        assert r.exit_code in (0, 2), r.output
        return json.loads(r.stdout)

    doc = run(cmd)
    best = doc["fix"]["fix"]
    assert best["kind"] == "ncmoe" and best["fits"]
    n = int(best["argv"][best["argv"].index("-ncmoe") + 1])
    assert best["moved_bytes"] == (n - 2) * layer
    assert run(best["argv"])["memory"]["fits"] is True
    assert run([*cmd[:-1], str(n - 1)])["memory"]["fits"] is False


def test_a_mainline_command_over_by_its_default_slots_is_offered_one_slot():
    """mainline's llama-server without -np runs 4 slots sharing one unified cache (common/arg.cpp:1403,
    tools/server/server.cpp:156-160 @0c1e57098); for gemma-3 that is a window cache of n_swa x 4 + ub cells per
    SWA layer instead of n_swa + ub (src/llama-kv-cache-iswa.cpp:73).  When that is what does not fit, -np 1 is
    listed (it gives up concurrent requests, so it is an alternative, never the fix) and re-checks as fitting."""
    base = ["check", "gemma-3-27b", "--base-type", "Q4_K_M", "--ram", "64", "--engine", "mainline", "--json"]
    cmd = ["--", "llama-server", "-m", "x.gguf", "-c", "32768", "-ngl", "99", "-fa", "on"]

    def cuda0(extra: list[str], vram: str) -> dict:
        r = CliRunner().invoke(main, [*base, "--vram", vram, *cmd, *extra])
        doc = json.loads(r.stdout)
        return doc, next(d for d in doc["memory"]["devices"] if d["device"] == "CUDA0")

    _, four = cuda0([], "80")
    _, one = cuda0(["-np", "1"], "80")
    assert one["total_bytes"] < four["total_bytes"]
    vram = f"{(one['total_bytes'] + four['total_bytes']) / 2 / 2**30:.3f}"
    doc, dev = cuda0([], vram)
    assert not dev["fits"]
    alts = doc["fix"]["alternatives"]
    slot = next(a for a in alts if a["change"] == "-np 1")
    assert slot["fits"] and slot["argv"][-2:] == ["-np", "1"]
    assert doc["fix"]["fix"]["change"] != "-np 1"
