"""Fit the speed model's constants to a machine from its own llama-sweep-bench output (an ESTIMATE, with errors).

The speed model (:func:`planner.speed.speed_terms`) writes TG seconds per token and PP seconds per ubatch as sums
of named terms: CPU weight reads (1 / effective CPU bandwidth), GPU weight reads, KV reads and attention compute
(growing with depth), per-layer launch/sync, hand-offs, fixed per-token cost; PCIe weight copies, GPU GEMM, CPU
GEMM, prompt attention.  Calibration fits one multiplier per term group so that, for every sweep-bench row,

    1 / S_TG(depth)  = Σ_g  m_g · TG_term_g(depth)        ubatch / S_PP(depth) = Σ_g  m_g · PP_term_g(depth)

by least squares on relative residuals, in log space (multipliers stay positive), with a weak prior pulling each
log-multiplier towards 0 (the shipped constants, ±``PRIOR_SIGMA`` in log terms).  Directions the runs cannot
separate (a single placement cannot tell CPU from GPU bandwidth) therefore stay near the shipped split while
their sum is fitted; their uncertainty is reported as large and they are listed as not separated.  More runs
with other placements, ``-ub`` values or depths separate them (``benchmarks/calibration_design.py`` says which).

The fitted multipliers translate into machine constants: effective CPU/GPU bandwidth, CPU GEMM rate, PCIe rate,
launch and hand-off cost, and the depth slope (ms per 1K cells of context).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from planner.errors import LogFormatError, UsageError
from planner.logparse import SweepBench
from planner.memory import Placement, RunConfig
from planner.device_speed import GROUPS, PP_GROUPS, TG_GROUPS, device_speeds
from planner.speed import speed_terms
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from planner.hardware import Hardware

_Row = tuple[str, str, int, float, dict[str, float], int]

PRIOR_SIGMA = 1.0          # log-multiplier prior width: the shipped constants are trusted to about a factor e
SEPARATED_BELOW = 0.25     # a multiplier whose log-stderr is below this is "fitted"; above, "not separated"
MIN_ROWS = 2


@dataclass(frozen=True, slots=True)
class CalibrationRun:
    """One sweep-bench run and what was run: the model, its mix, the placement, the machine and the flags."""

    tmap: TensorMap
    mix: Mapping[str, str]
    placement: Placement
    hw: Any
    run: RunConfig
    sweep: SweepBench
    numa: str | None = None
    threads_batch: int | None = None
    label: str = ""


@dataclass(frozen=True, slots=True)
class FittedConstant:
    group: str
    multiplier: float
    rel_uncertainty: float          # 1-sigma, relative (exp(stderr of the log-multiplier) - 1)
    separated: bool                 # the runs pin it down (vs held near the shipped value by the prior)
    quantity: str                   # what it means on this machine
    value: float | None             # the machine constant after calibration, in ``unit``
    unit: str
    shipped: float | None           # the same constant before calibration


@dataclass(frozen=True, slots=True)
class Residual:
    run: str
    kind: str                       # "TG" | "PP"
    depth: int
    measured_tps: float
    predicted_tps: float            # after calibration
    shipped_tps: float              # before

    @property
    def rel_error(self) -> float:
        return self.predicted_tps / self.measured_tps - 1.0


@dataclass(frozen=True, slots=True)
class Calibration:
    constants: tuple[FittedConstant, ...]
    residuals: tuple[Residual, ...]
    rms_residual: float             # relative, after
    rms_residual_shipped: float     # relative, before
    n_rows: int
    label: str = "calibrated"
    notes: tuple[str, ...] = field(default=())

    @property
    def scales(self) -> dict[str, float]:
        """Multipliers to pass to :func:`planner.speed.estimate_speed` (``scales=``)."""
        return {c.group: c.multiplier for c in self.constants}

    @property
    def separated(self) -> tuple[str, ...]:
        return tuple(c.group for c in self.constants if c.separated)


# ----------------------------------------------------------------------------- the fit

def _rows(runs: Sequence[CalibrationRun]) -> list[_Row]:
    """Per measured number: (run label, kind, depth, measured seconds, {group: nominal seconds}, tokens)."""
    out: list[_Row] = []
    for i, r in enumerate(runs):
        if not r.sweep.rows:
            raise LogFormatError(f"run {r.label or i + 1}: the sweep-bench table has no rows")
        ub = r.sweep.ubatch
        run = r.run
        if ub != min(run.ubatch, run.batch):
            from dataclasses import replace
            run = replace(run, ubatch=ub, batch=max(run.batch, ub))
        depths = sorted({row.n_kv for row in r.sweep.rows})
        terms = {t.depth: t for t in speed_terms(r.tmap, r.mix, r.placement, r.hw, run, depths, numa=r.numa,
                                                 threads_batch=r.threads_batch)}
        name = r.label or f"run {i + 1}"
        for row in r.sweep.rows:
            t = terms[row.n_kv]
            out.append((name, "TG", row.n_kv, row.t_tg_s / row.tg, dict(t.tg), 1))
            out.append((name, "PP", row.n_kv, row.t_pp_s, dict(t.pp), row.pp))
    return out


def calibrate(runs: Sequence[CalibrationRun], *, groups: Sequence[str] = GROUPS,
              prior_sigma: float = PRIOR_SIGMA) -> Calibration:
    """Fit per-group multipliers of the speed model to sweep-bench rows (see the module docstring).

    Raises:
        UsageError: no runs, or fewer than two rows in total.
    """
    import numpy as np

    if not runs:
        raise UsageError("calibrate needs at least one llama-sweep-bench output")
    rows = _rows(runs)
    if len(rows) < 2 * MIN_ROWS:
        raise UsageError(f"calibrate needs at least {MIN_ROWS} sweep-bench rows, got {len(rows) // 2}")
    active = [g for g in groups if any(r[4].get(g, 0.0) > 0 for r in rows)]
    # PP rows: time per ubatch; scale so that each measured number is one relative residual
    A = np.array([[r[4].get(g, 0.0) * (1.0 / r[5] if r[1] == "PP" else 1.0) for g in active] for r in rows])
    y = np.array([r[3] / (r[5] if r[1] == "PP" else 1.0) for r in rows])

    n, p = len(rows), len(active)

    def resid(logm: np.ndarray) -> np.ndarray:
        pred = A @ np.exp(logm)
        return np.concatenate([np.log(pred / y), logm / prior_sigma])

    def jac(logm: np.ndarray) -> np.ndarray:
        pred = A @ np.exp(logm)
        return np.vstack([A * np.exp(logm)[None, :] / pred[:, None], np.eye(p) / prior_sigma])

    logm = _levenberg_marquardt(resid, jac, np.zeros(p))
    data_res = resid(logm)[:n]
    dof = max(1, n - p)
    s2 = max(float(data_res @ data_res) / dof, 1e-6)
    J = jac(logm)
    try:
        # data part scaled by the residual variance, prior part exact
        Jd, Jp = J[:n], J[n:]
        info = Jd.T @ Jd / s2 + Jp.T @ Jp
        cov = np.linalg.inv(info)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        se = np.full(p, prior_sigma)
    mult = dict(zip(active, np.exp(logm)))
    pred_after = A @ np.exp(logm)
    pred_before = A @ np.ones(p)
    residuals = tuple(Residual(r[0], r[1], r[2], 1.0 / y[i], 1.0 / pred_after[i], 1.0 / pred_before[i])
                      for i, r in enumerate(rows))
    first = runs[0]
    consts = tuple(_describe(g, float(mult.get(g, 1.0)), float(se[active.index(g)]) if g in active else prior_sigma,
                             g in active and float(se[active.index(g)]) < SEPARATED_BELOW, first)
                   for g in groups if g in active)
    rms = math.sqrt(sum(x.rel_error ** 2 for x in residuals) / len(residuals))
    rms0 = math.sqrt(sum((x.shipped_tps / x.measured_tps - 1) ** 2 for x in residuals) / len(residuals))
    notes = []
    held = [c.group for c in consts if not c.separated]
    if held:
        notes.append("not separated by these runs (kept near the shipped constants, their sum fitted): "
                     + ", ".join(held))
    return Calibration(consts, residuals, rms, rms0, len(rows) // 2, notes=tuple(notes))


def _levenberg_marquardt(resid: Callable[[np.ndarray], np.ndarray], jac: Callable[[np.ndarray], np.ndarray],
                         x0: np.ndarray, *, max_iter: int = 200) -> np.ndarray:
    """Minimise ||resid(x)||^2 (Levenberg-Marquardt with Marquardt's diagonal scaling; numpy only)."""
    import numpy as np

    x = x0.astype(float)
    r = resid(x)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(max_iter):
        J = jac(x)
        g = J.T @ r
        H = J.T @ J
        step_ok = False
        while lam < 1e12:
            try:
                dx = np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), -g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            r_new = resid(x + dx)
            cost_new = float(r_new @ r_new)
            if np.isfinite(cost_new) and cost_new < cost:
                x, r, lam, step_ok = x + dx, r_new, max(lam / 10, 1e-12), True
                converged = cost - cost_new < 1e-14 * max(1.0, cost)
                cost = cost_new
                break
            lam *= 10
        if not step_ok or converged or float(np.max(np.abs(dx))) < 1e-10:
            break
    return x


