"""Golden files: the headline plan and one multi-GPU plan, emitted through the CLI, byte for byte.

Each case writes, under ``tests/golden/<case>/``: ``plan.json`` (``plan --json``), ``recipe.txt`` (the
``--custom-q`` rules one per line, as a ``--recipe-file``), ``quantize.sh`` (the llama-quantize command),
``launch.sh`` (the llama-server command), ``run.sh`` (``export --plan plan.json``) and ``plan.txt`` (the text
rendering of ``plan``, with the solver's wall time masked: it varies run to run).

``tests/test_golden.py`` regenerates them in memory and compares byte for byte. When a change is meant to
alter the output, regenerate and review the diff (``git diff tests/golden``) before committing:

    python3 tests/golden_regen.py
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"

# case name -> `plan` arguments (model default: the built-in Qwen3-235B-A22B)
CASES: dict[str, tuple[str, ...]] = {
    "headline": ("--vram", "24", "--ram", "96"),
    "multigpu-2x3090": ("--profile", "2xrtx3090-epyc9354-384g"),
}


def _invoke(args: list[str]) -> str:
    from click.testing import CliRunner

    from planner.cli import main

    env = {"NO_COLOR": "1", "COLUMNS": "200", "GGUF_PLANNER_DEBUG": "1"}
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"gguf-planner {' '.join(args)} exited {result.exit_code}: {result.output}")
    return result.output


def generate(case: str) -> dict[str, str]:
    """The golden files of one case: file name -> text."""
    with tempfile.TemporaryDirectory() as tmp:
        plan_json = Path(tmp) / "plan.json"
        run_sh = Path(tmp) / "run.sh"
        _invoke(["plan", *CASES[case], "--out", str(plan_json)])
        _invoke(["export", "--plan", str(plan_json), "--out", str(run_sh)])
        plan_text = plan_json.read_text()
        script = run_sh.read_text()
    text = re.sub(r", \d+\.\d+ s, ", ", <wall> s, ", _invoke(["plan", *CASES[case]]))
    doc = json.loads(plan_text)
    rules = "".join(f"{rx}={ty}\n" for rx, ty in doc["recipe"]["rules"])
    return {
        "plan.json": plan_text,
        "recipe.txt": f"# base type {doc['recipe']['base_type']}\n{rules}",
        "quantize.sh": doc["quantize_command"] + "\n",
        "launch.sh": doc["launch_command"] + "\n",
        "run.sh": script,
        "plan.txt": text,
    }


def main() -> int:
    for case in CASES:
        out = GOLDEN / case
        out.mkdir(parents=True, exist_ok=True)
        for name, text in generate(case).items():
            (out / name).write_text(text)
            print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("NO_COLOR", "1")
    raise SystemExit(main())
