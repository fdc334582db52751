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
