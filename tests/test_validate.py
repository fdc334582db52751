"""Hostile header hyperparameters and tensor names: a typed GGUFFormatError naming the key, never a crash."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner
from conftest import IK, gguf_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.errors import GGUFFormatError, PlannerError
from planner.gguf_header import GGUF_ARRAY, GGUF_FLOAT32, GGUF_INT32, GGUF_STRING, GGUF_UINT32, GGUF_UINT64, BytesSource, parse_gguf
from planner.gguf_files import read_gguf
from planner.tensors import from_gguf

BASE = read_gguf(IK / "tiny-a-bf16.gguf")          # qwen3moe, 3 layers, 4 experts (2 used), 4/2 heads
KV = [(e.key, e.vtype, list(e.value) if isinstance(e.value, tuple) else e.value, e.elem_type) for e in BASE.kv]
TENSORS = [(t.name, t.shape, t.type_name) for t in BASE.tensors]


def header(kv_changes=(), tensors=None, drop_keys=()):
    kv = [list(e) for e in KV if e[0] not in drop_keys]
    for change in kv_changes:
        row = next((r for r in kv if r[0] == change[0]), None)
        if row is None:
            kv.append(list(change) + [None] * (4 - len(change)))
        else:
            row[1:] = list(change[1:]) + [None] * (4 - len(change))
    items = [(k, t, v, e) if e is not None else (k, t, v) for k, t, v, e in kv]
    data = gguf_bytes(items, TENSORS if tensors is None else tensors, data=False)
    return parse_gguf(BytesSource(data, name="hostile.gguf"), check_size=False)


def load(**kw):
    return from_gguf(header(**kw))


def test_the_unmodified_fixture_loads():
    p = load().params
    assert (p.n_layer, p.n_expert, p.n_expert_used, p.n_head, p.n_head_kv) == (3, 4, 2, 4, 2)


@pytest.mark.parametrize("change, field", [
    # zero / negative / huge counts
    (("qwen3moe.block_count", GGUF_UINT32, 0), "qwen3moe.block_count"),
    (("qwen3moe.block_count", GGUF_INT32, -1), "qwen3moe.block_count"),
    (("qwen3moe.block_count", GGUF_UINT64, 4_000_000_000), "qwen3moe.block_count"),        # OverflowError before
    (("qwen3moe.block_count", GGUF_UINT64, 2**63), "qwen3moe.block_count"),
    (("qwen3moe.block_count", GGUF_UINT32, 94), "qwen3moe.block_count"),                    # far beyond 3 layers
    (("qwen3moe.block_count", GGUF_UINT32, 2), "tensor blk.2."),                            # tensors outside it
    (("qwen3moe.embedding_length", GGUF_UINT32, 0), "qwen3moe.embedding_length"),
    (("qwen3moe.attention.head_count", GGUF_UINT32, 0), "qwen3moe.attention.head_count"),
    (("qwen3moe.attention.head_count_kv", GGUF_UINT32, 0), "qwen3moe.attention.head_count_kv"),
    (("qwen3moe.attention.head_count_kv", GGUF_UINT32, 3), "qwen3moe.attention.head_count_kv"),   # 4 % 3
    (("qwen3moe.attention.key_length", GGUF_UINT32, 0), "qwen3moe.attention.key_length"),
    # experts: used > count, used = 0 with experts, count disagreeing with the expert tensors
    (("qwen3moe.expert_used_count", GGUF_UINT32, 5), "qwen3moe.expert_used_count"),
    (("qwen3moe.expert_used_count", GGUF_UINT32, 0), "qwen3moe.expert_used_count"),
    (("qwen3moe.expert_count", GGUF_UINT32, 0), "qwen3moe.expert_used_count"),
    (("qwen3moe.expert_count", GGUF_UINT32, 8), "qwen3moe.expert_count"),
    (("qwen3moe.expert_count", GGUF_UINT64, 2**40), "qwen3moe.expert_count"),
    # NaN / inf floats and wrong value types
    (("qwen3moe.attention.layer_norm_rms_epsilon", GGUF_FLOAT32, math.nan), "qwen3moe.attention.layer_norm_rms_eps"),
    (("qwen3moe.rope.freq_base", GGUF_FLOAT32, math.inf), "qwen3moe.rope.freq_base"),
    (("qwen3moe.block_count", GGUF_FLOAT32, math.nan), "qwen3moe.block_count"),             # int(nan) before
    (("qwen3moe.block_count", GGUF_STRING, "3"), "qwen3moe.block_count"),
    (("qwen3moe.expert_count", GGUF_ARRAY, [4, 4, 4], GGUF_UINT32), "qwen3moe.expert_count"),
    (("qwen3moe.attention.head_count_kv", GGUF_ARRAY, [], GGUF_UINT32), "qwen3moe.attention.head_count_kv"),
    (("qwen3moe.attention.head_count_kv", GGUF_ARRAY, [0, 0, 0], GGUF_UINT32), "qwen3moe.attention.head_count_kv"),
    (("qwen3moe.leading_dense_block_count", GGUF_UINT32, 3), "qwen3moe.leading_dense_block_count"),
    (("qwen3moe.context_length", GGUF_UINT64, 2**40), "qwen3moe.context_length"),
    (("general.architecture", GGUF_STRING, "qwen3moe\nrm -rf ~"), "general.architecture"),
])
def test_hostile_hyperparameter_names_the_key(change, field):
    with pytest.raises(GGUFFormatError) as e:
        load(kv_changes=[change])
    assert field in e.value.field or field in str(e.value)


def test_per_layer_head_count_kv_may_mark_layers_without_attention():
    # hybrid models write 0 for recurrent layers; the largest value is the one that sizes the KV cache
    p = load(kv_changes=[("qwen3moe.attention.head_count_kv", GGUF_ARRAY, [2, 0, 2], GGUF_UINT32)]).params
    assert p.n_head_kv == 2


@pytest.mark.parametrize("rename, why", [
    ("blk.-1.attn_v.weight", "negative layer"),
    ("blk.99.attn_v.weight", "layer beyond block_count"),
    ("blk.007.attn_v.weight", "non-canonical number: the engines format blk.%d."),
    ("blk.4294967296.attn_v.weight", "u32 overflow"),
    ("blk.18446744073709551616.attn_v.weight", "beyond any index"),
    ("blk.0.attn_v.weight\nrm -rf ~", "control character"),
    ("blk..attn_v.weight", "empty layer"),
    ("", "empty name: an -ot rule for it would match every tensor"),
    ("output.weight$|x", "regex metacharacters"),
    ("blk.0.attn v.weight", "a space"),
])
def test_tensor_names_outside_the_layers(rename, why):
    tensors = [(rename if name == "blk.0.attn_v.weight" else name, shape, ty) for name, shape, ty in TENSORS]
    with pytest.raises(GGUFFormatError, match="tensor"):
        from_gguf(parse_gguf(BytesSource(gguf_bytes([(k, t, v, e) if e is not None else (k, t, v)
                                                     for k, t, v, e in KV], tensors))))


@pytest.mark.parametrize("shape", [(2**62,), (256,), (128, 300), (256, 300, 2)])
def test_token_embd_shape_is_n_embd_by_n_vocab(shape):
    tensors = [(n, shape if n == "token_embd.weight" else sh, ty) for n, sh, ty in TENSORS]
    with pytest.raises(GGUFFormatError, match="token_embd.weight has shape"):
        load(tensors=tensors)


@pytest.mark.parametrize("name", ["token_embd", "token_embd.bias", "output"])
def test_a_1d_tensor_in_the_embedding_roles(name):
    # once an IndexError in speed.py: the planner reads every tensor of these roles as [n_embd, n_vocab]
    tensors = [(name if n == "blk.0.attn_norm.weight" else n, sh, ty) for n, sh, ty in TENSORS]
    with pytest.raises(GGUFFormatError, match=f"tensor {name} has shape"):
        load(tensors=tensors)


def test_no_tensors_at_all():
    with pytest.raises(GGUFFormatError, match="no tensors"):
        load(tensors=[])


def test_tensor_name_of_64_bytes_is_refused_like_gguf_cpp():
    # gguf.cpp gguf_init_from_file_impl: name.length() >= GGML_MAX_NAME (64) -> "tensor name is too long"
    ok = [("x" * 63, (32,), "f32")]
    parse_gguf(BytesSource(gguf_bytes({}, ok)))
    with pytest.raises(GGUFFormatError, match="limit of 63"):
        parse_gguf(BytesSource(gguf_bytes({}, [("x" * 64, (32,), "f32")])))


@pytest.mark.parametrize("command", ["inspect", "footprint", "place", "plan"])
def test_cli_exit_4_one_line(tmp_path, command):
    path = tmp_path / "m.gguf"
    items = [(k, GGUF_UINT32, 0) if k == "qwen3moe.attention.head_count_kv" else
             (k, t, v, e) if e is not None else (k, t, v) for k, t, v, e in KV]
    path.write_bytes(gguf_bytes(items, TENSORS))
    extra = {"inspect": [], "footprint": ["--base-type", "Q8_0"], "place": ["--base-type", "Q8_0", "--vram", "8",
                                                                             "--ram", "16"],
             "plan": ["--vram", "8", "--ram", "16"]}[command]
    r = CliRunner().invoke(main, [command, str(path), *extra])
    assert r.exit_code == 4, r.output
    assert r.output.count("\n") == 1 and "head_count_kv" in r.output


# ---------------------------------------------------------------------------- property: result or typed error

_INTS = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 8, 2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
_KEYS = st.sampled_from(["block_count", "embedding_length", "expert_count", "expert_used_count",
                         "attention.head_count", "attention.head_count_kv", "attention.key_length",
                         "feed_forward_length", "expert_feed_forward_length", "context_length",
                         "leading_dense_block_count", "nextn_predict_layers", "vocab_size"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_KEYS, _INTS), max_size=3), st.lists(st.integers(0, 38), max_size=3),
       st.binary(max_size=4), st.integers(0, 4000))
def test_any_header_gives_a_result_or_a_typed_error(changes, dropped, flip, at):
    """Any mutated header through the loader, inspect and footprint: a result or a PlannerError."""
    tensors = [t for i, t in enumerate(TENSORS) if i not in dropped]
    items = [(k, t, v, e) if e is not None else (k, t, v) for k, t, v, e in KV]
    for key, value in changes:
        items = [it for it in items if it[0] != f"qwen3moe.{key}"] + [(f"qwen3moe.{key}", GGUF_UINT32, value)]
    data = bytearray(gguf_bytes(items, tensors, data=False))
    data[at:at + len(flip)] = flip
    try:
        tmap = from_gguf(parse_gguf(BytesSource(bytes(data)), check_size=False))
    except PlannerError:
        return
    from planner.summary import summarize

    s = summarize(tmap)
    assert s.n_tensors == len(tmap.tensors) and s.total_bytes >= 0
    assert struct.pack("<Q", s.n_layer)   # a sane, bounded layer count


# ---------------------------------------------------------------------------- options and JSON schemas

from planner.errors import PlanFileError, UsageError, exit_code_for  # noqa: E402
from planner.validate import (  # noqa: E402
    array,
    check_option,
    check_options,
    enum,
    int_,
    mapping,
    num,
    obj,
    text,
)


@pytest.mark.parametrize("option, value", [
    ("--gpu-margin", -100.0),          # once reported a 2 GiB card with 102 GiB free
    ("--gpu-margin", math.nan),
    ("--os-reserve", math.inf),
    ("--ram", 1e30),                   # once reached OR-Tools as a 5-line TypeError
    ("--ram", 0.0),
    ("--vram", -1.0),
    ("--ub", 0), ("--ub", -1), ("--amb", 0), ("--threads", -4),   # once emitted as -ub -1 -t -4
    ("--ctx", 0), ("--ctx", -5), ("--ctx", 10**12),
    ("--pareto", 100_000),             # once ran for minutes
    ("--max-size", 0.0),               # once silently ignored
    ("--min-tg", -1.0), ("--min-pp", math.nan), ("--quality-slack", 101.0), ("--port", 0), ("--port", 70000),
    ("--cores", 2.5),
])
def test_option_out_of_range_is_one_line_exit_2(option, value):
    with pytest.raises(UsageError) as e:
        check_option(option, value)
    message = str(e.value)
    assert option in message and "allowed" in message and "\n" not in message and exit_code_for(e.value) == 2


def test_options_in_range_pass():
    check_options({"--vram": [24.0, 0.0], "--ram": 96.0, "--ctx": 32768, "--ub": 512, "--pareto": 0,
                   "--gpu-margin": 0.0, "--min-tg": None})


PLAN_LIKE = obj({"engine": enum("ik", "mainline"), "ctx": int_(1, 1 << 30),
                 "devices": mapping(text(64, r"[A-Za-z0-9_.\-]+"), enum("CPU", "CUDA0", "CUDA1")),
                 "argv": array(text(4096), 200), "score": num(0, 1e9)},
                {"note": text(200)})


@pytest.mark.parametrize("doc, path", [
    ({"engine": "ik; rm -rf ~", "ctx": 1, "devices": {}, "argv": [], "score": 0}, "$.engine"),
    ({"engine": "ik", "ctx": "4096\nrm", "devices": {}, "argv": [], "score": 0}, "$.ctx"),
    ({"engine": "ik", "ctx": True, "devices": {}, "argv": [], "score": 0}, "$.ctx"),
    ({"engine": "ik", "ctx": 1, "devices": {"a": "CUDA9"}, "argv": [], "score": 0}, "$.devices.a"),
    ({"engine": "ik", "ctx": 1, "devices": {"a b": "CPU"}, "argv": [], "score": 0}, "$.devices.a b"),
    ({"engine": "ik", "ctx": 1, "devices": {}, "argv": [1], "score": 0}, "$.argv[0]"),
    ({"engine": "ik", "ctx": 1, "devices": {}, "argv": [], "score": math.nan}, "$.score"),
    ({"engine": "ik", "ctx": 1, "devices": {}, "argv": []}, "$.score"),
    ({"engine": "ik", "ctx": 1, "devices": {}, "argv": [], "score": 0, "url": "http://x"}, "$.url"),
    ([], "$"),
])
def test_schema_names_the_json_path(doc, path):
    with pytest.raises(PlanFileError) as e:
        PLAN_LIKE.check(doc, source="plan.json")
    assert e.value.path == path and exit_code_for(e.value) == 4 and "plan.json" in str(e.value)


@dataclass(frozen=True)
class _Run:
    engine: str
    ctx: int
    threads: int | None = None


@dataclass(frozen=True)
class _Doc:
    run: _Run
    devices: dict[str, str]
    layer_device: tuple[str, ...]
    score: float = 0.0
    secret: str = field(default="", metadata={"json": False})


def test_schema_derived_from_dataclasses():
    from planner.validate import schema_for

    schema = schema_for(_Doc, {"engine": enum("ik", "mainline"), "_Doc.devices": mapping(text(64), enum("CPU"))})
    good = {"run": {"engine": "ik", "ctx": 4096, "threads": None}, "devices": {"a": "CPU"}, "layer_device": ["CPU"]}
    schema.check(good)
    for bad, path in [({**good, "secret": "x"}, "$.secret"),                       # not written, so not allowed
                      ({**good, "run": {"engine": "ik"}}, "$.run.ctx"),             # required field missing
                      ({**good, "run": {"engine": "ik", "ctx": 1.5}}, "$.run.ctx"),
                      ({**good, "run": {"engine": "$(id)", "ctx": 1}}, "$.run.engine"),
                      ({**good, "layer_device": "CPU"}, "$.layer_device"),
                      ({**good, "score": "1"}, "$.score")]:
        with pytest.raises(PlanFileError) as e:
            schema.check(bad)
        assert e.value.path == path


def test_a_vector_under_a_matrix_role_sizes_like_a_vector():
    # fuzz case {"kind": "names", "ops": [["rename", 19, "blk.1.ffn_down_shexp.weight"]]}: once an IndexError in
    # ik_layer_sizes, which read shape[1] of every FFN-role tensor; a vector has no activation buffer (as ik's
    # get_layer_sizes only sizes 2-D weights) and its bytes stay in its layer
    from planner.layer_sizes import ik_layer_sizes

    tensors = [("blk.1.ffn_down_shexp.weight" if n == "blk.1.ffn_norm.weight" else n, sh, ty) for n, sh, ty in TENSORS]
    renamed, plain = ik_layer_sizes(load(tensors=tensors), ctx=512), ik_layer_sizes(load(), ctx=512)
    assert renamed.weights == plain.weights
