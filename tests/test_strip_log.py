"""tools/strip_log.py: one filter module for both harnesses, one named line set per kind of committed fixture.

The independent check is the committed fixtures themselves: each was cut from a full engine log by the filter
that is now its named configuration (tests/fixtures/engine/*.log by the engine harness's, tests/fixtures/rpc/*.log
by the RPC harness's client and --server filters, tests/fixtures/kv_kinds/*.log by the KV harness's and
tests/fixtures/kv_kinds_ik/*.log by its ik side's), so filtering a fixture again must give it back line for line.
A filter that dropped a line some fixture kept fails here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def _strip_log():
    spec = importlib.util.spec_from_file_location("strip_log", ROOT / "tools" / "strip_log.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases() -> list[tuple[Path, str]]:
    out = [(p, "harness") for p in sorted((FIXTURES / "engine").glob("*.log"))]
    for p in sorted((FIXTURES / "rpc").glob("*.log")):
        out.append((p, "rpc-server" if re.search(r"-server\d+\.log$", p.name) else "rpc-client"))
    out += [(p, "kv") for p in sorted((FIXTURES / "kv_kinds").glob("*.log"))]
    out += [(p, "kv-ik") for p in sorted((FIXTURES / "kv_kinds_ik").glob("*.log"))]
    return out


CASES = _cases()


def test_every_kind_of_fixture_is_covered():
    kinds = {kind for _, kind in CASES}
    assert kinds == {"harness", "rpc-client", "rpc-server", "kv", "kv-ik"}
    assert len(CASES) >= 30


@pytest.mark.parametrize(("path", "kind"), CASES, ids=[f"{k}:{p.name}" for p, k in CASES])
def test_fixture_is_a_fixed_point_of_its_filter(path: Path, kind: str):
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    assert lines, path
    assert list(_strip_log().strip(lines, kind)) == lines


def test_filters_differ_where_the_fixtures_need_it():
    """The three line sets are not interchangeable: the server fixtures hold lines the client filter drops, and the
    harness fixtures lines the RPC client filter drops (why they stay three named configurations)."""
    mod = _strip_log()
    server = [line for p, k in CASES if k == "rpc-server" for line in p.read_text().splitlines(keepends=True)]
    harness = [line for p, k in CASES if k == "harness" for line in p.read_text().splitlines(keepends=True)]
    assert len(list(mod.strip(server, "rpc-client"))) < len(server)
    assert len(list(mod.strip(harness, "rpc-client"))) < len(harness)


def test_usage_error(capsys):
    assert _strip_log().main(["--filter", "nope", "x.log"]) == 2
    assert "harness" in capsys.readouterr().err
