"""`verify` and `calibrate` commands, and a calibrated profile driving plan/check (hardware precedence)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.errors import ProfileError
from planner.hardware import load_profile, resolve_hardware

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "fixtures" / "logs"
SEED_LOG = LOGS / "ik-seed-pr370-ubergarm.log"
SEED_CMD = ("llama-sweep-bench -fa -ctk q8_0 -ctv q8_0 -c 32768 -fmoe -amb 512 -rtr -ot blk\\.1[2-9]\\.ffn.*=CPU "
            "-ot blk\\.[2-8][0-9]\\.ffn.*=CPU -ot blk\\.9[0-3]\\.ffn.*=CPU -ngl 99 --threads 16")
MIX = ["--model", "qwen3-235b-a22b", "--base-type", "IQ3_K", "--recipe-file", str(ROOT / "examples/seed-mix-IQ3_K.recipe")]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_verify_seed_log_json():
    r = run("verify", SEED_LOG, *MIX, "--profile", "rtx3090ti-9950x-96g", "--engine", "ik", "--command", SEED_CMD,
            "--json")
    assert r.exit_code == 0, r.output
    (rep,) = json.loads(r.output)
    exact = [c for c in rep["checks"] if c["exact"]]
    assert len(exact) == 4 and all(abs(c["predicted"] - c["measured"]) <= 0.1 for c in exact)
    assert {c["measured"] for c in exact} >= {19053.73, 3196.05, 3196.0}          # ubergarm's log, ik PR 370


def test_verify_table_output():
    r = run("verify", SEED_LOG, *MIX, "--profile", "rtx3090ti-9950x-96g", "--command", SEED_CMD)
    assert r.exit_code == 0, r.output
    assert "match" in r.output and "MISMATCH" not in r.output and "depth 32256" in r.output


def test_verify_without_a_command_is_one_line_usage_error():
    r = run("verify", LOGS / "ik-seed-pr370-ubergarm.log", *MIX, "--profile", "rtx3090ti-9950x-96g")
    assert r.exit_code == 2 and "does not show the command" in r.output


def test_verify_foreign_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("just some notes\n")
    r = run("verify", f, *MIX, "--profile", "rtx3090ti-9950x-96g", "--command", SEED_CMD)
    assert r.exit_code == 4 and r.output.startswith("error:") and r.output.count("\n") == 1


def test_calibrate_save_and_plan_with_the_profile(tmp_path):
    prof = tmp_path / "mybox.toml"
    r = run("calibrate", SEED_LOG, *MIX, "--profile", "rtx3090ti-9950x-96g", "--engine", "ik", "--command", SEED_CMD,
            "--save", prof)
    assert r.exit_code == 0, r.output
    assert "residual" in r.output and "effective CPU memory bandwidth" in r.output
    hw = load_profile(prof)
    assert hw.calibration is not None and 0.5 < hw.calibration.scales["cpu_weights"] < 1.0
    again = run("calibrate", SEED_LOG, *MIX, "--profile", "rtx3090ti-9950x-96g", "--command", SEED_CMD,
                "--save", prof)
    assert again.exit_code == 3                                                  # never overwrites without --force
    chk = run("check", "qwen3-235b-a22b", "--base-type", "IQ3_K", "--recipe-file",
              ROOT / "examples/seed-mix-IQ3_K.recipe", "--profile", prof, "--engine", "ik", "--json", "--",
              *SEED_CMD.split())
    speed = json.loads(chk.output)["speed"]
    assert speed["basis"]["kind"] == "calibrated"
    assert abs(speed["tg_tps"] / 10.76 - 1) <= 0.05                              # the table's TG at depth 0


def test_flags_replace_the_calibration_they_set(tmp_path):
    prof = tmp_path / "mybox.toml"
    run("calibrate", SEED_LOG, *MIX, "--profile", "rtx3090ti-9950x-96g", "--command", SEED_CMD, "--save", prof)
    hw = resolve_hardware(profile=str(prof), ram_bw=80.0)
    assert "cpu_weights" not in hw.calibration.scales and "pcie" in hw.calibration.scales
    assert any("flags replace the calibrated cpu_weights" in n for n in hw.notes)


def test_bad_calibration_table_is_a_profile_error(tmp_path):
    base = (ROOT / "planner/data/hwprofiles/rtx3090ti-9950x-96g.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "\n[calibration]\n[calibration.multipliers]\ncpu_weights = -3\n")
    with pytest.raises(ProfileError, match="calibration"):
        load_profile(bad)


# ---------------------------------------------------------------- the imatrix setting in verify / calibrate

Q30_LOG = LOGS / "ik-qwen3-30b-gpu-pr370-ubergarm.log"       # Qwen3-30B-A3B, -ngl 99 on one RTX 3090 Ti
Q30 = ["--model", "qwen3-30b-a3b", "--base-type", "Q4_0", "--profile", "rtx3090ti-9950x-96g"]


def _cuda0_weights_mib(*extra) -> tuple[float, list[str]]:
    r = run("verify", Q30_LOG, *Q30, *extra, "--json")
    assert r.exit_code == 0, r.output
    (rep,) = json.loads(r.output)
    return next(c["predicted"] for c in rep["checks"] if c["term"] == "weights" and c["device"] == "CUDA0"), rep["notes"]


def test_verify_applies_the_imatrix_setting(tmp_path):
    """ik src/llama-quantize.cpp 756-761 at 8337e4cd: with an imatrix, Q4_0 makes the first n_layer/8 ffn_down
    q4_1.  Qwen3-30B-A3B: 48/8 = 6 layers of ffn_down_exps [768, 2048, 128] = 201,326,592 elements; q4_0 is 18 B
    and q4_1 20 B per 32 (ggml block sizes), so 6 x 201,326,592 x 2 / 32 = 75,497,472 B = 72 MiB more weights on
    the GPU that holds them.  The default assumes an imatrix (as plan and footprint do); --no-imatrix drops it."""
    default, notes = _cuda0_weights_mib()
    without, notes0 = _cuda0_weights_mib("--no-imatrix")
    assert default - without == pytest.approx(75_497_472 / 2**20, abs=1e-6)
    assert any(n.startswith("imatrix: assumed (default") for n in notes)
    assert any(n.startswith("imatrix: none (--no-imatrix)") for n in notes0)
    import numpy as np

    from planner.imatrix import ImatrixEntry, write_imatrix_dat

    imx = tmp_path / "q30.dat"        # a well-formed imatrix for this model (n_embd 2048), read where it enters
    write_imatrix_dat(imx, [ImatrixEntry("blk.0.attn_q.weight", 1, np.ones(2048, dtype=np.float32))])
    given, notes1 = _cuda0_weights_mib("--imatrix", str(imx))
    assert given == default and any(str(imx) in n for n in notes1)
    r = run("verify", Q30_LOG, *Q30, "--imatrix", str(imx), "--no-imatrix")
    assert r.exit_code == 2 and "contradict" in r.output


def test_calibrate_applies_the_imatrix_setting():
    """The same rule on Qwen3-235B-A22B (94/8 = 11 layers of q4_1 ffn_down_exps, all on the GPU under the seed
    command's -ot): more GPU bytes per token with an imatrix, so the shipped constants predict a lower TG."""
    args = ["calibrate", SEED_LOG, "--model", "qwen3-235b-a22b", "--base-type", "Q4_0", "--profile",
            "rtx3090ti-9950x-96g", "--command", SEED_CMD, "--json"]
    with_imx, without = (json.loads(run(*args, *extra).output) for extra in ([], ["--no-imatrix"]))
    tg = [(a["shipped_tps"], b["shipped_tps"]) for a, b in zip(with_imx["calibration"]["residuals"],
                                                              without["calibration"]["residuals"], strict=True)
          if a["kind"] == "TG"]
    assert tg and all(a < b for a, b in tg)
    assert any(n.startswith("imatrix: assumed (default") for n in with_imx["calibration"]["notes"])
    assert any(n.startswith("imatrix: none (--no-imatrix)") for n in without["calibration"]["notes"])
