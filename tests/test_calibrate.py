"""calibrate: least squares of the speed model's term multipliers on real sweep-bench tables."""

import importlib.util
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from planner.calibrate import CalibrationRun, calibrate, depth_slope_ms_per_1k
from planner.errors import UsageError
from planner.hardware import load_profile
from planner.launch import parse_server_command, placement_from_command
from planner.logparse import SweepBench, parse_log, read_log
from planner.speed import estimate_speed

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "fixtures" / "logs"
spec = importlib.util.spec_from_file_location("speed_accuracy", ROOT / "benchmarks" / "speed_accuracy.py")
acc = importlib.util.module_from_spec(spec)
sys.modules["speed_accuracy"] = acc
spec.loader.exec_module(acc)


@pytest.fixture(scope="module")
def seed_run():
    tm = acc.model()
    hw = load_profile("rtx3090ti-9950x-96g")
    cmd = parse_server_command(["x", *shlex.split(acc.SEED)], engine="ik-2025")
    pl = placement_from_command(tm, cmd, ["CUDA0"])
    (sweep,) = parse_log(read_log(LOGS / "ik-seed-pr370-ubergarm.log")).sweeps
    return CalibrationRun(tm, dict(acc.mix("mix-IQ3_K")), pl, hw, replace(cmd.run, engine="ik"), sweep, label="seed")


def test_seed_table_recovers_depth0_and_32k_tg_within_5pct(seed_run):
    # ubergarm's seed-rig sweep (ik PR 370): 10.76 tok/s at N_KV 0, 8.95 at 32256
    cal = calibrate([seed_run])
    r = seed_run
    s = estimate_speed(r.tmap, r.mix, r.placement, r.hw, r.run, depths=(0, 32256), scales=cal.scales)
    assert abs(s.tg_at(0) / 10.76 - 1) <= 0.05
    assert abs(s.tg_at(32256) / 8.95 - 1) <= 0.05
    assert abs(s.pp_at(0) / 142.16 - 1) <= 0.05
    assert cal.rms_residual < 0.03 < cal.rms_residual_shipped
    assert cal.n_rows == 64 and len(cal.residuals) == 128


def test_one_placement_separates_cpu_bandwidth_not_gpu_bandwidth(seed_run):
    cal = calibrate([seed_run])
    by = {c.group: c for c in cal.constants}
    assert by["cpu_weights"].separated                                   # it carries most of TG
    assert not by["gpu_weights"].separated and not by["launch"].separated
    assert not by["gpu_gemm"].separated                                  # one -ub cannot split copy from GEMM
    assert "gpu_weights" in cal.notes[0]
    # the fitted CPU bandwidth is a physical figure: below the 9950X's 102.4 GB/s peak
    assert 40 < by["cpu_weights"].value < 102.4 and by["cpu_weights"].unit == "GB/s"


def test_depth_slope_reported(seed_run):
    cal = calibrate([seed_run])
    shipped, fitted = depth_slope_ms_per_1k(cal, seed_run)
    # the table: (1/8.95 - 1/10.76) s over 32256 cells = 0.59 ms per 1K cells
    assert abs(fitted / ((1 / 8.95 - 1 / 10.76) * 1e3 / 31.5) - 1) < 0.25 and shipped > 0


def test_needs_rows(seed_run):
    with pytest.raises(UsageError):
        calibrate([])
    one = replace(seed_run, sweep=SweepBench(seed_run.sweep.rows[:1]))
    with pytest.raises(UsageError):
        calibrate([one])


def test_calibrate_logs_and_profile_table_roundtrip():
    import tomllib

    from planner.calibrate import calibrate_logs, calibration_toml

    argv = ["llama-sweep-bench", *shlex.split(acc.SEED)]
    cal = calibrate_logs([LOGS / "ik-seed-pr370-ubergarm.log"], acc.model(), dict(acc.mix("mix-IQ3_K")),
                         load_profile("rtx3090ti-9950x-96g"), engine="ik", argv=argv)
    doc = tomllib.loads(calibration_toml(cal, ["seed.log"]))["calibration"]
    assert doc["rows"] == 64 and doc["logs"] == ["seed.log"] and "cpu_weights" in doc["separated"]
    assert doc["multipliers"]["cpu_weights"] == pytest.approx(cal.scales["cpu_weights"], rel=1e-5)


def test_calibrate_logs_without_a_table():
    from planner.calibrate import calibrate_logs
    from planner.errors import LogFormatError

    with pytest.raises(LogFormatError):
        calibrate_logs([LOGS / "ik-load-glm4-pr344.log"], acc.model(), {}, load_profile("rtx3090ti-9950x-96g"),
                       engine="ik", argv=["llama-sweep-bench", "-ngl", "0"])


@pytest.mark.parametrize("table,msg", [
    ({"multipliers": {"cpu_weights": 0.8}, "residual": 0.01}, None),
    ({"multipliers": {}}, "empty"),                                     # nothing fitted
    ({"multipliers": {"warp_drive": 1.0}}, "unknown term"),
    ({"multipliers": {"cpu_weights": -1}}, "between"),                 # negative multiplier
    ({"multipliers": {"cpu_weights": True}}, "between"),               # TOML bool is not a number
    ({"multipliers": {"cpu_weights": 1.0}, "extra": 1}, "unknown key"),
])
def test_calibration_table_validation(table, msg):
    from planner.calibrate import validate_calibration_table

    if msg is None:
        assert validate_calibration_table(table)["multipliers"] == {"cpu_weights": 0.8}
    else:
        with pytest.raises(ValueError, match=msg):
            validate_calibration_table(table)


def test_machine_calibration_from_saved_table(seed_run):
    import tomllib

    from planner.calibrate import MachineCalibration, calibration_toml
    from planner.device_speed import hw_scales
    from planner.speed import speed_basis

    cal = calibrate([seed_run])
    mc = MachineCalibration.from_table(tomllib.loads(calibration_toml(cal, ["a.log"]))["calibration"])
    assert hash(mc) and mc.scales == pytest.approx(cal.scales, rel=1e-5) and mc.logs == ("a.log",)
    assert "cpu_weights" not in mc.without(["cpu_weights"]).scales

    class HW:                                  # the profile loader attaches it as Hardware.calibration
        def __init__(self, hw, c):
            self._hw, self.calibration = hw, c

        def __getattr__(self, name):
            return getattr(self._hw, name)

    hw = HW(seed_run.hw, mc)
    assert hw_scales(hw) == pytest.approx(cal.scales, rel=1e-5)
    assert speed_basis(hw).label == "estimate (calibrated on your machine, residual 1 %)"
