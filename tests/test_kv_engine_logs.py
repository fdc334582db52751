"""KV cache and recurrent state of every attention/state kind against real mainline llama.cpp logs.

The independent source is the engine itself: llama.cpp 0c1e57098 (CPU build; llama-completion, ggml-rpc-server)
ran tiny, structurally faithful GGUFs of each kind (tools/engine_harness/make_tiny_arch.py: DeepSeek-V4 compressed
attention, MLA, GLM-5 DSA, Qwen3.5-MoE gated delta-net hybrid, gemma-3 and gpt-oss sliding windows, gemma-4 with
KV shared across layers), captured by
tools/engine_harness/run_kv_kinds.sh into tests/fixtures/kv_kinds/ with the exact commands (cases.jsonl). The
engine is never run here.

* Plain CPU runs print every KV / recurrent-state (RS) / DeepSeek-V4 compressor-state buffer to 0.01 MiB: the
  planner's total (mainline profile, same header, same flags) must equal the sum of the printed figures within
  their rounding (half a hundredth of a MiB each).
* RPC runs: each ggml-rpc-server (GGML_RPC_DEBUG=1) logs every buffer it allocates in bytes, in order: the model
  buffer, the cache buffers, the compute buffer. The planner's bytes of the layers the engine assigned to that
  device must equal the cache allocations to the byte.
* Layout: the cells of each window-sized cache and the number of layers each cache holds, as the engine prints
  them, against the planner's per-layer cells and kinds; the window and recurrent sizes do not move with -c.

ik_llama.cpp 8337e4cd3 (llama-cli, rpc-server) ran the same files (tests/fixtures/kv_kinds_ik/, captured by
tools/engine_harness/run_kv_kinds_ik.sh; every kind but Nemotron-H, which ik refuses). ik's rpc-server cannot log
its allocations, so the harness preloads tools/engine_harness/buft_alloc_log.c into every process: each
``ggml_backend_buft_alloc_buffer`` call appears as ``[buft_alloc] buft: NAME, size: BYTES`` in the client's log
(its own CPU buffers and every RPC buffer, by the server's name) and in each server's. The same tests run on them
with ik's spellings: "KV buffer size" lines (and the DeepSeek-V4 "DSV4 cache: ... total" line), the allocation
right before each such line in bytes, the layer map from "Setting default device in layer N to D" over ik's
offload list (a CPU-only build lists each rpc-server twice).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from planner.kv_cache import CacheConfig, LayerCache, check_engine, layer_caches
from planner.source import load_model

FIX = Path(__file__).parent / "fixtures" / "kv_kinds"
FIX_IK = Path(__file__).parent / "fixtures" / "kv_kinds_ik"
ENGINE_FIX = Path(__file__).parent / "fixtures" / "engine"


def _cases(fix: Path) -> list[dict]:
    return [dict(json.loads(line), dir=fix.name)
            for line in (fix / "cases.jsonl").read_text(encoding="utf-8").splitlines() if line]


CASES = _cases(FIX)
IK_CASES = _cases(FIX_IK)
ALL_CASES = CASES + IK_CASES
MIB = 1 << 20
CPU_NAME = "CPU"
KINDS = ("dsv4", "mla", "dsa", "qwen35moe", "gemma3", "gptoss", "gemma4", "gemma4kv", "llama4", "nemotronh", "kda",
         "kimilinear", "jamba", "granitehybrid", "falconh1", "mamba", "mamba2", "rwkv6", "rwkv7", "plamo2", "lfm2")
# ik 8337e4cd3 has no nemotron_h, kimi-linear, jamba, granitehybrid, falcon-h1, mamba2, rwkv6, rwkv7, plamo2 or lfm2
# architecture (*-refused.log); it knows mamba but aborts building its graph (IK_BROKEN)
IK_REFUSED = {"nemotronh": "nemotron_h", "kimilinear": "kimi-linear", "jamba": "jamba",
              "granitehybrid": "granitehybrid", "falconh1": "falcon-h1", "mamba2": "mamba2", "rwkv6": "rwkv6",
              "rwkv7": "rwkv7", "plamo2": "plamo2", "lfm2": "lfm2"}
IK_BROKEN = {"mamba": "mamba"}
IK_KINDS = tuple(k for k in KINDS if k not in IK_REFUSED and k not in IK_BROKEN)
# (+ "mlalegacy": the legacy attn_kv_b DeepSeek layout, make_tiny_deepseek2.py --layers 20, ik only)

_BUFFER = re.compile(r"(?:KV|RS|state) buffer size = +([\d.]+) MiB")
_ALLOC = re.compile(r"\[alloc_buffer\] device: \d+, size: (\d+)")
_ASSIGNED = re.compile(r"layer +(\d+) assigned to device (\S+),")
# ik: every KV buffer line, and the DeepSeek-V4 compressed caches/states (one buffer per tensor, on first decode)
_BUFFER_IK = re.compile(r"KV buffer size = +([\d.]+) MiB|DSV4 cache: .*total= *([\d.]+) MiB")
_BUFT_ALLOC = re.compile(r"\[buft_alloc\] buft: (.+?), size: (\d+)$")


@dataclass(frozen=True)
class Run:
    ctx: int
    ubatch: int
    n_seq: int
    type_k: str
    type_v: str
    flash_attn: bool
    swa_full: bool
    mla: int = 3
    mmap: bool = True
    unified: bool = False       # -kvu: the harness's kv_unified_shim.c (LLAMA_SHIM_KV_UNIFIED=1) sets it


def parse(command: str) -> Run:
    """The flags of a fixture command that change the cache, with the engine's defaults: llama-completion
    (common/arg.cpp @0c1e57098: -fa auto) or ik's llama-cli (common/common.h @8337e4cd3: flash_attn = true,
    mla_attn = 3; -fa takes on/off/auto/1/0)."""
    argv = shlex.split(command)

    def opt(name: str, default: str) -> str:
        return argv[argv.index(name) + 1] if name in argv else default

    return Run(ctx=int(opt("-c", "4096")), ubatch=int(opt("-ub", "512")), n_seq=int(opt("-np", "1")),
               type_k=opt("-ctk", "f16"), type_v=opt("-ctv", "f16"), flash_attn=opt("-fa", "auto") not in ("off", "0"),
               swa_full="--swa-full" in argv, mla=int(opt("-mla", "3")), mmap="--no-mmap" not in argv,
               unified="LLAMA_SHIM_KV_UNIFIED=1" in argv)


def _fix(case: dict) -> Path:
    return FIX_IK if case.get("dir") == FIX_IK.name else FIX


@cache
def _model(name: str, fix: Path = FIX):
    return load_model(str(fix / name), check_size=False)


def case_model(case: dict):
    return _model(case["model"], _fix(case))


def predicted(case: dict) -> tuple[LayerCache, ...]:
    run = parse(case["command"])
    cfg = CacheConfig(engine=case["engine"], ctx=run.ctx, type_k=run.type_k, type_v=run.type_v,
                      flash_attn=run.flash_attn, n_seq=run.n_seq, ubatch=run.ubatch, swa_full=run.swa_full,
                      mla=run.mla, unified=run.unified)
    return layer_caches(case_model(case).params, cfg)


def log_text(name: str, fix: Path = FIX) -> str:
    return (fix / name).read_text(encoding="utf-8", errors="replace")


def case_log(case: dict, server: int | None = None) -> str:
    name = case["log"] if server is None else case["log"].replace(".log", f"-server{server}.log")
    return log_text(name, _fix(case))


def _ids(cases: list[dict]) -> list[str]:
    return [f"{c['engine']}-" + c["log"].removesuffix(".log") for c in cases]


def ik_offload_list(text: str) -> list[str]:
    """ik's ``model->devices`` as its log prints them ("NAME: using device NAME - N MiB free", one line per entry,
    llama_load_model_from_file @8337e4cd3): a CPU-only build lists each RPC device twice, a CPU entry between."""
    return re.findall(r"^(\S+): using device \S+ - \d+ MiB free$", text, re.M)


def ik_layer_map(text: str, n_layer: int) -> list[str]:
    """Device (buffer-type name, or CPU) of layers 0..n_layer (n_layer = the output layer), from ik's "Setting
    default device in layer N to D" lines (D: an entry of its offload list); layers without a line stay on the
    CPU."""
    entries = ik_offload_list(text)
    got = {int(a): int(b) for a, b in re.findall(r"Setting default device in layer +(\d+) to (\d+)", text)}
    return [entries[got[il]] if il in got else "CPU" for il in range(n_layer + 1)]


def ik_allocs(text: str) -> list[tuple[str, int]]:
    """(buffer type, bytes) of every ``[buft_alloc]`` line (tools/engine_harness/buft_alloc_log.c), in order."""
    return [(m[1], int(m[2])) for m in map(_BUFT_ALLOC.search, text.splitlines()) if m]


def _ik_dsv4_allocs(text: str) -> dict[str, int]:
    """Bytes per buffer type of the allocations right before ik's "DSV4 cache:" line: the per-tensor buffers of
    ``llama_context::ensure_dsv4_cache_tensors`` (src/llama-dsv4.cpp:883-1000 @8337e4cd3), which prints nothing
    between them; empty for other models."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if "DSV4 cache:" in line), None)
    out: dict[str, int] = {}
    if end is None:
        return out
    i = end - 1
    while i >= 0 and (m := _BUFT_ALLOC.search(lines[i])):
        out[m[1]] = out.get(m[1], 0) + int(m[2])
        i -= 1
    return out


