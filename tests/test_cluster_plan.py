"""Plans on an RPC cluster: remote devices as budgets, whole remote layers, the network in the speed, the
emitted commands re-derived with the engine's own layer rule, scripts per host, and the one-box hint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.cluster_flags import cluster_from_flags
from planner.cluster_toml import load_cluster
from planner.cluster_plan import cluster_document, plan_cluster, write_cluster_scripts
from planner.errors import OutputExistsError
from planner.hardware import resolve_hardware
from planner.launch import apply_overrides, OverrideRule
from planner.memory import CPU, kv_bytes_per_layer
from planner.quality import QualityModel
from planner.request import PlanRequest
from planner.runconfig import RunConfig
from planner.tensors import builtin

SMALL_MAIN = dict(vram=[4.0], ram=8.0)           # Qwen3-30B-A3B does not fit this alone (see the CLI test)
BOX2 = "box2=addr:10.0.0.2,ram:16,bw:1gbe"
SEGMENT_S = 5e-6       # planner/data/network.toml [tcp] segment_us (assumed): one small TCP segment's way


@pytest.fixture(scope="module")
def small():
    tmap = builtin("qwen3-30b-a3b")
    cluster = cluster_from_flags(resolve_hardware(**SMALL_MAIN), [BOX2])
    request = PlanRequest(run=RunConfig(engine="mainline", ctx=4096, load="mmap"))
    cp = plan_cluster(tmap, cluster, request, QualityModel.build(tmap), model_path="q.gguf")
    return tmap, cluster, request, cp


def mainline_layer_devices(n_layer: int, ngl: int, ts: list[float], devices: list[str]) -> list[str]:
    """llama.cpp 0c1e57098 src/llama-model.cpp llama_model::load_tensors: layer il (il = n_layer is the output)
    goes to devices[upper_bound(splits, float(il - i_gpu_start) / act_gpu_layers)], splits the normalised
    cumulative -ts, i_gpu_start = max(n_layer + 1 - ngl, 0), act_gpu_layers = min(ngl, n_layer + 1)."""
    import bisect
    import struct

    def f32(x: float) -> float:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    total, acc, splits = f32(sum(ts)), 0.0, []
    for x in ts:
        acc = f32(acc + x)
        splits.append(acc)
    splits = [f32(s / total) for s in splits]
    start, act = max(n_layer + 1 - ngl, 0), min(ngl, n_layer + 1)
    out = []
    for il in range(n_layer + 1):
        if il < start or il - start >= act:
            out.append(CPU)
        else:
            out.append(devices[bisect.bisect_right(splits, f32(f32(il - start) / act))])
    return out


def test_whole_layers_go_to_the_remote_host_first(small):
    tmap, cluster, _, cp = small
    plan = cp.plan
    r = cp.remote_layers["box2/CPU"]
    assert r > 0 and plan.layer_device[:r] == ("box2/CPU",) * r
    assert "box2/CPU" not in plan.layer_device[r:]
    # every tensor of a remote layer stays on its host: two crossings of the link per token
    for t in tmap.tensors:
        if t.layer is not None and t.layer < r:
            assert plan.devices[t.name] == "box2/CPU", t.name
        else:
            assert plan.devices[t.name] != "box2/CPU", t.name
    assert sum(1 for t in cp.network.tg.traversals if t.what == "activations") == 2
    assert all(d.fits for d in plan.memory.devices)


def test_the_emitted_command_reproduces_the_plan_under_the_engines_rule(small):
    tmap, cluster, _, cp = small
    argv = list(cp.launch.argv)
    assert argv[argv.index("--rpc") + 1] == "10.0.0.2:50052"
    ngl = int(argv[argv.index("-ngl") + 1])
    ts = [float(x) for x in argv[argv.index("-ts") + 1].split(",")]
    devices = ["RPC0[10.0.0.2:50052]", "CUDA0"]           # RPC devices first (llama_prepare_model_devices)
    n = tmap.params.n_layer
    got = mainline_layer_devices(n, ngl, ts, devices)
    names = {"box2/CPU": devices[0], "CUDA0": "CUDA0", CPU: CPU}
    assert got[:n] == [names[d] for d in cp.plan.layer_device]
    rules = [OverrideRule(*item.split("=", 1)) for i, a in enumerate(argv) if a == "-ot"
             for item in argv[i + 1].split(",")]
    defaults = {t.name: (got[t.layer] if t.layer is not None else CPU if t.role == "token_embd" else got[n])
                for t in tmap.tensors}
    placed = apply_overrides([t.name for t in tmap.tensors], rules, defaults)
    assert placed == {k: names[v] for k, v in cp.plan.devices.items()}


def test_network_terms_are_in_the_speed(small):
    tmap, cluster, request, cp = small
    link = cluster.host("box2").link
    p = tmap.params
    # per token: the residual into box2 and back (latency + n_embd f32 each way) and the KQ mask + position
    # (mainline: n_kv 256 cells x 1 token x f16 + 1 x i32) on the way in
    hand = 2 * (link.latency_s + p.n_embd * 4 / link.bandwidth_bytes_s) + (256 * 2 + 4) / link.bandwidth_bytes_s
    # and every send_data of the pass, one TCP segment each (ggml-rpc: 3 per command, 2 per reply): into box2 the
    # 8 SET_TENSOR the harness log shows per pass plus GRAPH_COMPUTE, out of it one GET_TENSOR and its reply
    hand += (3 * (8 + 1) + 3 + 2) * SEGMENT_S
    assert cp.network.tg_s == pytest.approx(hand)
    spd = cp.plan.speed
    t0 = spd.terms[0]
    # the link time is one named term of the estimate, and TG is the sum of the terms
    assert t0.depth == 0 and t0.tg["network"] == pytest.approx(hand)
    assert 1 / spd.tg_tps == pytest.approx(t0.tg_time())
    # the remote host's weights are read at its own bandwidth (its DDR, not the main host's)
    remote_bw = cluster.host("box2").hardware.ram_bw_gbs
    assert t0.tg["weights box2/CPU"] > 0 and spd.tg_ms_by_device["box2/CPU"] == pytest.approx(
        t0.tg["weights box2/CPU"] * 1e3)
    assert any(f"box2/CPU: {remote_bw * 0.65:.0f} GB/s" in a or "box2/CPU:" in a for a in spd.assumptions)
    assert any("box2: " in a and "GB/s payload" in a for a in spd.assumptions)
    # PP pays the ubatch-sized transfers: 2 x n_embd x ub f32 plus the mask (256-padded cells x ub x f16)
    ub = min(cp.plan.run.ubatch, cp.plan.run.batch)
    pp_hand = 2 * (link.latency_s + p.n_embd * 4 * ub / link.bandwidth_bytes_s) + \
        (512 * ub * 2 + ub * 4) / link.bandwidth_bytes_s + (3 * (8 + 1) + 3 + 2) * SEGMENT_S
    assert t0.pp["network"] == pytest.approx(pp_hand)


def test_per_host_memory_adds_up(small):
    _, cluster, _, cp = small
    by_host = {h.host: h for h in cp.hosts}
    assert set(by_host) == {"main", "box2"}
    for h in cp.hosts:
        devs = [d for d in cp.plan.memory.devices if d.device in h.devices]
        assert h.total_bytes == sum(d.total_bytes for d in devs) and h.fits
    assert by_host["box2"].budget_bytes == 16 * 2 ** 30


def test_scripts_one_per_host_quoted_and_never_overwritten(small, tmp_path):
    tmap, cluster, _, cp = small
    cd = cluster_document(tmap, cp, model_path="q.gguf")
    written = write_cluster_scripts(cd, str(tmp_path))
    assert sorted(Path(w).name for w in written) == ["box2.sh", "main.sh"]
    for w in written:
        assert subprocess.run(["bash", "-n", w]).returncode == 0
    fake = tmp_path / "echo-args"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    out = subprocess.run(["bash", str(tmp_path / "box2.sh")], capture_output=True, text=True,
                         env={"RPC_SERVER": str(fake), "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert out == ["-H", "10.0.0.2", "-p", "50052"]
    main_args = subprocess.run(["bash", str(tmp_path / "main.sh")], capture_output=True, text=True,
                               env={"LLAMA_SERVER": str(fake), "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert main_args == list(cp.launch.argv[1:])
    with pytest.raises(OutputExistsError):
        write_cluster_scripts(cd, str(tmp_path))


def test_cli_one_box_does_not_fit_and_says_so():
    # --no-imatrix: with an imatrix the iq1/iq2 candidates fit Qwen3-30B in 4 + 8 GiB
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "4", "--ram", "8", "--ctx", "4096",
                                  "--no-imatrix"])
    assert r.exit_code == 2
    assert "a second machine over llama.cpp RPC: --rpc-host" in r.output
    # without --ctx (the default context, resolved later) the offer is still a one-line error, not a crash
    r0 = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "4", "--ram", "8", "--no-imatrix"])
    assert r0.exit_code == 2 and "--rpc-host NAME=addr:IP,ram:" in r0.output
    # the offered RAM is a lower bound (said so); a second box above it makes the same plan a cluster plan
    import re
    offered = int(re.search(r"--rpc-host NAME=addr:IP,ram:(\d+),bw:10gbe \(a lower bound", r.output).group(1))
    assert 4 + 1 < offered <= 12        # the OS reserve (4 GiB) plus at least the 1.19 GiB shortfall
    r2 = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "4", "--ram", "8", "--ctx", "4096",
                                   "--no-imatrix", "--objective", "speed", "--rpc-host",
                                   "box2=addr:10.0.0.2,ram:12,bw:10gbe"])
    assert r2.exit_code == 0, r2.output
    assert "rpc-server -H 10.0.0.2 -p 50052" in r2.output and "--rpc 10.0.0.2:50052" in r2.output


def test_cli_cluster_plan_json(tmp_path):
    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "4", "--ram", "8", "--ctx", "4096",
                                  "--engine", "mainline", "--rpc-host", BOX2, "--json",
                                  "--scripts", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["format"] == "gguf-planner/cluster-plan-v1"
    assert [s["host"] for s in doc["servers"]] == ["box2"]
    assert doc["document"]["launch_command"].startswith("llama-server -m ")
    assert "--rpc 10.0.0.2:50052" in doc["document"]["launch_command"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["box2.sh", "main.sh"]
    # export rebuilds the same scripts from the plan JSON
    (tmp_path / "plan.json").write_text(r.stdout)
    r2 = CliRunner().invoke(main, ["export", "--plan", str(tmp_path / "plan.json"), "--scripts", str(tmp_path / "e")])
    assert r2.exit_code == 0, r2.output
    for name in ("main.sh", "box2.sh"):
        assert (tmp_path / "e" / name).read_text() == (tmp_path / "s" / name).read_text()
    r3 = CliRunner().invoke(main, ["export", "--plan", str(tmp_path / "plan.json"), "--scripts", str(tmp_path / "e")])
    assert r3.exit_code == 3                                     # never overwritten without --force
    # the JSON is untrusted: a host field that is not an address is refused, nothing is written
    evil = doc.copy()
    evil["specs"] = [dict(doc["specs"][0], bind="10.0.0.2 -c; reboot")]
    (tmp_path / "evil.json").write_text(json.dumps(evil))
    r4 = CliRunner().invoke(main, ["export", "--plan", str(tmp_path / "evil.json"), "--scripts", str(tmp_path / "x")])
    assert r4.exit_code == 2 and "bind" in r4.output and not (tmp_path / "x").exists()
    r = CliRunner().invoke(main, ["plan", "--cluster", "2x3090-384g+epyc-256g-10gbe", "--ram", "64"])
    assert r.exit_code == 2 and "--cluster describes every host" in r.output


def test_kimi_k2_on_two_boxes_over_10gbe(tmp_path):
    """The acceptance case: 2x RTX 3090 + 384 GiB and a 256 GiB box over 10 GbE (hwprofiles clusters)."""
    tmap = builtin("kimi-k2")
    cluster = load_cluster("2x3090-384g+epyc-256g-10gbe")
    request = PlanRequest(run=RunConfig(engine="ik", ctx=32768))
    cp = plan_cluster(tmap, cluster, request, QualityModel.build(tmap), model_path="k2.gguf")
    plan = cp.plan
    # it needs both boxes: more weights than the main box holds
    main_usable = 384 * 2 ** 30 + 2 * 23 * 2 ** 30
    assert plan.total_bytes > main_usable and all(d.fits for d in plan.memory.devices)
    hosts = {h.host: h for h in cp.hosts}
    assert hosts["box2"].weights_bytes > 0 and hosts["main"].weights_bytes > 0
    assert hosts["box2"].budget_bytes == 256 * 2 ** 30 and hosts["main"].budget_bytes == (384 + 48) * 2 ** 30
    # KV: 61 layers x the MLA row (kv_lora_rank 512 + rope 64) in q8_0 at 32768 cells, split by layer device
    kv_layer = kv_bytes_per_layer(tmap.params, request.run)
    assert kv_layer == (512 + 64) // 32 * 34 * 32768
    assert hosts["box2"].kv_bytes == kv_layer * cp.remote_layers["box2/CPU"]
    # TG and PP include the network: 2 crossings of 7168 f32 each + ik's mask (256 cells x 16 rows x f16)
    link = cluster.host("box2").link
    hand = 2 * (link.latency_s + 7168 * 4 / link.bandwidth_bytes_s) + (256 * 16 * 2 + 4) / link.bandwidth_bytes_s \
        + (3 * (8 + 1) + 3 + 2) * SEGMENT_S
    assert cp.network.tg_s == pytest.approx(hand) and 0 < plan.speed.tg_tps < 100 and plan.speed.pp_tps > 0
    assert cp.network.load.cold_s > 60          # ~1.2 GB/s: minutes for the remote weights
    cd = cluster_document(tmap, cp, model_path="k2.gguf")
    names = sorted(Path(p).name for p in write_cluster_scripts(cd, str(tmp_path)))
    assert names == ["box2.sh", "main.sh"]
    assert "--rpc 192.168.10.2:50052" in cd.document.launch_command
    assert cd.servers[0].command == "rpc-server -H 192.168.10.2 -p 50052 -c -t 32"
    # the command runs what the plan chose (load mode, -ub), not the request's defaults
    argv = cp.launch.argv
    assert ("-rtr" in argv) == (plan.run.load == "rtr") and ("--no-mmap" in argv) == (plan.run.load == "no-mmap")
    assert argv[argv.index("-ub") + 1] == str(plan.run.ubatch)
    # every layer's device was chosen in the model: the remote layers are one contiguous range
    r = cp.remote_layers["box2/CPU"]
    first = plan.layer_device.index("box2/CPU")
    assert r > 0 and plan.layer_device[first:first + r] == ("box2/CPU",) * r


def test_check_understands_rpc_commands(small):
    tmap, cluster, _, cp = small
    from planner.cluster_plan import check_cluster
    from planner.launch import parse_server_command

    parsed = parse_server_command(list(cp.launch.argv), engine="mainline")
    assert parsed.rpc == ("10.0.0.2:50052",)
    run = cp.plan.run
    res = check_cluster(tmap, cp.plan.types, parsed, cluster, run)
    # the emitted command, read back with the engine's rule, is the plan: same bytes on every device
    for d in res.memory.devices:
        assert d.term("weights") == cp.plan.memory.device(d.device).term("weights"), d.device
        assert d.term("kv_cache") == cp.plan.memory.device(d.device).term("kv_cache"), d.device
    assert res.memory.fits
    wrong = parse_server_command([a.replace("10.0.0.2:50052", "10.0.0.9:50052") for a in cp.launch.argv],
                                 engine="mainline")
    with pytest.raises(Exception, match="is not the cluster's"):
        check_cluster(tmap, cp.plan.types, wrong, cluster, run)


def test_cli_check_needs_the_hosts_of_rpc():
    r = CliRunner().invoke(main, ["check", "qwen3-30b-a3b", "--base-type", "Q4_K_M", "--vram", "4", "--ram", "8",
                                  "--", "llama-server", "--rpc", "10.0.0.2:50052", "-ngl", "99", "-c", "4096"])
    assert r.exit_code == 2 and "describe those hosts" in r.output


@pytest.mark.parametrize("engine,vram,ram", [("ik", [12.0], 16.0), ("mainline", [], 48.0)])
def test_tied_output_on_a_cluster_is_charged_where_the_engine_loads_it(engine, vram, ram):
    """gemma-3-27b has no output.weight: both engines load a second token_embd with the output layer, on the last
    layer's device (mainline whenever a layer is offloaded; ik with every layer offloaded), which may be a remote
    one.  Before, a cluster plan kept it on the CPU while its own command put it on a GPU: ``check`` of the
    emitted mainline command found CUDA0 12.67 GiB of 12 (and box2/CUDA0 13.04 of 12 with no local GPU).  Now the
    plan and the command re-derived with the engine's rule charge the same bytes on every device, and fit."""
    from planner.cluster_plan import check_cluster
    from planner.launch import parse_server_command

    tmap = builtin("gemma-3-27b")
    cluster = cluster_from_flags(resolve_hardware(vram=vram, ram=ram), ["box2=addr:10.0.0.2,vram:12,ram:32,bw:10gbe"])
    cp = plan_cluster(tmap, cluster, PlanRequest(run=RunConfig(engine=engine, ctx=8192)), QualityModel.build(tmap),
                      model_path="q.gguf")
    res = check_cluster(tmap, cp.plan.types, parse_server_command(list(cp.launch.argv), engine=engine), cluster,
                        cp.plan.run)
    for d in res.memory.devices:
        mine = cp.plan.memory.device(d.device)
        assert (d.term("weights"), d.total_bytes) == (mine.term("weights"), mine.total_bytes), d.device
    assert res.memory.fits and cp.plan.output_device == cp.plan.layer_device[-1] != CPU


