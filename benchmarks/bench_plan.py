"""Prints figures (no assertions): whole-process time of `gguf-planner plan --vram 24 --ram 96`,
the ILP time at per-layer granularity, and the time of `compare` on the built-in Qwen3-235B-A22B."""

from __future__ import annotations

import subprocess
import sys
import time


def wall(cmd: list[str], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    exe = [sys.executable, "-m", "planner"]
    print(f"plan --vram 24 --ram 96 (whole process, best of 3): {wall(exe + ['plan', '--vram', '24', '--ram', '96']):.2f} s")
    from planner.hardware import resolve_hardware
    from planner import api
    from planner.request import PlanRequest
    from planner.runconfig import RunConfig

    hw = resolve_hardware(vram=[24.0], ram=96.0)
    doc = api.plan(None, hw, PlanRequest(run=RunConfig(threads=hw.threads_default)))
    s = doc.plan.solver
    print(f"ILP (per-layer granularity, class-aggregated, both balanced steps): {s.wall_s:.2f} s, status {s.status}, "
          f"{s.n_classes} classes, {s.n_vars} variables")
    # the explanation (planner.explain) runs inside `plan`: its CPU seconds beside the whole plan call's
    from planner.explain import explain
    from planner.quality import QualityModel
    from planner.source import load_model

    req = PlanRequest(run=RunConfig(threads=hw.threads_default))
    t = time.process_time()
    api.plan(None, hw, req)
    t_plan = time.process_time() - t
    tmap = load_model(None)
    quality = QualityModel.build(tmap, has_imatrix=True)
    t = time.process_time()
    explain(tmap, doc.plan, hw, req, quality)
    t_explain = time.process_time() - t
    print(f"explanation inside plan: {t_explain:.3f} CPU s of {t_plan:.2f} ({t_explain / t_plan:.1%})")
    print(f"compare IQ3_K IQ4_KS Q4_K_M <seed recipe> --vram 24 --ram 96 (whole process): "
          f"{wall(exe + ['compare', 'IQ3_K', 'IQ4_KS', 'Q4_K_M', 'examples/seed-mix-IQ3_K.recipe', '--vram', '24', '--ram', '96'], 1):.2f} s")


if __name__ == "__main__":
    main()
