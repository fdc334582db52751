"""Speed model vs published llama-sweep-bench results (published_dev.json, kind "speed").

For every record: the model (built-in Qwen3-235B-A22B), the mix the author ran, the machine the author described
(``benchmarks/rigs/*.toml`` or a shipped profile), the author's command (normalised below where the record
abbreviates it), and the engine.  Prints predicted vs measured TG and PP at depth 0 and TG at the last depth of the
sweep, and the fractions the acceptance asks for: TG within ±20 %, PP within ±35 %, deep TG within ±25 %.

One constant set (planner/data/speed_constants.toml) serves every row: nothing here is tuned per record.

    python3 benchmarks/speed_accuracy.py [--json] [--records PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.hardware import load_profile  # noqa: E402
from planner.launch import parse_server_command, placement_from_command  # noqa: E402
from planner.speed import estimate_speed  # noqa: E402
from planner.tensors import builtin  # noqa: E402

RECORDS = ROOT / "tests" / "fixtures" / "speed" / "published_dev_speed.json"
RIGS = ROOT / "benchmarks" / "rigs"

SEED = ("-fa -ctk q8_0 -ctv q8_0 -c 32768 -fmoe -amb 512 -rtr -ot blk\\.1[2-9]\\.ffn.*=CPU "
        "-ot blk\\.[2-8][0-9]\\.ffn.*=CPU -ot blk\\.9[0-3]\\.ffn.*=CPU -ngl 99 --threads 16")
A6000_OT = "-ot blk\\.1[4-9]\\.ffn.*=CPU -ot blk\\.[2-9][0-9]\\.ffn.*=CPU -ngl 99 --threads 24"
EPYC_1GPU = ("-ngl 99 -ot blk\\.(0|1|2|3|4)\\.ffn.*=CUDA0 -ot blk\\.[5-9]\\.ffn.*=CPU -ot blk\\.1[0-9]\\.ffn.*=CPU "
             "-ot blk\\.[2-9][0-9]\\.ffn.*=CPU")
EPYC_2GPU = ("-ngl 99 -ot blk\\.(0|1|2|3|4|5|6)\\.ffn.*=CUDA0 -ot blk\\.(7|8|9|10|11|12|13)\\.ffn.*=CUDA1 "
             "-ot blk\\.1[4-9]\\.ffn.*=CPU -ot blk\\.[2-9][0-9]\\.ffn.*=CPU")


@dataclass(frozen=True)
class Case:
    """How to rebuild one record.  ``flags`` is the engine whose flag spelling the command uses; ``engine`` the
    engine build whose kernels ran (ik builds from PR 370 on, 2025-05-04, have the GQA MMA flash-attention kernel
    for TG: the "ik" profile; earlier ik builds: "ik-2025")."""

    id: int
    rig: str
    mix: str
    argv: str
    flags: str
    engine: str


CASES = (
    Case(287, "rtx3090ti-9950x-96g", "mix-IQ3_K", SEED, "ik-2025", "ik-2025"),
    Case(288, "rtx3090ti-9950x-96g", "mix-IQ3_K", SEED, "ik-2025", "ik-2025"),
    Case(289, "rtx3090ti-9950x-96g", "mix-IQ3_K", SEED, "ik-2025", "ik"),
    Case(290, "trpro7965wx-a6000-256g", "Q8_0",
         "-fa -ctk f16 -ctv f16 -c 32768 -fmoe -amb 512 -rtr -ot blk\\.1[4-9]\\.ffn.*=CPU "
         "-ot blk\\.[2-8][0-9]\\.ffn.*=CPU -ot blk\\.9[0-3]\\.ffn.*=CPU -ngl 99 --threads 24", "ik-2025", "ik-2025"),
    Case(291, "trpro7965wx-a6000-256g", "Q8_0",
         "--no-mmap -fa -ctk f16 -ctv f16 -c 32768 -ot blk\\.1[3-9]\\.ffn.*=CPU -ot blk\\.[2-8][0-9]\\.ffn.*=CPU "
         "-ot blk\\.9[0-3]\\.ffn.*=CPU -ngl 99 --threads 24", "mainline", "mainline"),
    Case(292, "trpro7965wx-a6000-256g", "Q8_0", "--no-mmap -fa -ctk q8_0 -ctv q8_0 -c 32768 " + A6000_OT,
         "mainline", "mainline"),
    Case(293, "trpro7965wx-a6000-256g", "Q8_0", "--no-mmap -fa -ctk q8_0 -ctv q8_0 -c 32768 " + A6000_OT
         + " -rtr -fmoe", "ik-2025", "ik-2025"),
    Case(294, "trpro7965wx-a6000-256g", "Q8_0", "--no-mmap -fa -ctk q8_0 -ctv q8_0 -c 32768 " + A6000_OT
         + " -rtr -fmoe", "ik-2025", "ik"),
    Case(295, "epyc9355-vm-1x3090", "mix-IQ6_K", "-c 16384 -t 48 -fa -rtr -fmoe -ctk q8_0 -ctv q8_0 " + EPYC_1GPU,
         "ik-2025", "ik-2025"),
    Case(296, "epyc9355-vm-1x3090", "Q6_K", "-c 16384 -t 48 -fa -ctk q8_0 -ctv q8_0 " + EPYC_1GPU,
         "mainline", "mainline"),
    Case(297, "epyc9355-vm-2x3090", "mix-IQ6_K", "-c 16384 -t 48 -fa -rtr -fmoe -ctk q8_0 -ctv q8_0 " + EPYC_2GPU,
         "ik-2025", "ik-2025"),
    Case(298, "epyc9355-vm-2x3090", "Q6_K", "-c 16384 -t 48 -fa -ctk q8_0 -ctv q8_0 " + EPYC_2GPU,
         "mainline", "mainline"),
    Case(299, "epyc9355-vm-cpu", "Q6_K", "-c 16384 -t 48 -fa -ctk q8_0 -ctv q8_0", "mainline", "mainline"),
    Case(300, "epyc9355-vm-cpu-smt-off", "mix-IQ6_K", "-c 16384 -t 32 -fa -rtr -fmoe -ctk q8_0 -ctv q8_0",
         "ik-2025", "ik-2025"),
    Case(301, "epyc9355-vm-cpu", "mix-IQ6_K", "-c 16384 -t 48 -fa -rtr -fmoe -ctk q8_0 -ctv q8_0",
         "ik-2025", "ik-2025"),
    Case(302, "epyc9355-vm-2x3090", "Q6_K", "-c 16384 -t 48 -fa -ctk q8_0 -ctv q8_0 " + EPYC_2GPU,
         "mainline", "mainline"),
)


@functools.cache
def model():
    return builtin("qwen3-235b-a22b")


@functools.cache
def mix(name: str) -> tuple[tuple[str, str], ...]:
    """The author's mix as per-tensor types.

    mix-IQ3_K: the seed card's recipe (examples/seed-mix-IQ3_K.recipe, 106.830 GiB).  Q8_0 and Q6_K: every
    quantizable tensor at that type (ubergarm Q8_0 232.769 GiB; unsloth Q6_K: "type q6_K: 660 tensors", 179.754
    GiB).  mix-IQ6_K (198.259 GiB, recipe not in the record): ffn_gate/up_exps iq6_k, ffn_down_exps and every
    other quantizable tensor q8_0 -- the split that comes closest in size (199.7 GiB here; all experts iq6_k would
    be 183.2 GiB).
    """
    from planner.mix import mix_from_options

    tm = model()
    if name == "mix-IQ3_K":
        types, _ = mix_from_options(tm, base_type="IQ3_K",
                                    recipe_text=(ROOT / "examples/seed-mix-IQ3_K.recipe").read_text())
    else:
        flat = {"Q8_0": ("q8_0", "q8_0"), "Q6_K": ("q6_K", "q6_K"), "mix-IQ6_K": ("iq6_k", "q8_0")}[name]
        types = {}
        for t in tm.tensors:
            if t.n_dims < 2 or t.role in ("ffn_gate_inp",):
                types[t.name] = "f32"
            else:
                types[t.name] = flat[0] if t.is_expert and t.role != "ffn_down_exps" else flat[1]
                if name == "Q6_K" or name == "Q8_0":
                    types[t.name] = flat[0]
    return tuple(sorted(types.items()))


def records(path: Path = RECORDS) -> dict[int, dict]:
    return {r["id"]: r for r in json.loads(path.read_text()) if r.get("kind") == "speed"}


def depth_of(case: Case) -> int:
    """The last row of the sweep: sweep-bench steps N_KV by the ubatch (512) up to n_ctx - 512."""
    argv = shlex.split(case.argv)
    return int(argv[argv.index("-c") + 1]) - 512


def predict(case: Case, rec: dict, constants=None):
    """The model's (TG, PP, TG at depth) for one record."""
    tm = model()
    hw = load_profile(case.rig if "/" in case.rig or case.rig.startswith("rtx") else RIGS / f"{case.rig}.toml")
    cmd = parse_server_command(["llama-sweep-bench", *shlex.split(case.argv)], engine=case.flags)
    gpus = [f"CUDA{g.index}" for g in hw.gpus]
    pl = placement_from_command(tm, cmd, gpus)
    run = replace(cmd.run, engine=case.engine)
    types = dict(mix(case.mix))
    s = estimate_speed(tm, types, pl, hw, run, depths=(0, depth_of(case)), constants=constants)
    return s.tg_at(0), s.pp_at(0), s.tg_at(depth_of(case))


