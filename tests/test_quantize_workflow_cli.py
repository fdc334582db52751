"""Issue acceptance through the CLI: low-bit plans for DeepSeek-R1 and Kimi-K2 on the boxes people use, the
engines' floors, the imatrix options, the printed workflow and `export --quantize` (bash -n).

Independent values: the floors from ik_llama.cpp src/llama-quantize.cpp at 8337e4cd (output q5_K for IQ1/IQ2
ftypes, lines 367-375; q6_K otherwise, 385-387; token_embd q2_K for IQ1_S/IQ1_M/IQ2_XXS/IQ2_XS, 393-397), the
imatrix refusal list (1692-1704), and the box sizes the issue names.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.quants import catalogue

GIB = 2**30


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def run_json(*args: str) -> dict:
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def bpw(t: str) -> float:
    return catalogue().get(t).bpw


@pytest.mark.parametrize("model, vram, ram", [
    ("deepseek-r1", "24", "128"),     # issue acceptance: DeepSeek-R1 at 24 + 128
    ("kimi-k2", "24", "192"),         # issue acceptance: Kimi-K2 at 24 + 192
])
def test_trillion_parameter_models_plan_on_consumer_boxes(model, vram, ram):
    doc = run_json("plan", model, "--vram", vram, "--ram", ram)
    plan = doc["plan"]
    assert plan["total_bytes"] < (int(vram) + int(ram)) * GIB
    types = plan["types"]
    imatrix_only = {"iq1_s", "iq1_m", "iq1_kt", "iq2_kt", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s_r4", "iq1_m_r4"}
    assert imatrix_only & set(types.values())                 # only reachable with the low-bit candidates
    assert bpw(types["output.weight"]) >= bpw("q5_K")          # ik floor for IQ1/IQ2 ftypes
    assert bpw(types["token_embd.weight"]) >= bpw("q2_K")
    q = shlex.split(doc["quantize_command"])
    assert q[0] == "llama-quantize" and "--imatrix" in q      # imatrix-only types: the command must pass one
    assert doc["rule_count"] == len(doc["recipe"]["rules"])
    assert plan["quality"]["constants_kind"] in ("measured", "transferred")


def test_output_floor_in_the_headline_plan():
    types = run_json("plan", "--vram", "24", "--ram", "96")["plan"]["types"]
    assert bpw(types["output.weight"]) >= bpw("q6_K")         # above IQ3_K: output q6_K or better
    assert all(t == "q8_0" for n, t in types.items() if n.endswith(".attn_v.weight"))   # MoE attn_v: q8_0


def test_imatrix_only_types_need_an_imatrix():
    r = run("plan", "deepseek-r1", "--vram", "24", "--ram", "128", "--no-imatrix", "--allow", "iq1_s",
            "--allow", "q8_0")
    assert r.exit_code == 2
    assert "--imatrix FILE" in r.output and "--ignore-imatrix-rules" in r.output and "Traceback" not in r.output


def test_no_imatrix_plan_says_so_and_has_no_imatrix_flag():
    doc = run_json("plan", "--vram", "24", "--ram", "96", "--no-imatrix")
    assert "--imatrix" not in shlex.split(doc["quantize_command"])
    assert "none (--no-imatrix)" in doc["imatrix"]
    assert not {"iq1_s", "iq1_m", "iq2_xxs", "iq2_kt"} & set(doc["plan"]["types"].values())


def test_printed_workflow_and_export_quantize_script(tmp_path):
    out = tmp_path / "plan.json"
    r = run("plan", "--vram", "24", "--ram", "96", "--out", str(out))
    assert r.exit_code == 0, r.output
    text = r.output
    assert "quantize workflow (imatrix:" in text and "convert_hf_to_gguf.py --outtype bf16" in text
    assert "llama-imatrix -m" in text and "rules):" in text
    script = tmp_path / "quantize.sh"
    r = run("export", "--plan", str(out), "--quantize", "--out", str(script))
    assert r.exit_code == 0, r.output
    body = script.read_text()
    assert body.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in body and "--imatrix" in body
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert run("export", "--plan", str(out), "--quantize", "--out", str(script)).exit_code == 3   # no overwrite
    # without --out: a usage error naming the option (it was a TypeError from Path(None) before)
    r = run("export", "--plan", str(out), "--quantize")
    assert r.exit_code == 2 and "give --out" in r.output, r.output


def test_footprint_imatrix_options(tmp_path):
    r = run("footprint", "qwen3-235b-a22b", "--base-type", "IQ2_XXS", "--no-imatrix")
    # ik src/llama-quantize.cpp 1692-1704: refused without an imatrix; the hint names the real flags
    assert r.exit_code == 2 and "--imatrix FILE" in r.output and "--ignore-imatrix-rules" in r.output
    assert "has_imatrix" not in r.output
    import numpy as np

    from planner.imatrix import ImatrixEntry, write_imatrix_dat

    imx = tmp_path / "any.dat"        # a well-formed imatrix for this model (n_embd 4096): --imatrix reads it
    write_imatrix_dat(imx, [ImatrixEntry("blk.0.attn_q.weight", 1, np.ones(4096, dtype=np.float32))])
    r = run("footprint", "qwen3-235b-a22b", "--base-type", "IQ2_XXS", "--imatrix", str(imx))
    assert r.exit_code == 0 and "imatrix rules and importances applied" in r.output
    r = run("footprint", "qwen3-235b-a22b", "--base-type", "IQ2_XXS", "--no-imatrix", "--ignore-imatrix-rules")
    assert r.exit_code == 0 and "imatrix: none (--no-imatrix)" in r.output and "--ignore-imatrix-rules lets ik" in r.output
    # the default is the same as plan's (an imatrix is assumed) and is stated, in the text and in the JSON
    r = run("footprint", "qwen3-235b-a22b", "--base-type", "IQ2_XXS")
    assert r.exit_code == 0 and "imatrix: assumed (default" in r.output
    assert run_json("footprint", "qwen3-235b-a22b", "--base-type", "IQ2_XXS")["imatrix"].startswith("imatrix: assumed")
    # mainline's llama-quantize has no override (tools/quantize/quantize.cpp usage(): no such flag)
    r = run("footprint", "qwen3-235b-a22b", "--base-type", "IQ2_XXS", "--engine", "mainline", "--no-imatrix",
            "--ignore-imatrix-rules")
    assert r.exit_code == 2 and "mainline has no override" in r.output and "Traceback" not in r.output
    r = run("footprint", "qwen3-235b-a22b", "--imatrix", str(imx), "--no-imatrix")
    assert r.exit_code == 2 and "contradict" in r.output


def test_recipe_simplification_and_max_rules():
    doc = run_json("plan", "--vram", "24", "--ram", "96")
    notes = [n for n in doc["plan"]["notes"] if n.startswith("recipe simplified")]
    assert notes and float(notes[0].rsplit("+", 1)[1].split(" %")[0]) <= 0.1     # within the tolerance
    short = run_json("plan", "--vram", "24", "--ram", "96", "--max-rules", "8")
    assert short["rule_count"] <= doc["rule_count"]
    assert short["plan"]["memory"]["fits"]


def test_no_floors_lets_output_go_below_the_engine_floor():
    """On a tight box (Qwen3-30B-A3B on 4 GiB + 12 GiB) the plan keeps ik's own floors (output q6_K and MoE attn_v
    q8_0: ik src/llama-quantize.cpp 385-387 and 544-547 at 8337e4cd); --no-floors lifts them, and the solver then
    spends those bytes elsewhere, so output.weight drops below q6_K."""
    box = ("plan", "qwen3-30b-a3b", "--vram", "4", "--ram", "12")
    kept = run_json(*box)["plan"]["types"]
    assert bpw(kept["output.weight"]) >= bpw("q6_K")
    assert all(t == "q8_0" for n, t in kept.items() if n.endswith(".attn_v.weight"))
    free = run_json(*box, "--no-floors")["plan"]["types"]
    assert bpw(free["output.weight"]) < bpw("q6_K")


def test_an_allow_list_does_not_lift_the_floors():
    """--allow restricts the types the solver picks; it is not a request to go below the engine's floors.  With
    only iq2_ks allowed on Qwen3-30B-A3B (8 + 32 GiB), output.weight keeps ik's q6_K floor and the MoE attn_v
    q8_0 (ik src/llama-quantize.cpp 385-387 and 544-547 at 8337e4cd), the floor type being added where no
    allowed type reaches it; --no-floors gives every tensor iq2_ks."""
    box = ("plan", "qwen3-30b-a3b", "--vram", "8", "--ram", "32", "--allow", "iq2_ks")
    kept = run_json(*box)["plan"]["types"]
    assert kept["output.weight"] == "q6_K"
    assert all(t == "q8_0" for n, t in kept.items() if n.endswith(".attn_v.weight"))
    assert {t for n, t in kept.items() if "_exps." in n} == {"iq2_ks"}
    free = run_json(*box, "--no-floors")["plan"]["types"]
    assert free["output.weight"] == "iq2_ks"


def test_nextn_block_is_quantized_like_the_last_loaded_layer():
    """Issue 12: GLM-4.5-Air's NextN tensors were kept in bf16 (2.3 GiB of file never loaded: ik loads the block
    with TENSOR_SKIP unless MTP is on).  They now take the types of what they mirror: the block's own embedding
    and head those of token_embd and output, eh_proj the last loaded layer's attn_output, the rest the same
    role in layer 45 (GLM-4.5-Air: 46 decoder blocks + 1 NextN block)."""
    doc = run_json("plan", "glm-4.5-air", "--vram", "24", "--ram", "64")
    t = doc["plan"]["types"]
    nextn = {n: ty for n, ty in t.items() if n.startswith("blk.46.")}
    assert "bf16" not in nextn.values()
    assert nextn["blk.46.nextn.embed_tokens.weight"] == t["token_embd.weight"]
    assert nextn["blk.46.nextn.shared_head_head.weight"] == t["output.weight"]
    assert nextn["blk.46.nextn.eh_proj.weight"] == t["blk.45.attn_output.weight"]
    assert nextn["blk.46.ffn_down_exps.weight"] == t["blk.45.ffn_down_exps.weight"]
    # and the recipe says so: re-applied through the llama-quantize emulation it gives the same types
    from planner.quantize import QuantizeSpec, parse_custom_q, quantize
    from planner.tensors import builtin

    rec = doc["recipe"]
    fp = quantize(builtin("glm-4.5-air"), QuantizeSpec(base_type=rec["base_type"], has_imatrix=True,
                                                       custom_q=parse_custom_q([f"{rx}={ty}" for rx, ty in rec["rules"]], "ik")))
    assert {r.name: r.type_name for r in fp.tensors if r.name.startswith("blk.46.")} == nextn


def test_max_rules_counts_the_printed_rules_and_says_when_it_is_not_reached():
    """--max-rules N bounds the rules of the printed --custom-q (counted from that string), merging a role into a
    type another rule writes when that removes a rule; where the engine's floors and memory leave more rules (ik keeps
    MoE attn_v at q8_0 and output at q6_K or better: src/llama-quantize.cpp 385-387, 544-547 at 8337e4cd, and
    output/token_embd are one rule each), the note says so instead of claiming the bound was met (before: "to meet
    --max-rules 4" over a 6-rule recipe)."""
    box = ("plan", "qwen3-30b-a3b", "--vram", "8", "--ram", "32")
    five = run_json(*box, "--max-rules", "5")
    assert len(five["recipe"]["custom_q"].split(",")) == five["rule_count"] <= 5
    four = run_json(*box, "--max-rules", "4")
    n = len(four["recipe"]["custom_q"].split(","))
    assert n == four["rule_count"]
    notes = " ".join(four["plan"]["notes"])
    assert n <= 4 or f"--max-rules 4 not reached: {n} rules" in notes, notes


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_export_quantize_stops_before_the_first_step_when_an_input_is_missing(tmp_path):
    """The exported workflow checks the programs and the files the user supplies (the engine checkout's
    convert_hf_to_gguf.py, the calibration text) before anything runs: without calibration.txt it used to download
    and convert the model and only then fail at llama-imatrix.  Run with stand-in programs that log their calls."""
    out = tmp_path / "plan.json"
    assert run("plan", "qwen3-30b-a3b", "--vram", "24", "--ram", "64", "--out", str(out)).exit_code == 0
    script = tmp_path / "quantize.sh"
    assert run("export", "--plan", str(out), "--quantize", "--out", str(script)).exit_code == 0
    bindir, work, log = tmp_path / "bin", tmp_path / "work", tmp_path / "calls.log"
    bindir.mkdir()
    work.mkdir()
    for prog in ("huggingface-cli", "python3", "llama-imatrix", "llama-quantize"):
        stub = bindir / prog
        stub.write_text(f'#!/bin/sh\necho {prog} >> "{log}"\n')
        stub.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    (work / "convert_hf_to_gguf.py").write_text("")
    r = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "missing input: calibration.txt" in r.stderr and not log.exists(), r.stderr
    (work / "calibration.txt").write_text("text\n")
    r = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["huggingface-cli", "python3", "llama-imatrix", "llama-quantize"]
