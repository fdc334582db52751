"""verify: the planner's exact terms against the buffer sizes real engine runs printed."""

import importlib.util
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from planner.errors import LogFormatError
from planner.hardware import load_profile
from planner.launch import apply_overrides, default_devices, parse_server_command, placement_from_command
from planner.logparse import parse_log, read_log
from planner.memory import CPU, Placement
from planner.source import load_model
from planner.verify import device_map, gpus_in_log, summarize, verify

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "fixtures" / "logs"
spec = importlib.util.spec_from_file_location("speed_accuracy", ROOT / "benchmarks" / "speed_accuracy.py")
acc = importlib.util.module_from_spec(spec)
sys.modules["speed_accuracy"] = acc
spec.loader.exec_module(acc)


def split_placement(tmap, cmd, gpus, first_of_gpu1):
    """Layers [0, first_of_gpu1) on gpus[0], the rest and the output on gpus[1], then the command's -ot: the
    layer split the engine printed (ik 2025 and mainline: upper_bound(split, i / min(ngl, n_layer + 1)))."""
    n = tmap.params.n_layer
    layers = tuple(gpus[0] if il < first_of_gpu1 else gpus[1] for il in range(n))
    devs = apply_overrides([t.name for t in tmap.tensors], list(cmd.overrides),
                           default_devices(tmap, layers, gpus[1]))
    return Placement(devs, layers, tuple(gpus) + (CPU,))


def test_seed_rig_buffers_to_0_1_mib():
    # ubergarm, ik PR 370: CPU 89709.28 + CUDA_Host 630.59, CUDA0 19053.73, KV 3196.05 / 3196.00 MiB
    lg = parse_log(read_log(LOGS / "ik-seed-pr370-ubergarm.log"))
    tm = acc.model()
    cmd = parse_server_command(["x", *shlex.split(acc.SEED)], engine="ik-2025")
    pl = placement_from_command(tm, cmd, gpus_in_log(lg))
    rep = verify(lg, tm, dict(acc.mix("mix-IQ3_K")), pl, load_profile("rtx3090ti-9950x-96g"),
                 replace(cmd.run, engine="ik"))
    assert rep.exact_ok, [c for c in rep.checks if c.exact and not c.ok]
    assert rep.check("weights", "CUDA0").measured == 19053.73 and abs(rep.check("weights", "CUDA0").error) < 0.01
    assert rep.check("weights", "CPU").log_name == "CPU + CUDA_Host"
    assert abs(rep.check("kv", "CUDA0").error) <= 0.1 and rep.check("kv_total").error == 0
    tg0 = rep.check("TG", "depth 0")
    assert tg0.measured == 10.76 and abs(tg0.rel_error) < 0.2 and tg0.ok is None       # an estimate: not judged
    assert summarize(rep)["exact_matched"] == summarize(rep)["exact_total"] == 4


def test_two_gpu_split_to_0_1_mib():
    # AesSedai, ik PR 370 branch: unsloth Q6_K (every weight q6_K), experts 0-6 on CUDA0, 7-13 on CUDA1;
    # the engine put layers 0-47 on CUDA0 (KV 816.02 = 48 x 17 MiB) and 48-93 on CUDA1 (782.02)
    lg = parse_log(read_log(LOGS / "ik-2gpu-q6k-pr370-aessedai.log"))
    tm = acc.model()
    cmd = parse_server_command(lg.command, engine="ik-2025")
    pl = split_placement(tm, cmd, ["CUDA0", "CUDA1"], 48)
    rep = verify(lg, tm, dict(acc.mix("Q6_K")), pl, load_profile(ROOT / "benchmarks/rigs/epyc9355-vm-2x3090.toml"),
                 cmd.run)
    assert rep.exact_ok, [(c.term, c.device, c.error) for c in rep.checks if c.exact and not c.ok]
    assert [c.measured for c in rep.checks if c.term == "weights"] == [151848.11, 15922.41, 16297.68]


def test_a_wrong_split_is_reported():
    lg = parse_log(read_log(LOGS / "ik-2gpu-q6k-pr370-aessedai.log"))
    tm = acc.model()
    cmd = parse_server_command(lg.command, engine="ik-2025")
    rep = verify(lg, tm, dict(acc.mix("Q6_K")), split_placement(tm, cmd, ["CUDA0", "CUDA1"], 47),
                 load_profile(ROOT / "benchmarks/rigs/epyc9355-vm-2x3090.toml"), cmd.run)
    assert not rep.exact_ok
    assert rep.check("kv", "CUDA0").error == pytest.approx(-17.02, abs=0.01)        # one 17 MiB layer short