# ----------------------------------------------------------------------------- what a multiplier means

def _describe(group: str, m: float, log_se: float, separated: bool, run: CalibrationRun) -> FittedConstant:
    """The machine constant behind a term group's multiplier (rates divide by it, times multiply)."""
    from planner.memory import CPU
    from planner.device_speed import _k

    k = _k()
    rel = math.exp(log_se) - 1.0
    speeds = device_speeds(run.hw, run.run, numa=run.numa, calibrated=False)
    gpus = [d for d in speeds if d != CPU]
    shipped: float | None = None
    unit = ""
    quantity = group
    if group == "cpu_weights":
        shipped, unit, quantity = speeds[CPU].mem_bw_gbs / 1e9, "GB/s", "effective CPU memory bandwidth (TG)"
        value = shipped / m
    elif group == "gpu_weights" and gpus:
        shipped, unit = speeds[gpus[0]].mem_bw_gbs / 1e9, "GB/s"
        quantity = f"effective {gpus[0]} memory bandwidth (TG)"
        value = shipped / m
    elif group == "pcie" and gpus:
        shipped, unit, quantity = speeds[gpus[0]].h2d_gbs / 1e9, "GB/s", "effective host->GPU copy rate (PP)"
        value = shipped / m
    elif group == "cpu_gemm":
        shipped, unit, quantity = speeds[CPU].flops / 1e12, "TFLOP/s", "CPU matmul peak (PP, full reuse)"
        value = shipped / m
    elif group == "gpu_gemm" and gpus:
        shipped, unit, quantity = sum(speeds[g].flops for g in gpus) / 1e12, "TFLOP/s", "GPU matmul rate (PP)"
        value = shipped / m
    elif group == "handoff":
        shipped, unit, quantity = k["handoff_s"] * 1e6, "us", "GPU<->CPU hand-off"
        value = shipped * m
    elif group == "launch":
        shipped, unit, quantity = k["gpu_layer_s"] * 1e6, "us", "per-layer launch/sync (GPU layer)"
        value = shipped * m
    elif group in ("kv_read", "attn"):
        unit, quantity = "x", ("KV-cache reads at depth" if group == "kv_read" else "attention compute at depth")
        shipped, value = 1.0, m
    else:
        unit, quantity, shipped, value = "x", group, 1.0, m
    return FittedConstant(group, m, rel, separated, quantity, value, unit, shipped)


