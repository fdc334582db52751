import pytest

from planner.quantize import QuantizeSpec, Rule, quantize
from planner.errors import EmitterError
from planner.recipe import Recipe, build_recipe, verify_recipe
from planner.tensors import builtin


def seed_types(tm):
    from tests.test_memory_speed import seed_mix

    return seed_mix(tm)


def test_seed_mix_compresses_to_role_rules_that_reapply():
    tm = builtin("qwen3-235b-a22b")
    types = seed_types(tm)
    r = build_recipe(tm, types)
    assert r.rules == (
        (r"blk\..*\.attn_(k|output|q|v)\.weight", "iq6_k"),
        (r"blk\..*\.ffn_down_exps\.weight", "iq4_k"),
        (r"blk\..*\.ffn_(gate_exps|up_exps)\.weight", "iq3_k"),
        (r"^token_embd\.weight", "q8_0"),
        (r"^output\.weight", "q8_0"),
    )
    fp = quantize(tm, QuantizeSpec(base_type=r.base_type, custom_q=tuple(Rule(x, t, i) for i, (x, t) in enumerate(r.rules))))
    assert f"{fp.total_bytes / 2**30:.3f}" == "106.830"
    argv = r.quantize_argv("in.gguf", "out.gguf", imatrix="imx.dat")
    assert argv[:2] == ["llama-quantize", "--custom-q"] and argv[-4:] == ["imx.dat", "in.gguf", "out.gguf", r.base_type]


def test_layer_ranges_and_verification_catches_a_wrong_recipe():
    tm = builtin("qwen3-30b-a3b")
    types = seed_types(tm)
    for t in tm.tensors:
        if t.role == "ffn_down_exps" and 10 <= t.layer <= 19:
            types[t.name] = "q6_K"
    r = build_recipe(tm, types)
    assert (r"blk\.1[0-9]\.ffn_down_exps\.weight", "q6_K") in r.rules
    wrong = Recipe("ik", r.base_type, tuple((x, "q4_K" if t == "q6_K" else t) for x, t in r.rules), "")
    with pytest.raises(EmitterError, match="does not reproduce the plan"):
        verify_recipe(tm, types, wrong)


def test_mainline_recipe_uses_tensor_type():
    tm = builtin("qwen3-30b-a3b")
    types = {n: ("q4_K" if ty == "iq3_k" else "q6_K" if ty in ("iq6_k", "iq4_k") else ty)
             for n, ty in seed_types(tm).items()}
    r = build_recipe(tm, types, engine="mainline")
    argv = r.quantize_argv("a.gguf", "b.gguf")
    assert argv.count("--tensor-type") == len(r.rules) and "--custom-q" not in argv
