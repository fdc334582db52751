"""The quantize workflow from the original weights to the planned GGUF: steps, commands, disk space.

``quantize_workflow`` returns a :class:`Workflow`: where the BF16 GGUF comes from (``convert_hf_to_gguf.py
--outtype bf16``, after DeepSeek's ``fp8_cast_bf16.py`` for FP8 checkpoints), the imatrix (``llama-imatrix`` on the
BF16, or on a Q8_0 when the BF16 does not fit in RAM, or a file the user names), then ``llama-quantize`` with
``--imatrix``, the recipe, the threads and the output name.  Each step carries its argv (rendered and quoted by the
caller's script renderer) and the disk space it writes: exact for GGUF files (tensor bytes from the size map and
the llama-quantize emulation, without the header), estimated for safetensors.  Facts: ``data/workflow.toml``.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from planner.tensors import TensorMap

DATA = Path(__file__).parent / "data"


class _Recipe(Protocol):
    def quantize_argv(self, src: str, dst: str, *, imatrix: str | None = None, threads: int | None = None,
                      binary: str = "llama-quantize") -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One command of the workflow and the disk space it writes."""

    title: str
    argv: tuple[str, ...]
    writes: str                  # the path it creates
    disk_bytes: int
    disk_exact: bool             # False: estimated (safetensors, imatrix)
    note: str = ""
    reads: tuple[str, ...] = ()  # paths of earlier steps this one needs


@dataclass(frozen=True, slots=True)
class Workflow:
    steps: tuple[Step, ...]
    imatrix: str | None          # the imatrix file llama-quantize reads, None with --no-imatrix
    imatrix_source: str          # "computed" | "given" | "none"
    total_disk_bytes: int        # every file of the workflow kept until the end
    peak_disk_bytes: int         # the most at any one time when each intermediate is deleted after its last use
    assumptions: tuple[str, ...]
    programs: tuple[str, ...] = ()   # the commands the steps run, in order of first use
    inputs: tuple[str, ...] = ()     # files the user supplies (scripts, calibration text, a given imatrix or GGUF)


@functools.cache
def _facts() -> dict:
    return tomllib.loads((DATA / "workflow.toml").read_text())


def _fill(argv: Sequence[str], **kw: str) -> tuple[str, ...]:
    return tuple(a.format(**kw) for a in argv)


def _bf16_bytes(tmap: TensorMap) -> int:
    """Tensor bytes of the BF16 GGUF convert_hf_to_gguf --outtype bf16 writes: the map's own dtypes, which follow
    the converter (1-D tensors, norms, ffn_gate_inp and non-.weight tensors f32, the rest bf16).  A template's
    quantized tensors are what the converter writes (gpt-oss's and DeepSeek-V4's MXFP4 experts, V4's Q8_0
    linears: convert_hf_to_gguf.py GptOssModel / DeepseekV4Model); in a quantized GGUF's map they count as bf16."""
    from planner.quants import catalogue  # noqa: PLC0415
    cat = catalogue()
    total = 0
    for t in tmap.tensors:
        dtype = t.dtype if t.dtype in ("f32", "bf16", "f16") or tmap.converter_types else "bf16"
        total += cat.get(dtype).tensor_bytes(t.shape)
    return total


def _imatrix_bytes(tmap: TensorMap) -> int:
    """Legacy .dat size: per entry i32 len + name + i32 ncall + i32 nval + nval f32 (values of 2-D+ weights)."""
    return sum(12 + len(t.name) + 4 * t.ne0 * t.n_expert for t in tmap.tensors if t.n_dims >= 2)


def _q8_bytes(tmap: TensorMap, engine: str) -> int:
    """Size of the Q8_0 GGUF llama-quantize makes from the BF16 (the map's prequantized tensors kept): the same
    for every plan of a model, so ``--pareto`` computes it once."""
    from planner.quantize import QuantizeSpec, keep_prequantized_items, parse_custom_q, quantize  # noqa: PLC0415

    keep = keep_prequantized_items(tmap)
    return quantize(tmap, QuantizeSpec(base_type="Q8_0", engine=engine,
                                       custom_q=parse_custom_q(keep, engine) if keep else ())).total_bytes


