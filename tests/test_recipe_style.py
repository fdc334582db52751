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


# ------------------------------------------------------------------ export --quantize --style ubergarm

_FAKES = ("huggingface-cli() { :; }; python3() { :; }; llama-imatrix() { :; }; "
          "llama-quantize() { printf '%s\\n' \"$@\" > \"$QUANTIZE_ARGS\"; }\n")


def _run_script(path, tmp_path) -> list[str]:
    """The exported script run by bash with every step's binary replaced by a function; what the last
    llama-quantize call received, one argument per line (the recipe as bash itself reads it back)."""
    args = tmp_path / "quantize.args"
    for f in ("convert_hf_to_gguf.py", "calibration.txt"):    # the files the script's preflight asks the user for
        (tmp_path / f).write_text("")
    subprocess.run(["bash", "-c", _FAKES + f"source {path}"], capture_output=True, text=True, check=True,
                   cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "QUANTIZE_ARGS": str(args)})
    return args.read_text().split("\n")[:-1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    plan_json = tmp / "plan.json"
    r = CliRunner().invoke(main, [*PLAN, "--out", str(plan_json)])
    assert r.exit_code == 0, r.output
    styled, plain = tmp / "styled.sh", tmp / "plain.sh"
    for path, extra in ((styled, ["--style", "ubergarm"]), (plain, [])):
        r = CliRunner().invoke(main, ["export", "--plan", str(plan_json), "--quantize", *extra, "--out", str(path)])
        assert r.exit_code == 0, r.output
    return plan_json, styled, plain


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_export_quantize_style_ubergarm_is_the_same_recipe(exported, tmp_path):
    plan_json, styled, plain = exported
    doc = json.loads(plan_json.read_text())
    text = styled.read_text()
    assert subprocess.run(["bash", "-n", str(styled)], capture_output=True).returncode == 0
    assert "## Attention [0-47]" in text and "## Routed Experts [0-47]" in text
    assert f"# {doc['rule_count']} rules for llama-quantize" in text
    args = _run_script(styled, tmp_path)
    # the command bash ran is the plain export's, but for the order of the --custom-q rules
    plain_args = _run_script(plain, tmp_path)
    i = args.index("--custom-q")
    assert args[:i + 1] + args[i + 2:] == plain_args[:i + 1] + plain_args[i + 2:]
    assert sorted(args[i + 1].split(",")) == sorted(plain_args[i + 1].split(","))
    # and every tensor gets the plan's type from the recipe bash read back
    tmap = builtin("qwen3-30b-a3b")
    got = _apply(tmap, doc["recipe"]["base_type"], args[i + 1].split(","))
    assert got == {n: t for n, t in doc["plan"]["types"].items() if n in got}
    assert len(got) == len(tmap.tensors)


def _hostile_plan(plan_json, tmp_path, rule: str):
    doc = json.loads(plan_json.read_text())
    doc["recipe"]["rules"].append([rule, "q8_0"])
    doc["recipe"]["custom_q"] += f",{rule}=q8_0"
    step = doc["workflow"]["steps"][-1]
    step["argv"] = [doc["recipe"]["custom_q"] if a.startswith("blk") else a for a in step["argv"]]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_export_style_keeps_hostile_rules_as_data(exported, tmp_path):
    """Same safety as the launch script: a rule is data (quoted here-document, the end word on no line of it),
    never run; one with a line break cannot be written and is refused with a one-line error."""
    plan_json = exported[0]
    rule = "x$(touch PWNED)`touch PWNED2`'\"|RECIPE"      # a valid regex (the CLI checks that first)
    hostile = _hostile_plan(plan_json, tmp_path, rule)
    out = tmp_path / "q.sh"
    r = CliRunner().invoke(main, ["export", "--plan", str(hostile), "--quantize", "--style", "ubergarm",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert subprocess.run(["bash", "-n", str(out)], capture_output=True).returncode == 0
    args = _run_script(out, tmp_path)
    assert f"{rule}=q8_0" in args[args.index("--custom-q") + 1].split(",")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    # a line break inside a rule: refused, no script, no traceback
    hostile = _hostile_plan(plan_json, tmp_path, "a\nRECIPE\ntouch PWNED3")
    r = CliRunner().invoke(main, ["export", "--plan", str(hostile), "--quantize", "--style", "ubergarm",
                                  "--out", str(tmp_path / "q3.sh")])
    assert r.exit_code == 2 and "not one printable line" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "q3.sh").exists()


def test_style_needs_quantize(exported):
    r = CliRunner().invoke(main, ["export", "--plan", str(exported[0]), "--style", "ubergarm", "--out", "x.sh"])
    assert r.exit_code == 2 and "add --quantize" in r.output


def test_merged_role_groups_escape_the_dot():
    """A role with a "." in its name (GLM's nextn.eh_proj, GLM-5's indexer.attn_k) is matched literally: the
    closing note of the last session found `(nextn.eh_proj|...)` matching any character there."""
    from planner.recipe import _role_rx
    from planner.regexes import compile_user_regex, search

    rx = _role_rx(["nextn.eh_proj", "nextn.shared_head_head"])
    assert rx == r"(nextn\.eh_proj|nextn\.shared_head_head)"
    pat = compile_user_regex(rf"blk\.46\.{rx}\.weight", "recipe")
    assert search(pat, "blk.46.nextn.eh_proj.weight") and not search(pat, "blk.46.nextnXeh_proj.weight")
