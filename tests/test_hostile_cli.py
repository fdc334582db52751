"""Hostile input through the CLI: one line, the right exit code, nothing executed, nothing overwritten.

Each case names what it once did wrong.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import IK, gguf_bytes

from planner.cli import main
from planner.gguf_files import read_gguf

ROOT = Path(__file__).parents[1]
EVIL_NAME = "Mödel\n$(touch PWNED)`touch PWNED2`${IFS}; touch PWNED3 #'\""


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def one_line(r) -> bool:
    return r.output.count("\n") == 1 and "Traceback" not in r.output


def _evil_gguf(tmp_path: Path, name: str = EVIL_NAME) -> Path:
    base = read_gguf(IK / "tiny-a-bf16.gguf")
    items = [(e.key, e.vtype, list(e.value), e.elem_type) if e.elem_type is not None else
             (e.key, e.vtype, name if e.key == "general.name" else e.value) for e in base.kv]
    path = tmp_path / "evil.gguf"
    path.write_bytes(gguf_bytes(items, [(t.name, t.shape, t.type_name) for t in base.tensors]))
    return path


@pytest.fixture
def evil_plan(tmp_path):
    model = _evil_gguf(tmp_path)
    out = tmp_path / "plan.json"
    r = run("plan", model, "--vram", "8", "--ram", "16", "--out", out)
    assert r.exit_code == 0, r.output
    return out


# ---------------------------------------------------------------------------- 1. export injection

def test_general_name_cannot_inject_into_the_script(evil_plan, tmp_path):
    # once: general.name went into a '# model: ...' comment unescaped; the newline ran `touch PWNED`
    script = tmp_path / "run.sh"
    r = run("export", "--plan", evil_plan, "--out", script)
    assert r.exit_code == 0, r.output
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "LLAMA_SERVER": "true"}
    done = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert list(work.iterdir()) == []
    lines = script.read_text().splitlines()
    head = lines[:lines.index("set -euo pipefail")]
    assert all(line.startswith("#") for line in head)       # the name stayed inside its comment line


@pytest.mark.parametrize("edit, path", [
    # hand-edited plan files: refused with exit 4 and the JSON path of the bad field
    (lambda d: d["plan"]["run"].__setitem__("ctx", "4096\ntouch PWNED"), "$.plan.run.ctx"),
    (lambda d: d["plan"].__setitem__("engine", "ik; touch PWNED"), "$.plan.engine"),
    (lambda d: d["plan"]["run"].__setitem__("type_k", "q8_0 -x"), "$.plan.run.type_k"),
    (lambda d: d["plan"]["devices"].__setitem__("output.weight", "CUDA0;id"), "$.plan.devices.output.weight"),
    (lambda d: d["plan"].__setitem__("layer_device", ["CPU"] * 100), "$.plan.layer_device"),
    (lambda d: d["plan"].__setitem__("model_source", "http://127.0.0.1:9/x.gguf"), "$.plan.model_source"),
    (lambda d: d["plan"]["run"].__setitem__("threads", -4), "$.plan.run.threads"),
    (lambda d: d.__setitem__("format", "other"), "$.format"),
    (lambda d: d["plan"].__setitem__("extra", 1), "$.plan.extra"),
])
def test_hand_edited_plan_files_exit_4_with_the_json_path(evil_plan, tmp_path, edit, path):
    doc = json.loads(evil_plan.read_text())
    edit(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    r = run("export", "--plan", bad, "--out", tmp_path / "run.sh")
    assert r.exit_code == 4, r.output
    assert one_line(r) and path in r.output
    assert not (tmp_path / "run.sh").exists()


def test_quantize_output_name_is_not_steerable_by_the_header(tmp_path):
    # general.name with '/' or '..' must not pick the folder llama-quantize writes into
    model = _evil_gguf(tmp_path, name="../../../etc/cron.d/x")
    built = run("plan", "qwen3-235b-a22b", "--vram", "24", "--ram", "96", "--json")
    assert built.exit_code == 0
    r = run("plan", model, "--vram", "8", "--ram", "16", "--json")
    doc = json.loads(r.stdout)
    out = doc["quantize_command"].split()[-2]
    assert "/etc/" not in out and ".." not in out


# ---------------------------------------------------------------------------- 2. --force

def test_force_refuses_special_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run("plan", "--vram", "24", "--ram", "96", "--out", fifo, "--force")
    assert r.exit_code == 2 and one_line(r) and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    r = run("plan", "--vram", "24", "--ram", "96", "--out", "/dev/null", "--force")
    assert r.exit_code == 2 and one_line(r)


def test_force_keeps_the_mode_of_the_replaced_file(evil_plan, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("old")
    os.chmod(script, 0o700)
    r = run("export", "--plan", evil_plan, "--out", script, "--force")
    assert r.exit_code == 0 and stat.S_IMODE(os.stat(script).st_mode) == 0o700


# ---------------------------------------------------------------------------- 3. options

@pytest.mark.parametrize("args, option", [
    (["plan", "--vram", "2", "--ram", "96", "--gpu-margin", "-100"], "--gpu-margin"),
    (["plan", "--vram", "24", "--ram", "96", "--gpu-margin", "nan"], "--gpu-margin"),
    (["plan", "--vram", "24", "--ram", "96", "--os-reserve", "inf"], "--os-reserve"),
    (["plan", "--vram", "24", "--ram", "1e30"], "--ram"),
    (["plan", "--vram", "1e30", "--ram", "96"], "--vram"),
    (["plan", "--vram", "24", "--ram", "96", "--ub", "-1"], "--ub"),
    (["plan", "--vram", "24", "--ram", "96", "--amb", "0"], "--amb"),
    (["plan", "--vram", "24", "--ram", "96", "--threads", "-4"], "--threads"),
    (["plan", "--vram", "24", "--ram", "96", "--ctx", "0"], "--ctx"),
    (["plan", "--vram", "24", "--ram", "96", "--ctx", "99999999999"], "--ctx"),
    (["plan", "--vram", "24", "--ram", "96", "--pareto", "100000"], "--pareto"),
    (["plan", "--vram", "24", "--ram", "96", "--max-size", "0"], "--max-size"),
    (["plan", "--vram", "24", "--ram", "96", "--min-tg", "-3"], "--min-tg"),
    (["plan", "--vram", "24", "--ram", "96", "--quality-slack", "nan"], "--quality-slack"),
    (["export", "--plan", "PLAN", "--out", "OUT", "--port", "0"], "--port"),
])
def test_option_values_are_checked_at_the_boundary(args, option, tmp_path, evil_plan):
    args = [str(evil_plan) if a == "PLAN" else str(tmp_path / "x.sh") if a == "OUT" else a for a in args]
    t0 = time.process_time()
    r = run(*args)
    assert r.exit_code == 2 and one_line(r) and option in r.output, r.output
    assert time.process_time() - t0 < 10


@pytest.mark.parametrize("flags, word", [
    (["-ngl", "-5"], "-ngl"), (["-ts", "nan,1"], "-ts"), (["-ts", "-1,2"], "-ts"), (["-ncmoe", "-3"], "-ncmoe"),
    (["-c", "-1"], "-c"),
])
def test_check_rejects_impossible_server_flags(flags, word):
    r = run("check", "qwen3-235b-a22b", "--base-type", "IQ3_K", "--vram", "24", "--ram", "96", "--",
            "llama-server", "-m", "x.gguf", *flags)
    assert r.exit_code == 2 and one_line(r) and word in r.output, r.output


def test_check_warns_on_unknown_flags():
    r = run("check", "qwen3-235b-a22b", "--base-type", "IQ3_K", "--vram", "24", "--ram", "96", "--",
            "llama-server", "-m", "x.gguf", "-c", "4096", "-ngl", "99", "--frobnicate")
    assert "--frobnicate" in r.output


def test_first_check_help_example_works_as_printed():
    r = run("check", "--help")
    example = next(line.strip() for line in r.output.splitlines() if line.strip().startswith("gguf-planner check"))
    import shlex

    argv = shlex.split(example)[1:]
    r = run(*argv)
    assert "unknown model" not in r.output and r.exit_code in (0, 2), r.output


# ---------------------------------------------------------------------------- 6. regexes

def test_catastrophic_custom_q_fails_fast_naming_the_rule():
    t0 = time.process_time()
    r = run("footprint", "qwen3-235b-a22b", "--custom-q", r"^(\w+\.?)+x$=q8_0")
    assert r.exit_code == 2 and one_line(r) and r"^(\w+\.?)+x$" in r.output
    assert time.process_time() - t0 < 5


# ---------------------------------------------------------------------------- 8. environment

def _cli(*args, env=None, stdout=None, pre: str = "") -> subprocess.CompletedProcess:
    cmd = " ".join([pre, f'"{sys.executable}" -m planner', *[f"'{a}'" for a in args]]).strip()
    return subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=stdout is None, stdout=stdout,
                          stderr=subprocess.PIPE if stdout is not None else None, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_ascii_output_encoding(tmp_path):
    model = _evil_gguf(tmp_path, name="Mödel ✓")
    for extra in ([], ["--json"]):
        r = _cli("inspect", str(model), *extra, env={"PYTHONIOENCODING": "ascii"})
        assert r.returncode == 0, r.stderr


def test_stdout_on_a_full_disk_is_one_line():
    with open("/dev/full", "w") as full:
        r = _cli("inspect", "qwen3-235b-a22b", stdout=full)
    assert r.returncode not in (0, 70) and r.stderr.count("\n") == 1 and "internal" not in r.stderr


def test_closed_stdout_is_one_line():
    r = _cli("inspect", "qwen3-235b-a22b", pre="exec >&-;")
    assert r.returncode not in (0, 70) and "internal" not in r.stderr


def test_missing_output_folder_exit_2(tmp_path):
    r = run("plan", "--vram", "24", "--ram", "96", "--out", tmp_path / "nodir" / "plan.json")
    assert r.exit_code == 2 and one_line(r)


def test_file_size_limit_is_one_line(tmp_path):
    r = _cli("plan", "--vram", "24", "--ram", "96", "--out", str(tmp_path / "p.json"), pre="ulimit -f 1;")
    assert r.returncode == 3 and "internal" not in r.stderr and list(tmp_path.iterdir()) == []


def test_non_utf8_model_path(tmp_path):
    odd = os.fsencode(str(tmp_path)) + b"/\xff\xfe.gguf"
    with open(odd, "wb") as f:
        f.write((IK / "tiny-a-bf16.gguf").read_bytes())
    r = subprocess.run([sys.executable, "-m", "planner", "inspect", odd, "--json"], cwd=ROOT, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------- 5. bounded output

def test_inspect_table_of_many_roles_is_capped(tmp_path):
    # 50,000 distinct roles once took a minute as a table (4-6 s as --json); the table shows the largest 200
    kv = {"general.architecture": "llama", "llama.block_count": 1, "llama.embedding_length": 64,
          "llama.attention.head_count": 2, "llama.feed_forward_length": 128}
    tensors = [("token_embd.weight", (64, 100), "f16"), ("blk.0.attn_norm.weight", (64,), "f32")] + [
        (f"r{j}.weight", (64,), "f32") for j in range(3000)]
    path = tmp_path / "roles.gguf"
    path.write_bytes(gguf_bytes(kv, tensors))
    t0 = time.process_time()
    r = run("inspect", path)
    assert r.exit_code == 0, r.output
    assert "the 200 largest of 3,002 roles; --json lists all" in r.output and time.process_time() - t0 < 20
    assert len(json.loads(run("inspect", path, "--json").stdout)["roles"]) == 3002