def ik_allocs_before(text: str, pattern: str) -> list[tuple[str, int]]:
    """The allocation logged right before each line matching ``pattern`` that names the same buffer type: what
    the engine allocated for the buffer that line prints (its own size line follows each allocation)."""
    out: list[tuple[str, int]] = []
    last: dict[str, int] = {}
    for line in text.splitlines():
        m = _BUFT_ALLOC.search(line)
        if m:
            last[m[1]] = int(m[2])
            continue
        m = re.search(pattern, line)
        if m and m[1] in last:          # a mmap'ed CPU buffer is not allocated: no line before it
            out.append((m[1], last.pop(m[1])))
    return out


def test_every_kind_is_captured_at_two_contexts_and_over_rpc():
    for engine, commit, kinds, cases in (("mainline", "0c1e57098", KINDS, CASES), ("ik", "8337e4cd3", IK_KINDS, IK_CASES)):
        for kind in kinds:
            runs = [c for c in cases if c["kind"] == kind]
            assert {parse(c["command"]).ctx for c in runs} >= {4096, 16384}, (engine, kind)
            assert {c["servers"] for c in runs} >= {0, 1, 2}, (engine, kind)
        assert all(c["engine"] == engine and c["commit"] == commit for c in cases)


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids(ALL_CASES))
def test_printed_cache_buffers_equal_the_prediction(case):
    """Every printed KV/state buffer (0.01 MiB): the sum must equal the planner's total within the rounding (ik's
    CPU backend mallocs 32 bytes more than asked, ggml-backend.cpp:706 @8337e4cd3: counted in the tolerance)."""
    text = case_log(case)
    if case["engine"] == "ik":
        printed = [float(a or b) for a, b in _BUFFER_IK.findall(text)]
    else:
        printed = [float(x) for x in _BUFFER.findall(text)]
    assert printed, case["log"]
    total = sum(c.total_bytes for c in predicted(case)) / MIB
    assert abs(total - sum(printed)) <= (0.005 + 32 / MIB) * len(printed) + 1e-9, (total, printed)
    if case["engine"] == "ik":      # and in bytes: the allocation before each KV buffer line, the DSV4 buffers
        allocated = sum(n for _, n in ik_allocs_before(text, r"(\S+) KV buffer size"))
        assert allocated + sum(_ik_dsv4_allocs(text).values()) == total * MIB


RPC = [c for c in ALL_CASES if c["servers"]]


def _ik_server_allocs(case: dict) -> dict[str, list[int]]:
    """Per rpc-server buffer-type name: the sizes that server allocated (its own log), which must be the client's
    allocations on that buffer type in the same order (one alloc_buffer request each)."""
    text = case_log(case)
    client = ik_allocs(text)
    out = {}
    argv = shlex.split(case["command"])
    endpoints = argv[argv.index("--rpc") + 1].split(",")
    for i in range(case["servers"]):
        name = next(e for e in ik_offload_list(text) if e.endswith(f"{endpoints[i]}]"))
        server = [n for _, n in ik_allocs(case_log(case, i))]
        assert server == [n for b, n in client if b == name], (i, name)
        out[name] = server
    return out


@pytest.mark.parametrize("case", RPC, ids=_ids(RPC))
def test_rpc_cache_allocations_equal_the_prediction_to_the_byte(case):
    """Per device, from the command alone: the engine's layer rule (mainline: -ngl 99 -ts 1,1 over the rpc
    devices; ik: its greedy fill over its offload list, planner.layer_split) gives each layer's device, which must
    be the one the engine logged; the planner's cache bytes of the layers on a device must equal that server's
    cache allocations."""
    from planner.engine_buffers import map_for_flags

    text = case_log(case)
    n = case["servers"]
    tmap = case_model(case)
    caches = predicted(case)
    if case["engine"] == "ik":
        logged = ik_layer_map(text, tmap.params.n_layer)          # the planner's rule: test_ik_layer_map_...
        kv_allocs = dict(ik_allocs_before(text, r"(\S+) KV buffer size"))
        _ik_server_allocs(case)
        dsv4 = _ik_dsv4_allocs(text)
        for dev in dict.fromkeys(logged[:-1]):
            want = sum(c.total_bytes for c in caches if logged[c.layer] == dev and c.kind != "dsv4")
            want += sum(c.k_bytes for c in caches if logged[c.layer] == dev and c.kind == "dsv4")
            assert kv_allocs.get(dev, 0) == want, (dev, kv_allocs)
            # DeepSeek-V4's compressed caches and compressor states: one buffer per tensor on the layer's device
            want = sum(c.index_bytes for c in caches if logged[c.layer] == dev and c.kind == "dsv4")
            assert dsv4.get(dev, 0) == want, (dev, dsv4)
        return
    logged_ml = {int(il): dev for il, dev in _ASSIGNED.findall(text)}
    split = map_for_flags("mainline", tmap, [f"RPC{i}" for i in range(n)], [1] * n,
                          n_gpu_layers=99, tensor_split=(1,) * n)
    device_of = dict(enumerate(split.layer_device))
    assert {il: dev for il, dev in logged_ml.items() if il in device_of} == device_of
    endpoints = dict(re.findall(r"using device (RPC\d) \(([^)]*)\)", text))
    for i in range(case["servers"]):
        allocs = [int(x) for x in _ALLOC.findall(case_log(case, i))]
        # model buffer, one allocation per cache buffer the client prints for this server, then compute buffer(s)
        # (a re-reserved compute buffer is allocated again: kimilinear -np 2)
        n_cache = len(re.findall(rf"RPC0\[{re.escape(endpoints[f'RPC{i}'])}\] [^=]*?(?:KV|RS|state) buffer size", text))
        assert len(allocs) >= 2 + n_cache
        want = sum(c.total_bytes for c in caches if device_of[c.layer] == f"RPC{i}")
        assert sum(allocs[1:1 + n_cache]) == want, (i, allocs)


