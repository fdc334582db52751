"""Prediction vs reality: match an engine log to the planner's prediction for the same model, mix and command.

For a parsed log (:mod:`planner.logparse`) and the model and machine it ran, this recomputes what the planner
predicts for the same command and lines the two up term by term:

* weights per device (exact: Σ ggml_nbytes of the tensors placed there; the engine prints MiB with 2 decimals,
  so a match is within 0.1 MiB), host buffers (CPU, CPU_Mapped, CUDA_Host) summed as ``CPU``;
* KV cache per device and in total (exact; ik adds a few KiB per device buffer, within 0.1 MiB);
* compute buffers per device (an estimate: the error is printed, not judged);
* the layer -> device assignment when the engine printed it (ik: ``Setting default device in layer N to D``);
* TG and PP at every sweep-bench depth (estimates), and, given a calibration, after calibration.

Device names: ``CUDAi`` stay themselves; other device names in the log (RPC servers, ...) are mapped in order of
first appearance to ``CUDA0``, ``CUDA1`` ... so that ``-ts``/``-ot`` in the command mean the same devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from planner.compute_buffers import entry_of, is_ffn_matmul, placement_compute, placement_copies
from planner.errors import LogFormatError
from planner.kv_cache import CacheConfig
from planner.logparse import EngineLog, host_or_device
from planner.memory import CPU, MIB, Placement, RunConfig, compute_buffer_bytes, kv_bytes_by_layer, mix_bytes
from planner.roles import layer_copies, tied_output
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from planner.cluster import Cluster
    from planner.hardware import Hardware
    from planner.speed import SpeedEstimate

EXACT_TOLERANCE_MIB = 0.1


@dataclass(frozen=True, slots=True)
class Check:
    term: str                  # weights | kv | kv_total | compute | layers | TG | PP
    device: str                # planner device (CUDA0, CPU) or "" for totals; for TG/PP "depth N"
    predicted: float
    measured: float
    unit: str
    exact: bool                # an exact prediction (judged against the tolerance) vs an estimate
    log_name: str = ""         # the device as the log spells it

    @property
    def error(self) -> float:
        return self.predicted - self.measured

    @property
    def rel_error(self) -> float:
        return self.predicted / self.measured - 1.0 if self.measured else float("inf")

    @property
    def ok(self) -> bool | None:
        if not self.exact:
            return None
        if self.unit == "MiB":
            return abs(self.error) <= EXACT_TOLERANCE_MIB
        return self.predicted == self.measured


@dataclass(frozen=True, slots=True)
class VerifyReport:
    source: str
    engine: str
    spelling: str
    checks: tuple[Check, ...]
    device_map: tuple[tuple[str, str], ...]      # (log name, planner device)
    notes: tuple[str, ...] = field(default=())

    @property
    def exact_ok(self) -> bool:
        return all(c.ok for c in self.checks if c.exact)

    def check(self, term: str, device: str = "") -> Check:
        return next(c for c in self.checks if c.term == term and c.device == device)


def device_map(log: EngineLog) -> dict[str, str]:
    """Log device name -> planner device (see the module docstring)."""
    out: dict[str, str] = {}
    names = []
    if log.load:
        names = [b.device for b in log.load.buffers]
    n = 0
    for name in names:
        if host_or_device(name) == CPU:
            out[name] = CPU
            continue
        if name in out:
            continue
        if name.startswith("CUDA") and name[4:].isdigit():
            out[name] = name
        else:
            while f"CUDA{n}" in out.values():
                n += 1
            out[name] = f"CUDA{n}"
            n += 1
    return out


def gpus_in_log(log: EngineLog) -> list[str]:
    devs = sorted({d for d in device_map(log).values() if d != CPU}, key=lambda d: int(d[4:]))
    return devs


def verify(log: EngineLog, tmap: TensorMap, mix: Mapping[str, str], placement: Placement, hw: Hardware, run: RunConfig, *,
           scales: Mapping[str, float] | None = None, numa: str | None = None,
           predicted_ppl_ratio: float | None = None, cluster: Cluster | None = None,
           devices: Sequence[str] | None = None, log_names: Mapping[str, str] | None = None) -> VerifyReport:
    """Every term the log shows next to the planner's prediction for the same model, mix, placement and flags.

    On an RPC cluster, ``devices`` is the engine's device order and ``log_names`` its buffer names (``RPC0[host:
    port]``) under planner names (:func:`planner.cluster_plan.command_on_cluster`); speeds are the cluster's.

    Raises:
        LogFormatError: the log has neither a load log nor a sweep-bench table.
    """
    if log.load is None and not log.sweeps and log.bench is None and (
            log.perplexity is None or log.perplexity.ppl_ratio is None):
        raise LogFormatError(f"{log.source}: no load log, sweep-bench or llama-bench table, or perplexity ratio "
                             "to verify against")
    checks: list[Check] = []
    notes: list[str] = []
    dmap = device_map(log)
    if log_names:
        dmap.update(log_names)
    loaded = {t.name for t in tmap.tensors if tmap.is_loaded(t)}
    sizes = {n: b for n, b in mix_bytes(tmap, mix).items() if n in loaded}
    if log.load is not None:
        ld = log.load
        # mainline without -kvu sets n_ctx to its streams' cells, n_ctx_seq x -np (src/llama-context.cpp:302-305)
        cc = CacheConfig.from_run(run)
        if ld.n_ctx and ld.n_ctx not in (run.kv_size, run.ctx, cc.n_ctx_seq * cc.n_stream):
            notes.append(f"the log's n_ctx {ld.n_ctx} differs from the command's context {run.ctx}: "
                         f"KV predicted for n_ctx {ld.n_ctx}")
        if ld.n_ctx:
            run = replace(run, ctx=ld.n_ctx)
        if ld.type_k and ld.type_v and (ld.type_k, ld.type_v) != (run.type_k, run.type_v):
            run = replace(run, type_k=ld.type_k, type_v=ld.type_v)
        weights: dict[str, float] = {}
        p = tmap.params
        mapped = CPU if run.load == "mmap" else None
        for name, nbytes in sizes.items():
            for dev in layer_copies(name, p.arch, placement.layer_device, p.is_swa, engine=run.engine,
                                    mapped=mapped) or [placement.device_of(name)]:
                weights[dev] = weights.get(dev, 0) + nbytes
        tied = tmap.derived(tied_output) is not None
        dup_dev = placement.tied_duplicate_device(tied, run.engine, run.load)
        if dup_dev is not None:
            weights[dup_dev] = weights.get(dup_dev, 0) + sizes["token_embd.weight"]
        logged_names: dict[str, list[str]] = {}
        for b in ld.buffers:
            logged_names.setdefault(dmap.get(b.device, b.device), [])
            if b.device not in logged_names[dmap.get(b.device, b.device)]:
                logged_names[dmap.get(b.device, b.device)].append(b.device)

        def by_planner(kind: str, keep_max: bool = False) -> dict[str, float]:
            acc: dict[str, float] = {}
            seen: dict[str, float] = {}
            for b in ld.buffers:
                if b.kind != kind:
                    continue
                if keep_max:
                    seen[b.device] = max(seen.get(b.device, 0.0), b.mib)
                else:
                    dev = dmap.get(b.device, b.device)
                    acc[dev] = acc.get(dev, 0.0) + b.mib
            for name, mib in seen.items():
                dev = dmap.get(name, name)
                acc[dev] = acc.get(dev, 0.0) + mib
            return acc

        for dev, mib in by_planner("weights").items():
            checks.append(Check("weights", dev, weights.get(dev, 0) / MIB, round(mib, 2), "MiB", True,
                                " + ".join(logged_names.get(dev, []))))
        kv_pred: dict[str, float] = {}
        for il, nbytes in enumerate(kv_bytes_by_layer(tmap.params, run)):    # per block, engine's allocation
            dev = placement.layer_device[il] if il < len(placement.layer_device) else CPU
            kv_pred[dev] = kv_pred.get(dev, 0) + nbytes
        kv_total = sum(kv_pred.values())
        if run.engine != "mainline":
            # ik's "KV buffer" lines hold no DeepSeek-V4 compressed cache (one buffer per tensor, logged as a
            # total only, src/llama-dsv4.cpp:883-1000 @8337e4cd3), and its "KV self size" line sums K and V
            # only, not the recurrent state in the same buffer (src/llama.cpp:8499-8551)
            from planner.kv_cache import layer_caches

            for c in layer_caches(tmap.params, CacheConfig.from_run(run)):
                dev = placement.layer_device[c.layer] if c.layer < len(placement.layer_device) else CPU
                if c.kind == "dsv4":
                    kv_pred[dev] -= c.index_bytes
                kv_total -= c.state_bytes
        for dev, mib in by_planner("kv").items():
            checks.append(Check("kv", dev, kv_pred.get(dev, 0) / MIB, round(mib, 2), "MiB", True,
                                " + ".join(logged_names.get(dev, []))))
        if ld.kv_total_mib is not None:
            checks.append(Check("kv_total", "", kv_total / MIB, ld.kv_total_mib, "MiB", True))
        out_dev = placement.logits_device(tied)
        copies = placement_copies(run.engine, placement.devices, placement.layer_device,
                                  {n: placement.device_of(n) for n in sizes}, out_dev, CPU)
        graph = placement_compute(tmap, run, placement.devices, placement.layer_device, placement.device_of, out_dev,
                                  CPU, copies)      # the engine's graph replayed, where the data has it
        for dev, mib in by_planner("compute", keep_max=True).items():
            is_gpu = dev != CPU
            holds_ffn = any(placement.device_of(n) == dev for n in sizes if is_ffn_matmul(n))
            pred = (graph.get(dev, 0) if graph is not None else compute_buffer_bytes(
                tmap, run, holds_layers=dev in placement.layer_device, holds_output=(out_dev == dev), is_gpu=is_gpu,
                holds_ffn=holds_ffn, entry=entry_of(placement.layer_device, dev, CPU), copies=copies)) / MIB
            checks.append(Check("compute", dev, pred, round(mib, 2), "MiB", False,
                                " + ".join(logged_names.get(dev, []))))
        if ld.layer_device:
            gpus = list(devices) if devices is not None else gpus_in_log(log)
            log_layers = dict(ld.layer_device)
            n = tmap.params.n_loaded_layers
            mism = [il for il in range(n) if il in log_layers and log_layers[il] < len(gpus)
                    and placement.layer_device[il] != gpus[log_layers[il]]]
            checks.append(Check("layers", "", float(n - len(mism)), float(n), "layers", True))
            if mism:
                notes.append(f"layer assignment differs on {len(mism)} layers (first: layer {mism[0]}: log "
                             f"{gpus[log_layers[mism[0]]]}, predicted {placement.layer_device[mism[0]]})")
    if log.sweeps:
        from planner.speed import estimate_speed

        for sw in log.sweeps:
            r = run
            if sw.ubatch != min(r.ubatch, r.batch):
                r = replace(r, ubatch=sw.ubatch, batch=max(r.batch, sw.ubatch))
            if sw.n_threads and not r.threads:
                r = replace(r, threads=sw.n_threads)
            depths = sorted({row.n_kv for row in sw.rows})
            est = (estimate_speed(tmap, mix, placement, hw, r, depths=depths, scales=scales, numa=numa,
                                  threads_batch=sw.n_threads_batch) if cluster is None else
                   _cluster_estimate(tmap, mix, placement, cluster, r, depths))
            for row in sw.rows:
                checks.append(Check("TG", f"depth {row.n_kv}", est.tg_at(row.n_kv), row.s_tg_tps, "tok/s", False))
                checks.append(Check("PP", f"depth {row.n_kv}", est.pp_at(row.n_kv), row.s_pp_tps, "tok/s", False))
    if log.bench:
        from planner.speed import estimate_speed

        for brow in log.bench.rows:
            if brow.n_prompt and brow.n_gen:
                continue                       # pp+tg rows mix both phases: not one term
            ub_col = brow.column("n_ubatch")
            r = run
            if ub_col and ub_col.isdigit():
                r = replace(r, ubatch=int(ub_col), batch=max(r.batch, int(ub_col)))
            th = brow.column("threads")
            if th and th.isdigit():
                r = replace(r, threads=int(th))
            # llama-bench: ppN processes N prompt tokens from depth d; tgN generates N tokens from depth d
            depth = brow.depth + (brow.n_gen // 2 if brow.n_gen else 0)
            r = replace(r, ctx=max(r.ctx, brow.depth + brow.n_prompt + brow.n_gen))
            est = (estimate_speed(tmap, mix, placement, hw, r, depths=(depth,), scales=scales, numa=numa)
                   if cluster is None else _cluster_estimate(tmap, mix, placement, cluster, r, (depth,)))
            kind, pred = ("TG", est.tg_at(depth)) if brow.n_gen else ("PP", est.pp_at(depth))
            checks.append(Check(kind, f"{brow.test}", pred, brow.tps, "tok/s", False))
    if log.perplexity is not None and log.perplexity.ppl_ratio is not None and predicted_ppl_ratio is not None:
        # llama-perplexity --kl-divergence: Mean PPL(Q)/PPL(base) against the quality model's PPL ratio
        checks.append(Check("ppl_ratio", "", predicted_ppl_ratio, log.perplexity.ppl_ratio, "", False))
    engine = log.load.engine if log.load else "unknown"
    spelling = log.load.spelling if log.load else ("sweep-bench table only" if log.sweeps else "llama-bench only")
    return VerifyReport(log.source, engine, spelling, tuple(checks),
                        tuple(sorted(dmap.items(), key=lambda kv: kv[1])), tuple(notes))


def _cluster_estimate(tmap: TensorMap, mix: Mapping[str, str], placement: Placement, cluster: Cluster,
                      run: RunConfig, depths: Sequence[int]) -> SpeedEstimate:
    from planner.cluster_plan import cluster_speed, cluster_speeds

    return cluster_speed(tmap, mix, placement, cluster, run, cluster_speeds(cluster, run), depths=depths)


def summarize(report: VerifyReport) -> dict[str, float]:
    """Headline numbers: exact terms matched / total, median relative error of TG and PP rows."""
    import statistics

    exact = [c for c in report.checks if c.exact]
    tg = [abs(c.rel_error) for c in report.checks if c.term == "TG"]
    pp = [abs(c.rel_error) for c in report.checks if c.term == "PP"]
    return {"exact_matched": float(sum(bool(c.ok) for c in exact)), "exact_total": float(len(exact)),
            "tg_median_abs_error": statistics.median(tg) if tg else float("nan"),
            "pp_median_abs_error": statistics.median(pp) if pp else float("nan")}


__all__ = ["Check", "VerifyReport", "device_map", "summarize", "verify"]


# ----------------------------------------------------------------------------- from files (the CLI's library calls)

@dataclass(frozen=True, slots=True)
class LoggedRun:
    """One log with the command it ran and the placement that command gives on the logged devices."""

    log: EngineLog
    command: tuple[str, ...]
    run: RunConfig
    placement: Placement
    threads_batch: int | None
    numa: str | None
    warnings: tuple[str, ...]
    devices: tuple[str, ...] | None = None        # on a cluster: the engine's device order (planner names)
    log_names: dict[str, str] | None = None       # on a cluster: the engine's buffer names -> planner names


def logged_runs(paths: Sequence[str | Path], tmap: TensorMap, hw: Hardware, *, engine: str,
                argv: Sequence[str] | None = None, cluster: Cluster | None = None,
                mix: Mapping[str, str] | None = None) -> tuple[LoggedRun, ...]:
    """Parse each log, take its command (the one printed in the log, else ``argv``) and place the model with it
    (a command with ``--rpc`` on ``cluster``'s devices).

    Raises:
        LogFormatError: a log is not engine output.
        UsageError: no command in the log and none given; the command places tensors on a device the log lacks;
            the command uses ``--rpc`` and no cluster describes its hosts, or not this cluster's.
    """
    from planner.errors import UsageError
    from planner.launch import parse_server_command, placement_from_command
    from planner.logparse import parse_log_files

    out = []
    for lg in parse_log_files(paths):
        argv_used = tuple(argv) if argv else lg.command
        if not argv_used:
            raise UsageError(f"{lg.source}: the log does not show the command that ran",
                             hint="give it after --, e.g. `-- llama-sweep-bench -m M.gguf -ngl 99 -ot ...`")
        cmd = parse_server_command(list(argv_used), engine=engine)
        devices = log_names = None
        if cmd.rpc or cluster is not None:
            if cluster is None:
                raise UsageError(f"{lg.source}: the command uses --rpc: describe its hosts with --cluster FILE or "
                                 "--rpc-host NAME=addr:IP,port:P,ram:GIB (one per --rpc endpoint, in order)")
            from planner.cluster_plan import command_on_cluster

            cc = command_on_cluster(tmap, mix or {}, cmd, cluster, cmd.run)
            placement, devices, log_names = cc.placement, cc.devices, cc.log_names
        else:
            gpus = gpus_in_log(lg) if lg.load is not None else [f"CUDA{g.index}" for g in hw.gpus]
            placement = placement_from_command(tmap, cmd, gpus)
        vals = dict(zip(argv_used, argv_used[1:]))
        tb = vals.get("-tb") or vals.get("--threads-batch")
        numa = vals.get("--numa")
        run = cmd.run
        if lg.sweeps and lg.sweeps[0].n_threads and not run.threads:
            run = replace(run, threads=lg.sweeps[0].n_threads)
        out.append(LoggedRun(lg, tuple(argv_used), run, placement, int(tb) if tb and tb.isdigit() else None, numa,
                             cmd.warnings, devices, log_names))
    return tuple(out)


def verify_logs(paths: Sequence[str | Path], tmap: TensorMap, mix: Mapping[str, str], hw: Hardware, *, engine: str,
                argv: Sequence[str] | None = None, scales: Mapping[str, float] | None = None,
                cluster: Cluster | None = None) -> tuple[VerifyReport, ...]:
    """:func:`verify` for each log file (the ``verify`` command's library call); a --kl-divergence perplexity
    result is compared with the quality model's PPL ratio for the mix; a command with ``--rpc`` is read on
    ``cluster``'s devices."""
    runs = logged_runs(paths, tmap, hw, engine=engine, argv=argv, cluster=cluster, mix=mix)
    ratio = None
    if any(r.log.perplexity is not None and r.log.perplexity.ppl_ratio is not None for r in runs):
        from planner.quality import QualityModel

        ratio = QualityModel.build(tmap).estimate(mix).ppl_ratio
    return tuple(verify(r.log, tmap, mix, r.placement, hw if cluster is None else cluster.main, r.run,
                        scales=scales, numa=r.numa, predicted_ppl_ratio=ratio, cluster=cluster, devices=r.devices,
                        log_names=r.log_names) for r in runs)
