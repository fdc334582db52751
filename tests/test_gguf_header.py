import importlib.util
import math
import shutil
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import IK, gguf_bytes, make_gguf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import (
    FileSizeMismatchError,
    GGUFFormatError,
    PlannerError,
    UnknownModelError,
    UnknownQuantTypeError,
)
from planner.gguf_header import (
    GGUF_ARRAY,
    GGUF_STRING,
    GGUF_UINT16,
    GGUF_UINT32,
    GGUF_UINT64,
    BytesSource,
    GGUFHeader,
    LocalFile,
    Source,
    parse_gguf,
)
from planner.gguf_encode import data_start_for, encode_kv, header_bytes_for, make_kv, quantized_kv
from planner.gguf_files import read_gguf
from planner.quants import pad
from planner.tensors import builtin, from_gguf

SPLIT = IK / "split"
FIRST_SHARD = SPLIT / "tiny-a-seed-mix-IQ3_K-00001-of-00003.gguf"
BENCH = Path(__file__).parent.parent / "benchmarks" / "bench_header.py"
FAST_S = 0.25  # "milliseconds": generous for a loaded 2-core CI box


def _parse(data: bytes, **kw) -> GGUFHeader:
    return parse_gguf(BytesSource(data), **kw)


def _tensor_dicts(header: GGUFHeader) -> list[dict]:
    return [dict(name=t.name, type=t.type_name, type_id=t.type_id, shape=list(t.shape), nbytes=t.nbytes,
                 offset=t.offset) for t in header.tensors]


# A valid header using every value type, a string array, and tensors of several types.
ALL_KV = [
    ("general.architecture", GGUF_STRING, "llama"),
    ("t.u8", 0, 255), ("t.i8", 1, -128), ("t.u16", 2, 65535), ("t.i16", 3, -32768),
    ("t.u32", 4, 2**32 - 1), ("t.i32", 5, -(2**31)), ("t.f32", 6, 1.5), ("t.bool", 7, True),
    ("t.str", 8, "héllo"), ("t.u64", 10, 2**64 - 1), ("t.i64", 11, -(2**63)), ("t.f64", 12, -2.25),
    ("t.arr_str", GGUF_ARRAY, ["a", "", "ünï"], GGUF_STRING),
    ("t.arr_i32", GGUF_ARRAY, [1, -2, 3], 5),
    ("t.arr_f32", GGUF_ARRAY, [0.5, 2.0], 6),
    ("t.arr_bool", GGUF_ARRAY, [True, False], 7),
    ("t.arr_empty", GGUF_ARRAY, [], 10),
]
ALL_TENSORS = [
    ("token_embd.weight", (256, 10), "q4_K"),
    ("blk.0.attn_norm.weight", (256,), "f32"),
    ("blk.0.ffn_up_exps.weight", (256, 8, 2), "iq4_ks"),  # row metadata per expert row
    ("output.weight", (256, 10), 138),                    # ik-only id iq3_k
]
VALID = gguf_bytes(ALL_KV, ALL_TENSORS)


# ---------------------------------------------------------------------------- the ik fixtures (oracle)

@pytest.mark.parametrize("fname", [
    "tiny-a-seed-mix-IQ3_K.gguf", "tiny-a-IQ4_KS.gguf", "tiny-a-Q4_K_M.gguf", "tiny-b-seed-mix-IQ3_K.gguf",
    "tiny-a-kt-ks-r8.gguf", "tiny-a-bf16.gguf", "tiny-b-bf16.gguf",
    # each shard of the split on its own
    "split/tiny-a-seed-mix-IQ3_K-00001-of-00003.gguf", "split/tiny-a-seed-mix-IQ3_K-00002-of-00003.gguf",
    "split/tiny-a-seed-mix-IQ3_K-00003-of-00003.gguf",
])
def test_reader_reproduces_manifest(ik_manifest, fname):
    want = ik_manifest["files"][fname]
    with LocalFile(IK / fname) as src:
        h = parse_gguf(src)
    s = h.shards[0]
    assert s.version == want["gguf_version"]
    assert (s.n_tensors, s.n_kv) == (want["n_tensors"], want["n_kv"])
    assert (s.alignment, s.data_start) == (want["alignment"], want["data_start"])
    assert s.actual_file_bytes == s.expected_file_bytes == want["file_size_bytes"]
    assert h.file_bytes == h.expected_file_bytes == want["file_size_bytes"]
    assert dict(Counter(t.type_name for t in h.tensors)) == want["type_counts"]
    assert _tensor_dicts(h) == want["tensors"]
    # the pure size function recomputes the header from what was parsed
    assert header_bytes_for(h.kv, h.tensors) == s.header_bytes
    assert sum(e.nbytes for e in h.kv) == s.header_bytes - 24 - sum(
        8 + len(t.name) + 4 + 8 * len(t.shape) + 12 for t in h.tensors)
    if "split" in want:
        assert {k: h.get(k) for k in want["split"]} == want["split"]


