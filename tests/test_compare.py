from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.compare import compare, plot_comparison
from planner.errors import OutputExistsError
from planner.hardware import resolve_hardware
from planner.memory import RunConfig

ROOT = Path(__file__).parents[1]
SEED = str(ROOT / "examples/seed-mix-IQ3_K.recipe")


@pytest.fixture(scope="module")
def result():
    hw = resolve_hardware(vram=[24.0], ram=96.0)
    return compare(["IQ3_K", "IQ4_KS", "Q4_K_M", SEED], model=None, hw=hw, run=RunConfig(threads=16))


def test_rows_sizes_fit_and_dominance(result):
    rows = {r.name: r for r in result.rows}
    assert f"{rows['seed-mix-IQ3_K.recipe'].total_bytes / 2**30:.3f}" == "106.830"
    assert not rows["Q4_K_M"].fits and not rows["IQ4_KS"].fits          # > 24 + 96 GiB minus reserves
    assert rows["IQ3_K"].fits and rows["seed-mix-IQ3_K.recipe"].fits
    assert rows["seed-mix-IQ3_K.recipe"].ppl_ratio < rows["IQ3_K"].ppl_ratio
    assert rows["IQ3_K"].tg_tps > rows["seed-mix-IQ3_K.recipe"].tg_tps
    assert rows["IQ3_K"].pareto and rows["seed-mix-IQ3_K.recipe"].pareto      # a real trade-off
    assert not rows["Q4_K_M"].pareto


def test_plot_png_and_no_overwrite(result, tmp_path):
    out = tmp_path / "out.png"
    plot_comparison(result, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(OutputExistsError):
        plot_comparison(result, str(out))


def test_cli_compare_json_and_bad_candidate():
    r = CliRunner().invoke(main, ["compare", "IQ3_K", "Q8_0", "--model", "qwen3-30b-a3b", "--vram", "24",
                                  "--ram", "64", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["compare", "IQ9_Z", "--vram", "24", "--ram", "96"])
    assert r.exit_code == 2 and "IQ9_Z" in r.output and "Traceback" not in r.output