@pytest.mark.parametrize("log,first_of_gpu1", [
    ("ik-rpc2-ts1-1.log", 51),     # "Setting default device in layer 50 to 0" / "51 to 1"
    ("ik-rpc2-ts1-3.log", 24),
])
def test_rpc_devices_and_current_ik_layer_table(log, first_of_gpu1):
    lg = parse_log(read_log(LOGS / log))
    assert device_map(lg) == {"RPC0[127.0.0.1:50152]": "CUDA0", "RPC0[127.0.0.1:50153]": "CUDA1", "CPU": "CPU"}
    tm = load_model(str(LOGS / "t94-plan.header.gguf"), check_size=False)
    cmd = parse_server_command(["llama-cli", "-ngl", "99", "-c", "512"], engine="ik")
    pl = split_placement(tm, cmd, ["CUDA0", "CUDA1"], first_of_gpu1)
    rep = verify(lg, tm, {t.name: t.dtype for t in tm.tensors}, pl, load_profile("rtx3090ti-9950x-96g"), cmd.run)
    assert rep.exact_ok and rep.check("layers").measured == 94, rep.notes


def test_layer_mismatch_is_a_note():
    lg = parse_log(read_log(LOGS / "ik-rpc2-ts1-1.log"))
    tm = load_model(str(LOGS / "t94-plan.header.gguf"), check_size=False)
    cmd = parse_server_command(["llama-cli", "-ngl", "99", "-c", "512"], engine="ik")
    rep = verify(lg, tm, {t.name: t.dtype for t in tm.tensors}, split_placement(tm, cmd, ["CUDA0", "CUDA1"], 47),
                 load_profile("rtx3090ti-9950x-96g"), cmd.run)
    assert not rep.check("layers").ok and "4 layers" in rep.notes[0]


def test_nothing_to_verify():
    lg = parse_log(read_log(LOGS / "ik-perplexity-pr262.txt"))
    with pytest.raises(LogFormatError):
        verify(lg, acc.model(), {}, None, None, None)


def test_verify_logs_takes_the_command_from_the_log():
    from planner.verify import logged_runs

    (r,) = logged_runs([LOGS / "ik-2gpu-q6k-pr370-aessedai.log"], acc.model(),
                       load_profile(ROOT / "benchmarks/rigs/epyc9355-vm-2x3090.toml"), engine="ik-2025")
    assert r.command[0] == "llama-sweep-bench" and r.run.ctx == 16384 and r.run.threads == 48
    assert r.placement.device_of("blk.8.ffn_up_exps.weight") == "CUDA1"
    assert r.placement.device_of("blk.20.ffn_up_exps.weight") == "CPU"


def test_a_log_without_command_needs_one():
    from planner.errors import UsageError
    from planner.verify import verify_logs

    with pytest.raises(UsageError):
        verify_logs([LOGS / "ik-load-glm4-pr344.log"], acc.model(), {}, load_profile("rtx3090ti-9950x-96g"),
                    engine="ik")


def test_mainline_rpc_log_to_0_1_mib():
    # mainline 0c1e57098, -ts 1,1: layers 0-47 on device 0, 48-93 and the output on device 1 (upper_bound over
    # the cumulative split with act = min(ngl, n_layer + 1) = 95), token_embd in CPU_Mapped
    lg = parse_log(read_log(LOGS / "mainline-rpc2-ts1-1.log"))
    tm = load_model(str(LOGS / "t94.header.gguf"), check_size=False)
    cmd = parse_server_command(["llama-completion", "-ngl", "99", "-c", "512", "-ts", "1,1"], engine="mainline")
    rep = verify(lg, tm, {t.name: t.dtype for t in tm.tensors}, split_placement(tm, cmd, ["CUDA0", "CUDA1"], 48),
                 load_profile("rtx3090ti-9950x-96g"), cmd.run)
    assert rep.engine == "mainline" and rep.exact_ok, [(c.term, c.device, c.error) for c in rep.checks if c.exact]
    assert [c.measured for c in rep.checks if c.term == "kv"] == [12.0, 11.5]


def test_llama_bench_rows_become_tg_and_pp_checks():
    # 4onen, mainline PR 12922: pp4096 62.50, tg4096 9.51 (DeepSeek-Coder-V2-Lite; the model here is a stand-in:
    # only the mapping of llama-bench rows to terms is checked, the values are estimates)
    lg = parse_log(read_log(LOGS / "mainline-llama-bench-pr12922.md"))
    tm = acc.model()
    cmd = parse_server_command(["llama-bench", "-ngl", "0", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "1"],
                               engine="mainline")
    pl = placement_from_command(tm, cmd, [])
    rep = verify(lg, tm, dict(acc.mix("Q6_K")), pl, load_profile("cpu-epyc9654-768g"), cmd.run)
    assert [(c.term, c.device, c.measured) for c in rep.checks] == [("PP", "pp4096", 62.5), ("TG", "tg4096", 9.51)]
    assert all(c.ok is None and c.predicted > 0 for c in rep.checks)      # estimates, not judged


def test_kld_ppl_ratio_is_compared_with_the_quality_prediction():
    # AesSedai, mainline PR 19661: Mean PPL(Q)/PPL(base) 1.178739 (the model here is a stand-in: only the mapping)
    lg = parse_log(read_log(LOGS / "mainline-kld-pr19661.txt"))
    tm = acc.model()
    rep = verify(lg, tm, dict(acc.mix("Q6_K")), None, None, None, predicted_ppl_ratio=1.01)
    (c,) = rep.checks
    assert (c.term, c.predicted, c.measured, c.ok) == ("ppl_ratio", 1.01, 1.178739, None)
