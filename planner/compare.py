"""`compare`: candidate mixes side by side on one machine (size, fit, placement, speed, quality)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.devices import CPU
from planner.errors import InfeasibleBudgetError, PlannerError, UsageError
from planner.runconfig import RunConfig
from planner.tensors import TensorMap
from planner.units import GIB

if TYPE_CHECKING:
    from planner.hardware import Hardware
    from planner.imatrix_use import ImatrixUse


@dataclass(frozen=True, slots=True)
class CompareRow:
    """One candidate: exact size, whether and how it fits, predicted speed and quality."""

    name: str
    kind: str                  # ftype | recipe | gguf | plan
    total_bytes: int
    bpw: float
    fits: bool
    gpu_bytes: int
    cpu_bytes: int
    tg_tps: float | None
    pp_tps: float | None
    ppl_ratio: float | None
    ppl_ratio_low: float | None
    ppl_ratio_high: float | None
    pareto: bool
    note: str = ""
    constants: str = ""                  # where the quality constants come from (measured / transferred / prior)
    imatrix: str = ""                    # the imatrix assumption of the quality estimate (planner.imatrix_use)
    measured_ratio: float | None = None  # measured PPL / reference PPL (--measured), next to ``ppl_ratio``
    measured_se: float | None = None     # its standard error (as a ratio)
    measured_inside_band: bool | None = None   # the measurement (within 2 SE) lies inside the predicted band
    measured_source: str = ""            # "5.4403 +/- 0.0342 / reference 5.3141" or the log's ratio line


@dataclass(frozen=True, slots=True)
class Comparison:
    """All candidates on one machine; non-dominated rows have ``pareto`` set."""

    model: str
    hardware: str
    rows: tuple[CompareRow, ...]
    notes: tuple[str, ...] = ()          # imatrix assumption, reference PPL, differences inside the band


def _candidate_types(cand: str, tmap: TensorMap, engine: str, imatrix: ImatrixUse | None
                     ) -> tuple[str, str, dict[str, str], TensorMap]:
    from planner.documents import load_plan_json
    from planner.mix import mix_from_options
    from planner.quantize import get_ftype
    from planner.source import load_model

    path = Path(cand)
    if path.is_file():
        if path.suffix == ".gguf":
            t2 = load_model(cand)
            return path.name, "gguf", {t.name: t.dtype for t in t2.tensors}, t2
        if path.suffix == ".json":
            saved = load_plan_json(cand)
            return path.name, "plan", saved.types, saved.tmap
        types, _ = mix_from_options(tmap, base_type=None, recipe_text=path.read_text(), engine=engine,
                                    imatrix=imatrix)
        return path.name, "recipe", types, tmap
    if "=" in cand:
        types, _ = mix_from_options(tmap, base_type=None, custom_q=[cand], engine=engine, imatrix=imatrix)
        short = cand if len(cand) <= 40 else cand[:37] + "..."
        return short, "recipe", types, tmap
    get_ftype(cand, engine)
    types, _ = mix_from_options(tmap, base_type=cand, engine=engine, imatrix=imatrix)
    return cand, "ftype", types, tmap


_PPL = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:(?:\+/-|\+-|±)\s*([0-9]*\.?[0-9]+))?\s*$")


@dataclass(frozen=True, slots=True)
class Measurement:
    """A measured PPL (with its standard error), or a measured PPL ratio from a --kl-divergence log."""

    ppl: float | None
    se: float | None
    ratio: float | None = None
    ratio_se: float | None = None
    source: str = ""


def parse_measurement(text: str, what: str) -> Measurement:
    """``5.4403``, ``5.4403+-0.0342`` (``+/-``, ``±``) or a llama-perplexity log file (its final lines).

    Raises:
        UsageError: neither a number nor a readable log with a final PPL estimate.
    """
    from planner.measurements import parse_perplexity_output

    m = _PPL.match(text)
    if m:
        ppl = float(m.group(1))
        se = float(m.group(2)) if m.group(2) else None
        if not (ppl > 0 and math.isfinite(ppl)):
            raise UsageError(f"{what}: {text!r} is not a perplexity")
        return Measurement(ppl, se, source=text.strip())
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"{what}: {text!r} is neither PPL[+-ERR] nor a llama-perplexity log file")
    try:
        out = path.read_bytes()[-(1 << 20):].decode("utf-8", errors="replace")   # the final lines are at the end
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror or exc}") from exc
    res = parse_perplexity_output(out)
    if res.ppl is None and res.ppl_ratio is None:
        raise UsageError(f"{what}: {path} has no final PPL estimate", hint="pass llama-perplexity's whole output")
    return Measurement(res.ppl, res.ppl_se, res.ppl_ratio, res.ppl_ratio_se, source=path.name)


def _measured_by_name(items: Sequence[str]) -> dict[str, Measurement]:
    out: dict[str, Measurement] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise UsageError(f"--measured {item!r} is not NAME=PPL[+-ERR] or NAME=LOG")
        out[name] = parse_measurement(value, f"--measured {name}")
    return out


def _with_measurements(rows: list[CompareRow], cands: Sequence[str], measured: Mapping[str, Measurement],
                       reference: Measurement | None) -> tuple[list[CompareRow], list[str]]:
    """Rows with their measured PPL ratio next to the prediction.  The reference is ``reference`` (the unquantized
    model's or a Q8_0's PPL on the same text); without it, the measured candidate the model predicts best, its
    measured PPL divided by its predicted ratio (a Q8_0 is predicted at ~1.0002)."""
    from planner.quality import QualityEstimate, _prior, predicted_vs_measured, ratio_se

    by_key = {}
    for cand, r in zip(cands, rows):
        by_key[cand] = r
        by_key[r.name] = r
    unknown = [n for n in measured if n not in by_key]
    if unknown:
        raise UsageError(f"--measured names no candidate: {', '.join(unknown)}",
                         hint="use a candidate as given on the command line, e.g. --measured IQ3_K=5.44")
    notes: list[str] = []
    ref_ppl = ref_se = None
    if reference is not None:
        if reference.ppl is None:
            raise UsageError("--reference-ppl: the log has no final PPL estimate")
        ref_ppl, ref_se = reference.ppl, reference.se
        notes.append(f"measured ratios are PPL / reference PPL {reference.source}")
    else:
        with_ppl = [(by_key[n], m) for n, m in measured.items() if m.ppl is not None and by_key[n].ppl_ratio]
        if with_ppl:
            r0, m0 = min(with_ppl, key=lambda rm: rm[0].ppl_ratio or 9.0)
            assert r0.ppl_ratio is not None and m0.ppl is not None
            ref_ppl = m0.ppl / r0.ppl_ratio
            notes.append(f"no --reference-ppl: reference PPL {ref_ppl:.4f} = {r0.name}'s measured {m0.ppl:.4f} / its "
                         f"predicted ratio {r0.ppl_ratio:.4f} (so {r0.name} matches by construction)")
    out: dict[int, CompareRow] = {}
    for name, m in measured.items():
        r = by_key[name]
        if r.ppl_ratio is None or r.ppl_ratio_low is None or r.ppl_ratio_high is None:
            continue
        est = QualityEstimate(0.0, r.ppl_ratio, r.ppl_ratio_low, r.ppl_ratio_high, ())
        if m.ratio is not None:        # a --kl-divergence run measured PPL(Q)/PPL(base) itself
            slack = 2 * (m.ratio_se or 0.0)
            inside = r.ppl_ratio_low - slack <= m.ratio <= r.ppl_ratio_high + slack
            out[id(r)] = _replace(r, measured_ratio=m.ratio, measured_se=m.ratio_se, measured_inside_band=inside,
                                  measured_source=f"{m.source}: Mean PPL(Q)/PPL(base)")
            continue
        if ref_ppl is None or m.ppl is None:
            raise UsageError(f"--measured {name}: a PPL needs a reference", hint="give --reference-ppl PPL[+-ERR] "
                             "(the bf16 or Q8_0 model on the same text)")
        se = m.se if m.se is not None else None
        if se is not None and ref_se is not None:      # same text: the errors are correlated (ratio_se)
            se = ratio_se(m.ppl, se, ref_ppl, ref_se) * ref_ppl
            if not any(n.startswith("measured ratio errors") for n in notes):
                notes.append("measured ratio errors combine the two PPL errors at correlation "
                             f"{_prior()['uncertainty']['ppl_correlation']} (same text, quality_prior.toml)")
        pvm = predicted_vs_measured(est, m.ppl, ref_ppl, se)
        out[id(r)] = _replace(r, measured_ratio=pvm.measured, measured_se=pvm.measured_se,
                              measured_inside_band=pvm.inside_band,
                              measured_source=f"{m.source} / {ref_ppl:.4f}")
    return [out.get(id(r), r) for r in rows], notes


def _band_notes(rows: Sequence[CompareRow]) -> list[str]:
    """Neighbours (by predicted PPL ratio) whose difference the quality model cannot resolve."""
    from planner.quality import QualityEstimate, difference_inside_band

    notes = []
    ranked = [r for r in rows if r.ppl_ratio is not None and r.ppl_ratio_low is not None
              and r.ppl_ratio_high is not None]
    ranked.sort(key=lambda r: r.ppl_ratio or 9.0)
    for a, b in zip(ranked, ranked[1:]):
        qa = QualityEstimate(0.0, a.ppl_ratio or 0.0, a.ppl_ratio_low or 0.0, a.ppl_ratio_high or 0.0, ())
        qb = QualityEstimate(0.0, b.ppl_ratio or 0.0, b.ppl_ratio_low or 0.0, b.ppl_ratio_high or 0.0, ())
        if difference_inside_band(qa, qb):
            notes.append(f"{a.name} vs {b.name}: predicted PPL ratios {a.ppl_ratio:.4f} and {b.ppl_ratio:.4f} differ "
                         "by less than the band (the model cannot tell which is better)")
    return notes


def compare(candidates: list[str], *, model: str | None, hw: Hardware, run: RunConfig,
            imatrix: ImatrixUse | None = None, measured: Sequence[str] = (), reference: str | None = None
            ) -> Comparison:
    """Evaluate each candidate: exact size, best placement on ``hw``, estimated speed and quality (with band and
    the source of its constants), and the measured PPL ratio where ``measured`` names one.

    ``imatrix``: the declared imatrix use (default: one assumed); a GGUF candidate's header record wins for it.

    Raises:
        UsageError: a bad candidate, a --measured item naming no candidate, or a PPL without a reference.
    """
    from planner.imatrix_use import declared_imatrix, imatrix_for
    from planner.memory import mix_bytes
    from planner.context_search import resolve_ctx
    from planner.planning import place
    from planner.quality import QualityModel
    from planner.request import PlanRequest
    from planner.source import load_model

    imatrix = imatrix or declared_imatrix(None, False)
    meas = _measured_by_name(measured)
    ref = parse_measurement(reference, "--reference-ppl") if reference else None
    tmap = load_model(model)
    run = resolve_ctx(tmap, run)
    quality_cache: dict[tuple[str, bool], QualityModel] = {}
    rows: list[CompareRow] = []
    notes = [imatrix.note]
    for cand in candidates:
        try:
            name, kind, types, tm = _candidate_types(cand, tmap, run.engine, imatrix)
        except PlannerError as exc:
            raise UsageError(f"candidate {cand!r}: {exc}") from exc
        use = imatrix_for(tm, imatrix)
        if use.origin == "recorded":
            notes.append(f"{name}: {use.note}")
        sizes = mix_bytes(tm, types)
        total = sum(sizes.values())
        key = (tm.source, use.used)
        q = quality_cache.get(key)
        if q is None:
            q = quality_cache[key] = QualityModel.build(tm, imatrix=use.file if use.origin == "given" else None,
                                                        has_imatrix=use.used)
        qe = q.estimate(types)
        try:
            p = place(tm, types, hw, PlanRequest(run=run))
            gpu = sum(d.term("weights") for d in p.memory.devices if d.device != CPU)
            cpu = p.memory.device(CPU).term("weights")
            rows.append(CompareRow(name, kind, total, 8.0 * total / tm.n_elements, True, gpu, cpu,
                                   p.speed.tg_tps, p.speed.pp_tps, qe.ppl_ratio, qe.ppl_ratio_low,
                                   qe.ppl_ratio_high, False, constants=qe.constants, imatrix=use.note))
        except InfeasibleBudgetError as exc:
            rows.append(CompareRow(name, kind, total, 8.0 * total / tm.n_elements, False, 0, 0, None, None,
                                   qe.ppl_ratio, qe.ppl_ratio_low, qe.ppl_ratio_high, False, str(exc),
                                   constants=qe.constants, imatrix=use.note))
    if meas:
        rows, mnotes = _with_measurements(rows, candidates, meas, ref)
        notes.extend(mnotes)
    marked = []
    for r in rows:
        dominated = any(
            o is not r and o.fits and (o.total_bytes <= r.total_bytes) and ((o.tg_tps or 0) >= (r.tg_tps or 0))
            and (o.ppl_ratio or 9) <= (r.ppl_ratio or 9)
            and (o.total_bytes, -(o.tg_tps or 0), o.ppl_ratio) != (r.total_bytes, -(r.tg_tps or 0), r.ppl_ratio)
            for o in rows)
        marked.append(_replace(r, pareto=r.fits and not dominated))
    marked.sort(key=lambda r: (not r.fits, r.ppl_ratio or 9, r.total_bytes))
    notes.extend(_band_notes(marked))
    gpus = " + ".join(f"{g.name} {g.total_bytes / GIB:.0f} GiB" for g in hw.gpus) or "no GPU"
    return Comparison(tmap.name, f"{gpus}, {hw.ram_total_bytes / GIB:.0f} GiB RAM", tuple(marked), tuple(notes))


def _replace(r: CompareRow, **kw: Any) -> CompareRow:
    import dataclasses

    return dataclasses.replace(r, **kw)


def plot_comparison(c: Comparison, path: str, *, force: bool = False) -> None:
    """Size vs predicted PPL ratio, TG as colour; non-dominated candidates outlined (.png or .svg).

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false (checked before drawing).
    """
    import io

    try:
        import matplotlib
    except ImportError:
        raise UsageError("compare --plot needs matplotlib, an optional extra",
                         hint="pip install 'gguf-planner[plot]' (or pip install matplotlib)") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from planner.errors import OutputExistsError
    from planner.fileout import write_new_file

    if Path(path).exists() and not force:
        raise OutputExistsError(path)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    xs = [r.total_bytes / GIB for r in c.rows]
    ys = [r.ppl_ratio if r.ppl_ratio is not None else math.nan for r in c.rows]
    tg = [r.tg_tps or 0.0 for r in c.rows]
    sc = ax.scatter(xs, ys, c=tg, cmap="viridis", s=90,
                    edgecolors=["red" if r.pareto else "none" for r in c.rows], linewidths=1.5)
    for r, x, y in zip(c.rows, xs, ys):
        ax.annotate(r.name + ("" if r.fits else " (does not fit)"), (x, y), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
        if r.ppl_ratio_low and r.ppl_ratio_high:
            ax.plot([x, x], [r.ppl_ratio_low, r.ppl_ratio_high], color="grey", alpha=0.4, linewidth=1)
    fig.colorbar(sc, ax=ax, label="predicted TG, tokens/s (estimate)")
    ax.set_xlabel("size of weights, GiB (exact)")
    ax.set_ylabel("predicted PPL ratio vs unquantized (estimate)")
    ax.set_title(f"{c.model} on {c.hardware}\nred outline = not dominated", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg" if path.endswith(".svg") else "png")
    plt.close(fig)
    write_new_file(Path(path), buf.getvalue(), force=force)
