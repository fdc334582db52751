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
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from planner.kv_cache import CacheConfig, LayerCache, layer_caches
from planner.source import load_model

FIX = Path(__file__).parent / "fixtures" / "kv_kinds"
ENGINE_FIX = Path(__file__).parent / "fixtures" / "engine"
CASES = [json.loads(line) for line in (FIX / "cases.jsonl").read_text(encoding="utf-8").splitlines() if line]
MIB = 1 << 20
KINDS = ("dsv4", "mla", "dsa", "qwen35moe", "gemma3", "gptoss", "gemma4", "llama4", "nemotronh")

_BUFFER = re.compile(r"(?:KV|RS|state) buffer size = +([\d.]+) MiB")
_ALLOC = re.compile(r"\[alloc_buffer\] device: \d+, size: (\d+)")
_ASSIGNED = re.compile(r"layer +(\d+) assigned to device (\S+),")


@dataclass(frozen=True)
class Run:
    ctx: int
    ubatch: int
    n_seq: int
    type_k: str
    type_v: str
    flash_attn: bool
    swa_full: bool


def parse(command: str) -> Run:
    """The flags of a fixture command that change the cache, with llama-completion's defaults (common/arg.cpp)."""
    argv = shlex.split(command)

    def opt(name: str, default: str) -> str:
        return argv[argv.index(name) + 1] if name in argv else default

    return Run(ctx=int(opt("-c", "4096")), ubatch=int(opt("-ub", "512")), n_seq=int(opt("-np", "1")),
               type_k=opt("-ctk", "f16"), type_v=opt("-ctv", "f16"), flash_attn=opt("-fa", "auto") != "off",
               swa_full="--swa-full" in argv)


@cache
def _model(name: str):
    return load_model(str(FIX / name), check_size=False)


def predicted(case: dict) -> tuple[LayerCache, ...]:
    run = parse(case["command"])
    cfg = CacheConfig(engine="mainline", ctx=run.ctx, type_k=run.type_k, type_v=run.type_v,
                      flash_attn=run.flash_attn, n_seq=run.n_seq, ubatch=run.ubatch, swa_full=run.swa_full)
    return layer_caches(_model(case["model"]).params, cfg)


def log_text(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8", errors="replace")


def _ids(cases: list[dict]) -> list[str]:
    return [c["log"].removesuffix(".log") for c in cases]


def test_every_kind_is_captured_at_two_contexts_and_over_rpc():
    for kind in KINDS:
        runs = [c for c in CASES if c["kind"] == kind]
        assert {parse(c["command"]).ctx for c in runs} >= {4096, 16384}, kind
        assert {c["servers"] for c in runs} >= {0, 1, 2}, kind
        assert all(c["engine"] == "mainline" and c["commit"] == "0c1e57098" for c in runs)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_printed_cache_buffers_equal_the_prediction(case):
    printed = [float(x) for x in _BUFFER.findall(log_text(case["log"]))]
    assert printed, case["log"]
    total = sum(c.total_bytes for c in predicted(case)) / MIB
    assert abs(total - sum(printed)) <= 0.005 * len(printed) + 1e-9, (total, printed)


RPC = [c for c in CASES if c["servers"]]


@pytest.mark.parametrize("case", RPC, ids=_ids(RPC))
def test_rpc_cache_allocations_equal_the_prediction_to_the_byte(case):
    """Per device, from the command alone: mainline's layer rule (-ngl 99 -ts 1,1 over the rpc devices,
    planner.layer_split) gives each layer's device, which must be the one the engine logged; the planner's cache
    bytes of the layers on a device must equal that server's cache allocations."""
    from planner.engine_buffers import map_for_flags

    text = log_text(case["log"])
    logged = {int(il): dev for il, dev in _ASSIGNED.findall(text)}
    n = case["servers"]
    split = map_for_flags("mainline", _model(case["model"]), [f"RPC{i}" for i in range(n)], [1] * n,
                          n_gpu_layers=99, tensor_split=(1,) * n)
    device_of = dict(enumerate(split.layer_device))
    assert {il: dev for il, dev in logged.items() if il in device_of} == device_of
    caches = predicted(case)
    for i in range(case["servers"]):
        allocs = [int(x) for x in _ALLOC.findall(log_text(case["log"].replace(".log", f"-server{i}.log")))]
        assert len(allocs) >= 2                          # model buffer, cache buffer(s) if any, compute buffer
        want = sum(c.total_bytes for c in caches if device_of[c.layer] == f"RPC{i}")
        assert sum(allocs[1:-1]) == want, (i, allocs)


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


SWA_KINDS = [c for c in CASES if c["kind"] in ("gemma3", "gptoss", "dsv4", "gemma4", "llama4")]


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


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_log_parser_reads_every_cache_buffer(case):
    """What `verify` reads from these logs (planner.logparse): every KV, RS and DSV4 state buffer counts as the
    cache of its device, and the total sums every cache's own size line (mainline prints one per cache)."""
    from planner.logparse import parse_load_log

    text = log_text(case["log"])
    ld = parse_load_log(text)
    kv = [b for b in ld.buffers if b.kind == "kv"]
    assert [f"{b.mib:.2f}" for b in kv] == _BUFFER.findall(text)
    caches = predicted(case)
    if case["servers"]:
        device_of = {int(il): dev for il, dev in _ASSIGNED.findall(text)}
        names = re.findall(r"using device (RPC\d) \(([^)]*)\)", text)
        for i, (dev, addr) in enumerate(names):
            logged = sum(b.mib for b in kv if b.device == f"RPC0[{addr}]")
            want = sum(c.total_bytes for c in caches if device_of[c.layer] == dev) / MIB
            assert abs(logged - want) <= 0.005 * sum(b.device == f"RPC0[{addr}]" for b in kv) + 1e-9, (i, dev)
    total = sum(c.total_bytes for c in caches) / MIB
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


@pytest.mark.parametrize("case", RPC_CASES, ids=_ids(RPC_CASES))
def test_model_buffer_per_rpc_server_equals_its_first_allocation(case):
    """The weights each rpc-server allocates (its log's first ``alloc_buffer`` size, bytes) equal what `check`
    predicts for the same command: the placement from -ngl/-ts, a tied output's duplicate of ``token_embd`` on the
    output layer's device (gemma-3/-4: no output.weight; mainline create_tensor sends TENSOR_DUPLICATED token_embd
    to LLM_TENSOR_OUTPUT's layer) and one ``rope_freqs`` per device holding a loading layer (gemma-4: full
    attention layers; TENSOR_DUPLICATED for the later ones)."""
    from planner.engine_buffers import placement_buffers
    from planner.launch import parse_server_command, placement_from_command

    tmap = _model(case["model"])
    cmd = parse_server_command(shlex.split(case["command"]), engine=case["engine"])
    gpus = [f"CUDA{i}" for i in range(case["servers"])]
    pl = placement_from_command(tmap, cmd, gpus)
    tied = "output.weight" not in {t.name for t in tmap.tensors}
    got = {n: b for k, n, b in placement_buffers(case["engine"], tmap, None, pl.tensor_device, pl.layer_device,
                                                 [0] * tmap.params.n_layer, cuda_devices=False,
                                                 tied_duplicate_device=pl.tied_duplicate_device(tied))
           if k == "weights"}
    logged = [int(re.search(r"\[alloc_buffer\] device: \d+, size: (\d+)",
                            log_text(case["log"].replace(".log", f"-server{s}.log"))).group(1))
              for s in range(case["servers"])]
    assert [got.get(g, 0) for g in gpus] == logged
