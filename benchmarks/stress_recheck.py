"""Stress: the solver's memory model against the final re-check, over many models, budgets and contexts.

Every plan the solver finds is re-checked with the full memory report (planner.planning._finish); a difference
between the two (a term the solver's capacities miss) shows up as "internal re-check failed", i.e. a budget the
planner calls infeasible although the solver found a plan, or worse, a plan that would not fit. This script runs
``plan`` (in-process, as a user types it) on a grid of built-ins x budgets x contexts x KV types and prints every
case whose exit is not 0 (fits) or 2 with an ordinary infeasibility message.

    python3 benchmarks/stress_recheck.py [--models a,b] [--engine mainline] [--quick]

Each case takes 1-20 CPU s on the 2-core machine; --quick runs a few of them. Not part of the test suite (the
found cases become tests: tests/test_cli.py::test_plan_reserves_what_the_memory_report_charges).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from click.testing import CliRunner  # noqa: E402

from planner.cli import main  # noqa: E402

MODELS = ["gemma-3-27b", "qwen3-30b-a3b", "gpt-oss-20b", "qwen3-next-80b-a3b", "glm-4.5-air", "qwen3-235b-a22b"]
BUDGETS = [("8", "32"), ("12", "64"), ("24", "96"), ("16,16", "64")]
CTXS = ["8192", "32768", "max"]
KVS = ["q8_0", "f16"]


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ctx", default=",".join(CTXS), help="contexts to try (comma-separated; 'max' searches)")
    ap.add_argument("--engine", default="ik", help="engine profile (plan --engine)")
    ap.add_argument("--budgets", default="", help="VRAM/RAM pairs instead of the default grid, e.g. 24/256+16,16/128")
    ap.add_argument("--quick", action="store_true", help="one budget, one context, one KV type per model")
    a = ap.parse_args(argv)
    ctx_list = a.ctx.split(",")
    grid = [tuple(b.split("/")) for b in a.budgets.split("+")] if a.budgets else BUDGETS
    budgets, ctxs, kvs = (grid[:1], ctx_list[-1:], KVS[-1:]) if a.quick else (grid, ctx_list, KVS)
    bad = 0
    n = 0
    for model, (vram, ram), ctx, kv in itertools.product(a.models.split(","), budgets, ctxs, kvs):
        args = ["plan", model, "--vram", vram, "--ram", ram, "--ctx", ctx, "--kv", kv, "--engine", a.engine]
        t0 = time.process_time()
        r = CliRunner().invoke(main, args)
        n += 1
        last = r.output.strip().splitlines()[-1] if r.output.strip() else repr(r.exception)
        ok = r.exit_code == 0 or (r.exit_code == 2 and "internal" not in r.output)
        if not ok:
            bad += 1
        print(f"{'ok ' if ok else 'BAD'} exit {r.exit_code} {time.process_time() - t0:5.1f} s  {' '.join(args[1:])}"
              + ("" if r.exit_code == 0 else f"\n      {last[:200]}"), flush=True)
    print(f"{n} cases, {bad} inconsistent")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main_())
