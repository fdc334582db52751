"""Prints figures (no assertions): whole-process CPU seconds of `gguf-planner plan` runs as ratios to the headline
(`plan --vram 24 --ram 96`) in the same run, and how much of each run is the CP-SAT solves.

    python3 benchmarks/bench_plan.py [--repeat N] [--no-bytecode-cache] [CASE ...]

CPU seconds are user + system of the child process (`resource.getrusage(RUSAGE_CHILDREN)`), the best of
``--repeat`` runs: the machine is shared, so ratios to the headline measured in the same run are what the targets
(issue 10, must-hold 9: ``--pareto 8`` <= 4x, ``--ctx max`` <= 3x the headline) are stated in.

Each case runs twice more, instrumented: ``planner.solver.solve`` is wrapped to count the CPU seconds spent inside
it (building and solving the CP-SAT models, including importing ortools), so the table shows what the solver takes
and what the rest of the pipeline (imports, groups, re-checks, explanation, emitters) takes.  The last column is
CP-SAT's deterministic time summed over the run's searches: the solver's work in its own units, the same on any
machine however loaded (the CPU seconds on the shared machine vary by 20-30 % from run to run).

Python compiles each module's source on import unless its bytecode is cached. An installed package has its
``.pyc`` files (pip writes them), so by default the runs use a temporary bytecode cache (``PYTHONPYCACHEPREFIX``,
warmed by one untimed run) even where ``PYTHONDONTWRITEBYTECODE`` is set; ``--no-bytecode-cache`` measures the
compile on every start as well (about 0.2 CPU s of the headline on the 2-core CI machine).
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
    "--pareto 8": ["plan", "--vram", "24", "--ram", "96", "--pareto", "8"],
    "--ctx max": ["plan", "--vram", "24", "--ram", "96", "--ctx", "max"],
    "2x3090 profile": ["plan", "--profile", "2xrtx3090-epyc9354-384g"],
    "R1 2x3090": ["plan", "deepseek-r1", "--profile", "2xrtx3090-epyc9354-384g"],
    "Kimi-K2 2x3090": ["plan", "kimi-k2", "--profile", "2xrtx3090-epyc9354-384g"],
    "4x3090": ["plan", "--vram", "24,24,24,24", "--ram", "384", "--gpu", "RTX 3090"],
}

# the instrumented child: CPU seconds inside planner.solver.solve (outermost calls) and CP-SAT's deterministic time
# summed over every search (its work units: the same on any machine however loaded), printed as JSON on stderr
_PROBE = """
import io, json, os, sys, time, contextlib
import planner.planning, planner.solver
inner = planner.solver.solve
spent = [0.0]
work = [0.0]
def solve(*a, **k):
    t = time.process_time()
    try:
        return inner(*a, **k)
    finally:
        spent[0] += time.process_time() - t
planner.solver.solve = planner.planning.solve = solve
load_cp_model = planner.solver._cp_model
def cp_model_counted():
    cp_model = load_cp_model()
    search = cp_model.CpSolver.solve
    if not getattr(search, "counted", False):
        def counted(self, *a, **k):
            try:
                return search(self, *a, **k)
            finally:
                work[0] += self.deterministic_time
        counted.counted = True
        cp_model.CpSolver.solve = counted
    return cp_model
planner.solver._cp_model = cp_model_counted
from planner.cli import main
try:
    with contextlib.redirect_stdout(io.StringIO()):
        main(sys.argv[1:])
except SystemExit as exc:
    if exc.code:
        raise
t = os.times()
print(json.dumps({"total": t.user + t.system, "solve": spent[0], "work": work[0]}), file=sys.stderr)
"""


def _env(bytecode_dir: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if bytecode_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = bytecode_dir
    return env


def cpu_seconds(args: list[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one ``python -m planner ARGS`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def solve_share(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(whole process, inside planner.solver.solve) CPU seconds of one instrumented run, and CP-SAT's work units."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True, env=env)
    figures = json.loads(out.stderr.strip().splitlines()[-1])
    return figures["total"], figures["solve"], figures["work"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="best of N per case (default 3)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="compile the sources on every start (as with PYTHONDONTWRITEBYTECODE=1)")
    ap.add_argument("cases", nargs="*", help=f"subset of {', '.join(CASES)}")
    a = ap.parse_args()
    names = ["headline", *(n for n in (a.cases or CASES) if n != "headline")]
    with tempfile.TemporaryDirectory(prefix="bench-pyc-") as tmp:
        env = _env(None if a.no_bytecode_cache else tmp)
        if not a.no_bytecode_cache:
            cpu_seconds(["plan", "--help"], env)          # warm the bytecode cache (not timed)
            cpu_seconds(CASES["headline"], env)
        rows = {}
        for name in names:
            whole = min(cpu_seconds(CASES[name], env) for _ in range(a.repeat))
            total, solve, work = min(solve_share(CASES[name], env) for _ in range(2))
            rows[name] = (whole, solve, total - solve, work)
    base = rows["headline"][0]
    print(f"bytecode cache: {'off (sources compiled on every start)' if a.no_bytecode_cache else 'on'}; "
          f"best of {a.repeat}")
    print(f"{'case':16} {'CPU s':>7} {'x headline':>10} {'in solve':>9} {'outside':>8} {'CP-SAT work':>12}")
    for name, (whole, solve, rest, work) in rows.items():
        print(f"{name:16} {whole:7.2f} {whole / base:10.2f} {solve:9.2f} {rest:8.2f} {work:12.3f}")


if __name__ == "__main__":
    main()
