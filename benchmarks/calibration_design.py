"""Which llama-sweep-bench runs separate the speed model's constants on a machine?

For a model, mix and machine (default: the seed card's mix-IQ3_K on the seed rig), this prints the relative
uncertainty every constant of the speed model would have after `gguf-planner calibrate` on a growing set of
sweep-bench runs, each measured rate assumed good to 2 %.  A constant is separated when its uncertainty drops
below 25 %; before that calibrate keeps it near the shipped value and only fits sums.

    python3 benchmarks/calibration_design.py [--profile NAME] [--noise 0.02]

What separates what (the model's terms, planner/speed.py):
* the depth sweep itself (every sweep-bench) splits the depth-independent TG/PP time from the depth slope;
* a second placement with more or fewer expert layers on the GPU (-ot) moves bytes between CPU and GPU reads,
  which separates CPU from GPU bandwidth (and CPU GEMM / PCIe from GPU GEMM in PP);
* a second -ub (512 vs 2048/4096) changes the PCIe copy per token but not the GEMM work: PCIe vs GEMM;
* fewer threads (-t) moves the CPU bandwidth cap and the per-layer sync share.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import speed_accuracy as acc  # noqa: E402

from planner.calibrate import expected_uncertainty  # noqa: E402
from planner.hardware import load_profile  # noqa: E402
from planner.launch import parse_server_command, placement_from_command  # noqa: E402
from planner.device_speed import GROUPS  # noqa: E402

COMMON = "-fa -ctk q8_0 -ctv q8_0 -c 32768 -fmoe -amb 512 -rtr -ngl 99"
CANDIDATES = (
    ("your command (-ot experts 12-93 on CPU), -ub 512",
     COMMON + " -ot blk\\.(1[2-9]|[2-8][0-9]|9[0-3])\\.ffn.*=CPU --threads 16"),
    ("all experts on the CPU (-ot exps=CPU)", COMMON + " -ot exps=CPU --threads 16"),
    ("your command with -ub 2048 -b 2048",
     COMMON + " -ot blk\\.(1[2-9]|[2-8][0-9]|9[0-3])\\.ffn.*=CPU --threads 16 -ub 2048 -b 2048"),
    ("your command with half the threads (-t 8)",
     COMMON + " -ot blk\\.(1[2-9]|[2-8][0-9]|9[0-3])\\.ffn.*=CPU --threads 8"),
)
DEPTHS = (0, 8192, 16384, 24576, 32256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="rtx3090ti-9950x-96g")
    ap.add_argument("--noise", type=float, default=0.02)
    a = ap.parse_args()
    tm = acc.model()
    hw = load_profile(a.profile)
    gpus = [f"CUDA{g.index}" for g in hw.gpus]
    mix = dict(acc.mix("mix-IQ3_K"))
    designs = []
    table = []
    for title, argv in CANDIDATES:
        cmd = parse_server_command(["llama-sweep-bench", *shlex.split(argv)], engine="ik-2025")
        pl = placement_from_command(tm, cmd, gpus)
        designs.append((tm, mix, pl, hw, replace(cmd.run, engine="ik"), DEPTHS))
        table.append((title, argv, expected_uncertainty(designs, noise=a.noise)))
    print(f"relative uncertainty (1 sigma) of each constant after calibrating on runs 1..k "
          f"({a.profile}, rates good to {a.noise:.0%}; <25 % = separated)")
    print(f"{'group':12}" + "".join(f"{'runs 1-' + str(k + 1):>12}" for k in range(len(table))))
    for g in GROUPS:
        print(f"{g:12}" + "".join(f"{row[2][g]:>11.0%}{'*' if row[2][g] < 0.25 else ' '}" for row in table))
    print()
    for k, (title, argv, _) in enumerate(table):
        print(f"run {k + 1}: {title}\n    llama-sweep-bench -m MODEL.gguf {argv}")


if __name__ == "__main__":
    main()
