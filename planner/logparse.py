"""Engine output → typed records: load logs, llama-sweep-bench and llama-bench tables, llama-perplexity results.

Everything here reads text that ik_llama.cpp or llama.cpp printed, in the spellings the engines used over time:

* **Load logs.** Weight buffers: ik and mainline before 2025 ``llm_load_tensors: CUDA0 buffer size = X MiB``
  (ik ``src/llama.cpp`` ``llm_load_tensors``, commit 8337e4cd); mainline since 2025 ``load_tensors: CUDA0 model
  buffer size = X MiB`` (``src/llama-model.cpp`` ``llama_model::load_tensors``), with ``CPU_Mapped`` for mmapped
  host buffers and ``CUDA_Host`` for pinned ones.  KV cache: ``llama_kv_cache_init: CUDA0 KV buffer size`` (ik,
  old mainline), ``llama_kv_cache_unified:`` / ``llama_kv_cache:`` (mainline 2025/2026), and the totals line
  ``KV self size = T MiB, K (q8_0): K MiB, V (q8_0): V MiB`` or ``llama_kv_cache: size = T MiB (cells, layers,
  seqs), K (f16): ..``.  Compute buffers: ``<device> compute buffer size`` (any prefix).  Context lines
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
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import LogFormatError

MAX_LOG_BYTES = 64 << 20    # a load log with every tensor override of a 1T model is a few MB

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_PM = r"\s*(?:±|\+/-)\s*"


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
class SweepRow:
    pp: int
    tg: int
    n_kv: int
    t_pp_s: float
    s_pp_tps: float
    t_tg_s: float
    s_tg_tps: float


@dataclass(frozen=True, slots=True)
class SweepBench:
    """One llama-sweep-bench table and the settings its ``main:`` line printed (None when absent)."""

    rows: tuple[SweepRow, ...]
    n_kv_max: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    flash_attn: bool | None = None
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    n_threads_batch: int | None = None

    @property
    def ubatch(self) -> int:
        """The ubatch the PP rows ran at: the printed n_ubatch, else the PP column (sweep-bench's PP = n_ubatch)."""
        return self.n_ubatch or self.rows[0].pp


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One llama-bench result: ``n_prompt``/``n_gen`` from the test name, ``depth`` from ``@ dN``."""

    model: str
    test: str
    tps: float
    tps_std: float | None
    n_prompt: int
    n_gen: int
    depth: int
    columns: tuple[tuple[str, str], ...] = field(default=())

    def column(self, name: str) -> str | None:
        return next((v for k, v in self.columns if k == name), None)


@dataclass(frozen=True, slots=True)
class LlamaBench:
    rows: tuple[BenchRow, ...]


@dataclass(frozen=True, slots=True)
class PerplexityResult:
    """llama-perplexity's final numbers; every field None that the text did not print.

    ``ppl``/``ppl_err`` come from ``Final estimate: PPL = x +/- y`` or, in a --kl-divergence run, ``Mean PPL(Q)``.
    """

    ppl: float | None = None
    ppl_err: float | None = None
    ppl_base: float | None = None
    ppl_ratio: float | None = None           # Mean PPL(Q)/PPL(base)
    ppl_ratio_err: float | None = None
    ln_ppl_ratio: float | None = None        # Mean ln(PPL(Q)/PPL(base))
    ln_ppl_ratio_err: float | None = None
    kld_mean: float | None = None
    kld_err: float | None = None
    kld_median: float | None = None
    kld_p99: float | None = None
    kld_max: float | None = None
    same_top_p_pct: float | None = None
    same_top_p_err: float | None = None


@dataclass(frozen=True, slots=True)
class EngineLog:
    """Everything recognised in one text."""

    source: str
    load: LoadLog | None
    sweeps: tuple[SweepBench, ...]
    bench: LlamaBench | None
    perplexity: PerplexityResult | None
    command: tuple[str, ...] | None


# ----------------------------------------------------------------------------- input

def read_log(path: str | Path) -> str:
    """Read a log file as text (UTF-8, undecodable bytes replaced).

    Raises:
        LogFormatError: unreadable, too large, or binary.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_LOG_BYTES:
            raise LogFormatError(f"{p}: {size:,} bytes is larger than a log ({MAX_LOG_BYTES >> 20} MiB limit)")
        data = p.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    return _text(data, str(p))


def _text(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        return data
    if b"\x00" in data[:65536]:
        raise LogFormatError(f"{source}: binary data, not engine text output",
                             hint="pass the text that llama-server/llama-sweep-bench printed")
    return data.decode("utf-8", errors="replace")


def _strip_prefix(line: str) -> str:
    """Drop mainline's ``0.00.284.342 I `` timestamp/level prefix (``-lv``/log-prefix output) and ``> `` quotes."""
    line = line.rstrip("\r\n")
    line = re.sub(r"^\s*(?:>\s*)+", "", line)
    return re.sub(r"^\d+\.\d+\.\d+\.\d+\s+[A-Z]\s+", "", line)


# ----------------------------------------------------------------------------- load log

_BUF = re.compile(
    r"^(?P<pfx>llm_load_tensors|load_tensors|llama_kv_cache_init|llama_kv_cache_unified|llama_kv_cache|"
    r"llama_new_context_with_model|llama_init_from_model|llama_context|sched_reserve|graph_reserve)\s*:\s+"
    r"(?P<dev>\S(?:.*?\S)?)\s+(?P<what>model buffer|KV buffer|compute buffer|output buffer|buffer)\s+size\s*="
    rf"\s*(?P<mib>{_NUM})\s*MiB")
_KV_TOTAL_OLD = re.compile(
    rf"KV self size\s*=\s*(?P<t>{_NUM})\s*MiB,\s*K \((?P<tk>\w+)\):\s*(?P<k>{_NUM})\s*MiB,\s*"
    rf"V \((?P<tv>\w+)\):\s*(?P<v>{_NUM})\s*MiB")
_KV_TOTAL_NEW = re.compile(
    rf"llama_kv_cache\w*:\s+size\s*=\s*(?P<t>{_NUM})\s*MiB\s*\(.*?\),\s*K \((?P<tk>\w+)\):\s*(?P<k>{_NUM})\s*MiB,"
    rf"\s*V \((?P<tv>\w+)\):\s*(?P<v>{_NUM})\s*MiB")
_CTX = re.compile(r"^(?:llama_new_context_with_model|llama_init_from_model|llama_context)\s*:\s+"
                  r"(?P<key>n_ctx|n_batch|n_ubatch|flash_attn|mla_attn)\s*=\s*(?P<val>\w+)\s*$")
_OFFLOADED = re.compile(r"^(?:llm_load_tensors|load_tensors)\s*:\s+offloaded (\d+)/(\d+) layers to GPU")
_SET_DEVICE = re.compile(r"^Setting default device in layer\s+(\d+)\s+to\s+(\d+)\s*$")
_SPLITS = re.compile(r"graph[: ]\s*(?:splits\s*=\s*|nodes\s*=\s*\d+,\s*splits\s*=\s*)(\d+)")
_META = re.compile(r"^(?:llm_load_print_meta|print_info)\s*:\s+(arch|n_layer)\s*=\s*(\S+)\s*$")
_IK_MARKERS = ("Setting default device in layer", "============ Repacked", "HAVE_FANCY_SIMD", "fused_moe",
               "mla_attn", "attn_max_b", "llm_load_print_meta", "Layer sizes:")
_KIND = {"model buffer": "weights", "buffer": "weights", "KV buffer": "kv", "compute buffer": "compute",
         "output buffer": "output"}


def parse_load_log(text: str) -> LoadLog:
    """Buffers, KV totals, context settings and layer assignment of one engine load.

    Raises:
        LogFormatError: no weight, KV or compute buffer line in the text.
    """
    lines = [_strip_prefix(x) for x in text.splitlines()]
    buffers: list[Buffer] = []
    kv = None
    ctx: dict[str, str] = {}
    offloaded = None
    layer_dev: list[tuple[int, int]] = []
    splits = None
    meta: dict[str, str] = {}
    prefixes: set[str] = set()
    for ln in lines:
        m = _BUF.match(ln)
        if m:
            kind = _KIND[m["what"]]
            if kind == "weights" and m["pfx"] not in ("llm_load_tensors", "load_tensors"):
                continue
            prefixes.add(m["pfx"])
            buffers.append(Buffer(kind, m["dev"].strip(), float(m["mib"])))
            continue
        m = _KV_TOTAL_OLD.search(ln) or _KV_TOTAL_NEW.search(ln)
        if m:
            kv = m
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
        kv_total_mib=float(kv["t"]) if kv else None, kv_k_mib=float(kv["k"]) if kv else None,
        kv_v_mib=float(kv["v"]) if kv else None, type_k=kv["tk"] if kv else None, type_v=kv["tv"] if kv else None,
        n_ctx=num("n_ctx"), n_batch=num("n_batch"), n_ubatch=num("n_ubatch"),
        flash_attn=None if fa is None else fa in ("1", "true", "on", "enabled"),
        mla=num("mla_attn"), offloaded_layers=offloaded, layer_device=tuple(layer_dev), graph_splits=splits,
        n_layer=int(meta["n_layer"]) if meta.get("n_layer", "").isdigit() else None, arch=meta.get("arch"))


# ----------------------------------------------------------------------------- sweep-bench

_SWEEP_HEADER = re.compile(r"^\|\s*PP\s*\|\s*TG\s*\|\s*N_KV\s*\|\s*T_PP s\s*\|\s*S_PP t/s\s*\|\s*T_TG s\s*\|"
                           r"\s*S_TG t/s\s*\|\s*$")
_SWEEP_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|" + rf"\s*({_NUM})\s*\|" * 4 + r"\s*$")
_SWEEP_MAIN = re.compile(r"main:\s+n_kv_max\s*=\s*(\d+),\s*n_batch\s*=\s*(\d+),\s*n_ubatch\s*=\s*(\d+),\s*"
                         r"flash_attn\s*=\s*(-?\d+),.*?n_gpu_layers\s*=\s*(-?\d+),\s*n_threads\s*=\s*(\d+),\s*"
                         r"n_threads_batch\s*=\s*(\d+)")
# printed rates are rounded to 0.01 and times to 0.001 s: allow that plus 0.5 % (sweep-bench divides the
# same measured time; a mismatch beyond this is a corrupted or hand-edited row)
_RATE_TOLERANCE = 0.005


def _check_row(r: SweepRow, where: str) -> None:
    for n_tok, t, s, what in ((r.pp, r.t_pp_s, r.s_pp_tps, "PP"), (r.tg, r.t_tg_s, r.s_tg_tps, "TG")):
        if n_tok <= 0 or t <= 0 or s <= 0:
            raise LogFormatError(f"{where}: {what} row at N_KV {r.n_kv} has a zero or negative entry")
        lo, hi = n_tok / (t + 0.0005), n_tok / max(t - 0.0005, 1e-9)
        if not (lo * (1 - _RATE_TOLERANCE) - 0.005 <= s <= hi * (1 + _RATE_TOLERANCE) + 0.005):
            raise LogFormatError(f"{where}: {what} rate {s} t/s at N_KV {r.n_kv} does not match {n_tok} tokens "
                                 f"in {t} s: not an unedited sweep-bench row")


def parse_sweep_tables(text: str, source: str = "text") -> tuple[SweepBench, ...]:
    """Every llama-sweep-bench table in the text, each with the ``main:`` line printed before it (if any).

    Raises:
        LogFormatError: a table row that does not parse or whose rate does not match its time.
    """
    lines = [_strip_prefix(x) for x in text.splitlines()]
    out: list[SweepBench] = []
    main = None
    i = 0
    while i < len(lines):
        ln = lines[i].strip()
        m = _SWEEP_MAIN.search(ln)
        if m:
            main = m
        if _SWEEP_HEADER.match(ln):
            rows: list[SweepRow] = []
            j = i + 1
            if j < len(lines) and re.match(r"^\|[-|: ]+\|$", lines[j].strip()):
                j += 1
            while j < len(lines) and lines[j].strip().startswith("|"):
                rm = _SWEEP_ROW.match(lines[j].strip())
                if not rm:
                    raise LogFormatError(f"{source}: line {j + 1}: sweep-bench row does not parse: "
                                         f"{lines[j].strip()[:80]!r}")
                row = SweepRow(int(rm[1]), int(rm[2]), int(rm[3]), float(rm[4]), float(rm[5]), float(rm[6]),
                               float(rm[7]))
                _check_row(row, f"{source}: line {j + 1}")
                rows.append(row)
                j += 1
            if rows:
                if main:
                    out.append(SweepBench(tuple(rows), n_kv_max=int(main[1]), n_batch=int(main[2]),
                                          n_ubatch=int(main[3]), flash_attn=int(main[4]) > 0,
                                          n_gpu_layers=int(main[5]), n_threads=int(main[6]),
                                          n_threads_batch=int(main[7])))
                else:
                    out.append(SweepBench(tuple(rows)))
                main = None
            i = j
            continue
        i += 1
    return tuple(out)


# ----------------------------------------------------------------------------- llama-bench

_TEST = re.compile(r"^(?:pp(?P<p>\d+))?(?:\+)?(?:tg(?P<g>\d+))?(?:\s*@\s*d(?P<d>\d+))?$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_llama_bench(text: str, source: str = "text") -> LlamaBench | None:
    """llama-bench markdown tables (all of them, rows in order); None when there is none.

    Raises:
        LogFormatError: a row that does not match its header, an unknown test name, or an unreadable rate.
    """
    lines = [_strip_prefix(x) for x in text.splitlines()]
    rows: list[BenchRow] = []
    i = 0
    while i < len(lines):
        ln = lines[i].strip()
        if ln.startswith("|") and ln.endswith("|"):
            head = _cells(ln)
            if "model" in head and "test" in head and "t/s" in head:
                j = i + 1
                if j < len(lines) and re.match(r"^\|[-|: ]+\|$", lines[j].strip()):
                    j += 1
                while j < len(lines) and lines[j].strip().startswith("|"):
                    cells = _cells(lines[j])
                    if len(cells) != len(head):
                        raise LogFormatError(f"{source}: line {j + 1}: llama-bench row has {len(cells)} cells, "
                                             f"header {len(head)}")
                    d = dict(zip(head, cells))
                    tm = _TEST.match(d["test"])
                    rate = re.fullmatch(rf"({_NUM})(?:{_PM}({_NUM}))?", d["t/s"])
                    if not tm or not (tm["p"] or tm["g"]) or not rate:
                        raise LogFormatError(f"{source}: line {j + 1}: llama-bench test {d['test']!r} / rate "
                                             f"{d['t/s']!r} not understood")
                    rows.append(BenchRow(model=d["model"], test=d["test"], tps=float(rate[1]),
                                         tps_std=float(rate[2]) if rate[2] else None,
                                         n_prompt=int(tm["p"] or 0), n_gen=int(tm["g"] or 0),
                                         depth=int(tm["d"] or 0), columns=tuple(zip(head, cells))))
                    j += 1
                i = j
                continue
        i += 1
    return LlamaBench(tuple(rows)) if rows else None


# ----------------------------------------------------------------------------- perplexity

_FINAL = re.compile(rf"Final estimate:\s*PPL\s*=\s*({_NUM}){_PM}({_NUM})")
_STAT = {
    "ppl": re.compile(rf"^Mean PPL\(Q\)\s*:\s*({_NUM}){_PM}({_NUM})"),
    "ppl_base": re.compile(rf"^Mean PPL\(base\)\s*:\s*({_NUM})"),
    "ln_ppl_ratio": re.compile(rf"^Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*({_NUM}){_PM}({_NUM})"),
    "ppl_ratio": re.compile(rf"^Mean PPL\(Q\)/PPL\(base\)\s*:\s*({_NUM}){_PM}({_NUM})"),
    "kld_mean": re.compile(rf"^(?:Mean\s+KLD|Average)\s*:\s*({_NUM}){_PM}({_NUM})"),
    "kld_median": re.compile(rf"^Median\s*(?:KLD)?\s*:\s*({_NUM})"),
    "kld_p99": re.compile(rf"^99\.0%\s*(?:KLD)?\s*:\s*({_NUM})"),
    "kld_max": re.compile(rf"^Maximum\s*(?:KLD)?\s*:\s*({_NUM})"),
    "same_top_p_pct": re.compile(rf"^Same top p\s*:\s*({_NUM}){_PM}({_NUM})\s*%"),
}
_ERR_FIELD = {"ppl": "ppl_err", "ln_ppl_ratio": "ln_ppl_ratio_err", "ppl_ratio": "ppl_ratio_err",
              "kld_mean": "kld_err", "same_top_p_pct": "same_top_p_err"}


def find_perplexity(text: str) -> PerplexityResult | None:
    """The perplexity/KLD result in the text, or None when there is none (see :func:`parse_perplexity`)."""
    vals: dict[str, float] = {}
    finals = _FINAL.findall(text)
    if finals:
        vals["ppl"], vals["ppl_err"] = float(finals[-1][0]), float(finals[-1][1])
    section = ""
    for raw in text.splitlines():
        ln = _strip_prefix(raw).strip()
        if ln.startswith("=====") and "statistics" in ln:
            section = ln
            continue
        for key, rx in _STAT.items():
            if key.startswith("kld_") and key != "kld_mean" and "KL" not in section:
                continue                       # "Median"/"Maximum" also head the token-probability block
            m = rx.match(ln)
            if m and key not in vals:
                vals[key] = float(m[1])
                if key in _ERR_FIELD and m.lastindex and m.lastindex >= 2:
                    vals[_ERR_FIELD[key]] = float(m[2])
    if not vals:
        return None
    return PerplexityResult(**vals)


def parse_perplexity(text: str) -> PerplexityResult:
    """llama-perplexity output → its final PPL (± its error) and, from ``--kl-divergence`` runs, KLD statistics.

    Raises:
        LogFormatError: neither ``Final estimate: PPL = ...`` nor a KL-divergence statistics block is present.
    """
    res = find_perplexity(_text(text, "text") if isinstance(text, bytes) else text)
    if res is None:
        raise LogFormatError("no llama-perplexity result (\"Final estimate: PPL = x +/- y\" or KL-divergence "
                             "statistics) in the text", hint="pass the complete llama-perplexity output")
    return res


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