def quantize_workflow(tmap: TensorMap, recipe: _Recipe, *, builtin_name: str | None, engine: str = "ik",
                      output: str, quantized_bytes: int, imatrix: str | None = None, use_imatrix: bool = True,
                      threads: int | None = None, ram_bytes: int | None = None, source_gguf: str | None = None,
                      hf_dir: str | None = None, ignore_imatrix_rules: bool = False) -> Workflow:
    """Steps from the original weights to ``output``.

    ``imatrix`` names an existing imatrix file (no computing step); with ``use_imatrix`` and no file the workflow
    computes one; ``use_imatrix=False`` quantizes without (the recipe must not need one).  ``source_gguf`` is an
    existing BF16/Q8_0 GGUF (no download or convert step).  ``ram_bytes``: when the BF16 does not fit, the imatrix
    is computed on a Q8_0 made from it (what people do for 671B-class models).
    """
    from planner.quantize import keep_prequantized_items  # noqa: PLC0415

    facts = _facts()
    name = tmap.name
    src_info = facts["sources"].get(builtin_name or "", {})
    threads_s = str(threads) if threads else ""      # none given: the engines use every hardware thread
    steps: list[Step] = []
    notes: list[str] = []
    n_params = sum(t.n_elements for t in tmap.tensors)
    if source_gguf is None:
        hf = hf_dir or (src_info["repo"].split("/")[-1] if src_info else f"{name}-hf")
        bf16_dir = hf
        if src_info:
            dl_bytes = n_params * (1 if src_info["dtype"] == "fp8" else 2)
            steps.append(Step("download the original weights",
                              ("huggingface-cli", "download", src_info["repo"], "--local-dir", hf), hf, dl_bytes,
                              False, f"{src_info['repo']} ({src_info['dtype']} safetensors, about "
                                     f"{dl_bytes / 2**30:.0f} GiB)"))
        if src_info.get("dtype") == "fp8":
            cast = facts["fp8_cast"]
            bf16_dir = f"{hf}-bf16"
            steps.append(Step("FP8 -> BF16 safetensors", _fill(cast["argv"], script=cast["script"], hf_dir=hf,
                                                                  bf16_dir=bf16_dir),
                              bf16_dir, n_params * 2, False, f"{cast['source']} (needs a CUDA GPU)", reads=(hf,)))
        bf16_gguf = f"{name}-BF16.gguf"
        steps.append(Step("convert to a BF16 GGUF", _fill(facts["convert"]["argv"], bf16_gguf=bf16_gguf,
                                                            bf16_dir=bf16_dir),
                          bf16_gguf, _bf16_bytes(tmap), True,
                          f"convert_hf_to_gguf.py of the "
                          f"{facts['convert'].get('checkout_by_arch', {}).get(tmap.params.arch, engine)} checkout",
                          reads=(bf16_dir,)))
        source_gguf = bf16_gguf
    else:
        notes.append(f"source GGUF given: {source_gguf} (no download or convert step)")
    imx_file: str | None = None
    imx_source = "none"
    if use_imatrix and imatrix:
        imx_file, imx_source = imatrix, "given"
    elif use_imatrix:
        spec = facts["imatrix"][engine]
        imx_file, imx_source = spec["file"].format(name=name), "computed"
        model_for_imatrix = source_gguf
        bf16 = _bf16_bytes(tmap)
        if ram_bytes is not None and bf16 > ram_bytes:
            q8 = f"{name}-Q8_0.gguf"
            keep = keep_prequantized_items(tmap)      # MXFP4 experts are copied, not requantized
            q8_bytes = tmap.derived(_q8_bytes, engine)
            keep_argv: tuple[str, ...] = ()
            if keep:
                keep_argv = (("--custom-q", ",".join(keep)) if engine != "mainline"
                             else tuple(a for item in keep for a in ("--tensor-type", item)))
            steps.append(Step("Q8_0 for the imatrix run (the BF16 does not fit in RAM)",
                              ("llama-quantize", *keep_argv, source_gguf, q8, "Q8_0")
                              + ((threads_s,) if threads else ()), q8,
                              q8_bytes, True,
                              reads=(source_gguf,)))
            model_for_imatrix = q8
            notes.append(f"BF16 is {bf16 / 2**30:.0f} GiB > RAM {ram_bytes / 2**30:.0f} GiB: imatrix from a Q8_0")
            if q8_bytes > ram_bytes:
                notes.append(f"the Q8_0 ({q8_bytes / 2**30:.0f} GiB) is larger than RAM too: llama-imatrix then "
                             "reads it from disk for every chunk (slow); a published imatrix (--imatrix FILE) "
                             "skips this step")
        argv = _fill(spec["argv"], model=model_for_imatrix, calibration=facts["imatrix"]["calibration"],
                     imatrix=imx_file, threads=threads_s)
        if not threads:
            argv = argv[:-2]             # drop "-t {threads}"
        steps.append(Step("importance matrix", argv,
                          imx_file, _imatrix_bytes(tmap), False,
                          f"{facts['imatrix']['calibration']}: a calibration text you supply",
                          reads=(model_for_imatrix,)))
    q_argv = recipe.quantize_argv(source_gguf, output, imatrix=imx_file, threads=threads)
    if ignore_imatrix_rules and not imx_file and engine == "ik":
        q_argv = [q_argv[0], "--ignore-imatrix-rules", *q_argv[1:]]     # ik's own override of the refusal
    steps.append(Step("quantize", tuple(q_argv), output, quantized_bytes, True,
                      reads=(source_gguf,) + ((imx_file,) if imx_file and imx_source == "computed" else ())))
    if not use_imatrix:
        notes.append("no imatrix (--no-imatrix): types llama-quantize refuses without one are not used")
    written = {s.writes for s in steps}
    inputs = [s.argv[1] for s in steps if s.argv[0] == "python3"]       # the converter / cast scripts
    if imx_source == "computed":
        inputs.append(facts["imatrix"]["calibration"])
    inputs += [f for f in (imx_file, source_gguf) if f and f not in written]
    return Workflow(tuple(steps), imx_file, imx_source, sum(s.disk_bytes for s in steps), _peak(steps), tuple(notes),
                    tuple(dict.fromkeys(s.argv[0] for s in steps)), tuple(dict.fromkeys(inputs)))


def _peak(steps: Sequence[Step]) -> int:
    """Largest disk use over the steps, deleting each written path after the last step that reads it (the
    imatrix and the output are kept)."""
    last_use = {}
    for i, s in enumerate(steps):
        for r in s.reads:
            last_use[r] = i
    # a download is read by the next step (cast or convert) through its directory
    for i, s in enumerate(steps[:-1]):
        if s.title.startswith("download") or s.title.startswith("FP8"):
            last_use[s.writes] = max(last_use.get(s.writes, 0), i + 1)
    alive: dict[str, int] = {}
    peak = 0
    for i, s in enumerate(steps):
        alive[s.writes] = s.disk_bytes
        peak = max(peak, sum(alive.values()))
        for path in [p for p in alive if p in last_use and last_use[p] <= i]:
            del alive[path]
    return peak


def disk_gib(n: int) -> str:
    """Bytes as GiB with one decimal (for the printed workflow)."""
    return f"{n / 2**30:.1f} GiB" if n < 10 * 2**40 else f"{n / 2**40:.2f} TiB"


__all__ = ["Step", "Workflow", "disk_gib", "quantize_workflow"]