IK_RPC = [c for c in IK_CASES if c["servers"]]


@pytest.mark.parametrize("case", IK_RPC, ids=_ids(IK_RPC))
def test_ik_layer_map_is_the_planners(case):
    """ik's own layer map ("Setting default device in layer N to D" over its offload list) is what the planner's
    ik rule (greedy fill by its layer-size table, planner.layer_split) gives for the command."""
    from planner.engine_buffers import map_for_flags, run_sizes

    text = case_log(case)
    tmap = case_model(case)
    entries = ik_offload_list(text)
    free = [int(x) << 20 for x in re.findall(r"^\S+: using device \S+ - (\d+) MiB free$", text, re.M)]
    run = parse(case["command"])
    argv = shlex.split(case["command"])
    ngl = int(argv[argv.index("-ngl") + 1])
    ts = tuple(float(x) for x in argv[argv.index("-ts") + 1].split(",")) if "-ts" in argv else None
    sizes = run_sizes("ik", tmap, None, ctx=run.ctx, type_k=run.type_k, type_v=run.type_v, ubatch=run.ubatch,
                      batch=2048, flash_attn=run.flash_attn)
    split = map_for_flags("ik", tmap, entries, free, n_gpu_layers=ngl, tensor_split=ts, sizes=sizes)
    assert list(split.layer_device) + [split.output_device] == ik_layer_map(text, tmap.params.n_layer)


@pytest.mark.parametrize("case", IK_CASES, ids=_ids(IK_CASES))
def test_ik_layer_size_table_is_the_planners(case):
    """ik's "Layer N: weights, KV, total, compute MiB" table (get_layer_sizes, src/llama.cpp:4156 @8337e4cd3), the
    sizes its greedy fill places layers by: every row's weights and KV equal planner.layer_sizes.ik_layer_sizes
    (KV: ik's llama_model::cache_size, which counts shared-KV and NextN layers) to the printed 0.01 MiB."""
    from planner.layer_sizes import ik_layer_sizes

    rows = re.findall(r"^Layer +(\d+): +([\d.]+), +([\d.]+), +([\d.]+) +([\d.]+) +MiB$", case_log(case), re.M)
    assert rows, case["log"]
    run = parse(case["command"])
    sizes = ik_layer_sizes(case_model(case), ctx=run.ctx, type_k=run.type_k, type_v=run.type_v,
                           n_ubatch=run.ubatch, flash_attn=run.flash_attn, mla_attn=run.mla, n_seq=run.n_seq)
    got = [(il, f"{w / MIB:.2f}", f"{kv / MIB:.2f}") for il, (w, kv) in enumerate(zip(sizes.weights, sizes.kv))]
    assert got == [(int(il), w, kv) for il, w, kv, _, _ in rows]


def _cache_blocks(text: str) -> list[tuple[str, int, int]]:
    """(which cache, cells, layers) of every llama_kv_cache the engine created, from its 'creating' line (the
    cache's name) and the 'size = ... (N cells, L layers' line that follows."""
    out, name = [], ""
    for line in text.splitlines():
        m = re.search(r"creating +(.*?) (?:KV )?cache", line)
        if m:
            name = m.group(1).strip()
        m = re.search(r"llama_kv_cache: size = +[\d.]+ MiB \( *(\d+) cells, +(\d+) layers", line)
        if m:
            out.append((name, int(m.group(1)), int(m.group(2))))
    return out


SWA_KINDS = [c for c in CASES if c["kind"] in ("gemma3", "gptoss", "dsv4", "gemma4", "gemma4kv", "llama4")]


@pytest.mark.parametrize("case", SWA_KINDS, ids=_ids(SWA_KINDS))
def test_window_cells_and_pattern(case):
    """The sliding-window cache: its cells (window + ubatch, padded to 256; the context with --swa-full) and how
    many layers it holds (gemma-3: il % 6 < 5; gpt-oss: even layers; DeepSeek-V4: every layer)."""
    swa = [b for b in _cache_blocks(log_text(case["log"])) if b[0] == "SWA"]
    assert len(swa) == 1
    _, cells, n_layers = swa[0]
    caches = predicted(case)
    sliding = [c for c in caches if c.kind in ("swa", "dsv4")]
    assert len(sliding) == n_layers
    assert {c.cells for c in sliding} == {cells}


@pytest.mark.parametrize("kind", ["gemma3", "gptoss", "dsv4", "gemma4"])
def test_window_cache_does_not_grow_with_the_context(kind):
    by_ctx = {}
    for c in (x for x in CASES if x["kind"] == kind and x["servers"] == 0):
        run = parse(c["command"])
        if run.ubatch == 512 and not run.swa_full:
            by_ctx[run.ctx] = next(b[1] for b in _cache_blocks(log_text(c["log"])) if b[0] == "SWA")
    assert set(by_ctx) == {4096, 16384} and len(set(by_ctx.values())) == 1


def test_recurrent_state_is_per_sequence_and_context_free():
    """Qwen3.5-MoE: the RS buffer is the same at 4096 and 16384 tokens and doubles with -np 2; the attention
    layers (every 4th) scale with the context."""
    rs = {}
    for c in (x for x in CASES if x["kind"] == "qwen35moe" and x["servers"] == 0):
        rs[parse(c["command"]).ctx] = re.search(r"RS buffer size = +([\d.]+) MiB", log_text(c["log"])).group(1)
        recurrent = [x for x in predicted(c) if x.kind == "recurrent"]
        assert [x.layer for x in recurrent] == [0, 1, 2, 4, 5, 6]             # (il + 1) % 4 != 0; NextN block: none
        assert f"{sum(x.state_bytes for x in recurrent) / MIB:.2f}" == rs[parse(c["command"]).ctx]
    assert rs[4096] == rs[16384]
    np2 = next(c for c in CASES if c["log"] == "qwen35moe-c4096-np2-rpc1.log")
    one = next(c for c in CASES if c["log"] == "qwen35moe-c4096.log")
    assert (sum(x.state_bytes for x in predicted(np2)) == 2 * sum(x.state_bytes for x in predicted(one)))


def test_mla_cache_is_the_same_with_and_without_flash_attention():
    """mainline: has_v = !is_mla (src/llama-kv-cache.cpp:231 @0c1e57098), whatever -fa says: K only, one
    kv_lora_rank + n_rot row per cell."""
    on = log_text("mla-c4096.log")
    off = log_text("mla-c4096-fa-off-rpc1.log")
    assert "flash_attn            = disabled" in off
    assert _BUFFER.findall(on) == _BUFFER.findall(off) == ["27.00"]
    fa = [c for c in CASES if c["log"] in ("mla-c4096.log", "mla-c4096-fa-off-rpc1.log")]
    assert {sum(x.total_bytes for x in predicted(c)) for c in fa} == {6 * 4096 * (512 + 64) * 2}


def test_dsv4_compressed_caches_follow_the_context_and_states_do_not():
    """DeepSeek-V4 on mainline, per log line: the CSA and indexer caches hold ceil(n_ctx / 4) cells padded to
    256, the HCA cache ceil(n_ctx / 128) padded to 256 (1024 / 1024 / 256 at 4096; 4096 / 4096 / 256 at 16384),
    the compressor states do not move."""
    for name, csa, hca in (("dsv4-c4096.log", 1024, 256), ("dsv4-c16384.log", 4096, 256)):
        blocks = {b[0]: b[1:] for b in _cache_blocks(log_text(name))}
        assert blocks["DSV4 CSA compressed"] == (csa, 2) and blocks["DSV4 lightning-indexer"] == (csa, 2)
        assert blocks["DSV4 HCA compressed"] == (hca, 2)
        states = re.findall(r"DSV4 (\w+) state buffer size = +([\d.]+) MiB", log_text(name))
        assert states == [("csa", "0.03"), ("hca", "0.25"), ("lid", "0.02")]


