"""Packaging: a wheel built from this checkout, installed into a fresh virtual environment, ships the hardware
profiles as package data and the CLI finds them (no data-files under sys.prefix, which a --user install misses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.wheel
def test_wheel_installs_and_finds_the_shipped_profiles(tmp_path):
    shipped = sorted(p.stem for p in (ROOT / "planner" / "data" / "hwprofiles").glob("*.toml"))
    assert shipped
    # build from a clean copy: setuptools' in-tree build/ folder keeps deleted modules and would ship them
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "planner", src / "planner", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    # no build isolation and no index: setuptools of this interpreter, nothing downloaded
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(src)], check=True, env=env, cwd=tmp_path, timeout=120)
    wheel = next(dist.glob("gguf_planner-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
                    str(wheel)], check=True, env=env, cwd=tmp_path, timeout=120)
    # run from an empty folder: the installed package, not this checkout, must answer
    probe = ("import planner, json; from planner.hardware import profile_names, load_profile; "
             "print(json.dumps([planner.__file__, profile_names(), load_profile('rtx3090ti-9950x-96g').name]))")
    out = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in env.items() if k != "PYTHONPATH"}, timeout=120).stdout
    import json

    where, names, loaded = json.loads(out)
    assert str(venv) in where and str(ROOT) not in where
    assert names == shipped and loaded == "rtx3090ti-9950x-96g"
    cli = subprocess.run([str(venv / "bin" / "gguf-planner"), "profiles", "--json"], check=True,
                         capture_output=True, text=True, cwd=tmp_path, timeout=120).stdout
    assert sorted(p["name"] for p in json.loads(cli)) == shipped