def test_a_low_bit_cluster_plan_is_quantized_with_the_imatrix_it_assumes():
    # the default plan assumes an imatrix (plan --help), so the solver may pick imatrix-only types; a cluster plan's
    # recipe was verified as if none were used, so a tight cluster plan failed after solving ("llama-quantize
    # refuses iq2_kt without an importance matrix").  ik's llama-quantize refuses these types without one
    # (src/llama-quantize.cpp "Missing importance matrix for tensor ... in a very low-bit quantization").  The
    # rpc-server host's CPU compute buffer is its own device's, not the local CUDA_Host buffer.
    from planner.quantize import imatrix_types

    r = CliRunner().invoke(main, ["plan", "qwen3-30b-a3b", "--vram", "4", "--ram", "8", "--ctx", "4096",
                                  "--engine", "ik", "--rpc-host", "box2=addr:10.0.0.2,ram:8,bw:1gbe", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["document"]
    types = set(doc["plan"]["types"].values())
    assert types & set(imatrix_types("ik")), types
    steps = doc["workflow"]["steps"]
    assert any(s["argv"][0] == "llama-imatrix" for s in steps)
    assert "--imatrix" in steps[-1]["argv"] and steps[-1]["argv"][0] == "llama-quantize"
    compute = [b for b in doc["plan"]["memory"]["buffers"] if b[0] == "compute"]
    assert [b[1] for b in compute if b[1].startswith("box2/")] == ["box2/CPU"]
