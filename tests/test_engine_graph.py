"""The allocator replay (planner/engine_graph.py + planner/gallocr.py) against the engine itself.

Independent sources, all from llama.cpp 0c1e57098 run on this machine over RPC (tools/engine_harness/):
- tests/fixtures/engine/graphs/*.txt: the scheduler's own dump of the prompt graph (GGML_SCHED_DEBUG=2,
  tools/engine_harness/dump_graph.sh): every non-view node's op, size and backend, and each split's inputs;
- the load logs' "<dev> compute buffer size" lines (tests/fixtures/engine/, tests/fixtures/rpc/), printed to
  0.01 MiB at load and to 0.0001 MiB by the context's destructor ("compute buffer size is").
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from planner.compute_buffers import DeviceRole, estimate
from planner.engine_buffers import tensor_devices
from planner.engine_graph import GraphShape, build, graph_of, has_graph
from planner.gallocr import VIEW_OPS, schedule
from planner.runconfig import RunConfig
from planner.tensors import builtin

sys.path.insert(0, str(Path(__file__).parent))
from test_compute_buffers import harness_cases, predicted_harness, predicted_rpc, rpc_cases  # noqa: E402
from test_layer_split import ENGINE_DIR, derive, manifest  # noqa: E402

MIB = 1 << 20
GRAPHS = ENGINE_DIR / "graphs"


def _placement(fx: dict, *, graph: bool = True):
    """(graph tensors, backend names with the CPU last) for a harness fixture, as memory_report builds them (or,
    ``graph`` False, what compute_buffers takes: params, shape, layer devices, moved weights, output, backends)."""
    tmap, cmd, _, devices, _, split, _ = derive(fx)
    names = [d.name for d in devices]
    cpu = len(names)
    overrides = tuple((rx, None if d.upper().startswith("CPU") else names.index(d)) for rx, d in cmd.overrides)
    tdev = tensor_devices(tmap, split, overrides)
    conv = {None: cpu, **{i: i for i in range(cpu)}}
    ld = [conv[d] for d in split.layer_device]
    ctx = cmd.ctx or tmap.params.n_ctx_train
    shape = GraphShape.of(tmap.params, min(cmd.ubatch, cmd.batch, ctx), -(-ctx // 256) * 256, cmd.flash_attn,
                          cmd.type_k, cmd.type_v)
    out = conv[split.output_device]
    tpl = graph_of("mainline", tmap)
    assert tpl is not None
    if not graph:
        moved = {n: conv[d] for n, d in tdev.items() if n.startswith("blk.") and conv[d] != ld[int(n.split(".")[1])]}
        copies = 4 if (cpu not in ld and out != cpu and len(names) > 1 and not cmd.overrides) else 1
        return tpl, tmap.params, shape, ld, moved, out, cpu + 1, copies
    ts = build("mainline", tpl, shape, ld, lambda n: cpu if n == "token_embd.weight" else conv[tdev[n]], out, cpu,
               [il < tmap.params.n_dense_lead for il in range(len(ld))])
    return ts, [*names, "CPU"]


def _fmt(size: int) -> str:                     # ggml-backend.cpp:987-995 fmt_size
    return f"{size // MIB}M" if size >= MIB else f"{size // 1024}K"


# ggml_op_desc as the dump prints it ("%10.10s"): GLU ops print their GLU name
_OP = {"GLU": "SWIGLU", "FLASH_ATTN_EXT": "FLASH_ATTN", "UNARY": "SIGMOID"}


@pytest.mark.parametrize("dump", sorted(p.name for p in GRAPHS.glob("*.txt")))
def test_graph_matches_the_schedulers_own_dump(dump):
    lines = (GRAPHS / dump).read_text().splitlines()
    command = lines[1].removeprefix("# command: ")
    fx = next(f for f in manifest() if f["command"] == command)
    ts, names = _placement(fx)
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
    ours_nodes = [(_OP.get(ts[i].op, ts[i].op), _fmt(ts[i].size), split_of[i]) for i in order]
    assert [n[0] for n in ours_nodes] == [n[0] for n in theirs_nodes]          # the same ops in the same order
    assert [n[2] for n in ours_nodes] == [n[2] for n in theirs_nodes]          # each on the same backend
    assert [(o[1], n[0]) for o, n in zip(ours_nodes, theirs_nodes) if n[0] != "SET_ROWS"] == [
        (t[1], t[0]) for t in theirs_nodes if t[0] != "SET_ROWS"]              # the same sizes (SET_ROWS: a cache view)
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
        if not log.startswith("mainline"):
            continue
        if p.id.startswith("rpc/"):
            case = next(c for c in h.CASES if c["log"] == log)
            tmap, text = h._model(case["model"]), (h.FIX / log).read_text(encoding="utf-8")
        else:
            fx = next(f for f in manifest() if f["log"] == log)
            tmap, text = derive(fx)[0], (ENGINE_DIR / log).read_text(encoding="utf-8")
        if has_graph("mainline", tmap):
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


def test_three_layers_per_device_reach_the_steady_state():
    # the role estimate replays 3 layers per device (planner.compute_buffers._K): the same buffers as the real
    # 94-layer placement of Qwen3-235B at -ub 512 and 4096 (CPU layers, a middle GPU, the output GPU)
    tm = builtin("qwen3-235b-a22b")
    p = tm.params
    from planner.engine_graph import compute_buffers

    for ub in (512, 4096):
        cfg = RunConfig(engine="mainline", ctx=32768, ubatch=ub, batch=4096)
        shape = GraphShape.of(p, ub, cfg.kv_size, True, cfg.type_k, cfg.type_v)
        full = compute_buffers("mainline", "qwen3moe", p, shape, [2] * 30 + [0] * 34 + [1] * 30, {}, 1, 3, 1,
                               exact_layers=True)
        assert estimate(tm, cfg, DeviceRole(True, True, False, entry="cpu")).bytes == full[0]
        assert estimate(tm, cfg, DeviceRole(True, True, True)).bytes == full[1]
        assert estimate(tm, cfg, DeviceRole(True, True, False, host=True)).bytes == full[2]
        two = compute_buffers("mainline", "qwen3moe", p, shape, [2] * 2 + [0] * 2 + [1] * 2, {}, 1, 3, 1,
                              exact_layers=True)
        assert two[0] < full[0]                    # two layers are not enough: the 3 is not arbitrary


@pytest.mark.parametrize("log", [f["log"] for f in manifest() if f["engine"] == "mainline"
                                 and has_graph("mainline", derive(f)[0])])
def test_runs_of_identical_layers_cut_to_three_change_no_buffer(log):
    # planner.engine_graph.compress: the 94-layer t94 placements (ngl 60/80/94, -ot 0-20, 40s, odd layers)
    # replayed whole and cut give the same bytes on every backend
    from planner.engine_graph import compress, compute_buffers

    tpl, p, shape, ld, moved, out, n, copies = _placement(next(f for f in manifest() if f["log"] == log), graph=False)
    assert compute_buffers("mainline", tpl, p, shape, ld, moved, out, n, copies) == compute_buffers(
        "mainline", tpl, p, shape, ld, moved, out, n, copies, exact_layers=True)
    assert len(compress(ld, moved)[0]) <= len(ld)


def _role_and_replay(fx: dict):
    """(device, the role estimate the solver reserves, the placement replay check reports) per device."""
    from planner.compute_buffers import entry_of, is_ffn_matmul, placement_compute, sched_copies

    tmap, cmd, _, devices, _, split, _ = derive(fx)
    names = [d.name for d in devices]
    overrides = tuple((rx, None if d.upper().startswith("CPU") else names.index(d)) for rx, d in cmd.overrides)
    tdev = tensor_devices(tmap, split, overrides)
    ffn = {dv for n, dv in tdev.items() if is_ffn_matmul(n)}
    cfg = RunConfig(engine="mainline", ctx=cmd.ctx, type_k=cmd.type_k, type_v=cmd.type_v,
                    flash_attn=cmd.flash_attn, ubatch=cmd.ubatch, batch=cmd.batch, amb=0)
    copies = sched_copies("mainline", n_devices=len(set(names)), overrides=bool(cmd.overrides),
                          all_offloaded=None not in split.layer_device and split.output_device is not None)
    name_of = {None: "CPU", **dict(enumerate(names))}
    replay = placement_compute(tmap, cfg, names, [name_of[d] for d in split.layer_device],
                               lambda n: name_of[tdev.get(n)] if n != "token_embd.weight" else "CPU",
                               name_of[split.output_device], "CPU", copies)
    assert replay is not None
    for i, dev in enumerate([*names, "CPU"]):
        if dev == "CPU":
            role = DeviceRole(None in split.layer_device, None in ffn, split.output_device is None, host=True,
                              copies=copies)
        else:
            role = DeviceRole(i in split.layer_device, i in ffn, split.output_device == i, copies=copies,
                              entry=entry_of([name_of[d] for d in split.layer_device], dev, "CPU"))
        yield dev, estimate(tmap, cfg, role).bytes, replay[dev]


@pytest.mark.parametrize("log", [f["log"] for f in manifest() if f["engine"] == "mainline"
                                 and has_graph("mainline", derive(f)[0])])
def test_the_solvers_role_estimate_never_reserves_less_than_the_replay(log):
    # the solver sizes compute buffers per device role before it places anything (planner.compute_buffers
    # ._canonical: the largest over stand-in placements); the plan is then re-checked with the placement's own
    # replay, which equals the engine's log (above).  Reserving less would fail that re-check on a tight plan.
    fx = next(f for f in manifest() if f["log"] == log)
    for dev, role_bytes, replay_bytes in _role_and_replay(fx):
        assert role_bytes >= replay_bytes, (dev, role_bytes / MIB, replay_bytes / MIB)
