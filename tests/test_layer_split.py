"""The engines' layer→device rule against real engine logs (RPC harness, tests/fixtures/engine/).

Every fixture is a load log of a real engine build (the commit is named in fixtures.json) run with rpc-server
processes on 127.0.0.1 as devices. For each, the test re-derives from the model header and the command alone:
the layer→device map (ik's "Setting default device in layer N to D" lines, mainline's "layer N assigned to device"
debug lines), ik's per-layer size table, and every weight and KV buffer the engine logs, to the logged 0.01 MiB.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from planner.errors import UsageError
from planner.layer_sizes import format_layer_sizes, ik_kv_bytes, ik_layer_sizes, mainline_kv_bytes
from planner.layer_split import LayerSizes, SplitDevice, SplitRequest, layer_split, split_ik, split_ik_2025, split_mainline
from planner.layer_split_flags import flags_for
from planner.engine_buffers import IK_HOST_ALLOC_EXTRA, buffer_lines, engine_buffers, placement_buffers, tensor_devices, map_for_flags, flags_for_names, run_sizes
from planner.source import load_model

ENGINE_DIR = Path(__file__).parent / "fixtures" / "engine"
MIB = 1 << 20


@cache
def manifest() -> list[dict]:
    return json.loads((ENGINE_DIR / "fixtures.json").read_text())["fixtures"]


@cache
def model(name: str):
    return load_model(str(ENGINE_DIR / name), check_size=False)


@dataclass(frozen=True)
class Command:
    ngl: int
    ts: tuple[float, ...] | None
    ctx: int
    ubatch: int
    batch: int
    type_k: str
    type_v: str
    overrides: tuple[tuple[str, str], ...]
    split_mode: str
    flash_attn: bool


def parse_command(command: str, engine: str) -> Command:
    """The flags of a fixture's command line that decide placement, with each engine's defaults."""
    argv = shlex.split(command)
    opts: dict[str, list[str]] = {}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and i + 1 < len(argv) and not (argv[i + 1].startswith("-") and len(argv[i + 1]) > 1
                                                            and not argv[i + 1][1].isdigit()):
            opts.setdefault(a, []).append(argv[i + 1])
            i += 2
        else:
            opts.setdefault(a, []).append("")
            i += 1

    def one(*names: str, default: str) -> str:
        for n in names:
            if n in opts:
                return opts[n][-1]
        return default

    ts = one("-ts", "--tensor-split", default="")
    ot = [v for n in ("-ot", "--override-tensor") for v in opts.get(n, [])]
    overrides = []
    for spec in ot:
        for part in spec.split(","):
            rx, _, dev = part.rpartition("=")
            overrides.append((rx, dev))
    fa = one("-fa", "--flash-attn", default="on" if engine == "ik" else "auto")
    return Command(
        ngl=int(one("-ngl", "--n-gpu-layers", "--gpu-layers", default="-1")),
        ts=tuple(float(x) for x in re.split(r"[,/]", ts)) if ts else None,
        ctx=int(one("-c", "--ctx-size", default="0")),
        ubatch=int(one("-ub", "--ubatch-size", default="512")),
        batch=int(one("-b", "--batch-size", default="2048")),
        type_k=one("-ctk", "--cache-type-k", default="f16"),
        type_v=one("-ctv", "--cache-type-v", default="f16"),
        overrides=tuple(overrides),
        split_mode=one("-sm", "--split-mode", default="layer"),
        flash_attn=fa not in ("off", "0"),
    )


_IK_DEV = re.compile(r"^(\S+): using device (\S+) - (\d+) MiB free")
_ML_DEV = re.compile(r"using device (\S+) \(([^)]*)\).* - (\d+) MiB free")


def log_lines(name: str) -> list[str]:
    return (ENGINE_DIR / name).read_text(encoding="utf-8", errors="replace").splitlines()


def devices_from_log(lines: list[str], engine: str) -> tuple[SplitDevice, ...]:
    """The engine's offload device list in order, with the free MiB it printed (ik lists an RPC device twice in a
    CPU-only build: model->devices gets the RPC names first and then every buffer-type name again)."""
    out = []
    for line in lines:
        m = _IK_DEV.match(line) if engine != "mainline" else _ML_DEV.search(line)
        if not m:
            continue
        if engine == "mainline":
            name = f"RPC0[{m.group(2)}]" if m.group(1).startswith("RPC") else m.group(1)
        else:
            name = m.group(2)
        out.append(SplitDevice(name, int(m.group(3)) * MIB))
    return tuple(out)


def logged_buffers(lines: list[str]) -> dict[tuple[str, str], str]:
    """(kind, buffer name) -> the MiB string logged: weights ("model buffer"/"buffer") and KV."""
    out: dict[tuple[str, str], str] = {}
    for line in lines:
        m = re.search(r"(?:llm_load_tensors|load_tensors): +(\S+) (?:model )?buffer size = +([\d.]+) MiB", line)
        if m:
            out[("weights", m.group(1))] = m.group(2)
        m = re.search(r"(?:llama_kv_cache_init|llama_kv_cache): +(\S+) KV buffer size = +([\d.]+) MiB", line)
        if m:
            out[("kv", m.group(1))] = m.group(2)
    return out


def logged_mapping(lines: list[str]) -> dict[int, int | str]:
    """ik: "Setting default device in layer N to D"; mainline -lv 4: "layer N assigned to device NAME"."""
    out: dict[int, int | str] = {}
    for line in lines:
        m = re.search(r"Setting default device in layer +(\d+) to (\d+)", line)
        if m:
            out[int(m.group(1))] = int(m.group(2))
        m = re.search(r"load_tensors: layer +(\d+) assigned to device (\S+?),", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def derive(fx: dict):
    """Everything the planner predicts for one fixture, from the header and the command."""
    engine = fx["engine"]
    tmap = model(fx["model"])
    cmd = parse_command(fx["command"], engine)
    lines = log_lines(fx["log"])
    devices = devices_from_log(lines, engine)
    ctx = cmd.ctx or tmap.params.n_ctx_train
    req = SplitRequest(n_layer=tmap.params.n_layer, n_gpu_layers=cmd.ngl, devices=devices, tensor_split=cmd.ts,
                       split_mode=cmd.split_mode)
    sizes = None
    if engine == "ik":
        sizes = ik_layer_sizes(tmap, ctx=ctx, type_k=cmd.type_k, type_v=cmd.type_v, n_ubatch=cmd.ubatch,
                               n_batch=cmd.batch, flash_attn=cmd.flash_attn)
    split = layer_split(engine, req, sizes)
    pad = 256 if (cmd.flash_attn or engine == "mainline") else 32
    cells = -(-ctx // pad) * pad
    if engine == "mainline":
        kv = [mainline_kv_bytes(tmap, il, ctx=cells, type_k=cmd.type_k, type_v=cmd.type_v)
              for il in range(tmap.params.n_layer)]
    else:
        kv = [ik_kv_bytes(tmap, il, ctx=cells, type_k=cmd.type_k, type_v=cmd.type_v, flash_attn=cmd.flash_attn)
              for il in range(tmap.params.n_layer)]
    names = [d.name for d in devices]
    overrides = tuple((rx, None if dev.upper().startswith("CPU") else names.index(dev)) for rx, dev in cmd.overrides)
    mapped = "--no-mmap" not in fx["command"] and (engine == "mainline" or not overrides)
    buffers = engine_buffers(tmap, None, split, n_devices=len(devices), kv_layer_bytes=kv, overrides=overrides,
                             cpu_mapped=mapped, engine=engine)
    return tmap, cmd, lines, devices, sizes, split, buffers


FIXTURES = [fx["log"] for fx in manifest()]


@pytest.mark.parametrize("log", FIXTURES)
def test_fixture_names_engine_commit_and_command(log):
    fx = next(f for f in manifest() if f["log"] == log)
    assert fx["engine"] in ("ik", "ik-2025", "mainline")
    assert re.fullmatch(r"[0-9a-f]{8,40}", fx["commit"])
    assert (ENGINE_DIR / fx["model"]).is_file()
    assert " -m " in fx["command"] and "--rpc 127.0.0.1:" in fx["command"]


@pytest.mark.parametrize("log", FIXTURES)
def test_layer_mapping_matches_engine_log(log):
    fx = next(f for f in manifest() if f["log"] == log)
    tmap, cmd, lines, devices, sizes, split, _ = derive(fx)
    expected = logged_mapping(lines)
    if not expected:
        pytest.skip("this log has no per-layer lines (the buffer test still pins the mapping)")
    n = tmap.params.n_layer
    short = [m.group(1) for ln in lines if (m := _ML_DEV.search(ln))]     # mainline prints "RPC0", "RPC1", ...
    for il, dev in expected.items():
        got = split.output_device if il == n else split.layer_device[il]
        if isinstance(dev, str):
            dev = None if dev == "CPU" else short.index(dev)
        assert got == dev, (il, got, dev)
    if fx["engine"] == "ik":
        # layers ik did not print are exactly the CPU ones (below i_gpu_start)
        on_cpu = {il for il in range(n) if split.layer_device[il] is None}
        assert on_cpu == {il for il in range(n) if il not in expected}


@pytest.mark.parametrize("log", [f["log"] for f in manifest() if f["engine"] == "ik"])
def test_ik_layer_size_table_matches_engine_log(log):
    fx = next(f for f in manifest() if f["log"] == log)
    _, _, lines, _, sizes, _, _ = derive(fx)
    logged = [ln.rstrip() for ln in lines if re.match(r"^Layer +\d+:", ln)]
    assert format_layer_sizes(sizes) == logged


@pytest.mark.parametrize("log", FIXTURES)
def test_weight_and_kv_buffers_match_engine_log(log):
    fx = next(f for f in manifest() if f["log"] == log)
    _, cmd, lines, devices, _, split, buffers = derive(fx)
    if split.graph_split:
        pytest.skip("-sm graph spreads each layer's matrices over the devices: per-device bytes not modelled")
    logged = logged_buffers(lines)
    predicted: dict[tuple[str, str], int] = {}
    for b in buffers:
        name = "CPU" if b.device is None else devices[b.device].name
        predicted[(b.kind, name)] = predicted.get((b.kind, name), 0) + b.bytes
    if fx["engine"] == "ik":      # ik's CPU backend (local or behind rpc-server) reports 32 bytes more per buffer
        mapped = "--no-mmap" not in fx["command"] and not cmd.overrides
        for key in predicted:
            if predicted[key] and not (key == ("weights", "CPU") and mapped):
                predicted[key] += IK_HOST_ALLOC_EXTRA
    # the CPU weights are "CPU" in ik and "CPU_Mapped" (mmap) in mainline
    for key in list(logged):
        if key[1] == "CPU_Mapped":
            logged[("weights", "CPU")] = logged.pop(key)
    assert logged, "no buffer lines in the log"
    for key, mib in logged.items():
        assert f"{predicted.get(key, 0) / MIB:.2f}" == mib, (key, predicted.get(key), mib)
    for key, nbytes in predicted.items():
        assert key in logged or nbytes == 0, key


# --------------------------------------------------------------------------- the rules on their own

def _devs(n: int, free_mib: int = 24 * 1024) -> tuple[SplitDevice, ...]:
    return tuple(SplitDevice(f"CUDA{i}", free_mib * MIB) for i in range(n))


def test_mainline_ngl_counts_the_output_layer():
    # llama-model.cpp: i_gpu_start = max(n_layer + 1 - ngl, 0): -ngl n_layer leaves layer 0 on the CPU
    s = split_mainline(SplitRequest(n_layer=10, n_gpu_layers=10, devices=_devs(1)))
    assert s.layer_device[0] is None and s.layer_device[1:] == (0,) * 9 and s.output_device == 0
    s = split_ik_2025(SplitRequest(n_layer=10, n_gpu_layers=10, devices=_devs(1)))
    assert s.layer_device == (0,) * 10 and s.output_device is None


def test_upper_bound_puts_the_middle_layer_on_the_first_device():
    # DeepSeek-R1 (61 layers), -ngl 62 -ts 30,31: layer 30 -> 30/62 < 30/61, so the first GPU gets 31 layers
    req = SplitRequest(n_layer=61, n_gpu_layers=62, devices=_devs(2), tensor_split=(30, 31))
    for s in (split_mainline(req), split_ik_2025(req)):
        assert s.layers_on(0) == tuple(range(31))
        assert s.output_device == 1


def test_ik_partial_offload_and_default_split_by_free_memory_less_margin():
    sizes = LayerSizes(weights=(100 * MIB,) * 8, kv=(MIB,) * 8, compute=(10 * MIB,) * 8, output_weights=50 * MIB,
                       output_extra=0)
    # free 3 GiB and 2 GiB -> after the 1 GiB margin 2:1
    devs = (SplitDevice("CUDA0", 3 << 30), SplitDevice("CUDA1", 2 << 30))
    s = split_ik(SplitRequest(n_layer=8, n_gpu_layers=6, devices=devs), sizes)
    assert s.layer_device[:2] == (None, None)
    assert s.output_device is None
    assert s.layers_on(0) == (2, 3, 4, 5) and s.layers_on(1) == (6, 7)


def test_ik_needs_its_layer_sizes_and_rejects_unknown_engines():
    req = SplitRequest(n_layer=4, n_gpu_layers=99, devices=_devs(2))
    with pytest.raises(UsageError):
        layer_split("ik", req)
    with pytest.raises(UsageError):
        layer_split("vllm", req)
    with pytest.raises(UsageError):
        SplitRequest(n_layer=4, n_gpu_layers=99, devices=_devs(2), split_mode="tensor")


def test_cpu_only_offloads_nothing():
    for engine in ("mainline", "ik-2025"):
        s = layer_split(engine, SplitRequest(n_layer=4, n_gpu_layers=99, devices=()))
        assert s.layer_device == (None,) * 4 and s.output_device is None


@pytest.mark.parametrize("engine", ["mainline", "ik-2025", "ik"])
def test_flags_for_reproduce_a_wanted_map_under_the_engine_rule(engine):
    # the 2x3090 DeepSeek-R1 case: 30 layers on the first GPU, 31 + output on the second; dividing by n_layer
    # (-ts 30,31) gets it wrong (test above), the per-device counts with the output counted get it right
    sizes = LayerSizes(weights=(100 * MIB,) * 3 + (300 * MIB,) * 58, kv=(MIB,) * 61, compute=(10 * MIB,) * 61,
                       output_weights=50 * MIB, output_extra=0)
    req = SplitRequest(n_layer=61, n_gpu_layers=0, devices=_devs(2))
    want = (0,) * 30 + (1,) * 31
    flags = flags_for(engine, req, want, 1, sizes)
    assert flags is not None
    again = layer_split(engine, SplitRequest(n_layer=61, n_gpu_layers=flags.n_gpu_layers, devices=_devs(2),
                                             tensor_split=flags.tensor_split), sizes)
    assert again.layer_device == want and again.output_device == 1
    assert flags.n_gpu_layers == 62


def test_flags_for_refuses_maps_the_flags_cannot_express():
    req = SplitRequest(n_layer=6, n_gpu_layers=0, devices=_devs(2))
    assert flags_for("mainline", req, (0, 0, None, 1, 1, 1), 1) is None          # a CPU layer in the middle
    assert flags_for("mainline", req, (None, 1, 1, 0, 0, 0), 0) is None          # devices out of order
    assert flags_for("ik-2025", req, (None, 0, 0, 1, 1, 1), 1) is None           # ik: output only with all layers
    # partial offload, output on the CPU: ik -ngl counts repeating layers only
    flags = flags_for("ik-2025", req, (None, None, 0, 0, 1, 1), None)
    assert flags is not None and flags.n_gpu_layers == 4


@pytest.mark.parametrize("log", FIXTURES)
def test_buffer_lines_read_like_the_engine_log(log):
    # the report a user compares with their own load log: the same lines, parsed by the same reader, same values
    fx = next(f for f in manifest() if f["log"] == log)
    _, cmd, lines, devices, _, _, buffers = derive(fx)
    mapped = "--no-mmap" not in fx["command"] and (fx["engine"] == "mainline" or not cmd.overrides)
    if derive(fx)[5].graph_split:
        pytest.skip("-sm graph: per-device bytes not modelled")
    extra = IK_HOST_ALLOC_EXTRA if fx["engine"] == "ik" else 0
    ours = logged_buffers(buffer_lines(fx["engine"], buffers, [d.name for d in devices], cpu_mapped=mapped,
                                       host_alloc_extra=extra))
    theirs = logged_buffers(lines)
    assert {k: v for k, v in ours.items() if float(v) > 0} == {k: v for k, v in theirs.items() if float(v) > 0}


def test_named_glue_round_trips_a_plan_map():
    tmap = model("t94-plan.header.gguf")
    sizes = run_sizes("ik", tmap, None, ctx=4096, type_k="q8_0", type_v="q8_0", ubatch=512, batch=2048)
    gpus = ("CUDA0", "CUDA1", "CUDA2")
    want = ("CPU",) * 4 + ("CUDA0",) * 30 + ("CUDA1",) * 30 + ("CUDA2",) * 30
    for engine in ("ik", "ik-2025"):
        flags = flags_for_names(engine, tmap, gpus, want, "CPU", sizes=sizes if engine == "ik" else None)
        assert flags is not None and flags.n_gpu_layers == 90
        got = map_for_flags(engine, tmap, gpus, (24 << 30,) * 3, n_gpu_layers=flags.n_gpu_layers,
                            tensor_split=flags.tensor_split, sizes=sizes if engine == "ik" else None)
        assert got.layer_device == want and got.output_device == "CPU"
    # mainline cannot leave the output on the CPU while offloading layers
    assert flags_for_names("mainline", tmap, gpus, want, "CPU") is None


@pytest.mark.parametrize("log", [f["log"] for f in manifest() if f["engine"] == "mainline"])
def test_placement_buffers_in_planner_names_match_the_log(log):
    # the same buffers from a placement in planner device names (what plan/check hold), RPC devices as "CUDA<i>"
    # without CUDA padding: weights per device, the mmap'ed CPU span, KV per device
    fx = next(f for f in manifest() if f["log"] == log)
    tmap, cmd, lines, devices, _, split, _ = derive(fx)
    names = [f"CUDA{i}" for i in range(len(devices))]
    devs = tensor_devices(tmap, split, [(rx, None) for rx, _ in cmd.overrides])
    tensor_device = {n: "CPU" if d is None else names[d] for n, d in devs.items()}
    layer_device = ["CPU" if d is None else names[d] for d in split.layer_device]
    cells = -(-(cmd.ctx or tmap.params.n_ctx_train) // 256) * 256
    kv = [mainline_kv_bytes(tmap, il, ctx=cells, type_k=cmd.type_k, type_v=cmd.type_v)
          for il in range(tmap.params.n_layer)]
    ours = {(k, n): f"{b / MIB:.2f}" for k, n, b in placement_buffers("mainline", tmap, None, tensor_device,
                                                                      layer_device, kv, cuda_devices=False)}
    logged = logged_buffers(lines)
    theirs = {}
    for (kind, name), mib in logged.items():
        if name.startswith("RPC"):
            name = names[[d.name for d in devices].index(name)]
        theirs[(kind, name)] = mib
    assert {k: v for k, v in ours.items() if float(v) > 0} == {k: v for k, v in theirs.items() if float(v) > 0}
