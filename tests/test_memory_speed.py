from pathlib import Path

import pytest

from planner.hardware import load_profile
from planner.launch import parse_server_command, placement_from_command
from planner.memory import CPU, GIB, MIB, Placement, RunConfig, kv_bytes_per_layer, memory_report, mix_bytes
from planner.check import evaluate
from planner.planning import place
from planner.request import PlanRequest
from planner.speed import estimate_speed
from planner.tensors import builtin

SEED_ARGV = [tok for line in (Path(__file__).parents[1] / "examples/seed-command.sh").read_text().splitlines()
             if line.strip() and not line.startswith("#") for tok in line.split()]


def seed_mix(tm):
    """The seed card's mix by role (planner.quantize reproduces it from the recipe; see test_quantize)."""
    out = {}
    for t in tm.tensors:
        if t.n_dims < 2 or t.role == "ffn_gate_inp":
            out[t.name] = t.dtype
        elif t.role.startswith("attn_"):
            out[t.name] = "iq6_k"
        elif t.role in ("token_embd", "output"):
            out[t.name] = "q8_0"
        elif t.role == "ffn_down_exps":
            out[t.name] = "iq4_k"
        else:
            out[t.name] = "iq3_k"
    return out


@pytest.fixture(scope="module")
def seed():
    tm = builtin("qwen3-235b-a22b")
    return tm, seed_mix(tm), load_profile("rtx3090ti-9950x-96g")


def test_kv_cache_seed_exact(seed):
    tm, _, _ = seed
    cfg = RunConfig(ctx=32768, type_k="q8_0", type_v="q8_0")
    # K: 136 B per 128-wide head row x 4 heads; V: 544 B per 512-wide row; 32768 cells; 94 layers
    assert kv_bytes_per_layer(tm.params, cfg) == (136 * 4 + 544) * 32768
    assert kv_bytes_per_layer(tm.params, cfg) * 94 == 3196 * MIB


@pytest.mark.parametrize("ctx,fa,cells", [(1000, True, 1024), (1000, False, 1024), (1001, False, 1024),
                                          (33, False, 64), (33, True, 256)])   # FA pads to 256, no FA to 32
def test_context_padding(ctx, fa, cells):
    assert RunConfig(ctx=ctx, flash_attn=fa).kv_size == cells


def test_q8_kv_row_meta_counted_per_head(seed):
    tm, _, _ = seed
    cfg = RunConfig(ctx=256, type_k="q8_KV", type_v="f16")
    assert kv_bytes_per_layer(tm.params, cfg) == (8 + 128) * 4 * 256 + 512 * 2 * 256


def test_seed_command_check_is_exact_and_fits(seed):
    tm, mix, hw = seed
    parsed = parse_server_command(SEED_ARGV, engine="ik-2025")
    pl = placement_from_command(tm, parsed, ["CUDA0"])
    res = evaluate(tm, mix, pl, hw, parsed.run)
    sizes = mix_bytes(tm, mix)
    gpu = sum(b for n, b in sizes.items() if pl.device_of(n) == "CUDA0")
    cpu = sum(b for n, b in sizes.items() if pl.device_of(n) == CPU)
    assert res.memory.kv_cache_bytes == 3196 * MIB
    assert res.memory.device("CUDA0").term("weights") == gpu
    assert res.memory.device("CPU").term("weights") == cpu
    assert gpu + cpu == sum(sizes.values())
    assert f"{sum(sizes.values()) / GIB:.3f}" == "106.830"
    assert res.memory.fits, res.problems


def test_seed_speed_within_published_band(seed):
    tm, mix, hw = seed
    parsed = parse_server_command(SEED_ARGV, engine="ik-2025")
    pl = placement_from_command(tm, parsed, ["CUDA0"])
    s = estimate_speed(tm, mix, pl, hw, parsed.run)
    assert abs(s.tg_tps - 10.7) / 10.7 <= 0.20, s.tg_tps          # card: ~10 tok/s TG (10.7 in sweep-bench)
    assert abs(s.pp_tps - 140) / 140 <= 0.30, s.pp_tps            # card: up to 140 tok/s PP at -ub 512
    s2048 = estimate_speed(tm, mix, pl, hw, RunConfig(ubatch=2048, batch=2048, threads=16))
    assert s2048.pp_tps > 2.5 * s.pp_tps                          # -ub 2048 triples PP on hybrid rigs
    assert s.tg_tps_ctx < s.tg_tps                                # KV reads grow with depth


def test_place_seed_mix_puts_at_least_the_cards_layers_on_gpu(seed):
    tm, mix, hw = seed
    plan = place(tm, mix, hw, PlanRequest(run=RunConfig(threads=16)))
    gpu_layers = sorted({t.layer for t in tm.tensors if t.is_expert and plan.devices[t.name] == "CUDA0"
                         and t.role == "ffn_up_exps"})
    assert gpu_layers[:12] == list(range(12)) and len(gpu_layers) >= 12
    assert plan.memory.fits and plan.solver.status in ("OPTIMAL", "OPTIMAL_WITHIN_GAP") and plan.solver.gap <= 1e-4
    assert plan.memory.device("CUDA0").free_bytes >= 0
    sizes = mix_bytes(tm, mix)
    assert plan.memory.device("CUDA0").term("weights") == sum(
        b for n, b in sizes.items() if plan.devices[n] == "CUDA0")            # exact, re-derived here
    # one more expert layer on the GPU would not fit: the placement is as full as the budget allows
    nxt = min(t.layer for t in tm.tensors if t.is_expert and plan.devices[t.name] == CPU)
    more = dict(plan.devices)
    for t in tm.tensors:
        if t.is_expert and t.layer == nxt:
            more[t.name] = "CUDA0"
    fuller = memory_report(tm, mix, Placement(more, plan.layer_device, ("CUDA0", CPU)), plan.budgets, plan.run)
    assert not fuller.device("CUDA0").fits


@pytest.mark.parametrize("fa,tk,tv,per_token", [
    (True, "f16", "f16", 576 * 2),        # facts §7: DeepSeek-V3 MLA, FA: 1152 B per token per layer
    (True, "q8_0", "f16", 576 // 32 * 34),  # K type decides with FA
    (False, "q8_0", "f16", 576 * 2),      # without FA (mla 2/3) the V type decides
])
def test_mla_kv_cache(fa, tk, tv, per_token):
    from planner.tensors import ModelParams

    p = ModelParams(arch="deepseek2", n_layer=61, n_embd=7168, n_vocab=129280, n_head=128, n_head_kv=128,
                    head_dim=192, kv_lora_rank=512, n_rot=64)
    cfg = RunConfig(ctx=256, type_k=tk, type_v=tv, flash_attn=fa)
    assert kv_bytes_per_layer(p, cfg) == per_token * 256
    if (fa, tk) == (True, "f16"):
        assert kv_bytes_per_layer(p, cfg) * 61 // 256 == 70_272     # per token, all 61 layers