def depth_slope_ms_per_1k(cal: Calibration, run: CalibrationRun) -> tuple[float, float]:
    """TG milliseconds added per 1024 cells of depth: (shipped, calibrated) for one run's placement."""
    terms = speed_terms(run.tmap, run.mix, run.placement, run.hw, run.run, (0, 1024), numa=run.numa)
    d0, d1 = terms
    ship = (d1.tg_time() - d0.tg_time()) * 1e3
    cal_ = (d1.tg_time(cal.scales) - d0.tg_time(cal.scales)) * 1e3
    return ship, cal_


def expected_uncertainty(designs: Sequence[tuple[TensorMap, Mapping[str, str], Placement, Hardware, RunConfig,
                                                Sequence[int]]],
                         *, noise: float = 0.02, groups: Sequence[str] = GROUPS,
                         prior_sigma: float = PRIOR_SIGMA) -> dict[str, float]:
    """Relative 1-sigma uncertainty each group's multiplier would have after calibrating on these sweep-bench runs
    (model, mix, placement, machine, flags, depths), if every measured rate carried ``noise`` relative error.

    The same linearised least squares as :func:`calibrate`, at the shipped constants; groups no run exercises come
    back as the prior's width.  Used to choose which sweep-bench commands to run.
    """
    import numpy as np

    rows = []
    for tmap, mix, placement, hw, run, depths in designs:
        ub = min(run.ubatch, run.batch)
        for t in speed_terms(tmap, mix, placement, hw, run, tuple(depths)):
            rows.append((t.tg, 1.0))
            rows.append((t.pp, float(ub)))
    A = np.array([[r[0].get(g, 0.0) / r[1] for g in groups] for r in rows])
    y = A.sum(axis=1)
    J = A / y[:, None]                           # d log(pred) / d log m at m = 1
    info = J.T @ J / noise ** 2 + np.eye(len(groups)) / prior_sigma ** 2
    se = np.sqrt(np.diag(np.linalg.inv(info)))
    return {g: float(math.exp(se[i]) - 1.0) for i, g in enumerate(groups)}


