"""Shared test fixtures: isolation from the user's environment, paths to the ik fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
IK = FIXTURES / "ik"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """No test reads the real HOME, colours or terminal width."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("GGUF_PLANNER_DEBUG", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="session")
def ik_manifest() -> dict:
    return json.loads((IK / "manifest.json").read_text())


@pytest.fixture
def ik_dir() -> Path:
    return IK
