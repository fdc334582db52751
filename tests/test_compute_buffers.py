"""Compute buffers per device against the sizes the engines log, and the per-GPU margin against published runs.

Independent sources: the RPC-harness load logs (tests/fixtures/engine/, ik_llama.cpp 8337e4cd and llama.cpp
0c1e57098, "<device> compute buffer size" lines) and the published CUDA load logs in tests/fixtures/logs/ (ik PR
370 thread: ubergarm's seed rig = published_dev #289, AesSedai's 2x RTX 3090 = #297's command with the unsloth Q6_K,
ubergarm's Qwen3-30B-A3B).  The prediction is planner/compute_buffers.py: the engine's graph replayed through
ggml's allocator where planner/data/engine_graphs.toml has it, else live sets of the worst-case ubatch graph;
cases it misses by more than 10 % are strict xfails with the reason, so a fix shows up as XPASS -> failure.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from planner.compute_buffers import DeviceRole, entry_of, estimate, is_ffn_matmul, placement_compute, sched_copies
from planner.engine_buffers import tensor_devices
from planner.runconfig import DEFAULT_GPU_MARGIN_BYTES, RunConfig
from planner.tensors import builtin

sys.path.insert(0, str(Path(__file__).parent))
from test_layer_split import derive, manifest  # noqa: E402

MIB = 1 << 20
LOGS = Path(__file__).parent / "fixtures" / "logs"
ROOT = Path(__file__).resolve().parents[1]


def logged_compute(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.search(r"(\S+) compute buffer size = +([\d.]+) MiB", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


# ------------------------------------------------------------------------------------------- published CUDA logs

# (log file, model, run config as the log's context lines print it, device -> what that device computes)
PUBLISHED = [
    # ik PR 370 seed rig (#289): -ngl 99, ffn of layers 12-93 on the CPU, -fa -ctk/-ctv q8_0 -c 32768 -amb 512
    ("ik-seed-pr370-ubergarm.log", "qwen3-235b-a22b", RunConfig(engine="ik-2025", ctx=32768, amb=512),
     {"CUDA0": DeviceRole(True, True, True, entry="input"), "CUDA_Host": DeviceRole(False, True, False, True)}),
    # AesSedai 2x RTX 3090 (#297's command, unsloth Q6_K): ffn 0-6 CUDA0, 7-13 CUDA1, rest CPU; -c 16384
    ("ik-2gpu-q6k-pr370-aessedai.log", "qwen3-235b-a22b", RunConfig(engine="ik-2025", ctx=16384, amb=0),
     {"CUDA0": DeviceRole(True, True, False, entry="input"), "CUDA1": DeviceRole(True, True, True),
      "CUDA_Host": DeviceRole(False, True, False, True)}),
    # Qwen3-30B-A3B fully on one RTX 3090 Ti, f16 cache, -c 32768
    ("ik-qwen3-30b-gpu-pr370-ubergarm.log", "qwen3-30b-a3b",
     RunConfig(engine="ik-2025", ctx=32768, amb=0, type_k="f16", type_v="f16"),
     {"CUDA0": DeviceRole(True, True, True, entry="input"), "CUDA_Host": DeviceRole(False, False, False, True)}),
]


@pytest.mark.parametrize("log,model,cfg,roles", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_cuda_compute_buffers_within_10_percent(log, model, cfg, roles):
    text = (LOGS / log).read_text()
    logged = logged_compute(text)
    assert f"n_ctx      = {cfg.ctx}" in text and "n_ubatch   = 512" in text and "flash_attn = 1" in text
    tm = builtin(model)
    assert set(logged) == set(roles)
    for dev, role in roles.items():
        pred = estimate(tm, cfg, role).bytes / MIB
        assert abs(pred / logged[dev] - 1) <= 0.10, (dev, pred, logged[dev])


def test_output_device_is_logits_plus_two_hidden_states_exactly():
    # the two published output devices: 151936 x 512 x 4 B logits + 2 x n_embd x 512 x 4 B
    for log, model, roles_dev in (("ik-seed-pr370-ubergarm.log", "qwen3-235b-a22b", "CUDA0"),
                                  ("ik-2gpu-q6k-pr370-aessedai.log", "qwen3-235b-a22b", "CUDA1"),
                                  ("ik-qwen3-30b-gpu-pr370-ubergarm.log", "qwen3-30b-a3b", "CUDA0")):
        p = builtin(model).params
        assert logged_compute((LOGS / log).read_text())[roles_dev] == pytest.approx(
            (p.n_vocab * 512 * 4 + 2 * p.n_embd * 512 * 4) / MIB, abs=0.005)


# ------------------------------------------------------------------------------------------- RPC harness logs

# Cases the estimate misses by more than 10 % (strict: a fix turns these into failures to update).
# Not estimated: the models whose graph planner/data/engine_graphs.toml draws for the engine (mainline: Qwen3-MoE
# shapes and DeepSeek on the legacy attn_kv_b layout; ik: Qwen3-MoE shapes and DeepSeek under -mla 3 for a prompt
# ubatch, with flash attention and fused up/gate experts): the graph is replayed through ggml's allocator
# (planner/engine_graph.py; tests/test_engine_graph.py checks every such buffer to the printed digit).  Every
# RPC-harness log is replayed today, so nothing is left here; the live-set estimate remains for the other
# architectures and for ik-2025 (the published CUDA logs above).
KNOWN_MISSES: dict[str, set[str]] = {}


def harness_cases():
    out = []
    for fx in manifest():
        if "-sm graph" in fx["command"]:
            continue                   # -sm graph aborts in a CPU-only RPC build (no compute buffers logged)
        text = "\n".join(derive(fx)[2])
        for dev in logged_compute(text):
            miss = dev in KNOWN_MISSES.get(fx["log"], set())
            marks = [pytest.mark.xfail(strict=True, reason="live-set formula off by > 10 % here (see KNOWN_MISSES)")
                     ] if miss else []
            out.append(pytest.param(fx["log"], dev, marks=marks, id=f"{fx['log']}:{dev}"))
    return out


def ik_amb(command: str) -> int:
    """ik's -amb for a command: as given, raised to 128 (common/common.cpp:1966-1970), default 256 (common.h:424;
    the logs print attn_max_b)."""
    m = re.search(r"-amb (\d+)", command)
    return max(int(m.group(1)), 128) if m else 256


def predicted_harness(log: str, dev: str) -> tuple[float, float]:
    fx = next(f for f in manifest() if f["log"] == log)
    tmap, cmd, lines, devices, _, split, _ = derive(fx)
    names = [d.name for d in devices]
    overrides = tuple((rx, None if d.upper().startswith("CPU") else names.index(d)) for rx, d in cmd.overrides)
    tdev = tensor_devices(tmap, split, overrides)
    ffn = {dv for n, dv in tdev.items() if is_ffn_matmul(n)}
    cfg = RunConfig(engine=fx["engine"], ctx=cmd.ctx or tmap.params.n_ctx_train, type_k=cmd.type_k,
                    type_v=cmd.type_v, flash_attn=cmd.flash_attn, ubatch=cmd.ubatch, batch=cmd.batch,
                    amb=ik_amb(fx["command"]) if fx["engine"] != "mainline" else 0)
    copies = sched_copies(fx["engine"], n_devices=len(set(names)), overrides=bool(cmd.overrides),
                          all_offloaded=None not in split.layer_device and split.output_device is not None)
    name_of = {None: "CPU", **dict(enumerate(names))}
    graph = placement_compute(tmap, cfg, names, [name_of[d] for d in split.layer_device],
                              lambda n: name_of[tdev.get(n)] if n != "token_embd.weight" else "CPU",
                              name_of[split.output_device], "CPU", copies)
    if graph is not None:
        return graph[dev] / MIB, logged_compute("\n".join(lines))[dev]
    if dev == "CPU":
        role = DeviceRole(None in split.layer_device, None in ffn, split.output_device is None, host=True,
                          copies=copies)
    else:
        idx = [i for i, d in enumerate(devices) if d.name == dev]        # ik lists an RPC device twice
        role = DeviceRole(any(split.layer_device[il] in idx for il in range(len(split.layer_device))),
                          any(i in ffn for i in idx), split.output_device in idx,
                          entry=entry_of([None if d is None else devices[d].name for d in split.layer_device], dev,
                                         None), copies=copies)
    return estimate(tmap, cfg, role).bytes / MIB, logged_compute("\n".join(lines))[dev]


def predicted_rpc(log: str, dev: str) -> tuple[float, float]:
    """tests/fixtures/rpc/ (the rpc8/rpc2big models of tools/rpc_check): the layer map as the log prints it."""
    import test_rpc_harness as h

    case = next(c for c in h.CASES if c["log"] == log)
    text = (h.FIX / log).read_text(encoding="utf-8")
    tmap, a = h._model(case["model"]), h._args(case["command"])
    bufts = [d.buft for d in h.engine_devices(h._cluster(a["rpc"]), case["engine"])]
    n = tmap.params.n_layer
    ld = h._layer_map(case, text, bufts, n, a["ngl"])
    ffn = set()
    for t in tmap.tensors:
        target = next((d for rx, d in a["ot"] if re.search(rx, t.name)), None)
        if target is None:
            target = ld[t.layer] if t.layer is not None else ("CPU" if t.role == "token_embd" else ld[n])
        if is_ffn_matmul(t.name):
            ffn.add(target)
    cfg = RunConfig(engine=case["engine"], ctx=a["ctx"], type_k=a["ctk"], type_v=a["ctv"],
                    amb=256 if case["engine"] != "mainline" else 0)
    copies = sched_copies(case["engine"], n_devices=len(bufts), overrides=bool(a["ot"]),
                          all_offloaded="CPU" not in ld[:n + 1])
    if case["engine"] != "ik-2025":
        def where(name: str) -> str:
            hit = next((d for rx, d in a["ot"] if re.search(rx, name)), None)
            if hit is not None:
                return hit
            t = next(t for t in tmap.tensors if t.name == name)
            return ld[t.layer] if t.layer is not None else ("CPU" if t.role == "token_embd" else ld[n])

        graph = placement_compute(tmap, cfg, bufts, ld[:n], where, ld[n], "CPU", copies)
        if graph is not None:
            return graph[dev] / MIB, logged_compute(text)[dev]
    role = DeviceRole(dev in ld[:n], dev in ffn, ld[n] == dev, host=dev == "CPU",
                      entry=entry_of(ld[:n], dev, "CPU"), copies=copies)
    return estimate(tmap, cfg, role).bytes / MIB, logged_compute(text)[dev]


def rpc_cases():
    import test_rpc_harness as h

    out = []
    for case in h.CASES:
        for dev in logged_compute((h.FIX / case["log"]).read_text(encoding="utf-8")):
            miss = dev in KNOWN_MISSES.get(case["log"], set())
            marks = [pytest.mark.xfail(strict=True, reason="live-set formula off by > 10 % here (see KNOWN_MISSES)")
                     ] if miss else []
            out.append(pytest.param(case["log"], dev, marks=marks, id=f"rpc/{case['log']}:{dev}"))
    return out


@pytest.mark.parametrize("log,dev", harness_cases())
def test_harness_compute_buffer_within_10_percent(log, dev):
    pred, logged = predicted_harness(log, dev)
    assert abs(pred / logged - 1) <= 0.10, (pred, logged)


@pytest.mark.parametrize("log,dev", rpc_cases())
def test_rpc_fixture_compute_buffer_within_10_percent(log, dev):
    pred, logged = predicted_rpc(log, dev)
    assert abs(pred / logged - 1) <= 0.10, (pred, logged)


# ------------------------------------------------------------------------------------------- fit and margin

def _published_fit(case_id: int):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import speed_accuracy as sa
    from planner.groups import Budget
    from planner.hardware import load_profile
    from planner.launch import parse_server_command, placement_from_command
    from planner.memory import memory_report

    c = next(c for c in sa.CASES if c.id == case_id)
    hw = load_profile(c.rig if c.rig.startswith("rtx") else sa.RIGS / f"{c.rig}.toml")
    cmd = parse_server_command(["llama-sweep-bench", *shlex.split(c.argv)], engine=c.flags)
    pl = placement_from_command(sa.model(), cmd, [f"CUDA{g.index}" for g in hw.gpus])
    run = replace(cmd.run, engine=c.engine)
    return memory_report(sa.model(), dict(sa.mix(c.mix)), pl, Budget.from_hardware(hw).bytes, run)


@pytest.mark.parametrize("case_id", [287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 302])
def test_published_gpu_runs_are_predicted_to_fit(case_id):
    # published_dev records: each configuration loaded and ran (a llama-sweep-bench table was posted)
    rep = _published_fit(case_id)
    assert rep.fits, rep.problems()


def test_seed_rig_per_device_totals_match_its_load_log():
    # ik-seed-pr370-ubergarm.log: CUDA0 buffer 19053.73 + KV 3196.05 + compute 312.75 MiB (published_dev #289)
    d = _published_fit(289).device("CUDA0")
    logged = 19053.73 + 3196.05 + 312.75
    assert (d.total_bytes - d.term("margin")) / MIB == pytest.approx(logged, rel=0.001)


def test_margin_is_the_engines_fit_default_and_cannot_be_zero():
    # ik src/llama.cpp 8337e4cd: k_default_mem_margin = 1024 MiB; mainline --fit-target default 1024 MiB
    assert DEFAULT_GPU_MARGIN_BYTES == 1024 * MIB
    # counter-case: an RTX 3090 ("24 GB", budget 24576 MiB) reports 24126 MiB of VRAM, 23863 MiB free once the
    # CUDA context exists (ggml-org/llama.cpp issue 20431, ggml_cuda_init line).  A plan filling budget - margin
    # must fit in what the card has free, so the margin must be at least 24576 - 23863 = 713 MiB: zero would
    # report as fitting configurations that exceed the device.
    assert 24 * 1024 * MIB - DEFAULT_GPU_MARGIN_BYTES <= 23863 * MIB
    # and the tightest published run (#290, RTX A6000, f16 cache 32768) still fits with it
    assert _published_fit(290).fits


# ------------------------------------------------------------------------------------------- reporting like the log

SEED_ARGS = ["check", "qwen3-235b-a22b", "--recipe-file", str(ROOT / "examples" / "seed-mix-IQ3_K.recipe"),
             "--base-type", "IQ3_K", "--profile", "rtx3090ti-9950x-96g", "--engine", "ik-2025", "--",
             "llama-sweep-bench", *shlex.split(
                 "-fa -ctk q8_0 -ctv q8_0 -c 32768 -fmoe -amb 512 -rtr -ot blk\\.1[2-9]\\.ffn.*=CPU "
                 "-ot blk\\.[2-8][0-9]\\.ffn.*=CPU -ot blk\\.9[0-3]\\.ffn.*=CPU -ngl 99 --threads 16")]


def _buffer_lines(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for line in text.splitlines():
        m = re.search(r"(\S+) (KV buffer|compute buffer|buffer) size = +([\d.]+) MiB", line)
        if m:
            out[({"KV buffer": "kv", "compute buffer": "compute"}.get(m.group(2), "weights"), m.group(1))] = float(
                m.group(3))
    return out


def test_check_prints_the_engine_buffers_line_by_line_like_the_seed_log():
    # the seed rig's own load log (ik PR 370, published_dev #289): every buffer line it prints has its counterpart
    # in `check`, weights and KV to the logged 0.01 MiB (KV: ik-2025 logs 0.05 MiB over K + V), compute within 10 %
    from click.testing import CliRunner

    from planner.cli import main

    res = CliRunner().invoke(main, SEED_ARGS)
    assert res.exit_code == 0, res.output
    ours = _buffer_lines(res.output)
    theirs = _buffer_lines((LOGS / "ik-seed-pr370-ubergarm.log").read_text())
    theirs.pop(("weights", "output"), None)                     # "CUDA_Host  output buffer size": not a model buffer
    assert set(ours) == set(theirs)
    for key, mib in theirs.items():
        tol = {"weights": 0.005, "kv": 0.06}.get(key[0], 0.10 * mib)
        assert abs(ours[key] - mib) <= tol, (key, ours[key], mib)
    js = CliRunner().invoke(main, [*SEED_ARGS[:1], "--json", *SEED_ARGS[1:]])
    assert [b[:2] for b in json.loads(js.output)["memory"]["buffers"]] == [list(k) for k in ours]


# ------------------------------------------------------------------------------------------- pipeline parallelism

def test_pipeline_parallelism_follows_the_engines_condition():
    # mainline src/llama-context.cpp:430-457 @0c1e57098: > 1 device, n_gpu_layers > n_layer, -sm layer, no -ot;
    # GGML_SCHED_MAX_COPIES = 4 (ggml/CMakeLists.txt:188).  ik @8337e4cd: ggml/CMakeLists.txt:110 sets it to 1
    # (PR 751, d29c21ecb), so its scheduler never keeps copies.
    assert sched_copies("mainline", n_devices=2, all_offloaded=True, overrides=False) == 4
    assert sched_copies("mainline", n_devices=1, all_offloaded=True, overrides=False) == 1
    assert sched_copies("mainline", n_devices=3, all_offloaded=False, overrides=False) == 1
    assert sched_copies("mainline", n_devices=3, all_offloaded=True, overrides=True) == 1
    assert sched_copies("ik", n_devices=3, all_offloaded=True, overrides=False) == 1
    # ik-2025: its published 2-GPU run (ik PR 370 branch 056f0818, AesSedai) prints the copies it ran with
    assert "pipeline parallelism enabled (n_copies=1)" in (LOGS / "ik-2gpu-q6k-pr370-aessedai.log").read_text()
    assert sched_copies("ik-2025", n_devices=2, all_offloaded=True, overrides=False) == 1


def _mainline_full_offload_logs():
    """(log text, model params, T, ctx, copies) of every mainline harness log with every layer offloaded and
    nothing overridden to the CPU (the CPU computes only get_rows there)."""
    import test_rpc_harness as h

    out = []
    for fx in manifest():
        if fx["engine"] != "mainline":
            continue
        tmap, cmd, lines, devices, _, split, _ = derive(fx)
        if None in split.layer_device or split.output_device is None or any(
                d.upper().startswith("CPU") for _, d in cmd.overrides):
            continue
        copies = sched_copies("mainline", n_devices=len({d.name for d in devices}), overrides=bool(cmd.overrides),
                              all_offloaded=True)
        out.append(("\n".join(lines), tmap.params, min(cmd.ubatch, cmd.batch, cmd.ctx), cmd.ctx, copies,
                    cmd.flash_attn))
    for case in h.CASES:
        if case["engine"] != "mainline":
            continue
        text = (h.FIX / case["log"]).read_text(encoding="utf-8")
        a = h._args(case["command"])
        tmap = h._model(case["model"])
        ld = h._layer_map(case, text, [d.buft for d in h.engine_devices(h._cluster(a["rpc"]), "mainline")],
                          tmap.params.n_layer, a["ngl"])
        if "CPU" in ld or any(d == "CPU" for _, d in a["ot"]):
            continue
        copies = sched_copies("mainline", n_devices=len(a["rpc"]), overrides=bool(a["ot"]),
                              all_offloaded=True)
        out.append((text, tmap.params, min(512, a["ctx"]), a["ctx"], copies, True))
    return out


def test_mainline_cpu_buffer_is_the_graph_inputs_times_the_copies():
    # With every layer offloaded the CPU computes only get_rows on token_embd; its buffer is the graph inputs
    # (token ids, positions, output ids: I32 x T; inp_embd: f32 n_embd x T, a leaf without consumers; the f16
    # mask n_kv x T), `copies` times each, plus the get_rows output: llama-graph.cpp:2384-2436 and 29-45,
    # ggml-backend.cpp:944-948 and 1411-1436, ggml-alloc.c:723-728 @0c1e57098, and the cache's row indices (I64:
    # T for K; T for V, or T x n_embd_v_gqa without flash attention, the V cache then being transposed:
    # llama-kv-cache.cpp:1430-1445).  Checked against every such log to the printed 0.01 MiB.
    cases = _mainline_full_offload_logs()
    assert {c[4] for c in cases} == {1, 4}             # both regimes are covered
    assert {c[5] for c in cases} == {True, False}      # with and without flash attention
    for text, p, t, ctx, copies, fa in cases:
        n_kv = -(-ctx // 256) * 256
        idxs = t * 8 * (1 + (1 if fa else p.n_head_kv * p.head_dim))
        expect = copies * (p.n_embd * t * 4 + n_kv * t * (2 if fa else 4) + 3 * t * 4 + idxs) + p.n_embd * t * 4
        assert logged_compute(text)["CPU"] == pytest.approx(expect / MIB, abs=0.006), (copies, expect / MIB)


def _shortfalls():
    import test_rpc_harness as h

    for p in harness_cases() + rpc_cases():
        log, dev = p.values
        if p.id.startswith("rpc/"):
            pred, logged = predicted_rpc(log, dev)
            case = next(c for c in h.CASES if c["log"] == log)
            tmap, t = h._model(case["model"]), min(512, h._args(case["command"])["ctx"])
        else:
            pred, logged = predicted_harness(log, dev)
            fx = next(f for f in manifest() if f["log"] == log)
            tmap, cmd = derive(fx)[:2]
            t = min(cmd.ubatch, cmd.batch, cmd.ctx)
        yield log, dev, logged - pred, tmap.params.n_embd * t * 4 / MIB


def test_remaining_misses_are_small_against_the_margin():
    # Under-predictions on the harness logs are bounded by ~2 hidden states (E = n_embd x T x 4 B): the live-set
    # estimate's worst was 2.07 E; every harness log is replayed now (worst 0.02 E: the logs' 0.01 MiB rounding),
    # the bound is kept for the architectures still estimated.  For the built-in models at the largest -ub the
    # planner picks (4096), 2.1 E stays inside what the 1024 MiB margin leaves after the CUDA context (24576 -
    # 23863 = 713 MiB on a 3090, ggml-org/llama.cpp issue 20431), so no plan reported as fitting exceeds a device
    # by them.
    worst = max(short / e for _, _, short, e in _shortfalls())
    assert worst <= 2.1
    from planner.runconfig import UBATCH_CHOICES
    from planner.tensors.known_models import builtin_names

    room = DEFAULT_GPU_MARGIN_BYTES - (24576 - 23863) * MIB
    for name in builtin_names():
        assert 2.1 * builtin(name).params.n_embd * max(UBATCH_CHOICES) * 4 < room, name
