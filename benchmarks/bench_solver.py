"""Solver speed: whole-process CPU seconds of `plan` runs, printed as ratios to the headline in the same run
(the machine is shared and its speed varies; ratios are what the targets are stated in).  No assertions.

    python3 benchmarks/bench_solver.py [--repeat N]

Each case also prints the solver status and gap it reached (from --json).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

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


def cpu_seconds(args: list[str]) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", "planner", *args, "--json"], capture_output=True, text=True,
                         check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    doc = json.loads(out)
    docs = doc["documents"] if "documents" in doc else [doc]
    status = ", ".join(f"{d['plan']['solver']['status']} {d['plan']['solver']['gap']:.4%}" for d in docs)
    return cpu, status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1, help="best of N per case")
    ap.add_argument("cases", nargs="*", help="subset of case names")
    a = ap.parse_args()
    names = a.cases or list(CASES)
    if "headline" not in names:
        names = ["headline", *names]
    results = {}
    for name in names:
        runs = [cpu_seconds(CASES[name]) for _ in range(a.repeat)]
        results[name] = min(runs)
    base = results["headline"][0]
    print(f"{'case':22} {'CPU s':>7} {'x headline':>10}  status (gap)")
    for name, (cpu, status) in results.items():
        print(f"{name:22} {cpu:7.2f} {cpu / base:10.2f}  {status}")


if __name__ == "__main__":
    main()
