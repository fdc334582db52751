"""`compare`: candidate mixes side by side on one machine (size, fit, placement, speed, quality)."""

from __future__ import annotations

import math
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
    from planner.quality import QualityModel


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


@dataclass(frozen=True, slots=True)
class Comparison:
    """All candidates on one machine; non-dominated rows have ``pareto`` set."""

    model: str
    hardware: str
    rows: tuple[CompareRow, ...]


def _candidate_types(cand: str, tmap: TensorMap, engine: str) -> tuple[str, str, dict[str, str], TensorMap]:
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
        types, _ = mix_from_options(tmap, base_type=None, recipe_text=path.read_text(), engine=engine)
        return path.name, "recipe", types, tmap
    if "=" in cand:
        types, _ = mix_from_options(tmap, base_type=None, custom_q=[cand], engine=engine)
        short = cand if len(cand) <= 40 else cand[:37] + "..."
        return short, "recipe", types, tmap
    get_ftype(cand, engine)
    types, _ = mix_from_options(tmap, base_type=cand, engine=engine)
    return cand, "ftype", types, tmap


def compare(candidates: list[str], *, model: str | None, hw: Hardware, run: RunConfig) -> Comparison:
    """Evaluate each candidate: exact size, best placement on ``hw``, estimated speed and quality."""
    from planner.memory import mix_bytes
    from planner.planning import place, resolve_ctx
    from planner.quality import QualityModel
    from planner.request import PlanRequest
    from planner.source import load_model

    tmap = load_model(model)
    run = resolve_ctx(tmap, run)
    quality_cache: dict[str, QualityModel] = {}
    rows: list[CompareRow] = []
    for cand in candidates:
        try:
            name, kind, types, tm = _candidate_types(cand, tmap, run.engine)
        except PlannerError as exc:
            raise UsageError(f"candidate {cand!r}: {exc}") from exc
        sizes = mix_bytes(tm, types)
        total = sum(sizes.values())
        q = quality_cache.get(tm.source)
        if q is None:
            q = quality_cache[tm.source] = QualityModel.build(tm)
        qe = q.estimate(types)
        try:
            p = place(tm, types, hw, PlanRequest(run=run))
            gpu = sum(d.term("weights") for d in p.memory.devices if d.device != CPU)
            cpu = p.memory.device(CPU).term("weights")
            rows.append(CompareRow(name, kind, total, 8.0 * total / tm.n_elements, True, gpu, cpu,
                                   p.speed.tg_tps, p.speed.pp_tps, qe.ppl_ratio, qe.ppl_ratio_low,
                                   qe.ppl_ratio_high, False))
        except InfeasibleBudgetError as exc:
            rows.append(CompareRow(name, kind, total, 8.0 * total / tm.n_elements, False, 0, 0, None, None,
                                   qe.ppl_ratio, qe.ppl_ratio_low, qe.ppl_ratio_high, False, str(exc)))
    marked = []
    for r in rows:
        dominated = any(
            o is not r and o.fits and (o.total_bytes <= r.total_bytes) and ((o.tg_tps or 0) >= (r.tg_tps or 0))
            and (o.ppl_ratio or 9) <= (r.ppl_ratio or 9)
            and (o.total_bytes, -(o.tg_tps or 0), o.ppl_ratio) != (r.total_bytes, -(r.tg_tps or 0), r.ppl_ratio)
            for o in rows)
        marked.append(_replace(r, pareto=r.fits and not dominated))
    marked.sort(key=lambda r: (not r.fits, r.ppl_ratio or 9, r.total_bytes))
    gpus = " + ".join(f"{g.name} {g.total_bytes / GIB:.0f} GiB" for g in hw.gpus) or "no GPU"
    return Comparison(tmap.name, f"{gpus}, {hw.ram_total_bytes / GIB:.0f} GiB RAM", tuple(marked))


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