def test_split_merged_through_first_shard(ik_manifest):
    h = read_gguf(FIRST_SHARD)
    whole = read_gguf(IK / "tiny-a-seed-mix-IQ3_K.gguf")
    assert [(t.name, t.shape, t.type_name, t.nbytes) for t in h.tensors] == \
        [(t.name, t.shape, t.type_name, t.nbytes) for t in whole.tensors]
    files = [f"split/tiny-a-seed-mix-IQ3_K-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [s.path for s in h.shards] == [str(SPLIT / Path(f).name) for f in files]
    for i, f in enumerate(files):
        want = ik_manifest["files"][f]
        mine = [t for t in h.tensors if t.shard == i]
        assert [dict(name=t.name, type=t.type_name, type_id=t.type_id, shape=list(t.shape), nbytes=t.nbytes,
                     offset=t.offset) for t in mine] == want["tensors"]
        assert h.shards[i].data_start == want["data_start"]
    assert h.file_bytes == sum(ik_manifest["files"][f]["file_size_bytes"] for f in files)
    assert h.expected_file_bytes == h.file_bytes
    assert h.get("split.count") == 3 and h.get("split.tensors.count") == 39
    assert h.kv == parse_gguf(LocalFile(FIRST_SHARD)).kv   # shard 0's metadata
    assert h.arch == "qwen3moe" and h.alignment == 32


def test_read_gguf_single_file_equals_parse():
    path = IK / "tiny-b-seed-mix-IQ3_K.gguf"
    assert read_gguf(path) == parse_gguf(LocalFile(path)) == read_gguf(str(path))


def test_local_source_is_a_source():
    assert isinstance(LocalFile(FIRST_SHARD), Source)
    assert isinstance(BytesSource(b""), Source)


def test_local_file_reads_only_around_the_header(tmp_path):
    # a 64 MiB tensor: the reader must not touch the data section beyond one small read
    path = make_gguf(tmp_path, {"general.architecture": "llama"}, [("big.weight", (4096, 4096), "f32")])

    class Spy(LocalFile):
        furthest = 0

        def read(self, offset, n):
            data = super().read(offset, n)
            Spy.furthest = max(Spy.furthest, offset + len(data))
            return data

    h = parse_gguf(Spy(path))
    assert h.shards[0].actual_file_bytes == path.stat().st_size > 64 << 20
    assert Spy.furthest <= 64 << 10


# ---------------------------------------------------------------------------- size prediction

def test_predict_quantized_data_start_from_bf16_header():
    # llama-quantize sets general.quantization_version=u32 2 and general.file_type=u32 ftype
    src = read_gguf(IK / "tiny-a-bf16.gguf")
    out = read_gguf(IK / "tiny-a-seed-mix-IQ3_K.gguf")
    assert src.data_start == 8128 and src.get("general.file_type") == 32  # file_type already present
    kv = quantized_kv(src.kv, 139)  # ftype IQ3_K (facts §3a)
    assert [(e.key, e.vtype, e.value, e.nbytes) for e in kv] == [(e.key, e.vtype, e.value, e.nbytes) for e in out.kv]
    assert data_start_for(kv, src.tensors, 32) == out.data_start == 8160


def test_quantized_kv_drops_split_keys_and_adds_file_type():
    first = read_gguf(FIRST_SHARD)
    kv = quantized_kv(first.kv, 139)
    assert not any(e.key.startswith("split.") for e in kv)
    assert len(kv) == len(first.kv) - 3
    kept = quantized_kv(first.kv, 139, keep_split=True)
    assert len(kept) == len(first.kv)


def test_encode_kv_round_trips_through_the_reader():
    entries = [make_kv(*e) for e in ALL_KV]
    h = _parse(gguf_bytes(ALL_KV, ALL_TENSORS))
    for mine, parsed in zip(entries, h.kv, strict=True):
        assert mine.nbytes == parsed.nbytes, mine.key
        assert encode_kv(parsed.key, parsed.vtype, parsed.value, parsed.elem_type) == \
            encode_kv(mine.key, mine.vtype, mine.value, mine.elem_type)
    assert h.get("t.arr_str") == ("a", "", "ünï")
    assert h.get("t.u64") == 2**64 - 1 and h.get("t.i64") == -(2**63)
    assert h.entry("t.arr_i32").type_name == "array[i32]"


def test_header_bytes_for_drops_trailing_unit_dims():
    # ggml_n_dims: a [4096, 1] tensor is stored with n_dims 1
    a = header_bytes_for([], [type("T", (), {"name": "x", "shape": (4096, 1)})()])
    b = header_bytes_for([], [type("T", (), {"name": "x", "shape": (4096,)})()])
    assert a == b == 24 + 8 + 1 + 4 + 8 + 4 + 8


# ---------------------------------------------------------------------------- round trip with gguf-py

@pytest.mark.parametrize("alignment", [
    None,  # default 32
    64,    # general.alignment = 64
])
def test_round_trip_gguf_writer(tmp_path, alignment):
    import gguf

    path = tmp_path / "rt.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_block_count(1)
    w.add_token_list(["<s>", "a", "bc"])
    arrays = {
        "token_embd.weight": np.zeros((3, 64), np.float16),
        "blk.0.attn_norm.weight": np.zeros(64, np.float32),
        "blk.0.odd.weight": np.zeros((5, 7), np.float32),   # 140 bytes: padding inside the data
        "output.weight": np.zeros((3, 64), np.float32),
    }
    for name, arr in arrays.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    h = read_gguf(path)
    align = alignment or 32
    assert h.alignment == align
    assert h.file_bytes == h.expected_file_bytes == path.stat().st_size
    reader = gguf.GGUFReader(str(path))
    for mine, theirs in zip(h.tensors, reader.tensors, strict=True):
        assert mine.name == theirs.name
        assert mine.shape == tuple(int(x) for x in theirs.shape)
        assert h.data_start + mine.offset == theirs.data_offset
        assert mine.nbytes == theirs.n_bytes
        assert mine.offset % align == 0
    assert h.data_start % align == 0
    assert h.get("tokenizer.ggml.tokens") == ("<s>", "a", "bc")


# ---------------------------------------------------------------------------- hostile input

def test_truncated_at_every_offset_raises_format_error():
    assert _parse(VALID).tensors  # the untruncated file is valid
    start = time.process_time()  # CPU time: a loaded machine must not fail this (wall time did, under 5 jobs)
    for cut in range(len(VALID)):
        with pytest.raises(GGUFFormatError):
            _parse(VALID[:cut])
    assert time.process_time() - start < 10


def test_truncated_header_says_so():
    header = gguf_bytes(ALL_KV, ALL_TENSORS, data=False)
    with pytest.raises(GGUFFormatError, match="file ends inside the header") as ei:
        _parse(header[:-5])   # inside the last tensor info
    assert ei.value.offset is not None and ei.value.field


def _u64_at(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<Q", value) + data[offset + 8:]


def _fast(fn):
    start = time.process_time()
    try:
        fn()
    finally:
        assert time.process_time() - start < FAST_S


@pytest.mark.parametrize("what,data,field", [
    # n_kv = 2^63
    ("n_kv", _u64_at(VALID, 16, 2**63), "n_kv"),
    # n_tensors = 2^63
    ("n_tensors", _u64_at(VALID, 8, 2**63), "n_tensors"),
    # n_kv = 2^64 - 1
    ("n_kv max", _u64_at(VALID, 16, 2**64 - 1), "n_kv"),
    # a key claiming 2^60 bytes
    ("key length", _u64_at(VALID, 24, 2**60), "kv[0].key"),
    # a string value claiming 2^60 bytes
    ("string value", gguf_bytes([("k", GGUF_STRING, "x")], data=False)[:-9] + struct.pack("<Q", 2**60) + b"x", "k"),
    # an array of 2^62 u8
    ("u8 array", gguf_bytes([("k", GGUF_ARRAY, [1], 0)], data=False)[:-9] + struct.pack("<Q", 2**62) + b"\x01",
     "k count"),
    # an array of 2^62 strings
    ("str array", gguf_bytes([("k", GGUF_ARRAY, [], GGUF_STRING)], data=False)[:-8] + struct.pack("<Q", 2**62),
     "k count"),
    # a tensor name claiming 2^60 bytes
    ("tensor name", gguf_bytes([], [("a.weight", (32,), "f32")], data=False)[:24] + struct.pack("<Q", 2**60)
     + b"a.weight" + bytes(64), "tensor[0].name"),
])
def test_hostile_lengths_fail_fast(what, data, field):
    def run():
        with pytest.raises(GGUFFormatError) as ei:
            _parse(data)
        assert ei.value.field == field, (what, str(ei.value))
        assert ei.value.offset is not None
    _fast(run)


def _one_tensor(shape=(32,), typ="f32", **kw) -> bytes:
    return gguf_bytes({"general.architecture": "llama"}, [("blk.0.x.weight", shape, typ)], **kw)


def _patch_tensor(data: bytes, n_dims: int | None = None, ne: list[int] | None = None, type_id: int | None = None,
                  offset: int | None = None, name="blk.0.x.weight") -> bytes:
    """Rewrite the (single) tensor info at the end of a header-only file."""
    i = data.index(name.encode()) + len(name)
    old_dims = struct.unpack_from("<I", data, i)[0]
    old_ne = list(struct.unpack_from(f"<{old_dims}Q", data, i + 4))
    old_type, old_off = struct.unpack_from("<iQ", data, i + 4 + 8 * old_dims)
    ne = old_ne if ne is None else ne
    new = struct.pack("<I", len(ne) if n_dims is None else n_dims) + struct.pack(f"<{len(ne)}Q", *ne) + \
        struct.pack("<iQ", old_type if type_id is None else type_id, old_off if offset is None else offset)
    return data[:i] + new + data[i + 4 + 8 * old_dims + 12:]


@pytest.mark.parametrize("what,data,match", [
    # wrong magic
    ("magic", b"GGML" + VALID[4:], "not a GGUF file"),
    # empty file
    ("empty", b"", "ends inside the header"),
    # GGUF v1 is no longer supported
    ("v1", VALID[:4] + struct.pack("<I", 1) + VALID[8:], "unsupported GGUF version 1"),
    # v4 does not exist
    ("v4", VALID[:4] + struct.pack("<I", 4) + VALID[8:], "unsupported GGUF version 4"),
    # big-endian v3 reads as 0x03000000
    ("big endian", VALID[:4] + struct.pack(">I", 3) + VALID[8:], "unsupported GGUF version"),
    # GGML_MAX_DIMS is 4
    ("n_dims 5", _patch_tensor(_one_tensor(data=False), ne=[32, 1, 1, 1, 1]), "n_dims 5"),
    # n_dims 0 (ggml writers never write it)
    ("n_dims 0", _patch_tensor(_one_tensor(data=False), n_dims=0, ne=[]), "n_dims 0"),
    # ne = 0
    ("ne zero", _patch_tensor(_one_tensor(data=False), ne=[32, 0]), r"ne\[1\] = 0"),
    # ne >= 2^63 reads as negative
    ("ne negative", _patch_tensor(_one_tensor(data=False), ne=[32, 2**63]), "not positive"),
    # product overflows 2^62 elements
    ("overflow", _patch_tensor(_one_tensor(data=False), ne=[2**31, 2**31, 2]), "2\\^62"),
    # ne0 not a multiple of the block size (q4_K: 256)
    ("row width", _patch_tensor(_one_tensor(shape=(256,), typ="q4_K", data=False), ne=[100]), "block size"),
    # offset is not the running padded sum
    ("offset", _patch_tensor(_one_tensor(data=False), offset=32), "running padded sum"),
    # non-power-of-2 alignment
    ("alignment 48", gguf_bytes([("general.alignment", GGUF_UINT32, 48)]), "not a power of 2"),
    # alignment 0
    ("alignment 0", gguf_bytes([("general.alignment", GGUF_UINT32, 0)]), "not a power of 2"),
    # alignment with the wrong type
    ("alignment u64", gguf_bytes([("general.alignment", GGUF_UINT64, 32)]), "must be u32"),
    # duplicate key
    ("dup key", gguf_bytes([("a", GGUF_UINT32, 1), ("a", GGUF_UINT32, 2)]), "duplicate key"),
    # duplicate tensor name
    ("dup tensor", gguf_bytes([], [("a.weight", (32,), "f32"), ("a.weight", (32,), "f32")]), "duplicate tensor"),
    # nested array
    ("nested", gguf_bytes([("k", GGUF_ARRAY, [], GGUF_STRING)], data=False)[:-12] + struct.pack("<iQ", GGUF_ARRAY, 0),
     "nested arrays"),
    # invalid UTF-8 in a key
    ("utf8 key", gguf_bytes([("kab", GGUF_UINT32, 1)]).replace(b"kab", b"k\xff\xfe"), "UTF-8"),
    # invalid UTF-8 in a string value
    ("utf8 value", gguf_bytes([("k", GGUF_STRING, "ab")]).replace(b"ab", b"\xc3("), "UTF-8"),
    # invalid UTF-8 in a string array element
    ("utf8 array", gguf_bytes([("k", GGUF_ARRAY, ["ok", "ab"], GGUF_STRING)]).replace(b"ab", b"\xe2\x28"), "UTF-8"),
])
def test_hostile_headers(what, data, match):
    def run():
        with pytest.raises(GGUFFormatError, match=match):
            _parse(data)
    _fast(run)


def test_invalid_value_type():
    data = gguf_bytes([("k", GGUF_UINT32, 7)])
    i = data.index(b"k") + 1
    bad = data[:i] + struct.pack("<i", 13) + data[i + 4:]
    with pytest.raises(GGUFFormatError, match="invalid value type 13") as ei:
        _parse(bad)
    assert ei.value.offset == i


def test_unknown_type_id_names_the_tensor():
    data = _patch_tensor(_one_tensor(data=False), type_id=999)
    start = time.process_time()
    with pytest.raises(UnknownQuantTypeError, match="999") as ei:
        _parse(data)
    assert time.process_time() - start < FAST_S
    assert "tensor blk.0.x.weight" in str(ei.value)


def test_ik_only_type_ids_resolve():
    h = _parse(gguf_bytes([], [("a.weight", (256, 2), 138), ("b.weight", (256, 2), "iq4_ks")]))
    assert [t.type_name for t in h.tensors] == ["iq3_k", "iq4_ks"]
    assert h.tensors[1].nbytes == 2 * (4 + 136)


def test_unknown_versions_and_hints():
    with pytest.raises(GGUFFormatError) as ei:
        _parse(VALID[:4] + struct.pack("<I", 1) + VALID[8:])
    assert ei.value.field == "version" and ei.value.offset == 4 and "v1" in str(ei.value)
    h = _parse(VALID[:4] + struct.pack("<I", 2) + VALID[8:])   # v2 has the same layout
    assert h.shards[0].version == 2


def test_alignment_64_pads_data(tmp_path):
    kv = [("general.alignment", GGUF_UINT32, 64)]
    tensors = [("a.weight", (40,), "f32"), ("b.weight", (32,), "f32")]
    h = _parse(gguf_bytes(kv, tensors, alignment=64))
    assert h.alignment == 64 and h.data_start % 64 == 0
    assert [t.offset for t in h.tensors] == [0, 192]
    assert h.expected_file_bytes == h.data_start + 192 + 128


def test_zero_tensor_shard_padded_or_not():
    # ggml's writer pads the header even without tensors; gguf-py's metadata-only write does not
    head = gguf_bytes({"split.no": 0}, [], data=False)
    padded = gguf_bytes({"split.no": 0}, [])
    assert len(head) % 32 and len(padded) == pad(len(head), 32)
    for data in (head, padded):
        s = _parse(data).shards[0]
        assert s.header_bytes == len(head) and s.expected_file_bytes == len(padded)
    with pytest.raises(FileSizeMismatchError):
        _parse(padded + bytes(32))


# ---------------------------------------------------------------------------- property-based fuzz

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutations_raise_only_planner_errors(data):
    buf = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(VALID) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del buf[data.draw(st.integers(0, len(buf))):]
    try:
        _parse(bytes(buf))
    except PlannerError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_garbage_after_magic(tail):
    try:
        _parse(b"GGUF" + struct.pack("<I", 3) + tail)
    except PlannerError:
        pass


# ---------------------------------------------------------------------------- file size checks

def test_truncated_download_is_reported(tmp_path):
    src = IK / "tiny-a-IQ4_KS.gguf"
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(FileSizeMismatchError) as ei:
        read_gguf(cut)
    assert (ei.value.expected_bytes, ei.value.actual_bytes) == (1876000, 1875000)
    assert "1875000" in str(ei.value) and "1876000" in str(ei.value) and "incomplete" in str(ei.value)
    h = read_gguf(cut, check_size=False)
    assert h.file_bytes == 1875000 and h.expected_file_bytes == 1876000


def test_longer_file_is_reported(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes((IK / "tiny-b-bf16.gguf").read_bytes() + b"\0" * 32)
    with pytest.raises(FileSizeMismatchError, match=r"\+32"):
        read_gguf(p)


def test_missing_file(tmp_path):
    with pytest.raises(UnknownModelError, match="no such file"):
        read_gguf(tmp_path / "nope.gguf")


# ---------------------------------------------------------------------------- split models

def test_non_first_shard_asks_for_the_first():
    with pytest.raises(GGUFFormatError, match="shard 2 of 3") as ei:
        read_gguf(SPLIT / "tiny-a-seed-mix-IQ3_K-00002-of-00003.gguf")
    assert "00001-of-00003" in str(ei.value) and "first shard" in str(ei.value)


def test_missing_shard_is_named(tmp_path):
    for i in (1, 3):
        name = f"tiny-a-seed-mix-IQ3_K-0000{i}-of-00003.gguf"
        shutil.copy(SPLIT / name, tmp_path / name)
    with pytest.raises(GGUFFormatError, match="shard 2 of 3 is missing") as ei:
        read_gguf(tmp_path / "tiny-a-seed-mix-IQ3_K-00001-of-00003.gguf")
    assert "00002-of-00003" in str(ei.value)


def test_renamed_shards_with_wrong_count(tmp_path):
    for i in (1, 2, 3):
        shutil.copy(SPLIT / f"tiny-a-seed-mix-IQ3_K-0000{i}-of-00003.gguf", tmp_path / f"m-0000{i}-of-00004.gguf")
    with pytest.raises(GGUFFormatError, match="split.count is 3"):
        read_gguf(tmp_path / "m-00001-of-00004.gguf")


def test_first_shard_under_another_name(tmp_path):
    shutil.copy(FIRST_SHARD, tmp_path / "model.gguf")
    with pytest.raises(GGUFFormatError, match="cannot be found"):
        read_gguf(tmp_path / "model.gguf")


def _split_kv(no, count, total, extra=None):
    kv = dict(extra or {})
    return [*kv.items(), ("split.no", GGUF_UINT16, no), ("split.count", GGUF_UINT16, count),
            ("split.tensors.count", 5, total)]


def test_synthetic_split_checks(tmp_path):
    t = [("a.weight", (32,), "f32")]
    u = [("b.weight", (32,), "f32")]
    make_gguf(tmp_path, _split_kv(0, 2, 2, {"general.architecture": "llama"}), t, name="m-00001-of-00002.gguf")
    make_gguf(tmp_path, _split_kv(1, 2, 2), u, name="m-00002-of-00002.gguf")
    h = read_gguf(tmp_path / "m-00001-of-00002.gguf")
    assert [(x.name, x.shard) for x in h.tensors] == [("a.weight", 0), ("b.weight", 1)]

    # split.tensors.count disagrees with what the shards hold
    make_gguf(tmp_path, _split_kv(0, 2, 3, {"general.architecture": "llama"}), t, name="n-00001-of-00002.gguf")
    make_gguf(tmp_path, _split_kv(1, 2, 3), u, name="n-00002-of-00002.gguf")
    with pytest.raises(GGUFFormatError, match="split.tensors.count is 3"):
        read_gguf(tmp_path / "n-00001-of-00002.gguf")

    # the second file says it is shard 0
    make_gguf(tmp_path, _split_kv(0, 2, 2), t, name="o-00001-of-00002.gguf")
    make_gguf(tmp_path, _split_kv(0, 2, 2), u, name="o-00002-of-00002.gguf")
    with pytest.raises(GGUFFormatError, match="split.no = 0"):
        read_gguf(tmp_path / "o-00001-of-00002.gguf")

    # the same tensor in two shards
    make_gguf(tmp_path, _split_kv(0, 2, 2), t, name="p-00001-of-00002.gguf")
    make_gguf(tmp_path, _split_kv(1, 2, 2), t, name="p-00002-of-00002.gguf")
    with pytest.raises(GGUFFormatError, match="more than one shard"):
        read_gguf(tmp_path / "p-00001-of-00002.gguf")

    # named as a split but without split keys
    make_gguf(tmp_path, {"general.architecture": "llama"}, t, name="q-00001-of-00002.gguf")
    with pytest.raises(GGUFFormatError, match="no split.count"):
        read_gguf(tmp_path / "q-00001-of-00002.gguf")

    # a metadata-only first shard (--no-tensor-first-split)
    make_gguf(tmp_path, _split_kv(0, 2, 1, {"general.architecture": "llama"}), [], name="r-00001-of-00002.gguf")
    make_gguf(tmp_path, _split_kv(1, 2, 1), u, name="r-00002-of-00002.gguf")
    h = read_gguf(tmp_path / "r-00001-of-00002.gguf")
    assert [x.shard for x in h.tensors] == [1] and h.shards[0].n_tensors == 0


# ---------------------------------------------------------------------------- from_gguf

def test_from_gguf_fixture(ik_manifest):
    want = ik_manifest["sources"]["tiny-a-bf16"]
    m = from_gguf(read_gguf(FIRST_SHARD))
    p = m.params
    assert (p.arch, p.n_layer, p.n_embd, p.n_vocab) == ("qwen3moe", want["layers"], want["hidden"], want["vocab"])
    assert (p.n_head, p.n_head_kv, p.head_dim) == (want["heads"], want["kv_heads"], want["head_dim"])
    assert (p.n_expert, p.n_expert_used, p.n_ff_exp) == (want["experts"], want["experts_used"], want["expert_ffn"])
    assert p.n_ctx_train == 4096 and not p.tied and p.is_moe
    assert m.name == "tiny-qwen3moe" and m.file_bytes == 713056 + 625216 + 461056
    assert len(m.tensors) == 39 and m.header is not None
    assert m.by_name()["blk.2.ffn_down_exps.weight"].dtype == "iq4_k"
    assert m.tensors[0].shape == (256, 300)


def test_from_gguf_fallbacks():
    # per-layer head_count_kv (take the max), no key_length, vocab from token_embd, tied, name from the file
    kv = [("general.architecture", GGUF_STRING, "llama"), ("llama.block_count", GGUF_UINT32, 2),
          ("llama.embedding_length", GGUF_UINT32, 512), ("llama.attention.head_count", GGUF_UINT32, 8),
          ("llama.attention.head_count_kv", GGUF_ARRAY, [2, 4], GGUF_UINT32)]
    layers = [(f"blk.{i}.attn_norm.weight", (512,), "f32") for i in range(2)]
    h = parse_gguf(BytesSource(gguf_bytes(kv, [("token_embd.weight", (512, 1000), "f16"), *layers]),
                               name="/models/My-Model-00001-of-00001.gguf"))
    p = from_gguf(h).params
    assert (p.n_head_kv, p.head_dim, p.n_vocab, p.tied) == (4, 64, 1000, True)
    assert from_gguf(h).name == "My-Model"
    with pytest.raises(GGUFFormatError, match="llama.block_count"):
        from_gguf(_parse(gguf_bytes(kv[:1] + kv[2:], layers)))


def test_from_gguf_vocab_from_tokens():
    kv = {"general.architecture": "qwen3", "qwen3.block_count": 1, "qwen3.embedding_length": 64,
          "qwen3.attention.head_count": 2, "tokenizer.ggml.tokens": ["a", "b", "c"]}
    assert from_gguf(_parse(gguf_bytes(kv, [("blk.0.attn_norm.weight", (64,), "f32")]))).params.n_vocab == 3


def test_from_gguf_matches_builtin_shapes():
    # the header of a synthetic Qwen3-235B-A22B (the benchmark's generator) maps back to the built-in
    spec = importlib.util.spec_from_file_location("bench_header", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    ref = builtin("qwen3-235b-a22b")
    m = from_gguf(_parse(bench.synthetic_header(ref, tokens=1000), check_size=False))
    assert [(t.name, t.shape) for t in m.tensors] == [(t.name, t.shape) for t in ref.tensors]
    assert m.params.n_layer == 94 and m.params.n_expert == 128 and math.prod(m.tensors[0].shape) > 0


# ---------------------------------------------------------------------------- bounded memory on large values

def _sparse_header(tmp_path, name: str, big: bytes, hole: int) -> Path:
    """tiny-a-bf16's header with one extra pair whose value is ``big`` + ``hole`` zero bytes (a sparse file)."""
    base = read_gguf(IK / "tiny-a-bf16.gguf")
    items = [(e.key, e.vtype, list(e.value) if isinstance(e.value, tuple) else e.value, e.elem_type)
             if e.elem_type is not None else (e.key, e.vtype, e.value) for e in base.kv]
    tensors = [(t.name, t.shape, t.type_name) for t in base.tensors]
    body = gguf_bytes(items, tensors, data=False)
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(items) + 1) + big)
        f.seek(hole, 1)
        f.write(body[24:])
    return path


@pytest.mark.parametrize("what, big, hole, count", [
    # a 2^24-element u32 array (64 MiB): stepped over, never a 16M-entry tuple
    ("u32 array", None, 4 << 24, 1 << 24),
    # 2^20 empty strings under a tokenizer key: walked, never decoded
    ("string array", None, 8 << 20, 1 << 20),
    # a 250 MiB string
    ("string", None, 250 << 20, 250 << 20),
])
def test_large_values_are_not_materialised(tmp_path, what, big, hole, count):
    import tracemalloc

    from planner.gguf_header import Unread
    from planner.tensors import from_gguf

    key = {"u32 array": b"general.junk", "string array": b"tokenizer.ggml.junk", "string": b"general.junk"}[what]
    head = struct.pack("<Q", len(key)) + key + {
        "u32 array": struct.pack("<iiQ", GGUF_ARRAY, 4, count),
        "string array": struct.pack("<iiQ", GGUF_ARRAY, GGUF_STRING, count),
        "string": struct.pack("<iQ", GGUF_STRING, count)}[what]
    path = _sparse_header(tmp_path, "big.gguf", head, hole)
    t0 = time.process_time()
    h = read_gguf(path, check_size=False)
    tmap = from_gguf(h)
    assert time.process_time() - t0 < 5          # < 1 s alone; generous for a loaded CI machine
    if what != "string array":                   # (tracing 2^20 small unpacks is slow, not memory)
        tracemalloc.start()
        try:
            read_gguf(path, check_size=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    else:
        peak = 0
    assert peak < 40 << 20, peak                 # the file holds 64-250 MiB in this one value
    value = h.get(key.decode())
    assert isinstance(value, Unread) and len(value) == count
    assert tmap.params.n_layer == 3 and h.entry(key.decode()).nbytes == len(head) + hole


def test_limits_on_counts_and_lengths():
    from planner.gguf_header import MAX_STRING_ARRAY_ELEMENTS

    too_many = gguf_bytes([("k", GGUF_ARRAY, [], GGUF_STRING)], data=False)[:-8] + struct.pack(
        "<Q", MAX_STRING_ARRAY_ELEMENTS + 1) + bytes(8 * (MAX_STRING_ARRAY_ELEMENTS + 1))
    with pytest.raises(GGUFFormatError, match="exceeds the limit"):
        _parse(too_many, check_size=False)
    long_key = gguf_bytes([("k" * 65536, GGUF_UINT32, 1)], data=False)
    with pytest.raises(GGUFFormatError, match="limit of 65535"):
        _parse(long_key, check_size=False)
    many = b"GGUF" + struct.pack("<IQQ", 3, 0, (1 << 16) + 1) + bytes(14 * ((1 << 16) + 1))
    with pytest.raises(GGUFFormatError, match="n_kv"):
        _parse(many, check_size=False)


def test_special_files_are_refused_without_blocking(tmp_path):
    # a FIFO would block open() until a writer came: a shard named like one must not hang the reader
    import os

    for i in (1, 3):
        name = f"tiny-a-seed-mix-IQ3_K-0000{i}-of-00003.gguf"
        shutil.copy(IK / "split" / name, tmp_path / name)
    os.mkfifo(tmp_path / "tiny-a-seed-mix-IQ3_K-00002-of-00003.gguf")
    t0 = time.process_time()
    with pytest.raises(GGUFFormatError, match="not a regular file"):
        read_gguf(tmp_path / "tiny-a-seed-mix-IQ3_K-00001-of-00003.gguf")
    assert time.process_time() - t0 < 5
    with pytest.raises(GGUFFormatError, match="not a regular file"):
        read_gguf("/dev/zero")
    with pytest.raises(GGUFFormatError, match="directory"):
        read_gguf(tmp_path)
