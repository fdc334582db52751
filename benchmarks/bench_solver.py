"""Solver speed: whole-process CPU seconds of `plan` runs, printed as ratios to the headline in the same run
(the machine is shared and its speed varies; ratios are what the targets are stated in), with the CP-SAT work
(deterministic time summed over every search of the run: load-independent).  No assertions.

    python3 benchmarks/bench_solver.py [--repeat N] [--compile-each-run] [--heldout] [CASE ...]

Each case also prints the solver status and gap it reached (from --json).

Bytecode: an installed package runs from compiled bytecode (pip compiles it at install), but a source tree run
with ``PYTHONDONTWRITEBYTECODE=1`` (set on the CI machine) compiles every planner module on every run: about
0.2-0.3 CPU s of each `plan` (81 modules on the headline; measured December 2026).  By default the runs here
write and read bytecode under a private cache directory (``PYTHONPYCACHEPREFIX``, nothing is written into the
tree) after one untimed warm-up run; ``--compile-each-run`` measures the old way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

CASES = {
    "headline": ["plan", "--vram", "24", "--ram", "96"],
    "deepseek-r1 2x3090": ["plan", "deepseek-r1", "--profile", "2xrtx3090-epyc9354-384g"],
    "kimi-k2 2x3090": ["plan", "kimi-k2", "--profile", "2xrtx3090-epyc9354-384g"],
    "kimi-k2 24+384": ["plan", "kimi-k2", "--vram", "24", "--ram", "384"],
    "4x3090": ["plan", "--vram", "24,24,24,24", "--ram", "384", "--gpu", "RTX 3090"],
    "--ctx max": ["plan", "--vram", "24", "--ram", "96", "--ctx", "max"],
    "--pareto 8": ["plan", "--vram", "24", "--ram", "96", "--pareto", "8"],
    "--granularity band": ["plan", "--vram", "24", "--ram", "96", "--granularity", "band"],
}

# Multi-GPU plans no constant of the solver was tuned on (--heldout): a change measured on CASES alone can trade them
# away (session 11: running the decomposition before the short try met Kimi-K2's targets but cost these 0.7-4.3 s).
HELDOUT = {
    "qwen3-30b 8+8": ["plan", "qwen3-30b-a3b", "--vram", "8,8", "--ram", "32"],
    "glm-4.5-air 24+24": ["plan", "glm-4.5-air", "--vram", "24,24", "--ram", "128", "--ctx", "65536"],
    "qwen3-235b 24+16+12": ["plan", "--vram", "24,16,12", "--ram", "192"],
    "deepseek-r1 8x3090": ["plan", "deepseek-r1", "--vram", "24,24,24,24,24,24,24,24", "--ram", "512", "--gpu",
                           "RTX 3090"],
    "deepseek-r1 48+48": ["plan", "deepseek-r1", "--vram", "48,48", "--ram", "256"],
}

# `python -m planner ARGS`, summing CP-SAT's deterministic time of every search (printed last on stderr)
_RUN = """
import sys, atexit
import planner.solver as s
work = [0.0]
inner = s._run
def _run(cp_model, m, objective, w):
    solver, status = inner(cp_model, m, objective, w)
    work[0] += solver.deterministic_time
    return solver, status
s._run = _run
atexit.register(lambda: print(f"CP-SAT work {work[0]:.4f}", file=sys.stderr))
from planner.cli import main
sys.argv[0] = "gguf-planner"
main(sys.argv[1:])
"""


def run_case(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(CPU seconds of the whole process, CP-SAT work units, status and gap of each plan)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", _RUN, *args, "--json"], capture_output=True, text=True,
                          check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    work = float(proc.stderr.strip().splitlines()[-1].split()[-1])
    doc = json.loads(proc.stdout)
    docs = doc["documents"] if "documents" in doc else [doc]
    status = ", ".join(f"{d['plan']['solver']['status']} {d['plan']['solver']['gap']:.4%}" for d in docs)
    return cpu, work, status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1, help="best of N per case")
    ap.add_argument("--compile-each-run", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE as it is (a tree without bytecode compiles every run)")
    ap.add_argument("--heldout", action="store_true", help="the held-out multi-GPU plans (HELDOUT) instead of CASES")
    ap.add_argument("cases", nargs="*", help="subset of case names")
    a = ap.parse_args()
    CASES.update(HELDOUT)
    names = a.cases or (list(HELDOUT) if a.heldout else [n for n in CASES if n not in HELDOUT])
    if "headline" not in names:
        names = ["headline", *names]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if not a.compile_each_run:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
            run_case(CASES["headline"], env)            # untimed: writes the bytecode
        results = {}
        for name in names:
            runs = [run_case(CASES[name], env) for _ in range(a.repeat)]
            results[name] = min(runs)
    base = results["headline"][0]
    print(f"{'case':22} {'CPU s':>7} {'x headline':>10} {'work':>7}  status (gap)")
    for name, (cpu, work, status) in results.items():
        print(f"{name:22} {cpu:7.2f} {cpu / base:10.2f} {work:7.3f}  {status}")
    print("bytecode:", "compiled on every run" if a.compile_each_run else "compiled once (as installed)")


if __name__ == "__main__":
    main()
