"""Advertised options that no other test runs: plan --fixed, --imatrix, --max-size, planning an already-quantized
GGUF, and the text renderers of inspect, compare and plan --pareto.

Independent values come from the real llama-quantize outputs recorded in tests/fixtures/ik/manifest.json
(ik_llama.cpp 8337e4cd), from llama-quantize's own usage line (options before the positional arguments), and from
the option values the test itself passes.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.cli import main

IK = Path(__file__).parent / "fixtures" / "ik"
BF16 = str(IK / "tiny-a-bf16.gguf")
SMALL_BOX = ["--vram", "1.5", "--ram", "4", "--os-reserve", "1"]


def run(*args: str):
    r = CliRunner().invoke(main, list(args))
    return r


def run_json(*args: str) -> dict:
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((IK / "manifest.json").read_text())


def _counts_from_text(text: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s*(\w+):\s+(\d+) tensors$", text, re.M)}


# ------------------------------------------------------------------------------------------------ plan --fixed

def test_fixed_pins_matching_tensors_and_the_recipe_says_so():
    doc = run_json("plan", BF16, *SMALL_BOX, "--fixed", r"attn_output=q6_K")
    pinned = {n: t for n, t in doc["plan"]["types"].items() if "attn_output" in n}
    assert len(pinned) == 3 and set(pinned.values()) == {"q6_K"}          # unpinned: iq5_k; 3 layers
    # the emitted recipe, applied first-match (regex_search) as llama-quantize does, gives them q8_0 too
    for name in pinned:
        ty = next(ty for rx, ty in doc["recipe"]["rules"] if re.search(rx, name))
        assert ty == "q6_K"


@pytest.mark.parametrize("item, fragment", [
    ("attn_output", "is not REGEX=TYPE"),          # no '='
    ("attn_output=q9_9", "q9_9"),                  # unknown type
    (r"(?<=blk)attn_output=q8_0", "lookbehind"),   # a construct std::regex does not have
])
def test_fixed_rejects_bad_items_in_one_line_exit_2(item, fragment):
    r = run("plan", BF16, *SMALL_BOX, "--fixed", item)
    assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------------------------------------ plan --max-size

def test_max_size_caps_the_weights():
    free = run_json("plan", BF16, *SMALL_BOX)["plan"]["total_bytes"]
    cap_gib = round(0.95 * free / 2**30, 6)                             # 5 % below the free plan: the cap binds
    cap = int(cap_gib * 2**30)
    assert free > cap
    capped = run_json("plan", BF16, *SMALL_BOX, "--max-size", str(cap_gib))["plan"]["total_bytes"]
    assert capped <= cap
    r = run("plan", BF16, *SMALL_BOX, "--max-size", "0.0001")         # below the smallest mix
    assert r.exit_code == 2 and "does not fit" in r.output


# ------------------------------------------------------------------------------------------------ plan --imatrix

def test_imatrix_reaches_the_quantize_command_before_the_positional_arguments(tmp_path):
    from planner.imatrix import ImatrixEntry, write_imatrix_dat
    from planner.source import load_model

    tmap = load_model(BF16)
    entries = [ImatrixEntry(t.name, 4, np.ones(t.ne0 * t.n_expert, np.float32), t.n_expert)
               for t in tmap.tensors if t.n_dims >= 2 and t.role != "token_embd"]
    imx = tmp_path / "tiny.imatrix"
    write_imatrix_dat(imx, entries, chunks=4, dataset="test")
    doc = run_json("plan", BF16, *SMALL_BOX, "--imatrix", str(imx))
    argv = shlex.split(doc["quantize_command"])
    # llama-quantize [--help] [--allow-requantize] ... [--imatrix] ... model-f32.gguf [model-quant.gguf] type
    i = argv.index("--imatrix")
    assert argv[i + 1] == str(imx) and i < argv.index(BF16)
    # usage: ... model-f32.gguf [model-quant.gguf] type [nthreads]
    assert argv[-2] == doc["recipe"]["base_type"] and argv[-1].isdigit()


# ------------------------------------------------------------------------------------------------ quantized GGUF

def test_planning_a_quantized_gguf_keeps_its_types_and_loads_it(manifest):
    name = "tiny-a-IQ4_KS.gguf"
    doc = run_json("plan", str(IK / name), *SMALL_BOX)
    real = {t["name"]: t["type"] for t in manifest["files"][name]["tensors"]}   # what llama-quantize wrote
    assert doc["plan"]["types"] == real
    assert doc["recipe"] is None and doc["quantize_command"] is None
    argv = shlex.split(doc["launch_command"])
    assert argv[argv.index("-m") + 1] == str(IK / name)                 # the file itself, not a '-planned' name
    assert doc["plan"]["total_bytes"] == sum(t["nbytes"] for t in manifest["files"][name]["tensors"])


# ------------------------------------------------------------------------------------------------ text renderers

def test_inspect_text_shows_the_real_files_figures(manifest):
    name = "tiny-a-IQ4_KS.gguf"
    r = run("inspect", str(IK / name))
    assert r.exit_code == 0, r.output
    rec = manifest["files"][name]
    assert f"{sum(t['nbytes'] for t in rec['tensors']):,} bytes" in r.output
    assert f"file       │ {rec['file_size_bytes']:,} bytes" in r.output
    assert _counts_from_text(r.output) == rec["type_counts"]


def test_compare_text_rows_and_bpw_of_the_real_quantizations(manifest):
    r = run("compare", "IQ4_KS", "Q4_K_M", "--model", BF16, *SMALL_BOX)
    assert r.exit_code == 0, r.output
    for ftype in ("IQ4_KS", "Q4_K_M"):
        tensors = manifest["files"][f"tiny-a-{ftype}.gguf"]["tensors"]
        bpw = 8 * sum(t["nbytes"] for t in tensors) / sum(math.prod(t["shape"]) for t in tensors)
        row = next(line for line in r.output.splitlines() if f" {ftype} " in line)
        assert f"{bpw:.3f}" in row
    assert "not dominated" in r.output


def test_pareto_text_has_one_row_per_plan():
    doc = run_json("plan", BF16, *SMALL_BOX, "--pareto", "3")
    plans = doc["documents"]
    r = run("plan", BF16, *SMALL_BOX, "--pareto", "3")
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if re.match(r"^│ \d+ ", line)]
    assert len(rows) == len(plans) >= 2
    for row, p in zip(rows, plans):
        assert f"{p['plan']['bpw']:.3f}" in row and p["plan"]["solver"]["status"] in row


def test_engine_choices_are_the_engine_profiles():
    """The --engine choices the CLI offers (a literal, so `--help` reads no data file) are the profiles of
    data/engines.toml, in its order; one engine profile added to the table without the CLI fails here."""
    from planner.cli.options import ENGINE_PROFILES
    from planner.engines import engine_names

    assert ENGINE_PROFILES == engine_names()
    r = run("check", "--engine", "nope", "--", "llama-server", "-m", "x.gguf")
    assert r.exit_code == 2 and all(name in r.output for name in engine_names())
