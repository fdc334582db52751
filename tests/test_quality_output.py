"""Honest quality output: every predicted PPL ratio with its band and the source of its constants, and the plan says
whether its quality difference to the best-quality plan is inside the band.

The balanced note's "best-quality plan" figure is checked against an independent run: ``plan --objective quality``
solves that plan on its own (its recipe may merge groups within 0.1 % predicted PPL, hence the tolerance).
"""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from planner.cli import main

BOX = ["qwen3-30b-a3b", "--vram", "8", "--ram", "32"]


def _json(*args: str) -> dict:
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_balanced_plan_states_its_distance_to_the_best_quality_plan():
    bal = _json("plan", *BOX)["plan"]
    best = _json("plan", *BOX, "--objective", "quality")["plan"]
    note = next(n for n in bal["notes"] if n.startswith("quality against the best-quality plan:"))
    m = re.search(r"PPL ratio ([0-9.]+) against ([0-9.]+) \(([-+][0-9.]+) %\), (inside|outside) the band "
                  r"([0-9.]+)-([0-9.]+)", note)
    assert m, note
    mine, other, _, where, lo, hi = m.groups()
    q = bal["quality"]
    assert float(mine) == round(q["ppl_ratio"], 4) and (float(lo), float(hi)) == (round(q["ppl_ratio_low"], 4),
                                                                                  round(q["ppl_ratio_high"], 4))
    assert abs(float(other) - best["quality"]["ppl_ratio"]) <= 0.001 * best["quality"]["ppl_ratio"]
    assert (where == "inside") == (float(lo) <= float(other) <= float(hi))
    assert q["constants_kind"] in ("measured", "transferred", "prior") and q["constants"]


def test_pareto_table_prints_bands_sources_and_ties():
    r = CliRunner().invoke(main, ["plan", *BOX, "--pareto", "3"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = re.findall(r"│ ([0-9]) │.*?│ ([0-9.]+) \(([0-9.]+)-([0-9.]+)\) │", r.output)
    assert len(rows) >= 2 and all(float(lo) <= float(v) <= float(hi) for _, v, lo, hi in rows)
    assert "quality constants: measured for Qwen3-30B-A3B" in r.output
    for (i, a, alo, ahi), (j, b, blo, bhi) in zip(rows, rows[1:]):
        tie = float(blo) <= float(a) <= float(bhi) or float(alo) <= float(b) <= float(ahi)
        assert (f"note: plans {i} and {j}:" in r.output) == tie
