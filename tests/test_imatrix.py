"""imatrix reader and writers: round trips through both formats, malformed files, shape checks."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import ImatrixFormatError, PlannerError
from planner.imatrix import Imatrix, ImatrixEntry, read_imatrix, write_imatrix_dat, write_imatrix_gguf
from planner.tensors import ModelParams, build

N_EMBD, N_FF, N_EXP = 256, 128, 4


def tiny_moe(n_layer: int = 2):
    """A qwen3moe-shaped map small enough for hand-made imatrices."""
    params = ModelParams(arch="qwen3moe", n_layer=n_layer, n_embd=N_EMBD, n_vocab=512, n_head=4, n_head_kv=2,
                         head_dim=64, n_expert=N_EXP, n_expert_used=2, n_ff_exp=N_FF)
    return build(params, "tiny-moe", "test")


def entries_for(tmap, *, scale: float = 1.0, counts: bool = False) -> list[ImatrixEntry]:
    """Dyadic values (exact in float32 after * and / by powers of two) for every matrix of ``tmap``."""
    out = []
    for i, t in enumerate(x for x in tmap.tensors if x.n_dims >= 2 and not x.role.endswith("norm")):
        n = t.ne0 * t.n_expert
        values = (np.arange(n, dtype=np.float32) % 64 + 1) / 8 * np.float32(scale)
        c = np.array([512.0 * (e + 1) for e in range(t.n_expert)]) if counts and t.n_expert > 1 else None
        out.append(ImatrixEntry(t.name, 2 ** (i % 4), values, t.n_expert, c))
    return out


def assert_same(a: Imatrix, entries: list[ImatrixEntry]) -> None:
    assert list(a.entries) == [e.name for e in entries] or sorted(a.entries) == sorted(e.name for e in entries)
    for e in entries:
        got = a.entries[e.name]
        np.testing.assert_array_equal(got.values, e.values)
        assert got.n_expert == e.n_expert


# ------------------------------------------------------------------------------------------ round trips

def test_dat_round_trip_exact_with_tail(tmp_path):
    tmap = tiny_moe()
    entries = entries_for(tmap)
    p = tmp_path / "imatrix.dat"
    write_imatrix_dat(p, entries, chunks=123, dataset="calibration_data_v5_rc.txt")
    m = read_imatrix(p)
    assert (m.format, m.chunks, m.dataset) == ("dat", 123, "calibration_data_v5_rc.txt")
    assert_same(m, entries)                      # expert counts inferred from ffn_gate_inp / attn widths
    assert [e.ncall for e in m.entries.values()] == [e.ncall for e in entries]
    assert all(e.counts is None for e in m.entries.values())


def test_dat_without_tail(tmp_path):
    # ik writes the tail; older files and third-party writers may not
    p = tmp_path / "a.dat"
    write_imatrix_dat(p, [ImatrixEntry("blk.0.attn_q.weight", 1, np.ones(8, np.float32))])
    m = read_imatrix(p)
    assert m.chunks is None and m.dataset is None
    assert m.entries["blk.0.attn_q.weight"].values.tolist() == [1.0] * 8


def test_dat_ncall_zero_keeps_values(tmp_path):
    # ik's reader only divides when ncall > 0
    p = tmp_path / "a.dat"
    write_imatrix_dat(p, [ImatrixEntry("x.weight", 0, np.array([3.0, 5.0], np.float32))])
    assert read_imatrix(p).entries["x.weight"].values.tolist() == [3.0, 5.0]


def test_gguf_round_trip_exact(tmp_path):
    tmap = tiny_moe()
    entries = entries_for(tmap, counts=True)
    p = tmp_path / "imatrix.gguf"
    write_imatrix_gguf(p, entries, chunks=77, chunk_size=512, datasets=["a.txt", "b.txt"])
    m = read_imatrix(p)
    assert (m.format, m.chunks, m.dataset) == ("gguf", 77, "a.txt, b.txt")
    assert_same(m, entries)
    exps = m.entries["blk.1.ffn_down_exps.weight"]
    assert exps.n_expert == N_EXP and exps.counts.tolist() == [512.0, 1024.0, 1536.0, 2048.0]
    assert exps.ncall == 4                       # ceil(max(counts) / chunk_size), mainline's legacy conversion


def test_gguf_reader_agrees_with_gguf_py(tmp_path):
    # the gguf package is an independent reader of the same bytes
    entries = entries_for(tiny_moe(1), counts=True)
    p = tmp_path / "i.gguf"
    write_imatrix_gguf(p, entries)
    ref = gguf.GGUFReader(p)
    ours = read_imatrix(p)
    by = {t.name: t for t in ref.tensors}
    for name, e in ours.entries.items():
        sums = np.asarray(by[name + ".in_sum2"].data, dtype=np.float64).reshape(e.n_expert, e.ne0)
        counts = np.asarray(by[name + ".counts"].data, dtype=np.float64).reshape(-1)
        np.testing.assert_array_equal(e.per_expert(), (sums / counts[:, None]).astype(np.float32))


def _gguf_with(path: Path, tensors: dict[str, np.ndarray], *, gtype: str = "imatrix") -> Path:
    w = gguf.GGUFWriter(str(path), arch="imatrix")
    w.add_type(gtype)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_ignores_other_statistics_and_zero_counts(tmp_path):
    p = _gguf_with(tmp_path / "i.gguf", {
        "blk.0.ffn_up_exps.weight.in_sum2": np.array([[2, 4], [6, 8]], np.float32),
        "blk.0.ffn_up_exps.weight.in_sum": np.array([[99, 99], [99, 99]], np.float32),   # newer statistic
        "blk.0.ffn_up_exps.weight.counts": np.array([[2], [0]], np.float32),            # expert 1 never ran
    })
    e = read_imatrix(p).entries["blk.0.ffn_up_exps.weight"]
    assert e.values.tolist() == [1.0, 2.0, 1.0, 1.0]      # 0 counts -> 1.0, as mainline quantize does
    assert e.counts.tolist() == [2.0, 0.0]


# ------------------------------------------------------------------------------------------ helpers

def test_tensor_importance_and_expert_activity(tmp_path):
    e_dense = ImatrixEntry("blk.0.attn_q.weight", 1, np.array([1, 3], np.float32))
    e_exp = ImatrixEntry("blk.0.ffn_up_exps.weight", 1, np.array([1, 1, 5, 5], np.float32), 2,
                         np.array([3.0, 1.0]))
    m = Imatrix({e.name: e for e in (e_dense, e_exp)}, None, None, "gguf")
    assert m.tensor_importance("blk.0.attn_q.weight") == 2.0
    assert m.tensor_importance("blk.0.ffn_up_exps.weight") == pytest.approx((3 * 1 + 1 * 5) / 4)
    assert m.expert_activity("blk.0.attn_q.weight") is None
    assert m.expert_activity("blk.0.ffn_up_exps.weight").tolist() == [3.0, 1.0]
    # .dat: no counts, activity is the per-expert mean importance
    dat = Imatrix({"x": ImatrixEntry("x", 1, np.array([1, 1, 5, 5], np.float32), 2)}, None, None, "dat")
    assert dat.expert_activity("x").tolist() == [1.0, 5.0]
    assert dat.tensor_importance("x") == 3.0
    with pytest.raises(KeyError):
        m.tensor_importance("nope")


def test_with_shapes_sets_experts_and_rejects_wrong_widths(tmp_path):
    tmap = tiny_moe(1)
    p = tmp_path / "a.dat"
    write_imatrix_dat(p, [ImatrixEntry("blk.0.ffn_down_exps.weight", 1, np.ones(N_FF * N_EXP, np.float32))])
    assert read_imatrix(p).entries["blk.0.ffn_down_exps.weight"].n_expert == 1   # nothing to infer from
    assert read_imatrix(p, tmap=tmap).entries["blk.0.ffn_down_exps.weight"].n_expert == N_EXP
    write_imatrix_dat(p, [ImatrixEntry("blk.0.attn_q.weight", 1, np.ones(N_EMBD + 1, np.float32))])
    with pytest.raises(ImatrixFormatError, match="different model|needs"):
        read_imatrix(p, tmap=tmap)


# ------------------------------------------------------------------------------------------ malformed .dat

def _dat(*parts: bytes) -> bytes:
    return b"".join(parts)


def _entry(name: bytes, ncall: int, vals: list[float], nval: int | None = None) -> bytes:
    return (struct.pack("<i", len(name)) + name + struct.pack("<ii", ncall, len(vals) if nval is None else nval)
            + struct.pack(f"<{len(vals)}f", *vals))


GOOD = _dat(struct.pack("<i", 1), _entry(b"a.weight", 1, [1.0, 2.0]))

MALFORMED_DAT = [
    pytest.param(GOOD[:-2], 20, "truncated", id="cut-inside-values"),
    pytest.param(struct.pack("<i", 2**30) + GOOD[4:], 0, "cannot fit", id="entry-count-exceeds-file"),
    pytest.param(struct.pack("<i", -1) + GOOD[4:], 0, "negative", id="negative-entry-count"),
    pytest.param(_dat(struct.pack("<i", 1), struct.pack("<i", -5), b"abcdefghijklmnopq"), 4, "name length",
                 id="negative-name-length"),
    pytest.param(_dat(struct.pack("<i", 1), struct.pack("<i", 1000), b"abcdefghijklmnopq"), 4, "name length",
                 id="name-length-past-end"),
    pytest.param(_dat(struct.pack("<i", 1), _entry(b"a.weight", 1, [1.0], nval=-3)), 20, "nval", id="negative-nval"),
    pytest.param(_dat(struct.pack("<i", 1), _entry(b"a.weight", 1, [1.0], nval=9)), 20, "nval", id="nval-past-end"),
    pytest.param(_dat(struct.pack("<i", 1), _entry(b"a.weight", 1, [1.0, float("nan")])), 28, "nan", id="nan-value"),
    pytest.param(_dat(struct.pack("<i", 1), _entry(b"a.weight", 1, [float("inf")])), 24, "inf", id="inf-value"),
    pytest.param(_dat(struct.pack("<i", 1), _entry(b"a.weight", 1, [-1.0])), 24, "negative",
                 id="negative-sum-of-squares"),
    pytest.param(_dat(struct.pack("<i", 1), _entry(b"a.weight", -2, [1.0])), 16, "ncall", id="negative-ncall"),
    pytest.param(GOOD + b"\x01\x00", 32, "tail", id="partial-tail"),
    pytest.param(GOOD + struct.pack("<ii", 3, 2) + b"ab" + b"zz", 42, "unexpected", id="bytes-after-tail"),
    pytest.param(_dat(struct.pack("<i", 2), _entry(b"a.weight", 1, [1.0]), _entry(b"a.weight", 1, [1.0])), 28,
                 "duplicate", id="duplicate-entry"),
    pytest.param(_dat(struct.pack("<i", 1), struct.pack("<i", 2), b"\xff\xfe", struct.pack("<ii", 1, 1), b"\0\0\0\0"),
                 8, "UTF-8", id="undecodable-name"),
]


@pytest.mark.parametrize("data, offset, fragment", MALFORMED_DAT)
def test_malformed_dat(tmp_path, data, offset, fragment):
    p = tmp_path / "bad.dat"
    p.write_bytes(data)
    with pytest.raises(ImatrixFormatError) as info:
        read_imatrix(p)
    assert fragment.lower() in str(info.value).lower()
    assert info.value.offset == offset
    assert f"offset {offset}" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImatrixFormatError, match="cannot open"):
        read_imatrix(tmp_path / "none.dat")


# ------------------------------------------------------------------------------------------ malformed GGUF

def _good_gguf(tmp_path) -> bytes:
    p = tmp_path / "good.gguf"
    write_imatrix_gguf(p, entries_for(tiny_moe(1), counts=True), chunks=3, datasets=["d"])
    return p.read_bytes()


def test_gguf_truncations_all_raise(tmp_path):
    data = _good_gguf(tmp_path)
    p = tmp_path / "cut.gguf"
    ref = gguf.GGUFReader(tmp_path / "good.gguf")
    data_end = max(int(t.data_offset) + int(t.n_bytes) for t in ref.tensors)   # past it is only padding
    for cut in sorted({5, 12, 20, 30, 100, 300, len(data) // 2, data_end - 4, data_end - 1}):
        p.write_bytes(data[:cut])
        with pytest.raises(ImatrixFormatError):
            read_imatrix(p)


@pytest.mark.parametrize("patch, fragment", [
    ((4, struct.pack("<I", 1)), "version"),             # GGUF v1 is not supported
    ((16, struct.pack("<Q", 2**40)), "cannot fit"),     # kv count exceeds the file
    ((8, struct.pack("<Q", 2**40)), "cannot fit"),      # tensor count exceeds the file
])
def test_gguf_hostile_counts(tmp_path, patch, fragment):
    data = bytearray(_good_gguf(tmp_path))
    at, raw = patch
    data[at:at + len(raw)] = raw
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(ImatrixFormatError, match=fragment):
        read_imatrix(p)


@pytest.mark.parametrize("tensors, gtype, fragment", [
    ({"a.weight.in_sum2": np.ones(4, np.float32)}, "imatrix", "counts"),                    # counts missing
    ({"a.weight.in_sum2": np.ones((2, 4), np.float32),
      "a.weight.counts": np.ones((3, 1), np.float32)}, "imatrix", "shape"),                 # n_mat disagrees
    ({"a.weight.in_sum2": np.ones(4, np.float16),
      "a.weight.counts": np.ones(1, np.float32)}, "imatrix", "F32"),                        # not F32
    ({"a.weight.in_sum2": np.array([1, np.nan], np.float32),
      "a.weight.counts": np.ones(1, np.float32)}, "imatrix", "nan"),                        # NaN sums
    ({"a.weight.in_sum2": np.ones(4, np.float32),
      "a.weight.counts": np.ones(1, np.float32)}, "model", "not 'imatrix'"),                # a model GGUF
    ({"a.weight": np.ones(4, np.float32)}, "imatrix", "no <name>.in_sum2"),                 # nothing to read
])
def test_gguf_malformed_content(tmp_path, tensors, gtype, fragment):
    p = _gguf_with(tmp_path / "bad.gguf", tensors, gtype=gtype)
    with pytest.raises(ImatrixFormatError, match=fragment):
        read_imatrix(p)


def test_imatrix_error_is_planner_error():
    assert issubclass(ImatrixFormatError, PlannerError)


# ------------------------------------------------------------------------------------------ properties

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._0123456789", min_size=1, max_size=24)
_vals = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False, width=32), min_size=1, max_size=16)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_names, st.tuples(st.integers(0, 10), _vals), min_size=1, max_size=5))
def test_dat_round_trip_property(tmp_path, spec):
    # ncall a power of two: value * ncall / ncall is then exact in float32
    entries = [ImatrixEntry(n, 0 if e == 0 else 2 ** (e - 1), np.array(v, np.float32)) for n, (e, v) in spec.items()]
    p = tmp_path / "p.dat"
    write_imatrix_dat(p, entries, chunks=1, dataset="x")
    m = read_imatrix(p)
    for e in entries:
        np.testing.assert_array_equal(m.entries[e.name].values, e.values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_never_crash(tmp_path, blob, as_gguf):
    # anything the reader cannot parse must come out as our error, never IndexError/struct.error/MemoryError
    p = tmp_path / "fuzz.bin"
    p.write_bytes((b"GGUF" + blob) if as_gguf else blob)
    try:
        read_imatrix(p)
    except ImatrixFormatError:
        pass


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("valid")
    entries = entries_for(tiny_moe(1), counts=True)
    write_imatrix_dat(d / "a.dat", entries, chunks=3, dataset="d")
    write_imatrix_gguf(d / "a.gguf", entries, chunks=3, datasets=["d"])
    return {"dat": (d / "a.dat").read_bytes(), "gguf": (d / "a.gguf").read_bytes()}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["dat", "gguf"]), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)),
                                                  min_size=1, max_size=6))
def test_corrupted_valid_files_never_crash(tmp_path, valid_files, kind, flips):
    # byte flips inside a real file (header fields, lengths, floats) give our error or a parse, nothing else
    data = bytearray(valid_files[kind])
    for at, value in flips:
        data[at % len(data)] = value
    p = tmp_path / f"flipped.{kind}"
    p.write_bytes(bytes(data))
    try:
        read_imatrix(p)
    except ImatrixFormatError:
        pass


# ------------------------------------------------------------------------------------------ llama-quantize lookup

def _imx(names):
    from planner.imatrix import Imatrix, ImatrixEntry
    return Imatrix({n: ImatrixEntry(n, 1, np.ones(4, np.float32)) for n in names}, 1, None, "dat")


def test_entry_lookup_follows_ik_llama_quantize():
    """ik src/llama-quantize.cpp lines 1627-1663 at 8337e4cd: merged gate/up, gate->up, MLA v_b<->kv_b."""
    from planner.imatrix import entry_for, uncovered
    imx = _imx(["blk.3.ffn_gate_up_exps.weight", "blk.0.ffn_up.weight", "blk.3.attn_kv_b.weight",
                "blk.4.ffn_up_exps.weight", "blk.5.attn_v_b.weight"])
    assert entry_for(imx, "blk.3.ffn_up_exps.weight") == "blk.3.ffn_gate_up_exps.weight"
    assert entry_for(imx, "blk.4.ffn_gate_exps.weight") == "blk.4.ffn_up_exps.weight"
    assert entry_for(imx, "blk.0.ffn_gate.weight") == "blk.0.ffn_up.weight"
    assert entry_for(imx, "blk.3.attn_v_b.weight") == "blk.3.attn_kv_b.weight"
    assert entry_for(imx, "blk.5.attn_kv_b.weight") == "blk.5.attn_v_b.weight"
    assert entry_for(imx, "blk.3.attn_k_b.weight") is None          # no alternative for k_b
    assert entry_for(imx, "blk.0.ffn_gate.weight", engine="mainline") is None   # mainline: exact names only
    assert uncovered(imx, ["blk.3.attn_k_b.weight", "blk.0.ffn_up.weight"]) == ["blk.3.attn_k_b.weight"]
