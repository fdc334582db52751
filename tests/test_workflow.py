"""The quantize workflow: steps, commands and disk space (planner/workflow.py)."""

from __future__ import annotations

import pytest

from planner.quantize import QuantizeSpec, quantize
from planner.recipe import build_recipe
from planner.tensors import builtin
from planner.workflow import quantize_workflow

GIB = 2**30


def plan_like(name: str, ftype: str):
    tmap = builtin(name)
    fp = quantize(tmap, QuantizeSpec(base_type=ftype, has_imatrix=True))
    return tmap, build_recipe(tmap, {r.name: r.type_name for r in fp.tensors}), fp.total_bytes


@pytest.fixture(scope="module")
def qwen():
    return plan_like("qwen3-235b-a22b", "IQ3_K")


@pytest.fixture(scope="module")
def r1():
    return plan_like("deepseek-r1", "IQ2_K")


def test_bf16_source_convert_and_sizes(qwen):
    tmap, rec, qbytes = qwen
    w = quantize_workflow(tmap, rec, builtin_name="qwen3-235b-a22b", output="out.gguf", quantized_bytes=qbytes,
                          threads=16)
    titles = [s.title for s in w.steps]
    assert titles == ["download the original weights", "convert to a BF16 GGUF", "importance matrix", "quantize"]
    conv = w.steps[1]
    assert conv.argv[:6] == ("python3", "convert_hf_to_gguf.py", "--outtype", "bf16", "--outfile",
                             "Qwen3-235B-A22B-BF16.gguf")
    # ubergarm's BF16 of the same architecture (ik_llama.cpp PR 642 table): 437.989 GiB
    assert conv.disk_bytes / GIB == pytest.approx(437.989, abs=0.001)
    q = w.steps[-1].argv
    assert q[0] == "llama-quantize" and "--imatrix" in q and q[q.index("--imatrix") + 1] == w.imatrix
    assert q[-4:] == ("Qwen3-235B-A22B-BF16.gguf", "out.gguf", rec.base_type, "16")
    imx = w.steps[2].argv
    assert imx[:3] == ("llama-imatrix", "-m", "Qwen3-235B-A22B-BF16.gguf") and imx[-2:] == ("-t", "16")
    assert w.imatrix.endswith(".dat") and w.imatrix_source == "computed"


def test_no_imatrix_and_given_imatrix(qwen):
    tmap, rec, qbytes = qwen
    w = quantize_workflow(tmap, rec, builtin_name="qwen3-235b-a22b", output="o.gguf", quantized_bytes=qbytes,
                          use_imatrix=False)
    assert "--imatrix" not in w.steps[-1].argv and w.imatrix is None
    assert all(s.title != "importance matrix" for s in w.steps)
    assert any("--no-imatrix" in a for a in w.assumptions)
    assert w.steps[-1].argv[-1] == rec.base_type          # no thread count given: the engine's default
    w = quantize_workflow(tmap, rec, builtin_name="qwen3-235b-a22b", output="o.gguf", quantized_bytes=qbytes,
                          imatrix="my.dat", source_gguf="src.gguf")
    assert [s.title for s in w.steps] == ["quantize"] and w.imatrix_source == "given"
    assert w.steps[0].argv[-3:-1] == ("src.gguf", "o.gguf") and "my.dat" in w.steps[0].argv


def test_fp8_source_casts_first_and_imatrix_from_q8_0_when_bf16_does_not_fit(r1):
    tmap, rec, qbytes = r1
    w = quantize_workflow(tmap, rec, builtin_name="deepseek-r1", output="r1.gguf", quantized_bytes=qbytes,
                          ram_bytes=128 * GIB)
    titles = [s.title for s in w.steps]
    assert titles[:3] == ["download the original weights", "FP8 -> BF16 safetensors", "convert to a BF16 GGUF"]
    cast = w.steps[1].argv
    # deepseek-ai/DeepSeek-V3 inference/fp8_cast_bf16.py arguments
    assert cast[1] == "fp8_cast_bf16.py" and "--input-fp8-hf-path" in cast and "--output-bf16-hf-path" in cast
    assert w.steps[2].argv[-1] == cast[-1]                 # convert reads the cast's output directory
    assert titles[3].startswith("Q8_0 for the imatrix run")
    assert w.steps[4].argv[2] == "DeepSeek-R1-0528-Q8_0.gguf"
    assert any("larger than RAM too" in a for a in w.assumptions)


def test_disk_peak_is_less_than_keeping_everything(r1):
    tmap, rec, qbytes = r1
    w = quantize_workflow(tmap, rec, builtin_name="deepseek-r1", output="r1.gguf", quantized_bytes=qbytes,
                          ram_bytes=128 * GIB)
    by = {s.title: s.disk_bytes for s in w.steps}
    assert w.total_disk_bytes == sum(by.values())
    # the worst moment is the cast: FP8 download and BF16 safetensors both on disk, or the convert: BF16
    # safetensors + BF16 GGUF
    assert w.peak_disk_bytes == max(by["download the original weights"] + by["FP8 -> BF16 safetensors"],
                                    by["FP8 -> BF16 safetensors"] + by["convert to a BF16 GGUF"])
    assert w.peak_disk_bytes < w.total_disk_bytes


def test_converter_quantized_models_convert_at_their_real_size_and_with_the_right_checkout():
    """gpt-oss's converter keeps the checkpoint's MXFP4 experts, so the "BF16" GGUF is bf16 elsewhere only
    (13.78e9 bytes for gpt-oss-20b, not 2 bytes x 20.9e9); DeepSeek-V4's model GGUF comes from llama.cpp's
    converter (workflow.toml checkout_by_arch: ik 8337e4cd's converts the MTP companion only)."""
    from planner.api import plan as api_plan
    from planner.hardware import resolve_hardware
    from planner.request import PlanRequest
    from planner.runconfig import RunConfig

    hw = resolve_hardware(vram=[24.0], ram=128.0)
    doc = api_plan("gpt-oss-20b", hw, PlanRequest(run=RunConfig(threads=16)))
    convert = next(s for s in doc.workflow.steps if s.title.startswith("convert"))
    n_elements = sum(t.n_elements for t in builtin("gpt-oss-20b").tensors)
    assert convert.disk_bytes < 0.7 * 2 * n_elements
    assert "ik checkout" in convert.note
    doc = api_plan("deepseek-v4-flash", hw, PlanRequest(run=RunConfig(threads=16)))
    convert = next(s for s in doc.workflow.steps if s.title.startswith("convert"))
    assert "mainline checkout" in convert.note


def test_every_listed_source_is_the_checkpoint_the_builtin_was_read_from():
    """The download step's repository for a built-in is the one whose config.json models.toml cites."""
    import tomllib

    from planner.tables import DATA
    from planner.tensors import builtin_info

    sources = tomllib.loads((DATA / "workflow.toml").read_text())["sources"]
    # keys with a dot must be quoted in TOML: glm-4.5-air was read as glm-4 -> {"5-air": ...} and never found
    assert {"glm-4.5-air", "glm-4.6", "qwen3-coder-480b-a35b", "deepseek-v3.1"} <= set(sources)
    for name, src in sources.items():
        assert f"huggingface.co/{src['repo']}" in builtin_info(name)["source"].replace("/blob/main", ""), name
        assert src["dtype"] in ("bf16", "fp8")
