import pytest
from gguf.constants import GGML_QUANT_SIZES

from planner.errors import UnknownQuantTypeError, UnsupportedTensorSizeError
from planner.quants import catalogue, pad

C = catalogue()


def test_mainline_rows_match_gguf_package():
    # every type the gguf package knows (activation types excluded) has the same block/type size and id
    for t, (blck, ts) in GGML_QUANT_SIZES.items():
        if t.name in ("Q8_1", "Q8_K"):
            continue  # internal activation types, never stored
        ours = C.by_id(t.value)
        assert (ours.block_size, ours.type_size) == (blck, ts), t.name
        assert "mainline" in ours.engines


@pytest.mark.parametrize("name,ne0,row", [
    ("iq4_ks", 4096, 2180),      # 4 B row meta + 136*16 (facts §7)
    ("iq2_ks", 7168, 1962),      # 2 + 70*28
    ("iq1_s_r4", 4096, 770),     # 32-weight blocks of 6 B + 2 B meta
    ("iq1_m_r4", 4096, 898),
    ("iq2_kt", 2048, 548),
    ("iq4_kt", 2048, 1028),
    ("q8_KV", 128, 136),         # 8 B row meta
    ("q8_KV_r8", 128, 132),      # row meta 4, not 8
    ("iq6_k", 4096, 3392),
])
def test_row_bytes(name, ne0, row):
    assert C.get(name).row_bytes(ne0) == row


def test_expert_tensor_pays_row_meta_per_expert_row():
    # [4096, 1536, 128]: 1536*128 rows of iq4_ks, each 2180 bytes
    assert C.get("iq4_ks").tensor_bytes([4096, 1536, 128]) == 2180 * 1536 * 128


def test_i2_s_special_case():
    assert C.get("i2_s").tensor_bytes([4096, 4096]) == 4096 * 4096 // 4 + 32


def test_ik_names_are_case_sensitive_with_hint():
    with pytest.raises(UnknownQuantTypeError) as ei:
        C.get("q4_k", engine="ik")
    assert "q4_K" in str(ei.value)
    assert C.get("Q4_K", engine="mainline").name == "q4_K"


def test_engine_sets():
    with pytest.raises(UnknownQuantTypeError, match="only in ik"):
        C.get("iq4_k", engine="mainline")
    with pytest.raises(UnknownQuantTypeError, match="only in mainline"):
        C.get("tq1_0", engine="ik")
    assert C.get("q1_0", engine="mainline").name == "q1_0_g128"


def test_unknown_id():
    with pytest.raises(UnknownQuantTypeError, match="id 999"):
        C.by_id(999)


@pytest.mark.parametrize("name,engine,ne0,expect", [
    ("iq3_k", "ik", 320, "iq4_nl"),
    ("iq4_k", "ik", 192, "q5_0"),
    ("iq6_k", "ik", 320, "q8_0"),
    ("q5_K", "ik", 320, "q6_0"),
    ("q5_K", "mainline", 320, "q5_1"),     # mainline differs from ik here
    ("q3_K", "mainline", 320, "q4_0"),
    ("iq4_k", "ik", 4096, "iq4_k"),        # divides: unchanged
    ("q4_K", "mainline", 48, "f16"),       # even q5_0 does not divide 48: mainline -> f16
])
def test_row_fallback(name, engine, ne0, expect):
    t, _ = C.row_fallback(C.get(name), ne0, engine)
    assert t.name == expect


def test_ik_without_fallback_raises():
    with pytest.raises(UnsupportedTensorSizeError):
        C.row_fallback(C.get("iq1_bn"), 96, "ik")


def test_cuda_support_table():
    assert C.get("iq4_k_r4").runs_on_cuda("ik")        # partly false folklore: k_r4 types run on CUDA
    assert not C.get("q8_0_r8").runs_on_cuda("ik")
    assert not C.get("q8_KV").runs_on_cuda("ik")
    assert pad(33) == 64 and pad(64) == 64
