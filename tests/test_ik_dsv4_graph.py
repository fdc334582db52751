"""ik_llama.cpp's DeepSeek-V4 compute graph ([ik.deepseek4] in planner/data/engine_graphs.toml) against the engine's
own allocations, and the solver's charge for the per-layer mask copies it makes.

Independent sources: tests/fixtures/kv_kinds_ik (ik_llama.cpp 8337e4cd3 running the tiny dsv4 model of
tools/engine_harness/make_tiny_arch.py, every process with tools/engine_harness/buft_alloc_log.c preloaded: each
``ggml_backend_buft_alloc_buffer`` call in bytes) and ik's scheduler dumps under graphs/ and graphs_extra/.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from planner.compute_buffers import placement_compute, placement_copies
from planner.input_copies import layer_copy_allowance
from planner.memory import CPU

sys.path.insert(0, str(Path(__file__).parent))
from test_compute_kv_kinds import _placement, logged, predicted  # noqa: E402
from test_kv_engine_logs import FIX_IK, IK_CASES, case_log  # noqa: E402

MIB = 1 << 20
_ALLOC = re.compile(r"\[buft_alloc\] buft: (.+?), size: (\d+)$")


def compute_allocations(text: str) -> list[int]:
    """The bytes of the compute buffers the engine allocated: the [buft_alloc] lines right before its first
    "compute buffer size" line (ik allocates them together, then prints them)."""
    lines = text.splitlines()
    first = next(i for i, x in enumerate(lines) if "compute buffer size =" in x)
    out: list[int] = []
    for x in reversed(lines[:first]):
        m = _ALLOC.search(x)
        if not m:
            break
        out.insert(0, int(m[2]))
    return out


DSV4 = [c["log"] for c in IK_CASES if c["kind"] == "dsv4"]


def test_every_ik_dsv4_case_is_covered():
    # the six kv_kinds cases (CPU at 4k and 16k, one rpc-server at 16k, two at 4k, -ctk q8_0, -np 2)
    assert len(DSV4) == 6


@pytest.mark.parametrize("log", DSV4)
def test_ik_dsv4_buffers_equal_the_engines_allocations_to_the_byte(log):
    # the replay of the case's placement, each device in bytes, against the allocation the engine made for it (in
    # the order it printed the buffers: the RPC devices, then the CPU)
    text = case_log(next(c for c in IK_CASES if c["log"] == log))
    devs = list(logged(text))
    got = predicted(log, "ik")
    assert [round(got[d] * MIB) for d in devs] == compute_allocations(text)


def test_experts_on_the_cpu_end_each_layers_split():
    # graphs_extra/ik-dsv4-c16384-ot-rpc1.*: the 16k case with every layer's experts on the CPU (-ot exps=CPU).  Each
    # layer copies its own view of the 16384 x 512 mask to the device (ik dsv4_build_raw_mask_view: the per-layer
    # "KQ_mask_swa (view)" split inputs); in one split (the kv_kinds case) all six are alive at once, 132.52 MiB,
    # while here a split ends at every layer's experts and the device logs 46.59 MiB: the replay equals both
    # allocations to the byte and the dump node by node
    from test_engine_graph import assert_matches_dump

    from planner.compute_buffers import _shape, _tokens
    from planner.engine_graph import build, graph_of, layer_tags

    extra = FIX_IK / "graphs_extra"
    lines = (extra / "ik-dsv4-c16384-ot-rpc1.txt").read_text().splitlines()
    assert "-ot exps=CPU" in lines[1]
    text = (extra / "ik-dsv4-c16384-ot-rpc1.compute.txt").read_text()
    tmap, run, devices, layer_device, device_of, out_dev, _ = _placement("dsv4-c16384-rpc1.log", "ik")

    def dev(name: str) -> str:
        return CPU if "_exps" in name else device_of(name)

    names = [t.name for t in tmap.tensors if tmap.is_loaded(t)]
    copies = placement_copies("ik", devices, layer_device, {x: dev(x) for x in names}, out_dev, CPU)
    got = placement_compute(tmap, run, devices, layer_device, dev, out_dev, CPU, copies)
    assert got is not None
    assert [got[d] for d in logged(text)] == compute_allocations(text)
    assert predicted("dsv4-c16384-rpc1.log", "ik")[devices[0]] - got[devices[0]] / MIB > 80
    p = tmap.params
    order = [*devices, CPU]
    ts = build("ik", graph_of("ik", tmap, True, _tokens(run), run.mla) or "", _shape(p, run),
               [order.index(d) for d in layer_device], lambda name: order.index(dev(name)), order.index(out_dev),
               len(order) - 1, tags=[layer_tags(p, il) for il in range(len(layer_device))])
    assert_matches_dump(lines, ts, order)


@pytest.mark.parametrize("run_name,ctx,ubatch,batch", [("ik-dsv4-c16384-ub2048-rpc1", 16384, 2048, 2048),
                                                        ("ik-dsv4-c8192-ub128-rpc1", 8192, 128, 2048)])
def test_other_ubatches_match_a_dump_and_their_buffers(run_name, ctx, ubatch, batch):
    # graphs_extra/: the plans choose -ub (2048 for deepseek-v4-flash at 80 GiB + 128 GiB, 32k); the raw keys'
    # window (256 ceil((max(256, T) + n_swa) / 256) cells: 2304 at T = 2048, 512 at T = 128), the reserve plan's
    # blocks and the indexer's widths follow T: node by node against ik's dumps, the buffers against the lines the
    # same runs printed (2 decimals)
    from dataclasses import replace

    from test_engine_graph import assert_matches_dump

    from planner.compute_buffers import _shape, _tokens
    from planner.engine_graph import build, graph_of, layer_tags

    extra = FIX_IK / "graphs_extra"
    lines = (extra / f"{run_name}.txt").read_text().splitlines()
    assert f"-c {ctx} -ub {ubatch}" in lines[1]
    printed = logged((extra / f"{run_name}.compute.txt").read_text())
    tmap, run, devices, layer_device, device_of, out_dev, copies = _placement("dsv4-c16384-rpc1.log", "ik")
    run = replace(run, ctx=ctx, ubatch=ubatch, batch=batch)
    got = placement_compute(tmap, run, devices, layer_device, device_of, out_dev, CPU, copies)
    assert got is not None and printed.keys() == got.keys()
    assert all(abs(got[d] / MIB - printed[d]) <= 0.005 for d in printed), (got, printed)
    p = tmap.params
    order = [*devices, CPU]
    ts = build("ik", graph_of("ik", tmap, True, _tokens(run), run.mla) or "", _shape(p, run),
               [order.index(d) for d in layer_device], lambda name: order.index(device_of(name)),
               order.index(out_dev), len(order) - 1, tags=[layer_tags(p, il) for il in range(len(layer_device))])
    assert_matches_dump(lines, ts, order)


def test_an_indexer_keeping_every_compressed_row_builds_no_top_k():
    # graphs_extra/ik-dsv4k512-c1024-rpc1.*: make_tiny_arch.py dsv4k512 (the dsv4 file with V4-Flash's index_topk
    # 512; dsv4k512.header.gguf its header) at -c 1024 over one rpc-server: 256 compressed rows, all kept, so ik
    # builds neither the indexer's top-k nor its mask (build_deepseek4.cpp:1155-1170: index_topk < the CSA mask's
    # width) and CSA layers read the CSA mask input itself, indexed by MASK_TO_IDX (768 wide < 768 + 256 keys):
    # the template's "nolidk" rows, node by node against ik's dump, both buffers against the printed lines
    from test_engine_graph import assert_matches_dump

    from planner.compute_buffers import _shape, _tokens
    from planner.engine_graph import build, graph_of, layer_tags
    from planner.runconfig import RunConfig
    from planner.source import load_model

    extra = FIX_IK / "graphs_extra"
    lines = (extra / "ik-dsv4k512-c1024-rpc1.txt").read_text().splitlines()
    assert "-c 1024" in lines[1] and not any("INDEXER_TO" in x or "MASK_TOPK" in x for x in lines)
    printed = logged((extra / "ik-dsv4k512-c1024-rpc1.compute.txt").read_text())
    tmap = load_model(str(extra / "dsv4k512.header.gguf"), check_size=False)
    p = tmap.params
    assert p.indexer_top_k == 512
    run = RunConfig(engine="ik", ctx=1024, type_k="f16", type_v="f16", flash_attn=True, ubatch=512, batch=2048,
                    amb=256)       # the command's defaults: f16 cache, ik's -amb 256
    shape = _shape(p, run)
    assert not shape.has("lidk") and shape.has("mti")
    dev = "RPC0[127.0.0.1:50420]"
    n = p.n_loaded_layers

    def device_of(name: str) -> str:
        return CPU if name == "token_embd.weight" else dev

    got = placement_compute(tmap, run, [dev], [dev] * n, device_of, dev, CPU, 1)
    assert got is not None and printed.keys() == got.keys()
    assert all(abs(got[d] / MIB - printed[d]) <= 0.005 for d in printed), (got, printed)
    ts = build("ik", graph_of("ik", tmap, True, _tokens(run), run.mla) or "", shape, [0] * n,
               lambda name: [dev, CPU].index(device_of(name)), 0, 1, tags=[layer_tags(p, il) for il in range(n)])
    assert_matches_dump(lines, ts, [dev, CPU])


@pytest.mark.parametrize("dump", ["ik-dsv4-c16384-rpc1.txt", "ik-dsv4-c4096-rpc2.txt"])
def test_layer_copy_allowance_is_the_dumps_per_layer_mask_copies(dump):
    # what the solver charges per layer (planner/input_copies.py) against the engine's own split inputs: the
    # "(view)" inputs ik's scheduler copies to the devices are the layers' views of the raw and CSA masks, one set
    # per layer (the dump prints sizes in whole MiB; these masks are whole MiB)
    lines = (FIX_IK / "graphs" / dump).read_text().splitlines()
    views = [int(m[1]) for x in lines if x.startswith("## SPLIT")
             for m in re.finditer(r"\[[^\]]*\(view\) \(\s*(\d+)M\)\]", x)]
    log = {"ik-dsv4-c16384-rpc1.txt": "dsv4-c16384-rpc1.log", "ik-dsv4-c4096-rpc2.txt": "dsv4-c4096-rpc2.log"}[dump]
    tmap, run, *_ = _placement(log, "ik")
    allowance = layer_copy_allowance(tmap, run)
    assert len(views) == 10 and sum(views) * MIB == sum(allowance)      # 6 raw views, 2 x 2 CSA ones
    assert len(set(allowance)) == 2 and max(allowance) - min(allowance) == 2 * max(v for v in views if v != max(views)) * MIB


def test_a_full_gpu_run_of_v4_flash_layers_is_reserved():
    # `plan deepseek-v4-flash --vram 80 --ram 128 --ctx 32768 --kv q8_0 --engine ik` (benchmarks/stress_recheck.py):
    # the role's stand-ins hold 6 layers, the GPU's run 18, each copying its own 32768 x 512 mask (32 MiB): "internal
    # re-check failed: CUDA0 over budget by 0.59 GiB" before the solver charged each layer's copies
    from click.testing import CliRunner

    from planner.cli import main

    r = CliRunner().invoke(main, ["plan", "deepseek-v4-flash", "--vram", "80", "--ram", "128", "--ctx", "32768",
                                  "--kv", "q8_0", "--engine", "ik"])
    assert r.exit_code == 0, r.output


def test_the_solvers_copy_charge_covers_any_split_of_the_ffn():
    # the solver charges each layer's mask copies (layer_copy_allowance) on the options that keep its FFN on the GPU:
    # half on the down projection's, half on the gate/up pair's (planner/groups.py); a layer with its FFN on the CPU
    # ends the run of GPU layers, so its copies are not held.  Over random per-layer splits of the tiny dsv4's FFN at 16k (experts all on the GPU, all on the CPU,
    # gate/up or down alone on the CPU, the shared experts alone on the CPU), the device's role reservation plus the
    # charge covers the replay (which equals ik's allocations, the tests above)
    import random

    from planner.compute_buffers import DeviceRole, entry_of, estimate

    tmap, run, devices, layer_device, device_of, out_dev, _ = _placement("dsv4-c16384-rpc1.log", "ik")
    dev = devices[0]
    allow = layer_copy_allowance(tmap, run)
    role = DeviceRole(True, True, out_dev == dev, copies=1, entry=entry_of(layer_device, dev, CPU))
    reserved = estimate(tmap, run, role).bytes
    rng = random.Random(1)
    n = len(layer_device)
    for _ in range(40):
        mask = [rng.randrange(5) for _ in range(n)]    # 0 GPU, 1 experts CPU, 2 gate/up CPU, 3 down CPU, 4 shexp CPU

        def where(name: str, mask: list[int] = mask) -> str:
            if name.startswith("blk."):
                m = mask[int(name.split(".")[1])]
                if "_exps" in name and (m == 1 or (m == 2 and "down" not in name) or (m == 3 and "down" in name)):
                    return CPU
                if "_shexp" in name and m == 4:
                    return CPU
            return device_of(name)

        got = placement_compute(tmap, run, devices, layer_device, where, out_dev, CPU, 1)
        assert got is not None
        charged = sum({1: 0, 2: a - a // 2, 3: a // 2}.get(m, a) for a, m in zip(allow, mask))
        assert reserved + charged >= got[dev], (mask, reserved + charged, got[dev])
