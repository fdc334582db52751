"""Speed model: mechanisms against engine rules and published measurements (sources in each test)."""

import importlib.util
import json
import sys
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from planner.hardware import load_profile
from planner.launch import parse_server_command, placement_from_command
from planner.memory import RunConfig
from planner.device_speed import device_speeds
from planner.speed import estimate_speed, gpu_fa_kernel, handoff_kinds, rtr_type, speed_terms
from planner.tensors import builtin

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("speed_accuracy", ROOT / "benchmarks" / "speed_accuracy.py")
acc = importlib.util.module_from_spec(spec)
sys.modules["speed_accuracy"] = acc
spec.loader.exec_module(acc)


@pytest.fixture(scope="module")
def seed():
    tm = builtin("qwen3-235b-a22b")
    hw = load_profile("rtx3090ti-9950x-96g")
    cmd = parse_server_command(["llama-sweep-bench", *shlex.split(acc.SEED)], engine="ik-2025")
    return tm, dict(acc.mix("mix-IQ3_K")), placement_from_command(tm, cmd, ["CUDA0"]), hw, cmd.run


def test_seed_rig_after_pr370(seed):
    # ik PR 370, ubergarm's seed-rig table: TG 10.76 at N_KV 0 and 8.95 at 32256, PP 142.16 (published_dev #289)
    tm, mix, pl, hw, run = seed
    s = estimate_speed(tm, mix, pl, hw, replace(run, engine="ik"), depths=(0, 32256))
    assert abs(s.tg_at(0) / 10.76 - 1) <= 0.20
    assert abs(s.tg_at(32256) / 8.95 - 1) <= 0.25
    assert abs(s.pp_at(0) / 142.16 - 1) <= 0.35


def test_depth_slowdown_follows_the_fa_kernel(seed):
    # the same run before PR 370 (vec kernel) loses 46 % of TG at 32K, after it 17 % (#287 vs #289)
    tm, mix, pl, hw, run = seed
    vec = estimate_speed(tm, mix, pl, hw, run, depths=(0, 32256))
    mma = estimate_speed(tm, mix, pl, hw, replace(run, engine="ik"), depths=(0, 32256))
    drop_vec = 1 - vec.tg_at(32256) / vec.tg_at(0)
    drop_mma = 1 - mma.tg_at(32256) / mma.tg_at(0)
    assert abs(drop_vec - (1 - 5.83 / 10.73)) <= 0.12 and abs(drop_mma - (1 - 8.95 / 10.76)) <= 0.12


@pytest.mark.parametrize("engine,tk,cc,want", [
    ("mainline", "f16", 8.6, "mma"),     # Ampere, f16 cache: mma (mainline fattn.cu, quoted in ik PR 370)
    ("mainline", "q8_0", 8.6, "vec"),    # quantized cache needs data conversion: vec
    ("mainline", "f16", 8.9, "vec"),     # Ada and newer: vec for batch 1
    ("ik", "q8_0", 8.9, "mma"),          # ik since PR 370: mma whenever the GQA ratio is even
    ("ik-2025", "f16", 8.6, "vec"),      # ik before PR 370
])
def test_fa_kernel_rule(engine, tk, cc, want):
    assert gpu_fa_kernel(engine, RunConfig(type_k=tk, type_v=tk), 16, cc) == want


def test_odd_gqa_ratio_never_uses_mma():
    assert gpu_fa_kernel("ik", RunConfig(), 3, 8.6) == "vec"