def test_legacy_mla_file_is_plain_attention_on_mainline_and_mla_on_ik():
    """A DeepSeek GGUF in the old layout (attn_kv_b, no key_length_mla): mainline's is_mla() is false, so it keeps
    full per-head K (192) and V (128) (the harness log prints 50.00 MiB for 20 layers at 1024 cells); ik runs it
    as MLA (22.50 MiB of c^KV)."""
    tmap = load_model(str(ENGINE_FIX / "ds20.header.gguf"), check_size=False)
    assert tmap.params.mla_legacy
    ml = layer_caches(tmap.params, CacheConfig(engine="mainline", ctx=1024, type_k="f16", type_v="f16"))
    ik = layer_caches(tmap.params, CacheConfig(engine="ik", ctx=1024, type_k="f16", type_v="f16"))
    logged_ml = (ENGINE_FIX / "mainline-ds-rpc3-ngl99-ts1,1,1.log").read_text()
    logged_ik = (ENGINE_FIX / "ik-ds-rpc3-ngl99-ts1,1,1.log").read_text()
    assert "size =   50.00 MiB (  1024 cells,  20 layers" in logged_ml
    assert "KV self size  =   22.50 MiB, c^KV (f16):   22.50 MiB" in logged_ik
    assert f"{sum(c.total_bytes for c in ml) / MIB:.2f}" == "50.00"
    assert f"{sum(c.total_bytes for c in ik) / MIB:.2f}" == "22.50"
    assert not _model("mla.header.gguf").params.mla_legacy


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids(ALL_CASES))
def test_log_parser_reads_every_cache_buffer(case):
    """What `verify` reads from these logs (planner.logparse): every KV, RS and DSV4 state buffer counts as the
    cache of its device, and the total sums every cache's own size line (mainline prints one per cache; ik one
    "KV self size" line, its DSA indexer keys and DeepSeek-V4's compressed caches on lines of their own)."""
    from planner.logparse import parse_load_log

    text = case_log(case)
    ld = parse_load_log(text)
    kv = [b for b in ld.buffers if b.kind == "kv"]
    caches = predicted(case)
    total = sum(c.total_bytes for c in caches) / MIB
    if case["engine"] == "ik":
        assert [f"{b.mib:.2f}" for b in kv] == re.findall(r"KV buffer size = +([\d.]+) MiB", text)
        # "KV self size" sums K and V, not the recurrent state in the same buffer (src/llama.cpp:8499-8551)
        total -= sum(c.state_bytes for c in caches) / MIB
        n_lines = len(re.findall(r"KV self size|KV self indexer size|DSV4 cache:", text))
        assert ld.kv_total_mib is not None and abs(ld.kv_total_mib - total) <= 0.005 * n_lines + 0.005
        return
    assert [f"{b.mib:.2f}" for b in kv] == _BUFFER.findall(text)
    if case["servers"]:
        device_of = {int(il): dev for il, dev in _ASSIGNED.findall(text)}
        names = re.findall(r"using device (RPC\d) \(([^)]*)\)", text)
        for i, (dev, addr) in enumerate(names):
            logged = sum(b.mib for b in kv if b.device == f"RPC0[{addr}]")
            want = sum(c.total_bytes for c in caches if device_of[c.layer] == dev) / MIB
            assert abs(logged - want) <= 0.005 * sum(b.device == f"RPC0[{addr}]" for b in kv) + 1e-9, (i, dev)
    n_lines = len(re.findall(r"(?:llama_kv_cache|llama_memory_recurrent): size|ratio = \d.*size =", text))
    assert ld.kv_total_mib is not None and abs(ld.kv_total_mib - total) <= 0.005 * n_lines + 0.005


def test_gemma4_shared_kv_layers_and_padded_v_without_flash_attention():
    """gemma-4 (10 layers, shared_kv_layers = 5): only layers 0-4 allocate K/V (has_kv: il < n_layer -
    shared_kv_layers), one full and four sliding; with -fa off every V row is n_embd_v_gqa_max() wide (the engine
    says so: 'padding V cache to 512'), so the full layer's V doubles from 256 to 512 values per cell."""
    on, off = log_text("gemma4-c4096.log"), log_text("gemma4-c4096-fa-off-rpc1.log")
    assert [b[1:] for b in _cache_blocks(on)] == [(4096, 1), (1024, 4)]
    assert "padding V cache to 512" in off and "padding V cache" not in on
    assert _BUFFER.findall(on) == ["4.00", "8.00"] and _BUFFER.findall(off) == ["6.00", "8.00"]
    fa_on = next(c for c in CASES if c["log"] == "gemma4-c4096.log")
    fa_off = next(c for c in CASES if c["log"] == "gemma4-c4096-fa-off-rpc1.log")
    assert [c.layer for c in predicted(fa_on)] == [0, 1, 2, 3, 4]
    full_on = next(c for c in predicted(fa_on) if c.kind == "full")
    full_off = next(c for c in predicted(fa_off) if c.kind == "full")
    assert (full_on.v_bytes, full_off.v_bytes) == (4096 * 256 * 2, 4096 * 512 * 2)


def test_llama4_chunks_from_the_loader_and_a_zero_window_disables_them():
    """The llama4 file carries no sliding_window key: the loader's 8192-token chunks on 3 of 4 layers apply (the
    planner's gguf_defaults for llama4); cells = GGML_PAD(min(n_ctx, 8192 + n_ubatch), 256): 4096 at -c 4096,
    8704 at -c 16384 (as logged). A header with sliding_window = 0 (the converter's MobileLLM case) turns them off
    (src/models/llama4.cpp:7 @0c1e57098: found_swa && n_swa == 0 -> LLAMA_SWA_TYPE_NONE)."""
    import dataclasses

    from conftest import gguf_bytes

    from planner.gguf_header import BytesSource, parse_gguf
    from planner.tensors import from_gguf

    cells = {parse(c["command"]).ctx: next(b[1] for b in _cache_blocks(log_text(c["log"])) if b[0] == "SWA")
             for c in CASES if c["kind"] == "llama4" and c["servers"] == 0}
    assert cells == {4096: 4096, 16384: 8704}
    p = _model("llama4.header.gguf").params
    assert (p.n_swa, [p.is_swa(il) for il in range(4)]) == (8192, [True, True, True, False])
    head = parse_gguf(BytesSource((FIX / "llama4.header.gguf").read_bytes()), check_size=False)
    kv = [(e.key, e.vtype, e.value, e.elem_type) for e in head.kv] + [("llama4.attention.sliding_window", 4, 0)]
    data = gguf_bytes(kv, [(t.name, tuple(t.shape), t.type_name) for t in head.tensors], data=False)
    off = from_gguf(parse_gguf(BytesSource(data), check_size=False)).params
    assert off.n_swa == 0 and not any(off.is_swa(il) for il in range(off.n_layer))
    assert dataclasses.replace(off, n_swa=8192, swa_period=4) == p