__all__ = ["expected_uncertainty", "Calibration", "CalibrationRun", "FittedConstant", "Residual", "calibrate", "depth_slope_ms_per_1k",
           "TG_GROUPS", "PP_GROUPS"]


def calibrate_logs(paths: Sequence[str | Path], tmap: TensorMap, mix: Mapping[str, str], hw: Hardware, *,
                   engine: str, argv: Sequence[str] | None = None) -> Calibration:
    """Calibrate on the sweep-bench tables of these log files (the ``calibrate`` command's library call).

    Raises:
        LogFormatError: a log has no llama-sweep-bench table.
        UsageError: see :func:`planner.verify.logged_runs`.
    """
    from pathlib import Path

    from planner.verify import logged_runs

    runs = []
    for r in logged_runs(paths, tmap, hw, engine=engine, argv=argv):
        if not r.log.sweeps:
            raise LogFormatError(f"{r.log.source}: no llama-sweep-bench table to calibrate on")
        for i, sw in enumerate(r.log.sweeps):
            runs.append(CalibrationRun(tmap, mix, r.placement, hw, r.run, sw, numa=r.numa,
                                       threads_batch=r.threads_batch or sw.n_threads_batch,
                                       label=Path(r.log.source).name + (f"#{i + 1}" if len(r.log.sweeps) > 1 else "")))
    return calibrate(runs)


