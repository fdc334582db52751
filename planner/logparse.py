"""Engine output → typed records: load logs, llama-sweep-bench and llama-bench tables, llama-perplexity results.

Everything here reads text that ik_llama.cpp or llama.cpp printed, in the spellings the engines used over time:

* **Load logs.** Weight buffers: ik and mainline before 2025 ``llm_load_tensors: CUDA0 buffer size = X MiB``
  (ik ``src/llama.cpp`` ``llm_load_tensors``, commit 8337e4cd); mainline since 2025 ``load_tensors: CUDA0 model
  buffer size = X MiB`` (``src/llama-model.cpp`` ``llama_model::load_tensors``), with ``CPU_Mapped`` for mmapped
  host buffers and ``CUDA_Host`` for pinned ones.  KV cache: ``llama_kv_cache_init: CUDA0 KV buffer size`` (ik,
  old mainline), ``llama_kv_cache_unified:`` / ``llama_kv_cache:`` (mainline 2025/2026), and the totals line
  ``KV self size = T MiB, K (q8_0): K MiB, V (q8_0): V MiB`` or ``llama_kv_cache: size = T MiB (cells, layers,
  seqs), K (f16): ..``; mainline prints one such line per cache (sliding-window and full caches, the DSA indexer
  cache, DeepSeek-V4's raw/compressed/indexer caches) and the recurrent state and DeepSeek-V4 compressor states
  apart (``llama_memory_recurrent: CPU RS buffer size``, ``llama_dsv4_comp_state: CPU DSV4 csa state buffer
  size``, each with its own ``size =`` line): all of them are the cache, summed per device and in the total
  (src/llama-kv-cache.cpp, llama-memory-recurrent.cpp, llama-kv-cache-dsv4.cpp at 0c1e57098).  ik's MLA and
  DeepSeek-V4 totals (``KV self size = T MiB, c^KV (f16): ..`` / ``K-only (f16): ..``) count too, with its DSA
  indexer keys (``KV self indexer size``) and DeepSeek-V4's compressed caches (``DSV4 cache: .. total= X MiB``,
  one buffer per tensor, no device line) in the total only.  Compute buffers: ``<device> compute buffer size`` (any prefix).  Context lines
  ``n_ctx``/``n_batch``/``n_ubatch``/``flash_attn`` from ``llama_new_context_with_model:`` (ik before 2025-05),
  ``llama_init_from_model:`` (ik current), ``llama_context:`` (mainline).  Layer assignment: ik's ``Setting default
  device in layer N to D`` (``src/llama.cpp``, 8337e4cd) and ``offloaded N/M layers to GPU`` (both).
* **llama-sweep-bench** (ik ``examples/sweep-bench/sweep-bench.cpp``; ubergarm's mainline port prints the same):
  the ``|PP|TG|N_KV|T_PP s|S_PP t/s|T_TG s|S_TG t/s|`` table and its ``main: n_kv_max = ..`` line.
* **llama-bench** (``examples/llama-bench`` / ``tools/llama-bench`` markdown output): a table whose header has
  ``model``, ``test`` and ``t/s``; tests ``pp512``, ``tg128``, ``pp4096+tg128``, ``pp512 @ d4096``.
* **llama-perplexity** (``examples/perplexity/perplexity.cpp`` in both): ``Final estimate: PPL = x +/- y`` and the
  ``--kl-divergence`` statistics (``Mean KLD: x ± y``, ``Mean PPL(Q)/PPL(base)``, ``Same top p``; the 2024
  ``===== KL-divergence statistics`` / ``Average:`` spelling too).
* **The command line**, when the user pasted it: the first line (after joining ``\\`` continuations) that runs a
  ``llama-*`` binary, possibly behind environment assignments or ``numactl``.

Each parser returns a frozen dataclass or raises :class:`planner.errors.LogFormatError` with one line; nothing is
guessed: a table with a malformed row or inconsistent columns is an error, not a partial result.

Modules: :mod:`planner.logtext` (reading text), :mod:`planner.benchlog` (sweep-bench, llama-bench, perplexity); this
one parses load logs and command lines and combines everything in :func:`parse_log`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from planner.benchlog import (BenchRow, LlamaBench, PerplexityResult, SweepBench, SweepRow, find_perplexity,
                              parse_llama_bench, parse_perplexity, parse_sweep_tables)
from planner.errors import LogFormatError
from planner.logtext import _NUM, MAX_LOG_BYTES, _strip_prefix, _text, read_log


# ----------------------------------------------------------------------------- records

@dataclass(frozen=True, slots=True)
class Buffer:
    """One buffer line of a load log: ``kind`` is weights, kv, compute or output."""

    kind: str
    device: str          # as printed: CUDA0, CPU, CPU_Mapped, CUDA_Host, RPC0[127.0.0.1:50052] ...
    mib: float

    @property
    def place(self) -> str:
        """The memory the buffer lives in: host buffers (CPU, CPU_Mapped, CUDA_Host, ...) are ``CPU``."""
        return host_or_device(self.device)


def host_or_device(name: str) -> str:
    """CPU, CPU_Mapped, CPU_REPACK, CUDA_Host, ... → ``CPU``; a device name stays itself."""
    n = name.strip()
    if n.upper().startswith("CPU") or n.endswith("_Host"):
        return "CPU"
    return n


@dataclass(frozen=True, slots=True)
class LoadLog:
    """What a load log says about memory and placement (MiB as printed, 2 decimals)."""

    engine: str                          # "ik" | "mainline" | "unknown" (old spelling shared by both)
    spelling: str                        # which generation of log lines was seen
    buffers: tuple[Buffer, ...]
    kv_total_mib: float | None = None
    kv_k_mib: float | None = None
    kv_v_mib: float | None = None
    type_k: str | None = None
    type_v: str | None = None
    n_ctx: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    flash_attn: bool | None = None
    mla: int | None = None
    offloaded_layers: tuple[int, int] | None = None     # (offloaded, total) from "offloaded N/M layers to GPU"
    layer_device: tuple[tuple[int, int], ...] = ()       # ik: (layer, device index)
    graph_splits: int | None = None
    n_layer: int | None = None
    arch: str | None = None

    def by_place(self, kind: str) -> dict[str, float]:
        """MiB per place (``CPU`` for every host buffer) for one buffer kind, in first-seen order.

        Weight and KV buffers add up (a split GGUF maps one ``CPU_Mapped`` buffer per shard).  A compute buffer
        line repeated for the same device is the same buffer printed again (ik prints the scheduler's buffers
        once per graph reservation, see the RPC fixtures), so compute keeps the largest per device name.
        """
        out: dict[str, float] = {}
        if kind == "compute":
            per_dev: dict[str, float] = {}
            for b in self.buffers:
                if b.kind == kind:
                    per_dev[b.device] = max(per_dev.get(b.device, 0.0), b.mib)
            for dev, mib in per_dev.items():
                place = host_or_device(dev)
                out[place] = round(out.get(place, 0.0) + mib, 2)
            return out
        for b in self.buffers:
            if b.kind == kind:
                out[b.place] = round(out.get(b.place, 0.0) + b.mib, 2)
        return out

    @property
    def weights_mib(self) -> dict[str, float]:
        return self.by_place("weights")

    @property
    def kv_mib(self) -> dict[str, float]:
        return self.by_place("kv")

    @property
    def compute_mib(self) -> dict[str, float]:
        return self.by_place("compute")


@dataclass(frozen=True, slots=True)
class EngineLog:
    """Everything recognised in one text."""

    source: str
    load: LoadLog | None
    sweeps: tuple[SweepBench, ...]
    bench: LlamaBench | None
    perplexity: PerplexityResult | None
    command: tuple[str, ...] | None


# ----------------------------------------------------------------------------- load log

_BUF = re.compile(
    r"^(?P<pfx>llm_load_tensors|load_tensors|llama_kv_cache_init|llama_kv_cache_unified|llama_kv_cache|"
    r"llama_memory_recurrent|llama_dsv4_comp_state|"
    r"llama_new_context_with_model|llama_init_from_model|llama_context|sched_reserve|graph_reserve)\s*:\s+"
    r"(?P<dev>\S(?:.*?\S)?)\s+(?P<what>model buffer|KV buffer|RS buffer|DSV4 \w+ state buffer|compute buffer|"
    r"output buffer|buffer)\s+size\s*="
    rf"\s*(?P<mib>{_NUM})\s*MiB")
_KV_TOTAL_OLD = re.compile(
    rf"KV self size\s*=\s*(?P<t>{_NUM})\s*MiB,\s*K \((?P<tk>\w+)\):\s*(?P<k>{_NUM})\s*MiB,\s*"
    rf"V \((?P<tv>\w+)\):\s*(?P<v>{_NUM})\s*MiB")
_KV_TOTAL_NEW = re.compile(
    rf"llama_kv_cache\w*:\s+size\s*=\s*(?P<t>{_NUM})\s*MiB\s*\(.*?\),\s*K \((?P<tk>\w+)\):\s*(?P<k>{_NUM})\s*MiB,"
    rf"\s*V \((?P<tv>\w+)\):\s*(?P<v>{_NUM})\s*MiB")
# ik (src/llama.cpp:8536-8561 @8337e4cd3): MLA "c^KV (type): K MiB, kv^T (type): V MiB" or "kv^T: not used",
# DeepSeek-V4 "K-only (type): K MiB"; the DSA indexer keys and DeepSeek-V4's compressed caches on lines of their own
_KV_TOTAL_IK = re.compile(
    rf"KV self size\s*=\s*(?P<t>{_NUM})\s*MiB,\s*(?:c\^KV|K-only) \((?P<tk>\w+)\):\s*(?P<k>{_NUM})\s*MiB"
    rf"(?:,\s*kv\^T \((?P<tv>\w+)\):\s*(?P<v>{_NUM})\s*MiB)?")
_KV_EXTRA_IK = re.compile(
    rf"(?:KV self indexer size\s*=\s*|DSV4 cache: .*total=\s*)(?P<t>{_NUM})\s*MiB")
_STATE_TOTAL = re.compile(
    rf"^(?:llama_memory_recurrent:\s+size|llama_dsv4_comp_state:\s+\w+ ratio = .*?, size)\s*=\s*(?P<t>{_NUM})\s*MiB")
_CTX = re.compile(r"^(?:llama_new_context_with_model|llama_init_from_model|llama_context)\s*:\s+"
                  r"(?P<key>n_ctx|n_batch|n_ubatch|flash_attn|mla_attn)\s*=\s*(?P<val>\w+)\s*$")
_OFFLOADED = re.compile(r"^(?:llm_load_tensors|load_tensors)\s*:\s+offloaded (\d+)/(\d+) layers to GPU")
_SET_DEVICE = re.compile(r"^Setting default device in layer\s+(\d+)\s+to\s+(\d+)\s*$")
_SPLITS = re.compile(r"graph[: ]\s*(?:splits\s*=\s*|nodes\s*=\s*\d+,\s*splits\s*=\s*)(\d+)")
_META = re.compile(r"^(?:llm_load_print_meta|print_info)\s*:\s+(arch|n_layer)\s*=\s*(\S+)\s*$")
_IK_MARKERS = ("Setting default device in layer", "============ Repacked", "HAVE_FANCY_SIMD", "fused_moe",
               "mla_attn", "attn_max_b", "llm_load_print_meta", "Layer sizes:")
_KIND = {"model buffer": "weights", "buffer": "weights", "KV buffer": "kv", "RS buffer": "kv", "compute buffer":
         "compute", "output buffer": "output"}


def parse_load_log(text: str) -> LoadLog:
    """Buffers, KV totals, context settings and layer assignment of one engine load.

    Raises:
        LogFormatError: no weight, KV or compute buffer line in the text.
    """
    lines = [_strip_prefix(x) for x in text.splitlines()]
    buffers: list[Buffer] = []
    kv = None
    kv_sums = [0.0, 0.0, 0.0]           # total, K, V over every cache's size line (mainline: one per cache)
    state_only = False                  # a recurrent state's size line without any KV line (mamba, rwkv)
    ctx: dict[str, str] = {}
    offloaded = None
    layer_dev: list[tuple[int, int]] = []
    splits = None
    meta: dict[str, str] = {}
    prefixes: set[str] = set()
    for ln in lines:
        m = _BUF.match(ln)
        if m:
            kind = "kv" if m["what"].startswith("DSV4") else _KIND[m["what"]]
            if kind == "weights" and m["pfx"] not in ("llm_load_tensors", "load_tensors"):
                continue
            prefixes.add(m["pfx"])
            buffers.append(Buffer(kind, m["dev"].strip(), float(m["mib"])))
            continue
        m = _KV_TOTAL_OLD.search(ln) or _KV_TOTAL_NEW.search(ln)
        if m:
            kv = kv or m
            kv_sums = [kv_sums[0] + float(m["t"]), kv_sums[1] + float(m["k"]), kv_sums[2] + float(m["v"])]
            continue
        m = _KV_TOTAL_IK.search(ln)
        if m:
            kv = kv or m
            kv_sums = [kv_sums[0] + float(m["t"]), kv_sums[1] + float(m["k"]), kv_sums[2] + float(m["v"] or 0)]
            continue
        m = _STATE_TOTAL.match(ln) or _KV_EXTRA_IK.search(ln)
        if m:
            kv_sums[0] += float(m["t"])
            state_only = True
            continue
        m = _CTX.match(ln)
        if m:
            ctx.setdefault(m["key"], m["val"])
            continue
        m = _OFFLOADED.match(ln)
        if m:
            offloaded = (int(m[1]), int(m[2]))
            continue
        m = _SET_DEVICE.match(ln)
        if m:
            layer_dev.append((int(m[1]), int(m[2])))
            continue
        m = _SPLITS.search(ln)
        if m and ("graph splits" in ln or "graph:" in ln):
            splits = int(m[1])
            continue
        m = _META.match(ln)
        if m:
            meta.setdefault(m[1], m[2])
    if not buffers:
        raise LogFormatError("no buffer-size line (\"<device> buffer size = X MiB\") in the text: not an engine "
                             "load log", hint="run with the default log level; mainline llama-completion needs -lv 4")
    is_ik = any(mk in text for mk in _IK_MARKERS)
    if "load_tensors" in prefixes or "llama_context" in prefixes or "llama_kv_cache" in prefixes \
            or "llama_kv_cache_unified" in prefixes or "sched_reserve" in prefixes:
        engine, spelling = "mainline", "mainline 2025+ (load_tensors/llama_context)"
    elif "llama_init_from_model" in text and is_ik:
        engine, spelling = "ik", "ik 2025-05+ (llm_load_tensors/llama_init_from_model)"
    elif is_ik:
        engine, spelling = "ik", "ik before 2025-05 (llm_load_tensors/llama_new_context_with_model)"
    else:
        engine, spelling = "unknown", "2024 spelling shared by ik and mainline (llama_new_context_with_model)"

    def num(key: str) -> int | None:
        v = ctx.get(key)
        return int(v) if v is not None and v.lstrip("-").isdigit() else None

    fa = ctx.get("flash_attn")
    return LoadLog(
        engine=engine, spelling=spelling, buffers=tuple(buffers),
        kv_total_mib=round(kv_sums[0], 2) if kv or state_only else None, kv_k_mib=round(kv_sums[1], 2) if kv else None,
        kv_v_mib=round(kv_sums[2], 2) if kv else None, type_k=kv["tk"] if kv else None,
        type_v=(kv["tv"] or kv["tk"]) if kv else None,
        n_ctx=num("n_ctx"), n_batch=num("n_batch"), n_ubatch=num("n_ubatch"),
        flash_attn=None if fa is None else fa in ("1", "true", "on", "enabled"),
        mla=num("mla_attn"), offloaded_layers=offloaded, layer_device=tuple(layer_dev), graph_splits=splits,
        n_layer=int(meta["n_layer"]) if meta.get("n_layer", "").isdigit() else None, arch=meta.get("arch"))


# ----------------------------------------------------------------------------- command line

_BINARY = re.compile(r"(?:^|/)(llama-[a-z0-9-]+|main|server|perplexity)$")
_WRAPPERS = ("numactl", "taskset", "env", "nice", "time", "sudo", "exec")


def find_command(text: str) -> tuple[str, ...] | None:
    """The first engine command line in the text (``\\`` continuations joined), from the binary on."""
    joined = re.sub(r"\\\r?\n", " ", text)
    for raw in joined.splitlines():
        ln = re.sub(r"^\s*(?:\$|#|>)\s+", "", raw.strip())
        if "llama-" not in ln:
            continue
        try:
            toks = shlex.split(ln, posix=True)
        except ValueError:
            continue
        for k, tok in enumerate(toks):
            m = _BINARY.search(tok)
            if m and m.group(1).startswith("llama-") and not tok.endswith((".gguf", ".py", ".cpp")):
                return (m.group(1),) + tuple(toks[k + 1:])
    return None


# ----------------------------------------------------------------------------- everything

def parse_log(text: str | bytes, source: str = "text") -> EngineLog:
    """Everything recognised in one engine output text.

    Raises:
        LogFormatError: nothing recognised (not engine output), or a recognised part is malformed.
    """
    text = _text(text, source)
    try:
        load = parse_load_log(text)
    except LogFormatError:
        load = None
    sweeps = parse_sweep_tables(text, source)
    bench = parse_llama_bench(text, source)
    ppl = find_perplexity(text)
    if load is None and not sweeps and bench is None and ppl is None:
        raise LogFormatError(f"{source}: no engine output recognised (expected a llama.cpp/ik_llama.cpp load "
                             "log, a llama-sweep-bench or llama-bench table, or llama-perplexity output)")
    return EngineLog(source=source, load=load, sweeps=sweeps, bench=bench, perplexity=ppl,
                     command=find_command(text))


def parse_log_files(paths: Sequence[str | Path]) -> tuple[EngineLog, ...]:
    """:func:`parse_log` of each file (read with :func:`read_log`)."""
    return tuple(parse_log(read_log(p), str(p)) for p in paths)


__all__ = ["MAX_LOG_BYTES", "BenchRow", "Buffer", "EngineLog", "LlamaBench", "LoadLog", "PerplexityResult", "SweepBench",
           "SweepRow", "find_command", "find_perplexity", "host_or_device", "parse_llama_bench", "parse_load_log",
           "parse_log", "parse_log_files", "parse_perplexity", "parse_sweep_tables", "read_log"]