def test_rtr_repacks_without_cuda_kernels_stay_on_the_cpu_in_pp():
    # q8_0 -> q8_0_r8 has no CUDA kernel, iq3_k -> iq3_k_r4 has (quant_types.csv cuda_ik, ik 8337e4cd)
    assert rtr_type("q8_0") == "q8_0_r8" and rtr_type("iq3_k") == "iq3_k_r4" and rtr_type("iq6_k") == "iq6_k"
    tm = builtin("qwen3-235b-a22b")
    hw = load_profile("rtx3090ti-9950x-96g")
    cmd = parse_server_command(["x", *shlex.split(acc.SEED)], engine="ik-2025")
    pl = placement_from_command(tm, cmd, ["CUDA0"])
    q8 = speed_terms(tm, dict(acc.mix("Q8_0")), pl, hw, cmd.run)[0].pp
    iq3 = speed_terms(tm, dict(acc.mix("mix-IQ3_K")), pl, hw, cmd.run)[0].pp
    assert q8["pcie"] < 0.01 * iq3["pcie"] and q8["cpu_gemm"] > 0     # only the f32 routers still travel
    assert iq3["pcie"] > 1.0 and iq3["cpu_gemm"] == 0
    q8_mmap = speed_terms(tm, dict(acc.mix("Q8_0")), pl, hw, replace(cmd.run, load="no-mmap"))[0].pp
    assert q8_mmap["pcie"] > 0                       # without -rtr q8_0 stays q8_0, which the GPU multiplies


def test_ubatch_amortizes_the_pcie_copy(seed):
    tm, mix, pl, hw, run = seed
    s512 = estimate_speed(tm, mix, pl, hw, run)
    s2048 = estimate_speed(tm, mix, pl, hw, replace(run, ubatch=2048, batch=2048))
    assert s2048.pp_tps > 2.5 * s512.pp_tps      # the copy is per ubatch: 4x the tokens per copy
    assert abs(s2048.tg_tps / s512.tg_tps - 1) < 1e-9


def test_cpu_pp_grows_with_ubatch_for_moe():
    # Kimi-K2 CPU-only, ik PR 612 (ubergarm): PP 108 -> 258 tok/s from -ub 512 to 4096 (x2.39)
    tm = builtin("kimi-k2")
    hw = load_profile("cpu-epyc9654-768g")
    mix = {t.name: ("iq2_kl" if t.is_expert else "q8_0") if t.n_dims >= 2 else t.dtype for t in tm.tensors}
    pl = placement_from_command(tm, parse_server_command(["x"], engine="ik"), [])
    a = estimate_speed(tm, mix, pl, hw, RunConfig(engine="ik", ctx=12288, ubatch=512, batch=2048, load="no-mmap"))
    b = estimate_speed(tm, mix, pl, hw, RunConfig(engine="ik", ctx=12288, ubatch=4096, batch=4096, load="no-mmap"))
    assert abs((b.pp_tps / a.pp_tps) / 2.39 - 1) <= 0.35


def test_gpu_to_gpu_handoffs_cost_time():
    # experts of every other layer on a second GPU: each layer adds two GPU<->GPU hand-offs
    tm = builtin("qwen3-30b-a3b")
    hw = load_profile("2xrtx3090-epyc9354-384g")
    mix = {t.name: ("q4_K" if t.n_dims >= 2 else t.dtype) for t in tm.tensors}
    one = placement_from_command(tm, parse_server_command(["x", "-ngl", "99", "-ts", "1,0"], "ik"), ["CUDA0", "CUDA1"])
    two = placement_from_command(tm, parse_server_command(
        ["x", "-ngl", "99", "-ts", "1,0", "-ot", r"blk\.[0-9]*[13579]\.ffn_.*_exps=CUDA1"], "ik"), ["CUDA0", "CUDA1"])
    assert handoff_kinds(tm, one) == (0, 0) and handoff_kinds(tm, two)[1] == 48
    s1 = estimate_speed(tm, mix, one, hw, RunConfig(engine="ik"))
    s2 = estimate_speed(tm, mix, two, hw, RunConfig(engine="ik"))
    assert s2.tg_tps < s1.tg_tps


def test_numa_modes_change_cpu_bandwidth():
    hw = load_profile("cpu-2xgold6248-384g")              # 2 nodes, 281.6 GB/s peak in total
    run = RunConfig(threads=40)
    default = device_speeds(hw, run)["CPU"].mem_bw_gbs
    dist = device_speeds(hw, run, numa="distribute")["CPU"].mem_bw_gbs
    iso = device_speeds(hw, run, numa="isolate")["CPU"].mem_bw_gbs
    assert default < iso < dist <= hw.ram_bw_gbs * 1e9
    assert default / dist < 0.5                           # dual socket without --numa: well under half