def calibration_toml(cal: Calibration, sources: Sequence[str] = ()) -> str:
    """The ``[calibration]`` table a calibrated hardware profile carries (read back by the profile loader)."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["", "# Speed-model multipliers fitted by `gguf-planner calibrate` on this machine's llama-sweep-bench "
             "output.", "# time = sum(multiplier x term); rates are shipped rate / multiplier.",
             "[calibration]",
             f"residual = {cal.rms_residual:.6f}",
             f"residual_shipped = {cal.rms_residual_shipped:.6f}",
             f"rows = {cal.n_rows}",
             "logs = [" + ", ".join(q(s) for s in sources) + "]",
             "separated = [" + ", ".join(q(g) for g in cal.separated) + "]",
             "", "[calibration.multipliers]"]
    lines += [f"{c.group} = {c.multiplier:.6f}" for c in cal.constants]
    lines += ["", "[calibration.uncertainty]"]
    lines += [f"{c.group} = {c.rel_uncertainty:.6f}" for c in cal.constants]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class MachineCalibration:
    """The calibration a hardware profile carries (its ``[calibration]`` table), hashable like the rest of it."""

    multipliers: tuple[tuple[str, float], ...]
    residual: float | None = None
    residual_shipped: float | None = None
    rows: int | None = None
    logs: tuple[str, ...] = ()
    separated: tuple[str, ...] = ()

    @property
    def scales(self) -> dict[str, float]:
        return dict(self.multipliers)

    @classmethod
    def from_table(cls, data: object, where: str = "calibration") -> "MachineCalibration":
        """From a profile's ``[calibration]`` table (validated by :func:`validate_calibration_table`)."""
        t = validate_calibration_table(data, where)
        return cls(tuple(sorted(t["multipliers"].items())), t.get("residual"), t.get("residual_shipped"),
                   t.get("rows"), tuple(t.get("logs", ())), tuple(t.get("separated", ())))

    def without(self, groups: Sequence[str]) -> "MachineCalibration":
        """The same calibration minus some groups (a user flag now sets the figure they calibrate)."""
        return MachineCalibration(tuple((g, v) for g, v in self.multipliers if g not in groups), self.residual,
                                  self.residual_shipped, self.rows, self.logs,
                                  tuple(g for g in self.separated if g not in groups))


def validate_calibration_table(data: object, where: str = "calibration") -> dict:
    """Check a profile's ``[calibration]`` table (as read from TOML) and return it normalised:
    ``{"residual": float, "multipliers": {group: float}, ...}``.

    Raises:
        ValueError: with a one-line message naming the bad key (the profile loader wraps it in ProfileError).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must be a table")
    known = {"residual", "residual_shipped", "rows", "logs", "separated", "multipliers", "uncertainty"}
    for key in data:
        if key not in known:
            raise ValueError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    mult = data.get("multipliers")
    if not isinstance(mult, dict) or not mult:
        raise ValueError(f"{where}.multipliers: missing or empty")
    out_mult = {}
    for g, v in mult.items():
        if g not in GROUPS:
            raise ValueError(f"{where}.multipliers.{g}: unknown term (known: {', '.join(GROUPS)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.01 <= float(v) <= 100.0):
            raise ValueError(f"{where}.multipliers.{g}: {v!r} is not a number between 0.01 and 100")
        out_mult[g] = float(v)
    out = dict(data)
    out["multipliers"] = out_mult
    for key in ("residual", "residual_shipped"):
        if key in out and (isinstance(out[key], bool) or not isinstance(out[key], (int, float)) or out[key] < 0):
            raise ValueError(f"{where}.{key}: must be a non-negative number")
    return out


@dataclass(frozen=True, slots=True)
class CalibrateResult:
    """What the ``calibrate`` command reports: the fit, and the calibrated profile it wrote (if asked)."""

    calibration: Calibration
    saved: str | None = None


def calibrate_and_save(paths: Sequence[str | Path], tmap: TensorMap, mix: Mapping[str, str], hw: Hardware, *,
                       engine: str, argv: Sequence[str] | None = None, save: str | None = None,
                       force: bool = False) -> CalibrateResult:
    """:func:`calibrate_logs`, then (with ``save``) write the machine's profile with a ``[calibration]`` table.

    Raises:
        OutputExistsError: ``save`` exists and ``force`` is false.
    """
    from pathlib import Path

    from planner.hardware import profile_toml
    from planner.fileout import write_new_file

    cal = calibrate_logs(paths, tmap, mix, hw, engine=engine, argv=argv)
    if save is None:
        return CalibrateResult(cal)
    base = getattr(hw, "name", "machine")
    text = profile_toml(hw, description=f"{base}, calibrated by gguf-planner calibrate "
                                        f"(residual {cal.rms_residual:.1%})")
    text += calibration_toml(cal, [Path(p).name for p in paths])
    write_new_file(Path(save), text, force=force)
    return CalibrateResult(cal, str(save))
