"""Published GGUF files of known recipe are sized within 0.5 % through the CLI (`footprint ... --json`).

The independent values are the sizes their authors published (``tests/fixtures/published/sizes.toml``: the
"model size" llama.cpp / ik_llama.cpp print, from the model cards and load logs each row cites); the recipes are
the cards' own (the ladder points of ``planner/data/measured/ladders.toml`` that transcribe them, or given in the
fixture).  Each file is sized with its imatrix setting: all but the converter's BF16 were made with ``--imatrix``,
which is the CLI's default (stated in the JSON's ``imatrix``); the same recipe without one is sized too, to show
the setting is applied (ik ``src/llama-quantize.cpp`` at 8337e4cd, lines 756-761: Q4_0 gives the first n_layer/8 ``ffn_down``
q4_1 only with an imatrix).
"""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.measurements import load_ladders

FIXTURE = Path(__file__).parent / "fixtures" / "published" / "sizes.toml"
FILES = tomllib.loads(FIXTURE.read_text())["file"]
GIB = 2**30


def _args(f: dict) -> list[str]:
    if "ladder" in f:
        lad = next(x for x in load_ladders() if x.id == f["ladder"])
        mix = next(p for p in lad.points if p.name == f["point"]).mix
        model, base, rules, pure, engine = lad.builtin, mix.ftype, list(mix.custom_q), mix.pure, mix.engine
    else:
        model, base, rules, pure, engine = f["builtin"], f["base_type"], f["custom_q"], False, "ik"
    args = ["footprint", model, "--base-type", str(base), "--engine", engine]
    for rule in rules:
        args += ["--custom-q", rule]
    return args + (["--pure"] if pure else []) + ([] if f["imatrix"] else ["--no-imatrix"])


@functools.cache
def _run(args: tuple[str, ...]) -> str:
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return r.stdout


def _footprint(args: list[str]) -> dict:
    return json.loads(_run(tuple(args)))


def test_the_fixture_holds_at_least_the_34_files_issue_12_counts():
    """Issue 12's acceptance: "the 34 published files of known recipe are sized within 0.5 % through the CLI"."""
    assert len(FILES) >= 34 and [f["quant"] for f in FILES if not f["imatrix"]] == ["BF16", "BF16"]
    assert len({(f["model"], f["quant"]) for f in FILES}) == len(FILES)
    assert len({f["model"] for f in FILES}) >= 8            # not one family: 8 models, 6 built-ins' shapes


@pytest.mark.parametrize("f", FILES, ids=[f"{f['model']}:{f['quant']}" for f in FILES])
def test_published_file_size_through_the_cli(f):
    doc = _footprint(_args(f))
    got = doc["total_bytes"] / GIB
    assert abs(got / f["size_gib"] - 1) <= 0.005, (got, f["size_gib"], f["record"])
    if "bpw" in f:      # the card's BPW to its printed digit: bits per parameter of the same tensor set
        assert abs(doc["bpw"] - f["bpw"]) < 0.001, (doc["bpw"], f["bpw"], f["record"])
    # the setting each file was made with: the default (an imatrix) or --no-imatrix (the converter's BF16)
    assert doc["imatrix"].startswith("imatrix: assumed" if f["imatrix"] else "imatrix: none (--no-imatrix)")


def test_most_are_exact_to_the_printed_digits():
    """The cards print GiB with 3 decimals: all agree to the last digit but three (all 20 of the Qwen3-Coder,
    GLM-4.6 and DeepSeek-V3.1 cards' files do), the DeepSeek-R1 Q8_0 published
    rounded (666 GiB; we size 665.308), the attn+shexp=iq4_kt sweep point (351.834 against 351.855, -0.006 %, not
    explained yet) and sokann's IQ1_S_R4, whose figure is the file (header and tokenizer included: 123.859 GiB of
    tensors in a 123.864 GiB file)."""
    exact = sum(f"{_footprint(_args(f))['total_bytes'] / GIB:.3f}" == f"{f['size_gib']:.3f}" for f in FILES)
    assert exact >= len(FILES) - 3


def test_the_imatrix_setting_is_applied():
    f = next(x for x in FILES if x.get("point") == "exps=q4_0, attn+shexp=q4_0")
    with_imx = _footprint(_args(f))
    without = _footprint([*_args(f), "--no-imatrix"])
    down = {t["name"]: t["type_name"] for t in with_imx["tensors"]}
    down0 = {t["name"]: t["type_name"] for t in without["tensors"]}
    # ik 756-761: the custom rule gives ffn_down_exps q4_0; the Q4_0 ftype's own rule bumps the dense layers'
    # ffn_down (blk.0-2 of 61, below n_layer/8 = 7) to q4_1 only with an imatrix
    assert down["blk.0.ffn_down.weight"] == "q4_1" and down0["blk.0.ffn_down.weight"] == "q4_0"
    assert with_imx["total_bytes"] > without["total_bytes"]
    assert abs(with_imx["total_bytes"] / GIB - f["size_gib"]) < abs(without["total_bytes"] / GIB - f["size_gib"])