def test_threads_below_cores_cap_bandwidth():
    hw = load_profile("cpu-epyc9654-768g")
    few = device_speeds(hw, RunConfig(threads=4))["CPU"].mem_bw_gbs
    many = device_speeds(hw, RunConfig(threads=64))["CPU"].mem_bw_gbs
    assert few < many / 4


def test_dev_record_accuracy_meets_the_targets():
    # published_dev #287-302 (tests/fixtures/speed): TG ±20 % on >= 80 %, PP ±35 % on >= 70 %, deep TG ±25 % >= 70 %
    fr = acc.fractions(acc.evaluate())
    assert fr["tg_20"] >= 0.80 and fr["pp_35"] >= 0.70 and fr["tg_deep_25"] >= 0.70, fr
    recs = json.loads((ROOT / "tests/fixtures/speed/published_dev_speed.json").read_text())
    assert len([r for r in recs if r["kind"] == "speed"]) == len(acc.CASES) == 16


def test_small_moe_fully_on_one_gpu():
    # ik PR 370 (ubergarm): Qwen3-30B-A3B mix-IQ4_K on an RTX 3090 Ti, everything on the GPU: TG 106.26 at 0 and
    # 60.93 at 16384, PP 1649 at 512 and 1110 at 16384 -- the id-matmul's per-expert launches dominate PP
    from planner.logparse import parse_log, read_log

    lg = parse_log(read_log(ROOT / "tests/fixtures/logs/ik-qwen3-30b-gpu-pr370-ubergarm.log"))
    tm = builtin("qwen3-30b-a3b")
    mix = {}
    for t in tm.tensors:     # "q8_0: 6, iq4_k: 96, iq5_k: 48, iq6_k: 188" in the log: ubergarm's mix-IQ4_K
        if t.n_dims < 2 or t.role == "ffn_gate_inp":
            mix[t.name] = t.dtype
        elif t.role in ("token_embd", "output"):
            mix[t.name] = "q8_0"
        else:
            mix[t.name] = "iq5_k" if t.role == "ffn_down_exps" else "iq4_k" if t.is_expert else "iq6_k"
    cmd = parse_server_command(list(lg.command), engine="ik-2025")
    pl = placement_from_command(tm, cmd, ["CUDA0"])
    s = estimate_speed(tm, mix, pl, load_profile("rtx3090ti-9950x-96g"), cmd.run, depths=(0, 512, 16384))
    rows = {r.n_kv: r for r in lg.sweeps[0].rows}
    assert abs(s.tg_at(0) / rows[0].s_tg_tps - 1) <= 0.20
    assert abs(s.tg_at(16384) / rows[16384].s_tg_tps - 1) <= 0.25
    assert abs(s.pp_at(512) / rows[512].s_pp_tps - 1) <= 0.35
    assert abs(s.pp_at(16384) / rows[16384].s_pp_tps - 1) <= 0.35


class _Calibrated:
    """A hardware description carrying a calibration (the profile field arrives with the profile loader)."""

    def __init__(self, hw, calibration):
        self._hw, self.calibration = hw, calibration

    def __getattr__(self, name):
        return getattr(self._hw, name)


def test_a_calibration_on_the_hardware_drives_rates_and_label(seed):
    tm, mix, pl, hw, run = seed
    cal = _Calibrated(hw, {"residual": 0.04, "multipliers": {"cpu_weights": 0.5, "pcie": 2.0}})
    base, fitted = device_speeds(hw, run), device_speeds(cal, run)
    assert fitted["CPU"].mem_bw_gbs == pytest.approx(2 * base["CPU"].mem_bw_gbs)      # rate = shipped / multiplier
    assert fitted["CUDA0"].h2d_gbs == pytest.approx(base["CUDA0"].h2d_gbs / 2)
    s0, s1 = estimate_speed(tm, mix, pl, hw, run), estimate_speed(tm, mix, pl, cal, run)
    assert s1.tg_tps > s0.tg_tps and s1.pp_tps < s0.pp_tps
    assert s1.basis.kind == "calibrated" and s1.basis.label == "estimate (calibrated on your machine, residual 4 %)"


