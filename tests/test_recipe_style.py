"""`plan --style ubergarm`: the recipe grouped by role and layer range with comments, semantically the same recipe.

The check is independent of the styling code: the styled block is read back the way ubergarm's published shell does
it (``grep -v '^#' | sed -Ez 's:\\n+:,:g'``: :func:`planner.quantize.parse_recipe_text`, and bash itself where it
is installed), re-applied through the llama-quantize emulation, and every tensor must get the type the plain recipe
gives it.  The layout follows ubergarm's recipe in ik_llama.cpp PR 612 (Kimi-K2-Instruct IQ2_KL: ``## Attention
[0-60] (GPU)``, ``## Shared Expert (1-60) (GPU)``, ``## Routed Experts (1-60) (CPU)``, ``## Token embedding and
output tensors (GPU)``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.measurements import load_ladders
from planner.quantize import QuantizeSpec, parse_custom_q, parse_recipe_text, quantize
from planner.recipe import build_recipe
from planner.recipe_style import styled_recipe, styled_script
from planner.tensors import builtin

PLAN = ["plan", "qwen3-30b-a3b", "--vram", "8", "--ram", "32"]


def _apply(tmap, base: str, items: list[str], engine: str = "ik") -> dict[str, str]:
    fp = quantize(tmap, QuantizeSpec(base_type=base, custom_q=parse_custom_q(items, engine), engine=engine,
                                     has_imatrix=True))
    return {r.name: r.type_name for r in fp.tensors}


@pytest.fixture(scope="module")
def plan_outputs():
    r = CliRunner().invoke(main, [*PLAN, "--style", "ubergarm"])
    assert r.exit_code == 0, r.output
    doc = json.loads(CliRunner().invoke(main, [*PLAN, "--json"]).stdout)
    return r.output, doc


def test_plan_style_ubergarm_is_the_same_recipe(plan_outputs):
    text, doc = plan_outputs
    block = text[text.index("custom=$(cat <<'RECIPE'\n") + 24:text.index("\nRECIPE\n")]
    tmap = builtin("qwen3-30b-a3b")
    base = doc["recipe"]["base_type"]
    plain = _apply(tmap, base, [f"{rx}={ty}" for rx, ty in doc["recipe"]["rules"]])
    styled = _apply(tmap, base, parse_recipe_text(block))
    assert styled == plain and styled == {n: t for n, t in doc["plan"]["types"].items() if n in styled}
    # rule count shown, and it is the number of rule lines of the block
    n = doc["rule_count"]
    assert f"(ubergarm style, {n} rules)" in text and f"# {n} rules for llama-quantize" in block
    assert len(parse_recipe_text(block)) == n
    assert "## Attention [0-47]" in block and "## Routed Experts [0-47]" in block
    assert "## Token embedding and output" in block
    assert "(the llama-quantize command under the recipe above)" in text       # printed once, with "$custom"
    assert re.search(r'^llama-quantize --custom-q "\$custom" --imatrix ', text, re.M)


def test_deepseek_groups_dense_shared_and_routed():
    lad = next(x for x in load_ladders() if x.id == "deepseek-r1-0528-ubergarm")
    mix = next(p for p in lad.points if p.name == "IQ2_K_R4").mix
    tmap = builtin("deepseek-r1")
    types = _apply(tmap, str(mix.ftype), list(mix.custom_q))
    recipe = build_recipe(tmap, types, has_imatrix=True)
    block = styled_recipe(recipe, types)
    heads = [ln for ln in block.splitlines() if ln.startswith("## ")]
    assert heads[:4] == ["## Attention [0-60]", "## Dense FFN [0-2]", "## Shared Expert [3-60]",
                         "## Routed Experts [3-60]"]
    assert _apply(tmap, recipe.base_type, parse_recipe_text(block)) == types


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize("engine", ["ik", "mainline"])
def test_the_script_lines_join_the_rules_for_each_engine(engine):
    tmap = builtin("qwen3-30b-a3b")
    base = "IQ4_XS" if engine == "mainline" else "IQ4_KS"
    items = [r"blk\.(0|1)\.ffn_down_exps\.weight=q6_K", r"blk\..*\.attn_.*=q8_0", r"output\.weight=q6_K"]
    types = _apply(tmap, base, items, engine)
    recipe = build_recipe(tmap, types, engine=engine, base_type=base, has_imatrix=True)
    script = styled_script(recipe, types, recipe.quantize_argv("in.gguf", "out.gguf"))
    fake = "llama-quantize() { printf '%s\\n' \"$@\"; }\n"
    out = subprocess.run(["bash", "-c", fake + script], capture_output=True, text=True, check=True).stdout
    args = out.splitlines()
    if engine == "ik":
        assert args[0] == "--custom-q" and set(args[1].split(",")) == {f"{rx}={ty}" for rx, ty in recipe.rules}
    else:
        got = [args[i + 1] for i, a in enumerate(args) if a == "--tensor-type"]
        assert sorted(got) == sorted(f"{rx}={ty}" for rx, ty in recipe.rules)
    assert args[-3:] == ["in.gguf", "out.gguf", base]
