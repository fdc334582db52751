"""The emitted plan JSON, recipe, quantize command, launch command and export script of the headline plan and
of a multi-GPU plan stay byte-identical to the reviewed golden files (regenerate: python3 tests/golden_regen.py)."""

from __future__ import annotations

import pytest

from golden_regen import CASES, GOLDEN, generate


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_files_byte_identical(case):
    produced = generate(case)
    for name, text in produced.items():
        expected = (GOLDEN / case / name).read_bytes()
        assert text.encode() == expected, f"{case}/{name} changed; review and regenerate: python3 tests/golden_regen.py"
    assert sorted(p.name for p in (GOLDEN / case).iterdir()) == sorted(produced)


def test_headline_plan_states_each_note_once():
    # the recipe simplification finishes the plan a second time; its notes (the load-mode reason) must not repeat
    import json

    doc = json.loads((GOLDEN / "headline" / "plan.json").read_text())
    notes = doc["plan"]["notes"]
    assert notes and len(notes) == len(set(notes))
