"""Low-bit candidates and the engines' type floors (data/candidates.toml, ftype_rules.toml [[floors]]).

Oracles: ik_llama.cpp src/llama-quantize.cpp llama_tensor_get_type at 8337e4cd (line numbers below), mainline
src/llama-quant.cpp llama_tensor_get_type_impl at 007dbbf3, and the project's llama-quantize emulation, whose rule
tables were checked against real ik llama-quantize outputs (tests/fixtures/ik).
"""

from __future__ import annotations

import tomllib

import pytest

from planner.lowbit import candidate_names, floor_classes, floor_role, floors, respects_floor
from planner.quantize import QuantizeSpec, quantize
from planner.quants import catalogue
from planner.roles import tied_output
from planner.tensors import builtin

RULES = tomllib.loads((__import__("pathlib").Path(__file__).parent.parent / "planner" / "data"
                       / "ftype_rules.toml").read_text())


def test_imatrix_only_types_exactly_with_an_imatrix():
    without = candidate_names("ik", has_imatrix=False)
    with_ = candidate_names("ik", has_imatrix=True)
    need = set(RULES["ik"]["imatrix_types"])          # ik lines 1692-1704: refused without an imatrix
    assert not need & set(without)
    for t in ("iq1_s", "iq1_m", "iq1_kt", "iq2_kt", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s_r4", "iq1_m_r4"):
        assert t in with_ and t in need
    for t in ("iq2_ks", "iq2_kl", "iq2_k"):            # low-bit but quantizable without an imatrix
        assert t in without and t not in need
    assert "iq1_s_r4" not in candidate_names("ik", has_imatrix=True, on_cpu=False)   # repacks: CPU only
    assert set(candidate_names("mainline", has_imatrix=True)) >= {"iq1_s", "iq1_m", "iq2_xxs"}


def test_low_bit_candidates_have_row_fallbacks_and_quality_entries():
    from planner.quality import rel_mse
    cat = catalogue()
    for t in candidate_names("ik", has_imatrix=True):
        qt = cat.get(t)
        assert rel_mse(t)[1].startswith("measured"), t
        if qt.block_size == 256 and not qt.repack_base:
            assert qt.fallback("ik"), t               # ne0 % 256 != 0 (e.g. 10944 in GLM) must have a fallback
    assert cat.get("iq1_s_r4").bpw < cat.get("iq1_s").bpw      # 1.5 vs 1.5625 bpw (ggml-common.h block sizes)


@pytest.mark.parametrize("engine, bpw, output, token_embd, attn_v", [
    # ik 8337e4cd: IQ1_S etc. -> output q5_K (375), token_embd q2_K (395), attn_v iq4_k for MoE (513)
    ("ik", 1.6, "q5_K", "q2_K", "iq4_k"),
    # ik: IQ2_KS/IQ3_K class: output q5_K (375), token_embd stays the ftype type, attn_v iq4_k (513, 474)
    ("ik", 3.0, "q5_K", None, "iq4_k"),
    # ik: other ftypes: output q6_K unless q8_0/iq6_k (385-387), attn_v q8_0 when n_expert >= 4 (544-547)
    ("ik", 4.5, "q6_K", None, "q8_0"),
    # mainline 007dbbf3 llama_tensor_get_type_impl: IQ1/IQ2_XXS/XS output q5_K, token_embd q2_K, attn_v q4_K
    ("mainline", 2.0, "q5_K", "q2_K", "q4_K"),
    ("mainline", 2.9, "q5_K", "iq3_s", "q4_K"),
    ("mainline", 4.5, "q6_K", None, None),
])
def test_floor_classes(engine, bpw, output, token_embd, attn_v):
    c = floors(engine, bpw, n_expert=128)
    assert c.floors.get("output") == output
    assert c.floors.get("token_embd") == token_embd
    assert c.floors.get("attn_v") == attn_v


def test_dense_models_have_no_moe_attn_v_floor():
    assert "attn_v" not in floors("ik", 1.6, n_expert=1).floors
    assert floors("ik", 1.6, n_expert=1).floors["output"] == "q5_K"


def test_class_bounds_are_the_ftypes_default_bpw():
    ik = floor_classes("ik")
    assert ik[0].max_bpw == 2.3125      # IQ2_XS default type iq2_xs: 74 bytes / 256 weights
    assert ik[1].max_bpw == 3.4375      # IQ3_K default type iq3_k: 110 bytes / 256 weights
    assert ik[-1].max_bpw == float("inf")


@pytest.mark.parametrize("model", ["qwen3-235b-a22b", "glm-4.5-air"])
def test_floors_are_what_the_engine_rules_give(model):
    """Every ftype of a class gives output / token_embd / attn_v at least the floor, and some ftype gives exactly it
    (the floor is the engine's, not a stricter choice).  Emulated with the rule tables for a MoE model."""
    tmap = builtin(model)
    for c in floor_classes("ik")[:2]:
        f = next(x for x in RULES["floors"] if x["engine"] == "ik" and x["class"] == c.name)
        got: dict[str, list[str]] = {}
        for ftype in f["ftypes"]:
            fp = quantize(tmap, QuantizeSpec(base_type=ftype, has_imatrix=True))
            for r in fp.tensors:
                role = floor_role(r.name)
                if role in c.floors:
                    got.setdefault(role, []).append(r.type_name)
        for role, floor_type in c.floors.items():
            if role == "tied_output":
                continue
            assert all(respects_floor(t, floor_type) for t in got[role]), (c.name, role, set(got[role]))
            assert any(catalogue().get(t).bpw == catalogue().get(floor_type).bpw for t in got[role]), (c.name, role)


@pytest.mark.parametrize("engine", ["ik", "mainline"])
def test_tied_token_embd_takes_the_output_floor(engine):
    """gemma-3-27b has no output.weight: both engines quantize token_embd by the output's rule (ik
    src/llama-quantize.cpp:359 ``!qs.has_output``; mainline src/llama-quant.cpp:490 ``has_tied_embeddings``), so
    its floor in a tied model is the lowest type those rules give it over the class's ftypes (emulated with the rule
    tables), above the untied token_embd floor; an untied model keeps the token_embd floor."""
    tmap = builtin("gemma-3-27b")
    assert tmap.derived(tied_output) is not None
    for c in floor_classes(engine)[:-1]:
        f = next(x for x in RULES["floors"] if x["engine"] == engine and x["class"] == c.name)
        got = [next(r.type_name for r in quantize(tmap, QuantizeSpec(base_type=ft, has_imatrix=True, engine=engine)).tensors
                    if r.name == "token_embd.weight") for ft in f["ftypes"]]
        tied = floors(engine, c.max_bpw, tied=True).floors["token_embd"]
        assert all(respects_floor(t, tied) for t in got), (c.name, set(got))
        assert min(catalogue().get(t).bpw for t in got) == catalogue().get(tied).bpw, (c.name, set(got), tied)
        untied = floors(engine, c.max_bpw, tied=False).floors.get("token_embd")
        assert untied is None or catalogue().get(tied).bpw > catalogue().get(untied).bpw


def test_plans_of_tied_models_keep_token_embd_at_the_output_floor():
    """Before, gemma-3-27b plans put token_embd (also its output matrix) at iq3_k, iq2_xxs, even iq1_kt: the prior
    counted it as a one-row lookup.  The plan's type now meets the tied floor of its class."""
    import json

    from click.testing import CliRunner

    from planner.cli import main
    r = CliRunner().invoke(main, ["plan", "gemma-3-27b", "--vram", "24", "--ram", "96", "--json"])
    assert r.exit_code == 0, r.output
    ty = json.loads(r.output)["plan"]["types"]["token_embd.weight"]
    assert respects_floor(ty, floors("ik", 99.0, tied=True).floors["token_embd"]), ty


def test_floor_role_names():
    assert floor_role("output.weight") == "output" and floor_role("token_embd.weight") == "token_embd"
    assert floor_role("blk.3.attn_v.weight") == "attn_v" and floor_role("blk.3.attn_kv_b.weight") == "attn_v"
    assert floor_role("blk.3.attn_output.weight") is None
    assert respects_floor("iq5_k", "q5_K") and not respects_floor("iq4_k", "q5_K")


def test_budget_class_and_filter():
    from planner.lowbit import filter_candidates, floors_for_budget
    r1 = builtin("deepseek-r1")
    n = sum(t.n_elements for t in r1.tensors)
    low = floors_for_budget("ik", 140 * 2**30, n, n_expert=256)      # ~1.8 bpw: the IQ1/IQ2_XXS class
    assert low.name == "IQ1/IQ2_XXS/IQ2_XS"
    cands = ["q8_0", "q6_K", "q5_K", "iq4_k", "iq3_k", "iq1_s"]
    assert filter_candidates("output.weight", cands, low) == ["q8_0", "q6_K", "q5_K"]
    assert filter_candidates("token_embd.weight", cands, low) == ["q8_0", "q6_K", "q5_K", "iq4_k", "iq3_k"]
    assert filter_candidates("blk.3.ffn_up_exps.weight", cands, low) == cands
    high = floors_for_budget("ik", 400 * 2**30, n, n_expert=256)
    assert filter_candidates("output.weight", cands, high) == ["q8_0", "q6_K"]
    assert filter_candidates("output.weight", ["iq3_k"], high) == ["iq3_k"]      # never leaves nothing
