"""Issue 11 acceptance: every built-in model inspects, footprints and plans on one 24 GiB GPU + 128 GiB RAM, or
says which budget it needs.

Runs the CLI in-process (click's CliRunner) exactly as a user would type it, one built-in at a time:

    gguf-planner inspect NAME --json
    gguf-planner footprint NAME --json                 (the default recipe: ik's default base type)
    gguf-planner plan NAME --vram 24 --ram 128 --threads 16 --json

and prints one markdown row per model: parameters, the footprint's size, and the plan's size, BPW and predicted
TG, or the infeasibility message (which names the budget that would fit).  ~10 s per model on a 2-core machine,
so it is a script, not part of the test suite.

    python3 benchmarks/acceptance_builtins.py [NAME ...] [--vram 24] [--ram 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from click.testing import CliRunner  # noqa: E402

from planner.cli import main  # noqa: E402
from planner.tensors import builtin_names  # noqa: E402

GIB = 2**30


def _run(args: list[str]) -> tuple[int, dict | None, str]:
    r = CliRunner().invoke(main, args)
    text = r.output.strip()
    try:
        return r.exit_code, json.loads(text), ""
    except ValueError:
        return r.exit_code, None, text.splitlines()[-1] if text else repr(r.exception)


def check(name: str, vram: str, ram: str) -> dict:
    row: dict = {"model": name}
    t0 = time.perf_counter()
    code, doc, err = _run(["inspect", name, "--json"])
    row["inspect"] = "ok" if code == 0 else f"exit {code}: {err}"
    if doc:
        row["params"] = doc["n_elements"]
    code, doc, err = _run(["footprint", name, "--json"])
    row["footprint"] = (f"{doc['total_bytes'] / GIB:.1f} GiB" if code == 0 and doc and "total_bytes" in doc
                        else "ok" if code == 0 else f"exit {code}: {err}")
    code, doc, err = _run(["plan", name, "--vram", vram, "--ram", ram, "--threads", "16", "--json"])
    if code == 0 and doc:
        p = doc["plan"]
        row["plan"] = f"{p['total_bytes'] / GIB:.1f} GiB, {p['bpw']:.2f} BPW, TG {p['speed']['tg_tps']:.1f} tok/s"
    else:
        row["plan"] = f"exit {code}: {err}"
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main_() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--vram", default="24")
    ap.add_argument("--ram", default="128")
    a = ap.parse_args()
    names = a.names or builtin_names()
    print(f"| model | inspect | footprint (default recipe) | plan on --vram {a.vram} --ram {a.ram} | s |")
    print("|---|---|---|---|---|")
    failed = 0
    for n in names:
        r = check(n, a.vram, a.ram)
        failed += r["inspect"] != "ok" or r["footprint"].startswith("exit") or (
            r["plan"].startswith("exit") and "needs" not in r["plan"] and "--ram" not in r["plan"])
        print(f"| {n} | {r['inspect']} | {r['footprint']} | {r['plan']} | {r['seconds']} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_())