def test_basis_names_shipped_profiles_and_lists_defaulted_figures():
    from planner.hardware import resolve_hardware
    from planner.speed import speed_basis

    shipped = speed_basis(load_profile("rtx3090ti-9950x-96g"))
    assert shipped.kind == "shipped" and "RTX 3090 Ti" in shipped.label and not shipped.defaulted
    manual = speed_basis(resolve_hardware(vram=[0], ram=32))      # --vram 0 --ram 32: bandwidth and cores defaulted
    assert manual.kind == "guessed"
    assert any(d.startswith("RAM bandwidth 102.4 GB/s") for d in manual.defaulted)
    assert any(d.startswith("16 cores") for d in manual.defaulted)


def test_ik_offloads_experts_only_when_the_ubatch_routes_enough_tokens():
    # ik ggml-cuda.cu ggml_backend_cuda_offload_op (0006d4fc): ub x n_expert_used >= 32 x n_expert
    tm = builtin("kimi-k2")                                   # 384 experts, 8 used: needs -ub 1536
    hw = load_profile("rtx4090-7950x-192g")
    mix = {t.name: ("iq2_kl" if t.is_expert else "q8_0") if t.n_dims >= 2 else t.dtype for t in tm.tensors}
    pl = placement_from_command(tm, parse_server_command(["x", "-ngl", "99", "-ot", "exps=CPU"], "ik"), ["CUDA0"])
    small = speed_terms(tm, mix, pl, hw, RunConfig(engine="ik", ubatch=512, batch=2048, load="no-mmap"))[0].pp
    big = speed_terms(tm, mix, pl, hw, RunConfig(engine="ik", ubatch=2048, batch=2048, load="no-mmap"))[0].pp
    assert small["cpu_gemm"] > 0 and small["pcie"] < 0.05 * big["pcie"] and big["cpu_gemm"] == 0
    old = speed_terms(tm, mix, pl, hw, RunConfig(engine="ik-2025", ubatch=512, batch=2048, load="no-mmap"))[0].pp
    assert old["cpu_gemm"] == 0 and old["pcie"] > 0             # the original rule: any ubatch >= 32


def test_probed_machine_basis_names_its_cpu():
    from dataclasses import replace as dc_replace

    from planner.speed import speed_basis

    hw = load_profile("rtx3090ti-9950x-96g")
    same = speed_basis(dc_replace(hw, name="probed"))                     # a shipped profile has this CPU
    other = speed_basis(dc_replace(hw, name="probed", cpu_model="Intel Xeon w9-3495X"))
    assert same.kind == "shipped" and other.kind == "guessed"
    assert other.label == "estimate (guessed: no profile for this CPU, Intel Xeon w9-3495X)"


def test_numa_and_threads_batch_from_the_users_command():
    # the same CPU-only command with and without --numa distribute on a two-socket machine; -tb sets PP threads
    tm = builtin("qwen3-30b-a3b")
    hw = load_profile("cpu-2xgold6248-384g")
    mix = {t.name: ("q4_K" if t.n_dims >= 2 else t.dtype) for t in tm.tensors}
    plain = parse_server_command(["llama-server", "-t", "40"], "ik")
    dist = parse_server_command(["llama-server", "-t", "40", "--numa", "distribute", "-tb", "20"], "ik")
    assert (dist.run.numa, dist.run.threads_batch) == ("distribute", 20)
    pl = placement_from_command(tm, plain, [])
    a, b = estimate_speed(tm, mix, pl, hw, plain.run), estimate_speed(tm, mix, pl, hw, dist.run)
    assert b.tg_tps > 2 * a.tg_tps                  # default placement reads across the socket link
    assert b.pp_tps < estimate_speed(tm, mix, pl, hw, replace(dist.run, threads_batch=None)).pp_tps
