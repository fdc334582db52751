"""The allocator replay (planner/engine_graph.py + planner/gallocr.py) against the engine itself.

Independent sources, all from llama.cpp 0c1e57098 and ik_llama.cpp 8337e4cd3 run on this machine over RPC
(tools/engine_harness/):
- tests/fixtures/engine/graphs/*.txt: the scheduler's own dump of the prompt graph (GGML_SCHED_DEBUG=2,
  tools/engine_harness/dump_graph.sh; ik-*.txt with ENGINE=ik): every non-view node's op, size and backend, and
  each split's inputs;
- the load logs' "<dev> compute buffer size" lines (tests/fixtures/engine/, tests/fixtures/rpc/), printed to
  0.01 MiB at load and (mainline) to 0.0001 MiB by the context's destructor ("compute buffer size is").
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from planner.compute_buffers import DeviceRole, estimate, sched_copies
from planner.engine_buffers import tensor_devices
from planner.engine_graph import GraphShape, build, dense_flags, graph_of, has_graph
from planner.gallocr import VIEW_OPS, schedule
from planner.runconfig import RunConfig
from planner.tensors import builtin

sys.path.insert(0, str(Path(__file__).parent))
from test_compute_buffers import harness_cases, ik_amb, predicted_harness, predicted_rpc, rpc_cases  # noqa: E402
from test_layer_split import ENGINE_DIR, derive, manifest  # noqa: E402

MIB = 1 << 20
GRAPHS = ENGINE_DIR / "graphs"


def _placement(fx: dict, *, graph: bool = True):
    """(graph tensors, backend names with the CPU last) for a harness fixture, as memory_report builds them (or,
    ``graph`` False, what compute_buffers takes: params, shape, layer devices, moved weights, output, backends).
    ik lists each RPC device twice (tests/fixtures/engine/README.md): one backend per name."""
    from planner.compute_buffers import KQ_MASK_PAD

    engine = fx["engine"]
    tmap, cmd, _, devices, _, split, _ = derive(fx)
    names = [d.name for d in devices]
    order = [*dict.fromkeys(n for n in names if n != "CPU"), "CPU"]
    cpu = len(order) - 1
    overrides = tuple((rx, None if d.upper().startswith("CPU") else names.index(d)) for rx, d in cmd.overrides)
    tdev = tensor_devices(tmap, split, overrides)
    conv = {None: cpu, **{i: order.index(n) for i, n in enumerate(names)}}
    ld = [conv[d] for d in split.layer_device]
    ctx = cmd.ctx or tmap.params.n_ctx_train
    tokens = min(cmd.ubatch, cmd.batch, ctx)
    shape = GraphShape.of(tmap.params, tokens, -(-ctx // 256) * 256, cmd.flash_attn, cmd.type_k, cmd.type_v,
                          mask_pad=KQ_MASK_PAD[engine], amb=ik_amb(fx["command"]) if engine == "ik" else 0)
    out = conv[split.output_device]
    tpl = graph_of(engine, tmap, cmd.flash_attn, tokens)
    assert tpl is not None
    if not graph:
        moved = {n: conv[d] for n, d in tdev.items() if n.startswith("blk.") and conv[d] != ld[int(n.split(".")[1])]}
        copies = sched_copies(engine, n_devices=cpu, all_offloaded=cpu not in ld and out != cpu,
                              overrides=bool(cmd.overrides))
        return tpl, tmap.params, shape, ld, moved, out, cpu + 1, copies
    ts = build(engine, tpl, shape, ld, lambda n: cpu if n == "token_embd.weight" else conv[tdev[n]], out, cpu,
               dense_flags(tmap.params, len(ld)))
    return ts, order


def _rpc_placement(case: dict):
    """(graph tensors, backend names with the CPU last) for a tests/fixtures/rpc case (the rpc8/rpc2big models),
    the layer map as its log prints it (as test_compute_buffers.predicted_rpc)."""
    import test_rpc_harness as h

    from planner.compute_buffers import KQ_MASK_PAD

    engine = case["engine"]
    text = (h.FIX / case["log"]).read_text(encoding="utf-8")
    tmap, a = h._model(case["model"]), h._args(case["command"])
    bufts = [d.buft for d in h.engine_devices(h._cluster(a["rpc"]), engine)]
    n = tmap.params.n_layer
    ld = h._layer_map(case, text, bufts, n, a["ngl"])
    order = [*dict.fromkeys(d for d in (*bufts, *ld) if d != "CPU"), "CPU"]
    cpu = len(order) - 1

    def where(name: str) -> int:
        if name == "token_embd.weight":
            return cpu
        hit = next((d for rx, d in a["ot"] if re.search(rx, name)), None)
        if hit is None:
            t = next(t for t in tmap.tensors if t.name == name)
            hit = ld[t.layer] if t.layer is not None else ld[n]
        return order.index(hit)

    shape = GraphShape.of(tmap.params, min(512, a["ctx"]), -(-a["ctx"] // 256) * 256, True, a["ctk"], a["ctv"],
                          mask_pad=KQ_MASK_PAD[engine])
    tpl = graph_of(engine, tmap)
    assert tpl is not None
    ts = build(engine, tpl, shape, [order.index(d) for d in ld[:n]], where, order.index(ld[n]), cpu)
    return ts, order


def _fmt(size: int) -> str:                     # ggml-backend.cpp:987-995 fmt_size
    return f"{size // MIB}M" if size >= MIB else f"{size // 1024}K"


# mainline's dump prints ggml_op_desc ("%10.10s"): GLU and unary ops print their own name; ik's prints ggml_op_name
_OP = {"GLU": "SWIGLU", "FLASH_ATTN_EXT": "FLASH_ATTN", "UNARY": "SIGMOID"}


@pytest.mark.parametrize("dump", sorted(p.name for p in GRAPHS.glob("*.txt")))
def test_graph_matches_the_schedulers_own_dump(dump):
    lines = (GRAPHS / dump).read_text().splitlines()
    command = lines[1].removeprefix("# command: ")
    import test_rpc_harness as h

    fx = next((f for f in manifest() if f["command"] == command), None)
    ts, names = _placement(fx) if fx else _rpc_placement(next(c for c in h.CASES if c["command"] == command))
    assert_matches_dump(lines, ts, names)


def assert_matches_dump(lines: list[str], ts, names: list[str]) -> None:
    """The graph ``ts`` (backends ``names``, the CPU last) against a GGML_SCHED_DEBUG=2 dump's lines: the same
    non-view ops in the same order, each on the same backend and of the same size, and the same splits with the
    same copied inputs."""
    sc = schedule(ts, len(names))
    theirs_nodes, theirs_splits = [], []
    for line in lines[2:]:
        m = re.match(r"## SPLIT #\d+: (\S+) # (\d+) inputs", line)
        if m:
            inputs = re.findall(r"\[(.+?) \(\s*(\S+)\)\]", line)
            assert len(inputs) == int(m.group(2))
            theirs_splits.append((m.group(1), sorted(size for _, size in inputs)))
            continue
        m = re.match(r"node #\s*\d+ \(\s*(\S+)\):\s+(.+?) \(\s*(\S+)\) \[", line)
        assert m, line
        theirs_nodes.append((m.group(1), m.group(3), theirs_splits[-1][0]))
    order = [i for i, t in enumerate(ts) if t.op != "NONE" and t.op not in VIEW_OPS]
    split_of, k = {}, -1
    for i in order:
        if k + 1 < len(sc.splits) and sc.splits[k + 1][1] == i:
            k += 1
        split_of[i] = names[sc.splits[k][0]]
    op_of = (lambda op: op) if lines[0].startswith("# engine: ik") else (lambda op: _OP.get(op, op))
    ours_nodes = [(op_of(ts[i].op)[:10], _fmt(ts[i].size), split_of[i]) for i in order]
    assert [n[0] for n in ours_nodes] == [n[0] for n in theirs_nodes]          # the same ops in the same order
    assert [n[2] for n in ours_nodes] == [n[2] for n in theirs_nodes]          # each on the same backend
    store = [ts[i].view_src is not None for i in order]       # SET_ROWS/CPY into the cache: a view of the cache
    assert [(o[1], n[0]) for o, n, st in zip(ours_nodes, theirs_nodes, store) if not st] == [
        (t[1], t[0]) for t, st in zip(theirs_nodes, store) if not st]      # the same sizes (ik's casts included)
    ours_splits = [(names[b], sorted(_fmt(sc.ts[s].size) for s in inputs)) for b, _, inputs in sc.splits]
    assert ours_splits == theirs_splits                                        # the same splits and copied inputs


def _precise(text: str) -> dict[str, tuple[float, float]]:
    """device -> (MiB, printed precision): the destructor's 4-decimal line where the log has it."""
    out = {}
    for line in text.splitlines():
        m = re.search(r"(\S+) compute buffer size = +([\d.]+) MiB", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = (float(m.group(2)), 0.005)
        m = re.search(r"(\S+) compute buffer size is +([\d.]+) MiB", line)
        if m:
            out[m.group(1)] = (float(m.group(2)), 0.00005)
    return out


def _graph_cases():
    import test_rpc_harness as h

    out = []
    for p in harness_cases() + rpc_cases():
        log, dev = p.values
        engine = "mainline" if log.startswith("mainline") else "ik"
        if p.id.startswith("rpc/"):
            case = next(c for c in h.CASES if c["log"] == log)
            tmap, text = h._model(case["model"]), (h.FIX / log).read_text(encoding="utf-8")
        else:
            fx = next(f for f in manifest() if f["log"] == log)
            tmap, text = derive(fx)[0], (ENGINE_DIR / log).read_text(encoding="utf-8")
        if has_graph(engine, tmap):
            out.append(pytest.param(p.id.startswith("rpc/"), log, dev, _precise(text)[dev], id=p.id))
    return out


@pytest.mark.parametrize("rpc,log,dev,logged", _graph_cases())
def test_replay_equals_the_logged_buffer_to_the_printed_digit(rpc, log, dev, logged):
    pred, _ = (predicted_rpc if rpc else predicted_harness)(log, dev)
    mib, tol = logged
    assert abs(pred - mib) <= tol + 1e-9, (pred, mib)


def test_every_mainline_harness_log_is_replayed():
    # all 98 mainline buffers of the harness: t94 (94 layers), rpc8, rpc2big, u8 (8 of 16 experts) and ds20
    # (DeepSeek, dense lead layer, shared expert); -ub 128 to 4096, with and without flash attention, q8_0 cache,
    # -ot to the CPU and between devices, pipeline parallelism (4 copies)
    cases = _graph_cases()
    assert len(cases) >= 98
    assert {c.values[1].split("-")[1] for c in cases} >= {"rpc2", "rpc3", "rpc4", "ds", "g", "one", "two", "cache"}
    assert any("ub4096" in c.values[1] for c in cases) and any("ub2048" in c.values[1] for c in cases)


def test_every_ik_qwen3moe_harness_log_is_replayed():
    # ik's Qwen3-MoE graph (engine_graphs.toml [ik.qwen3moe]): every buffer of the t94 (94 layers) and rpc8 logs,
    # -ub 128 to 1024, q8_0 cache, partial offload, -ot of all experts or only up/gate to the CPU or between devices
    cases = [c for c in _graph_cases() if c.values[1].startswith("ik")]
    assert len(cases) >= 50
    assert {c.values[1] for c in cases} >= {"ik-rpc3-ts1,1,2-q8kv-otodd.log", "ik-rpc4-ngl80-ot40s-c4096.log",
                                             "ik-rpc4-ts3,1,1,1-ngl94.log", "ik-two-ot-mixed.log",
                                             "ik-one-ot-exps.log", "ik-two-ot-rpc.log"}


def test_three_layers_per_device_reach_the_steady_state():
    # the role estimate replays 3 layers per device (planner.role_compute._block): the same buffers as the real
    # 94-layer placement of Qwen3-235B at -ub 512 and 4096 (CPU layers, a middle GPU, the output GPU)
    tm = builtin("qwen3-235b-a22b")
    p = tm.params
    from planner.engine_graph import compute_buffers

    for ub in (512, 4096):
        cfg = RunConfig(engine="mainline", ctx=32768, ubatch=ub, batch=4096)
        shape = GraphShape.of(p, ub, cfg.kv_size, True, cfg.type_k, cfg.type_v)
        full = compute_buffers("mainline", "qwen3moe", p, shape, [2] * 30 + [0] * 34 + [1] * 30, {}, 1, 3, 1,
                               exact_layers=True)
        # a device after CPU layers either hands on to another GPU or ends the model with the output on the CPU
        ends = compute_buffers("mainline", "qwen3moe", p, shape, [2] * 30 + [0] * 64, {}, 2, 3, 1,
                               exact_layers=True)
        assert estimate(tm, cfg, DeviceRole(True, True, False, entry="cpu")).bytes == max(full[0], ends[0])
        # the output's device holding many layers, or the last layer alone after CPU layers (mainline -ngl 2:
        # the residual handed over is alive beside the layer's own sets, 8 MiB more at -ub 512)
        one = compute_buffers("mainline", "qwen3moe", p, shape, [2] * 93 + [1], {}, 1, 3, 1, exact_layers=True)
        assert estimate(tm, cfg, DeviceRole(True, True, True)).bytes == max(full[1], one[1]) > full[1]
        assert estimate(tm, cfg, DeviceRole(True, True, False, host=True)).bytes == full[2]
        two = compute_buffers("mainline", "qwen3moe", p, shape, [2] * 2 + [0] * 2 + [1] * 2, {}, 1, 3, 1,
                              exact_layers=True)
        assert two[0] < full[0]                    # two layers are not enough: the 3 is not arbitrary


_REPLAYED = [f["log"] for f in manifest() if f["engine"] in ("mainline", "ik") and "-sm graph" not in f["command"]
             and has_graph(f["engine"], derive(f)[0])]


@pytest.mark.parametrize("log", _REPLAYED)
def test_runs_of_identical_layers_cut_to_three_change_no_buffer(log):
    # planner.engine_graph.compress: the 94-layer t94 placements (ngl 60/80/94, -ot 0-20, 40s, odd layers)
    # replayed whole and cut give the same bytes on every backend (mainline and ik)
    from planner.engine_graph import compress, compute_buffers

    fx = next(f for f in manifest() if f["log"] == log)
    tpl, p, shape, ld, moved, out, n, copies = _placement(fx, graph=False)
    assert compute_buffers(fx["engine"], tpl, p, shape, ld, moved, out, n, copies) == compute_buffers(
        fx["engine"], tpl, p, shape, ld, moved, out, n, copies, exact_layers=True)
    assert len(compress(ld, moved)[0]) <= len(ld)


def _role_and_replay(fx: dict):
    """(device, the role estimate the solver reserves, the placement replay check reports) per device."""
    from planner.compute_buffers import entry_of, is_ffn_matmul, placement_compute

    engine = fx["engine"]
    tmap, cmd, _, devices, _, split, _ = derive(fx)
    names = [d.name for d in devices]
    overrides = tuple((rx, None if d.upper().startswith("CPU") else names.index(d)) for rx, d in cmd.overrides)
    tdev = tensor_devices(tmap, split, overrides)
    ffn = {dv for n, dv in tdev.items() if is_ffn_matmul(n)}
    cfg = RunConfig(engine=engine, ctx=cmd.ctx, type_k=cmd.type_k, type_v=cmd.type_v,
                    flash_attn=cmd.flash_attn, ubatch=cmd.ubatch, batch=cmd.batch,
                    amb=ik_amb(fx["command"]) if engine == "ik" else 0)
    copies = sched_copies(engine, n_devices=len(set(names) - {"CPU"}), overrides=bool(cmd.overrides),
                          all_offloaded=None not in split.layer_device and split.output_device is not None)
    name_of = {None: "CPU", **dict(enumerate(names))}
    replay = placement_compute(tmap, cfg, names, [name_of[d] for d in split.layer_device],
                               lambda n: name_of[tdev.get(n)] if n != "token_embd.weight" else "CPU",
                               name_of[split.output_device], "CPU", copies)
    assert replay is not None
    for dev in dict.fromkeys([*names, "CPU"]):
        if dev == "CPU":
            role = DeviceRole(None in split.layer_device, None in ffn, split.output_device is None, host=True,
                              copies=copies)
        else:
            idx = {i for i, d in enumerate(names) if d == dev}          # ik lists an RPC device twice
            role = DeviceRole(bool(idx & set(split.layer_device)), bool(idx & ffn), split.output_device in idx,
                              copies=copies, entry=entry_of([name_of[d] for d in split.layer_device], dev, "CPU"))
        yield dev, estimate(tmap, cfg, role).bytes, replay[dev]


@pytest.mark.parametrize("log", _REPLAYED)
def test_the_solvers_role_estimate_never_reserves_less_than_the_replay(log):
    # the solver sizes compute buffers per device role before it places anything (planner.role_compute._canonical:
    # the largest over stand-in placements); the plan is then re-checked with the placement's own
    # replay, which equals the engine's log (above).  Reserving less would fail that re-check on a tight plan.
    fx = next(f for f in manifest() if f["log"] == log)
    for dev, role_bytes, replay_bytes in _role_and_replay(fx):
        assert role_bytes >= replay_bytes, (dev, role_bytes / MIB, replay_bytes / MIB)


def _role_vs_replay(model: str, engine: str, cfg: RunConfig, layer_device: list[str], out_dev: str,
                    cpu_experts: frozenset[int] = frozenset()):
    """(device, the role estimate, the replay) per device of a built-in model's placement: every weight on its
    layer's device but the experts of the layers in ``cpu_experts`` (-ot ...=CPU), token_embd on the CPU, the
    output's tensors on ``out_dev``."""
    from planner.compute_buffers import entry_of, placement_compute, placement_copies

    tm = builtin(model)
    devices = ["CUDA0", "CUDA1", "CPU"]
    n = tm.params.n_loaded_layers

    def device_of(name: str) -> str:
        parts = name.split(".")
        if parts[0] == "blk" and int(parts[1]) < n:
            if int(parts[1]) in cpu_experts and parts[2].endswith("_exps"):
                return "CPU"
            return layer_device[int(parts[1])]
        return "CPU" if name == "token_embd.weight" else out_dev

    names = [t.name for t in tm.tensors if tm.is_loaded(t)]
    copies = placement_copies(engine, devices, layer_device, {x: device_of(x) for x in names}, out_dev, "CPU")
    replay = placement_compute(tm, cfg, devices, layer_device, device_of, out_dev, "CPU", copies)
    assert replay is not None
    for dev in devices:
        holds = dev in layer_device
        if dev != "CPU" and not holds and out_dev != dev:
            continue
        role = DeviceRole(holds or dev == "CPU", holds or dev == "CPU", out_dev == dev, host=dev == "CPU",
                          copies=copies, entry=entry_of(layer_device, dev, "CPU"))
        yield dev, estimate(tm, cfg, role).bytes, replay[dev]


def _splits(n: int) -> list[tuple[list[str], str]]:
    """CPU layers first, then CUDA0's, then CUDA1's (the engines' -ngl/-ts order), at a few cut points; the
    output on the last layer's device and on the CPU."""
    cuts = sorted({0, 1, 6, n // 2, n - 1, n})
    out = []
    for a in cuts:
        for b in (c for c in cuts if c >= a):
            ld = ["CPU"] * a + ["CUDA0"] * (b - a) + ["CUDA1"] * (n - b)
            out.extend((ld, o) for o in dict.fromkeys((ld[-1], "CPU")))
    return out


@pytest.mark.parametrize("model,engine,ctx,kv,ub", [
    ("gemma-3-27b", "ik", 32768, "q8_0", 1024), ("gemma-3-27b", "mainline", 8192, "f16", 512),
    ("gpt-oss-20b", "mainline", 32768, "q8_0", 1024), ("deepseek-v4-flash", "mainline", 32768, "f16", 512)])
def test_the_role_estimate_covers_every_split_of_a_sliding_window_model(model, engine, ctx, kv, ub):
    # the solver reserves each device's compute buffer from the role estimate (stand-in placements) and the plan
    # is re-checked with its own replay (which equals the engines' logs: above).  A sliding-window model's layers
    # alternate kinds, each with its own mask (gemma-3: 5 window layers, 1 full), and the last layer gathers the
    # output rows: stand-ins of 3 window layers reserved 358 MiB where ik's replay of
    # `plan gemma-3-27b --vram 24 --ram 96 --ctx 32768 --kv q8_0`'s placement (62 layers on the GPU, the tied
    # output on the CPU) needs 422 MiB, and mainline's full offload of gemma-3-27b at 8k 570.67 vs 602.70 MiB.
    # DeepSeek-V4-Flash: two sliding-window-only layers, then CSA/HCA alternating, hash-routed first layers
    cfg = RunConfig(engine=engine, ctx=ctx, type_k=kv, type_v=kv, ubatch=ub, batch=max(ub, 2048))
    n = builtin(model).params.n_loaded_layers
    for ld, out in _splits(n):
        for dev, role_bytes, replay_bytes in _role_vs_replay(model, engine, cfg, ld, out):
            assert role_bytes >= replay_bytes, (ld.count("CPU"), ld.count("CUDA0"), out, dev,
                                                role_bytes / MIB, replay_bytes / MIB)


@pytest.mark.parametrize("mla,fa", [(0, True), (1, True), (3, False)])
def test_the_role_estimate_covers_every_other_layers_experts_on_the_cpu(mla, fa):
    # ik DeepSeek-R1 with every other layer's experts on the CPU (-ot), on one GPU with the output on the CPU or
    # after five CPU layers with the output: the replay (ik's -mla 0 graph: 268.00 MiB) exceeded every stand-in
    # that moved one layer's experts or only up/gate (266.50 MiB); the -mla paths are checked against ik's
    # dumps in test_compute_kv_kinds
    cfg = RunConfig(engine="ik", ctx=4096, type_k="f16", type_v="f16", ubatch=512, batch=2048, mla=mla,
                    flash_attn=fa)
    n = builtin("deepseek-r1").params.n_loaded_layers
    for parity in (0, 1):
        moved = frozenset(range(3 + parity, n, 2))
        for ld, out in ((["CUDA0"] * n, "CPU"), (["CPU"] * 5 + ["CUDA0"] * (n - 5), "CUDA0")):
            for dev, role_bytes, replay_bytes in _role_vs_replay("deepseek-r1", "ik", cfg, ld, out, moved):
                assert role_bytes >= replay_bytes, (parity, out, dev, role_bytes / MIB, replay_bytes / MIB)
