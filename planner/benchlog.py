"""Benchmark and perplexity output → typed records: llama-sweep-bench tables (with their ``main:`` settings line),
llama-bench markdown tables, and llama-perplexity's final estimate and --kl-divergence statistics (see
:mod:`planner.logparse` for the spellings and sources)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from planner.errors import LogFormatError
from planner.logtext import _NUM, _PM, _strip_prefix, _text


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