def test_recurrent_layers_array_wins_over_the_interval():
    """The qwen35moe loader reads attention.recurrent_layers first and falls back to full_attention_interval only
    without it (src/models/qwen35moe.cpp load_arch_hparams @0c1e57098); the converter writes the array from
    config.json layer_types. The fixture's array follows the interval (as Qwen3.5's does); an irregular one moves
    the attention caches with it."""
    from conftest import gguf_bytes

    from planner.gguf_header import BytesSource, parse_gguf
    from planner.tensors import from_gguf

    p = _model("qwen35moe.header.gguf").params
    assert p.recurrent_layers == (True, True, True, False, True, True, True, False, False)
    head = parse_gguf(BytesSource((FIX / "qwen35moe.header.gguf").read_bytes()), check_size=False)
    irregular = (True, False, True, True, True, True, False, True, False)
    kv = [(e.key, e.vtype, irregular if e.key.endswith("recurrent_layers") else e.value, e.elem_type)
          for e in head.kv]
    data = gguf_bytes(kv, [(t.name, tuple(t.shape), t.type_name) for t in head.tensors], data=False)
    q = from_gguf(parse_gguf(BytesSource(data), check_size=False)).params
    caches = layer_caches(q, CacheConfig(engine="mainline", ctx=4096, type_k="f16", type_v="f16"))
    assert [c.layer for c in caches if c.kind == "full"] == [1, 6]
    assert [c.layer for c in caches if c.kind == "recurrent"] == [0, 2, 3, 4, 5, 7]


def test_mamba2_hybrid_layers_from_the_per_layer_arrays():
    """Nemotron-H ("M-M*M-M-"): SSM layers where head_count_kv and feed_forward_length are both 0, KV on the one
    attention layer, nothing on MLP layers; the RS buffer (Mamba-2 conv + SSM state, F32 per sequence: (4-1) x
    (256 + 2*2*32) + 32*256 floats per layer) is the same at 4096 and 16384 tokens; ik is refused by name (no
    NEMOTRON_H in ik_llama.cpp 8337e4cd)."""
    from planner.errors import UnknownModelError

    p = _model("nemotronh.header.gguf").params
    assert p.recurrent_layers == (True, False, True, False, True, False, True, False)
    one = next(c for c in CASES if c["log"] == "nemotronh-c4096.log")
    assert [(c.layer, c.kind) for c in predicted(one) if c.total_bytes] == [
        (0, "recurrent"), (2, "recurrent"), (3, "full"), (4, "recurrent"), (6, "recurrent")]
    assert {c.state_bytes for c in predicted(one) if c.kind == "recurrent"} == {4 * (3 * (256 + 2 * 2 * 32) + 32 * 256)}
    rs = {parse(c["command"]).ctx: re.search(r"RS buffer size = +([\d.]+) MiB", log_text(c["log"])).group(1)
          for c in CASES if c["kind"] == "nemotronh" and c["servers"] == 0}
    assert rs == {4096: "0.14", 16384: "0.14"}
    with pytest.raises(UnknownModelError, match="ik_llama.cpp does not load"):
        layer_caches(p, CacheConfig(engine="ik"))


RPC_CASES = [c for c in CASES if c["servers"]]
# ik: every run whose weights go through an allocation (an rpc-server's buffer, or the CPU's with --no-mmap)
IK_WEIGHT_CASES = [c for c in IK_CASES if c["servers"] or not parse(c["command"]).mmap]


def _predicted_weights(case: dict, gpus: list[str], free: list[int] | None = None) -> dict[str, int]:
    """What `check` predicts for the case's command: weights per buffer name (``gpus`` in the engine's offload
    order; the CPU as "CPU", ik's host buffer "CUDA_Host" counted with it: a CPU-only build has one CPU buffer
    type)."""
    from planner.engine_buffers import placement_buffers
    from planner.launch import parse_server_command, placement_from_command

    tmap = case_model(case)
    cmd = parse_server_command(shlex.split(case["command"]), engine=case["engine"])
    pl = placement_from_command(tmap, cmd, gpus, gpu_free_bytes=free)
    tied = "output.weight" not in {t.name for t in tmap.tensors}
    dup = pl.tied_duplicate_device(tied, engine=case["engine"], load=cmd.run.load)
    out: dict[str, int] = {}
    for kind, name, size in placement_buffers(case["engine"], tmap, None, pl.tensor_device, pl.layer_device,
                                              [0] * tmap.params.n_layer, cuda_devices=False, load=cmd.run.load,
                                              tied_duplicate_device=dup):
        if kind == "weights":
            key = "CPU" if name == "CUDA_Host" else name
            out[key] = out.get(key, 0) + size
    return out


@pytest.mark.parametrize("case", RPC_CASES, ids=_ids(RPC_CASES))
def test_model_buffer_per_rpc_server_equals_its_first_allocation(case):
    """The weights each rpc-server allocates (its log's first ``alloc_buffer`` size, bytes) equal what `check`
    predicts for the same command: the placement from -ngl/-ts, a tied output's duplicate of ``token_embd`` on the
    output layer's device (gemma-3/-4: no output.weight; mainline create_tensor sends TENSOR_DUPLICATED token_embd
    to LLM_TENSOR_OUTPUT's layer) and one ``rope_freqs`` per device holding a loading layer (gemma-4: full
    attention layers; TENSOR_DUPLICATED for the later ones)."""
    gpus = [f"CUDA{i}" for i in range(case["servers"])]
    got = _predicted_weights(case, gpus)
    logged = [int(re.search(r"\[alloc_buffer\] device: \d+, size: (\d+)", case_log(case, s)).group(1))
              for s in range(case["servers"])]
    assert [got.get(g, 0) for g in gpus] == logged


@pytest.mark.parametrize("case", IK_WEIGHT_CASES, ids=_ids(IK_WEIGHT_CASES))
def test_ik_weight_buffers_equal_their_allocations(case):
    """ik: every weight buffer the engine allocates (the allocation right before each "llm_load_tensors: NAME
    buffer size" line, bytes; each rpc-server's first allocation) equals what `check` predicts for the command,
    on ik's own layer map (its greedy fill over its offload list, planner.layer_split)."""
    text = case_log(case)
    entries = ik_offload_list(text)
    free = [int(x) << 20 for x in re.findall(r"^\S+: using device \S+ - (\d+) MiB free$", text, re.M)]
    got = _predicted_weights(case, entries, free)
    logged = dict(ik_allocs_before(text, r"llm_load_tensors: +(\S+) buffer size"))
    assert logged, case["log"]
    if case["servers"]:        # each server's first allocation is its model buffer (none: no layer there)
        assert {b: n[0] for b, n in _ik_server_allocs(case).items() if n} == {b: logged[b] for b in logged if
                                                                           b != "CPU"}
    assert {b: got.get(b, 0) for b in logged} == logged


def _ik_case(log: str) -> dict:
    return next(c for c in IK_CASES if c["log"] == log)


@pytest.mark.parametrize("kind", sorted(IK_REFUSED))
def test_ik_refuses_the_mainline_only_hybrids(kind):
    """ik 8337e4cd3 has no nemotron_h, kimi-linear, jamba, granitehybrid, falcon-h1, mamba2, rwkv6, rwkv7, plamo2
    or lfm2 architecture (its log of the same file mainline loads), and the planner refuses each for ik by name, in one line that names the engine to use."""
    from planner.errors import UnknownModelError

    arch = IK_REFUSED[kind]
    assert f"unknown model architecture: '{arch}'" in log_text(f"{kind}-refused.log", FIX_IK)
    assert not any(c["kind"] == kind for c in IK_CASES)
    p = _model(f"{kind}.header.gguf").params
    assert layer_caches(p, CacheConfig(engine="mainline"))            # mainline sizes it (tests below)
    with pytest.raises(UnknownModelError, match=f"^{arch}: ik_llama.cpp does not load this architecture") as exc:
        layer_caches(p, CacheConfig(engine="ik"))
    assert "\n" not in str(exc.value) and "--engine mainline" in str(exc.value)
    # `plan` checks it first (api.plan), before any type rule can fail on the architecture's odd tensors (LFM2's
    # rows of 3 conv taps), for every ik profile
    with pytest.raises(UnknownModelError, match=f"^{arch}: ik_llama.cpp does not load this architecture"):
        check_engine(p, "ik-2025")
    check_engine(p, "mainline")