def evaluate(constants=None, path: Path = RECORDS) -> list[dict]:
    recs = records(path)
    out = []
    for c in CASES:
        r = recs[c.id]
        tg, pp, tgd = predict(c, r, constants)
        out.append(dict(id=c.id, engine=c.engine, rig=c.rig, mix=c.mix, tg=tg, tg_meas=r["tg_tps"], pp=pp,
                        pp_meas=r["pp_tps"], tg_deep=tgd, tg_deep_meas=r["tg_tps_deep"], depth=depth_of(c)))
    return out


def fractions(rows: list[dict]) -> dict[str, float]:
    def within(a: str, b: str, tol: float) -> float:
        return sum(abs(x[a] / x[b] - 1) <= tol for x in rows) / len(rows)
    return {"tg_20": within("tg", "tg_meas", 0.20), "pp_35": within("pp", "pp_meas", 0.35),
            "tg_deep_25": within("tg_deep", "tg_deep_meas", 0.25)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--records", type=Path, default=RECORDS)
    a = ap.parse_args()
    rows = evaluate(path=a.records)
    fr = fractions(rows)
    if a.json:
        print(json.dumps({"rows": rows, "fractions": fr}, indent=1))
        return
    print(f"{'id':>4} {'engine':9} {'rig':24} {'mix':10} {'TG pred/meas':>16} {'PP pred/meas':>16} "
          f"{'deep TG pred/meas':>20}")
    for x in rows:
        print(f"{x['id']:>4} {x['engine']:9} {x['rig']:24} {x['mix']:10} "
              f"{x['tg']:6.2f}/{x['tg_meas']:6.2f} {x['tg'] / x['tg_meas']:4.2f} "
              f"{x['pp']:6.1f}/{x['pp_meas']:6.1f} {x['pp'] / x['pp_meas']:4.2f} "
              f"{x['tg_deep']:6.2f}/{x['tg_deep_meas']:6.2f} {x['tg_deep'] / x['tg_deep_meas']:4.2f} @{x['depth']}")
    print(f"TG within ±20 %: {fr['tg_20']:.0%} (target 80 %)   PP within ±35 %: {fr['pp_35']:.0%} (target 70 %)   "
          f"TG at depth within ±25 %: {fr['tg_deep_25']:.0%} (target 70 %)   n = {len(rows)}")


if __name__ == "__main__":
    main()