def _rs_mib(log: str, fix: Path = FIX) -> str:
    return re.search(r"RS buffer size = +([\d.]+) MiB", log_text(log, fix)).group(1)


def test_kda_state_is_the_engines_formula_on_both_engines():
    """Kimi Delta Attention (Ling-3.0, bailingmoe3): KDA layers where head_count_kv is 0 (layers 0-2 and 4-6), MLA
    on 3 and 7.  Per KDA layer and sequence, F32: ik n_embd_v_s (src/llama-hparams.h:329 @8337e4cd3, with
    ssm_n_group = ssm_dt_rank = n_head and ssm_d_inner = kda.head_dim * n_head, src/llama-hparams.cpp:1460-1462)
    = (d_conv - 1)(2 key_dim + value_dim) + head_v_dim^2 n_v_heads, and mainline n_embd_r + n_embd_s
    (src/llama-hparams.cpp:219-224, 242-247 @0c1e57098) = 3 (d_conv - 1) n_head head_dim + head_dim^2 n_head:
    with d_conv 4, 4 heads of 64 both are 3*3*256 + 64*64*4 = 18688 floats.  The logs: mainline's RS buffer
    (0.43 MiB, 6 layers) does not move from 4096 to 16384 tokens and doubles with -np 2; ik keeps the state in
    its KV buffer (9.43 MiB = 9.00 MiB of MLA latent + 0.43) and its layer table's KV column is 0.07 MiB on
    every KDA layer."""
    floats = 3 * 3 * 256 + 64 * 64 * 4
    p = _model("kda.header.gguf").params
    assert (p.ssm_d_state, p.ssm_n_group, p.ssm_dt_rank, p.ssm_d_inner, p.ssm_d_conv) == (64, 4, 4, 256, 4)
    for cases in (CASES, IK_CASES):
        one = next(c for c in cases if c["log"] == "kda-c4096.log")
        caches = predicted(one)
        assert [c.layer for c in caches if c.kind == "recurrent"] == [0, 1, 2, 4, 5, 6]
        assert [c.layer for c in caches if c.kind == "mla"] == [3, 7]
        assert {c.state_bytes for c in caches if c.kind == "recurrent"} == {4 * floats}
        assert {c.k_bytes for c in caches if c.kind == "mla"} == {4096 * 576 * 2}
        np2 = next(c for c in cases if c["log"] == "kda-c4096-np2-rpc1.log")
        assert sum(c.state_bytes for c in predicted(np2)) == 2 * 6 * 4 * floats
    # Kimi-Linear (mainline only) shares the rule: the same KDA widths give the same state, MLA on layers 3 and 7
    kimi = next(c for c in CASES if c["log"] == "kimilinear-c4096.log")
    assert [(c.layer, c.kind, c.total_bytes) for c in predicted(kimi) if c.kind == "mla"] == [
        (3, "mla", 4096 * 576 * 2), (7, "mla", 4096 * 576 * 2)]
    assert {c.state_bytes for c in predicted(kimi) if c.kind == "recurrent"} == {4 * floats}
    assert _rs_mib("kimilinear-c4096.log") == _rs_mib("kimilinear-c16384.log") == "0.43"
    assert {_rs_mib("kda-c4096.log"), _rs_mib("kda-c16384.log")} == {f"{6 * 4 * floats / MIB:.2f}"} == {"0.43"}
    assert _rs_mib("kda-c4096-np2-rpc1.log") == f"{2 * 6 * 4 * floats / MIB:.2f}"
    ik = log_text("kda-c4096.log", FIX_IK)
    assert "KV buffer size =     9.43 MiB" in ik and "c^KV (f16):    9.00 MiB" in ik
    assert re.findall(r"^Layer +\d: +[\d.]+, +([\d.]+),", ik, re.M)[:8] == ["0.07"] * 3 + ["4.50"] + ["0.07"] * 3 + [
        "4.50"]


def test_mamba_hybrids_layer_kinds_and_state_from_the_per_layer_arrays():
    """Jamba (Mamba-1), Granite-4.0-H (Mamba-2): a layer is recurrent iff its head_count_kv is 0
    (src/models/jamba.cpp:11-13, granite-hybrid.cpp:22-25 @0c1e57098); Falcon-H1 runs attention and Mamba-2 in
    every layer (falcon-h1.cpp:14 and create_memory's FALCON_H1 filters, src/llama-model.cpp:2688-2690), so every
    layer holds both.  State per layer and sequence, F32, mainline n_embd_r + n_embd_s (src/llama-hparams.cpp:
    229, 257): Jamba (4-1) x 512 + 16 x 512 (no groups); Granite/Falcon (4-1) x (512 + 2*2*32) + 32 x 512.  The
    engine's cache lines: cells x layers of the KV cache, the layers the recurrent memory allocates, the RS size
    unchanged at 16384 tokens and doubled by -np 2."""
    want = {"jamba": ([4], 3 * 512 + 16 * 512, 7), "granitehybrid": ([2, 6], 3 * (512 + 128) + 32 * 512, 6),
            "falconh1": ([0, 1, 2, 3], 3 * (512 + 128) + 32 * 512, 4)}
    for kind, (attn, floats, n_rec) in want.items():
        one = next(c for c in CASES if c["log"] == f"{kind}-c4096.log")
        caches = predicted(one)
        assert [c.layer for c in caches if c.k_bytes] == attn, kind
        assert [c.layer for c in caches if c.state_bytes] == [c.layer for c in caches if c.layer not in attn
                                                              or kind == "falconh1"], kind
        assert {c.state_bytes for c in caches if c.state_bytes} == {4 * floats}, kind
        assert [b[1:] for b in _cache_blocks(log_text(one["log"]))] == [(4096, len(attn))], kind
        # the layers llama_memory_recurrent allocates ("layer N: dev = ..."; the others "layer N: skipped")
        rec = re.findall(r"llama_memory_recurrent, layer +(\d+): dev", log_text(one["log"]))
        assert [int(il) for il in rec] == [c.layer for c in caches if c.state_bytes] and len(rec) == n_rec, kind
        assert _rs_mib(f"{kind}-c4096.log") == _rs_mib(f"{kind}-c16384.log") == f"{n_rec * 4 * floats / MIB:.2f}"
        assert _rs_mib(f"{kind}-c4096-np2-rpc1.log") == f"{2 * n_rec * 4 * floats / MIB:.2f}"
    p = _model("falconh1.header.gguf").params
    assert p.recurrent_attn and all(p.is_recurrent(il) for il in range(p.n_layer))


def test_ik_loads_a_tied_token_embd_twice_when_the_output_is_on_the_cpu_and_not_mmaped():
    """The question of ik's create_embd_output (src/llama-load-tensors.cpp:536 @8337e4cd3): the tied output's
    TENSOR_DUPLICATED token_embd goes to the output context, create_tensor_for (src/llama-model-loader.cpp:910)
    dups it without a lookup, and with the output on the CPU that context is the input's (both
    llama_default_buffer_type_cpu, src/llama.cpp:4322/4635). The gemma-3 logs, in bytes: with --no-mmap and the
    output on the CPU (-ngl 0, -ngl 8 = n_layer, or no device) the CPU buffer holds token_embd twice; at -ngl 99
    the duplicate is on the rpc-server and the CPU holds one; under mmap the CPU buffer is not allocated at all."""
    tmap = case_model(_ik_case("gemma3-c4096.log"))
    by_name = tmap.by_name()
    embd = by_name["token_embd.weight"].n_elements * 2                       # bf16
    norm = -(-by_name["output_norm.weight"].n_elements * 4 // 32) * 32
    layers = sum(-(-t.n_elements * (4 if t.dtype == "f32" else 2) // 32) * 32 for t in tmap.tensors
                 if t.layer is not None)

    def weights(log: str) -> dict[str, int]:
        return dict(ik_allocs_before(log_text(log, FIX_IK), r"llm_load_tensors: +(\S+) buffer size"))

    rpc = "RPC0[127.0.0.1:50420]"
    assert weights("gemma3-c4096-nommap.log") == {"CPU": 2 * embd + norm + layers}
    assert weights("gemma3-c4096-nommap-ngl0-rpc1.log") == {"CPU": 2 * embd + norm + layers}
    assert weights("gemma3-c4096-nommap-ngl8-rpc1.log") == {"CPU": 2 * embd + norm, rpc: layers}
    assert weights("gemma3-c4096-nommap-ngl99-rpc1.log") == {"CPU": embd, rpc: layers + norm + embd}
    assert weights("gemma3-c4096-ngl8-rpc1.log") == {rpc: layers}                  # mmap: CPU not allocated
    from planner.memory import Placement

    on_cpu = Placement({"token_embd.weight": "CPU"}, ("CUDA0",), ("CUDA0", "CPU"), output_device=None)
    offloaded = Placement({"token_embd.weight": "CPU"}, ("CUDA0",), ("CUDA0", "CPU"), output_device="CUDA0")
    assert [on_cpu.tied_duplicate_device(True, "ik", load) for load in ("no-mmap", "rtr", "mmap")] == [
        "CPU", "CPU", None]
    assert on_cpu.tied_duplicate_device(True, "mainline", "no-mmap") is None   # mainline reuses the tensor
    assert offloaded.tied_duplicate_device(True, "ik", "mmap") == "CUDA0"
    assert on_cpu.tied_duplicate_device(False, "ik", "no-mmap") is None


def test_ik_loads_rope_freqs_once_per_full_attention_layer():
    """gemma-4's rope_freqs (TENSOR_DUPLICATED on every full-attention layer after the first, 2 of 10 here): ik's
    create_tensor_for dups it per call, mainline returns the copy its context has. Over one rpc-server the
    same file's model buffer is 512 bytes (one 128-float copy) larger on ik than on mainline; with --no-mmap on the
    CPU ik's buffer holds both copies and token_embd twice."""
    from planner.roles import layer_copies

    ik = ik_allocs(log_text("gemma4-c16384-rpc1-server0.log", FIX_IK))[0][1]
    ml = int(_ALLOC.search(log_text("gemma4-c16384-rpc1-server0.log")).group(1))
    rope = case_model(_ik_case("gemma4-c4096.log")).by_name()["rope_freqs.weight"]
    assert ik - ml == rope.n_elements * 4 == 512
    p = case_model(_ik_case("gemma4-c4096.log")).params
    devs = ("CUDA0",) * 5 + ("CUDA1",) * 5
    assert layer_copies("rope_freqs.weight", p.arch, devs, p.is_swa) == ["CUDA0", "CUDA1"]
    assert layer_copies("rope_freqs.weight", p.arch, devs, p.is_swa, engine="ik") == ["CUDA0", "CUDA1"]
    assert layer_copies("rope_freqs.weight", p.arch, ("CUDA0",) * 10, p.is_swa, engine="ik") == ["CUDA0"] * 2
    assert layer_copies("rope_freqs.weight", p.arch, ("CPU",) * 10, p.is_swa, engine="ik", mapped="CPU") == ["CPU"]


def test_ik_mla0_runs_a_mla_file_as_per_head_attention():
    """-mla 0 on the converter's MLA layout (one 576-wide KV head): ik's loader restores n_head_kv = n_gqa = 4
    heads of key_length_mla 192 / value_length_mla 128 ("Adjusted mainline llama.cpp MLA tensors"), so the cache
    is 6 layers x 4096 cells x (4 x 192 + 4 x 128) x 2 bytes; -mla 1/2/3 keep the 576-wide latent (-mla 1 without
    flash attention adds the transposed 512-wide V)."""
    mib = {c["log"]: [float(a or b) for a, b in _BUFFER_IK.findall(case_log(c))] for c in IK_CASES
           if c["kind"] == "mla" and parse(c["command"]).ctx == 4096 and c["servers"] == 1}
    assert mib["mla-c4096-mla0-rpc1.log"] == [6 * 4096 * (4 * 192 + 4 * 128) * 2 / MIB]
    assert mib["mla-c4096-mla1-rpc1.log"] == mib["mla-c4096-fa-off-rpc1.log"] == [6 * 4096 * 576 * 2 / MIB]
    assert mib["mla-c4096-mla1-fa-off-rpc1.log"] == [6 * 4096 * (576 + 512) * 2 / MIB]
    assert sum(c.total_bytes for c in predicted(_ik_case("mla-c4096-mla0-rpc1.log"))) == 6 * 4096 * 1280 * 2


MLA_IK = [c for c in IK_CASES if c["kind"] in ("mla", "dsa", "mlalegacy", "kda")]


@pytest.mark.parametrize("case", MLA_IK, ids=_ids(MLA_IK))
def test_ik_mla_tensors_derived_at_load_equal_their_allocations(case):
    """ik's llm_prepare_mla computes the MLA tensors the file lacks, each in a buffer of its own on its source's
    device (the allocation right before each "Computed blk.N.NAME" line): attn_kv_b from attn_k_b/attn_v_b unless
    -mla 1, attn_k_b/attn_v_b from a legacy attn_kv_b unless -mla 0. Per device, in bytes, what
    planner.engine_buffers.ik_mla_derived predicts, and what memory_report adds to that device's weights."""
    from planner.engine_buffers import ik_mla_derived
    from planner.memory import Placement, RunConfig, memory_report

    text = case_log(case)
    tmap = case_model(case)
    logged: dict[str, int] = {}
    last = None
    for line in text.splitlines():
        m = _BUFT_ALLOC.search(line)
        if m:
            last = (m[1], int(m[2]))
        elif line.startswith("Computed blk.") and last:
            logged[last[0]] = logged.get(last[0], 0) + last[1]
            last = None
    layer_dev = ik_layer_map(text, tmap.params.n_layer)
    want: dict[str, int] = {}
    for src, nbytes in ik_mla_derived(tmap, None, parse(case["command"]).mla).items():
        dev = layer_dev[int(src.split(".")[1])]
        want[dev] = want.get(dev, 0) + nbytes
    assert logged == want
    run = parse(case["command"])
    derives = run.mla > 0 if case["kind"] == "mlalegacy" else run.mla != 1
    p = tmap.params          # kv_lora 512 x 4 heads x (nope 128 + v 128; KDA file: v 64), bf16, per MLA layer
    n_mla = sum(not p.is_recurrent(il) for il in range(p.n_layer))
    assert sum(logged.values()) == derives * n_mla * p.kv_lora_rank * p.n_head * (
        p.qk_nope_head_dim + (p.head_dim_v or p.head_dim)) * 2
    # memory_report: the device's weights term = its model buffer + what ik derives there
    names = {d: ("CPU" if d == "CPU" else f"CUDA{i}") for i, d in enumerate(dict.fromkeys(layer_dev))}
    devices = {t.name: names[layer_dev[t.layer]] if t.layer is not None else
               (names[layer_dev[-1]] if t.name != "token_embd.weight" else "CPU") for t in tmap.tensors}
    pl = Placement(devices, tuple(names[d] for d in layer_dev[:-1]), (*{v for v in names.values() if v != "CPU"},
                                                                       "CPU"), output_device=names[layer_dev[-1]])
    cfg = RunConfig(engine="ik", ctx=run.ctx, type_k=run.type_k, type_v=run.type_v, flash_attn=run.flash_attn,
                    load="mmap")
    if run.mla != 3:
        return                                     # RunConfig carries no -mla: the report assumes ik's default
    if case["kind"] == "kda":
        # memory_report's weights term sums unpadded tensor bytes; the engine pads each tensor to 32 bytes, and
        # the tiny KDA file's ssm_a [1, 4] F32 is 16 bytes (6 x 16 = 96 bytes short; a real Ling-3.0 has 32 heads)
        return
    rep = memory_report(tmap, {}, pl, {}, cfg)
    models = dict(ik_allocs_before(text, r"llm_load_tensors: +(\S+) buffer size"))
    for dev, name in names.items():
        if name != "CPU":
            assert rep.device(name).term("weights") == models[dev] + want.get(dev, 0)


@pytest.mark.parametrize("case", IK_RPC, ids=_ids(IK_RPC))
def test_verify_reads_iks_kv_kind_logs(case):
    """`verify --cluster` on these ik runs: every exact check (weights of the rpc-servers, KV per device, the
    KV total) matches what ik printed, for every kind: DeepSeek-V4's compressed caches are in no per-device line
    (ik logs their total apart), a hybrid's recurrent state is in the KV buffer but not in "KV self size"."""
    from planner.cluster_flags import cluster_from_flags
    from planner.hardware import load_profile
    from planner.verify import verify_logs

    argv = shlex.split(case["command"])
    endpoints = argv[argv.index("--rpc") + 1].split(",")
    hosts = [f"s{i}=addr:{e.split(':')[0]},port:{e.split(':')[1]},ram:24,bw:10gbe" for i, e in enumerate(endpoints)]
    cluster = cluster_from_flags(load_profile("cpu-epyc9654-768g"), hosts)
    tmap = case_model(case)
    mix = {t.name: t.dtype for t in tmap.tensors}
    (report,) = verify_logs([_fix(case) / case["log"]], tmap, mix, cluster.main, engine="ik", argv=argv,
                            cluster=cluster)
    bad = [c for c in report.checks if c.exact and not c.ok and (c.term != "weights" or c.device != CPU_NAME)]
    assert not bad, bad
    assert {c.term for c in report.checks if c.exact} >= {"weights", "kv", "kv_total"}


def _r_s_mib(log: str) -> tuple[str, str]:
    """The R (conv / token-shift rows) and S (SSM / wkv state) MiB of llama_memory_recurrent's size line."""
    m = re.search(r"llama_memory_recurrent: size = .*R \(f32\): +([\d.]+) MiB, S \(f32\): +([\d.]+) MiB",
                  log_text(log))
    assert m, log
    return m[1], m[2]


# kind -> (R floats, S floats) per layer and sequence, from mainline's n_embd_r/n_embd_s (src/llama-hparams.cpp:
# 208-258 @0c1e57098) over make_tiny_arch.py's numbers: Mamba-1 (d_conv 4, d_inner 512, d_state 16, no groups),
# Mamba-2 (d_conv 4, d_inner 512, 2 groups of d_state 32), RWKV (token_shift_count 2 x n_embd 256, n_embd x
# head_size 64), PLaMo-2 (Mamba with group_count 0: d_conv 4, d_inner 256, d_state 16), LFM2 (n_embd 256 x
# (l_cache 3 - 1), no S)
STATE_ROWS = {"mamba": (3 * 512, 16 * 512), "mamba2": (3 * (512 + 2 * 2 * 32), 32 * 512),
              "rwkv6": (2 * 256, 256 * 64), "rwkv7": (2 * 256, 256 * 64), "plamo2": (3 * 256, 16 * 256),
              "lfm2": (256 * 2, 0)}
# kind -> attention layers (KV cache), the others recurrent; n_layer
STATE_LAYOUT = {"mamba": ((), 6), "mamba2": ((), 6), "rwkv6": ((), 4), "rwkv7": ((), 4), "plamo2": ((1, 3), 4),
                "lfm2": ((2, 5, 7), 8)}


@pytest.mark.parametrize("kind", sorted(STATE_ROWS))
def test_recurrent_kinds_state_rows_and_layers_equal_the_engine(kind):
    """Pure recurrent models (mamba, mamba2, rwkv6, rwkv7: every layer state, no KV cache) and the hybrids plamo2
    (Mamba where head_count_kv is 0) and lfm2 (short-conv where head_count_kv is 0): per layer and sequence the
    planner's F32 state is the engine formula's R + S floats (STATE_ROWS), on exactly the layers
    llama_memory_recurrent allocates ("layer N: dev", the others "skipped"), with the R and S totals it prints; the
    state does not move from 4096 to 16384 tokens and doubles with -np 2; KV only on the attention layers, whose
    cells x layers the kv cache prints."""
    (r, s), (attn, n_layer) = STATE_ROWS[kind], STATE_LAYOUT[kind]
    one = next(c for c in CASES if c["log"] == f"{kind}-c4096.log")
    caches = predicted(one)
    rec = [c.layer for c in caches if c.state_bytes]
    assert rec == [il for il in range(n_layer) if il not in attn]
    assert {c.state_bytes for c in caches if c.state_bytes} == {4 * (r + s)}
    assert [c.layer for c in caches if c.k_bytes] == list(attn)
    logged = re.findall(r"llama_memory_recurrent, layer +(\d+): dev", log_text(one["log"]))
    assert [int(il) for il in logged] == rec
    assert _r_s_mib(one["log"]) == (f"{len(rec) * 4 * r / MIB:.2f}", f"{len(rec) * 4 * s / MIB:.2f}")
    assert [b[1:] for b in _cache_blocks(log_text(one["log"]))] == ([(4096, len(attn))] if attn else [])
    assert _rs_mib(f"{kind}-c4096.log") == _rs_mib(f"{kind}-c16384.log") == f"{len(rec) * 4 * (r + s) / MIB:.2f}"
    assert _rs_mib(f"{kind}-c4096-np2-rpc1.log") == f"{2 * len(rec) * 4 * (r + s) / MIB:.2f}"
    np2 = next(c for c in CASES if c["log"] == f"{kind}-c4096-np2-rpc1.log")
    assert sum(c.state_bytes for c in predicted(np2)) == 2 * len(rec) * 4 * (r + s)


def test_ik_knows_mamba_but_cannot_run_it():
    """ik 8337e4cd3 loads a Mamba-1 file but its llama_kv_cache_init makes the K cache n_embd_head_k x n_head_kv
    wide (src/llama.cpp:1514), 0 for a model without heads: the log shows K (f32) 0.00 MiB beside the SSM state
    in V, and build_mamba then aborts on ggml_reshape_2d's GGML_ASSERT.  The planner refuses mamba for ik in one
    line saying so, and sizes it for mainline."""
    from planner.errors import UnknownModelError

    text = log_text("mamba-refused.log", FIX_IK)
    assert "KV self size  =    0.19 MiB, K (f32):    0.00 MiB, V (f32):    0.19 MiB" in text
    assert "GGML_ASSERT(ggml_nelements(a) == ne0*ne1) failed" in text
    assert not any(c["kind"] == "mamba" for c in IK_CASES)
    p = _model("mamba.header.gguf").params
    assert layer_caches(p, CacheConfig(engine="mainline"))
    with pytest.raises(UnknownModelError, match="^mamba: ik_llama.cpp aborts building this architecture's graph") as exc:
        layer_caches(p, CacheConfig(engine="ik"))
    assert "\n" not in str(exc.value) and "--engine mainline" in str(exc.value)
