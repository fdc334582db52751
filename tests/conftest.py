"""Shared test fixtures: isolation from the user's environment, paths to the ik fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# imported before any test module loads numpy (json, pathlib and pytest do not), so planner/__init__.py's one BLAS
# thread holds in the tests as in the CLI: the plans do not depend on the machine's core count
import planner  # noqa: F401

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


# ---------------------------------------------------------------------------- make_gguf
# Writes GGUF files with struct (layout: ggml gguf.cpp), independent of planner.gguf_header.
# kv: a mapping key -> value (types inferred: bool, int -> u32, float -> f32, str, list of str /
# int / float -> array) or a sequence of (key, gguf_type, value[, elem_type]) for exact types.
# tensors: (name, ne_shape, type_name_or_id[, offset]); offsets default to the running padded sum.

import struct as _struct  # noqa: E402

_GGUF_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _gguf_str(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return _struct.pack("<Q", len(b)) + b


def _gguf_infer(value) -> tuple:
    if isinstance(value, bool):
        return 7, value, None
    if isinstance(value, int):
        return 4, value, None
    if isinstance(value, float):
        return 6, value, None
    if isinstance(value, (str, bytes)):
        return 8, value, None
    items = list(value)
    elem = _gguf_infer(items[0])[0] if items else 4
    return 9, items, elem


def _gguf_value(vtype: int, value, elem=None) -> bytes:
    if vtype == 8:
        return _gguf_str(value)
    if vtype == 9:
        body = b"".join(_gguf_value(elem, v) for v in value)
        return _struct.pack("<iQ", elem, len(value)) + body
    return _struct.pack("<" + _GGUF_FMT[vtype], value)


def gguf_bytes(kv=(), tensors=(), *, version: int = 3, magic: bytes = b"GGUF", alignment: int = 32,
               n_kv: int | None = None, n_tensors: int | None = None, data: bool = True) -> bytes:
    """A complete GGUF file (zero tensor data when ``data``) as bytes.

    ``alignment`` only pads; add a ``general.alignment`` kv yourself to declare it.
    ``n_kv``/``n_tensors`` override the counts written in the fixed header (hostile files).
    """
    from planner.quants import catalogue, pad

    items = []
    for entry in (kv.items() if hasattr(kv, "items") else kv):
        if len(entry) == 2:
            items.append((entry[0], *_gguf_infer(entry[1])))
        else:
            items.append((entry[0], entry[1], entry[2], entry[3] if len(entry) > 3 else None))
    out = [magic, _struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(items) if n_kv is None else n_kv)]
    for key, vtype, value, elem in items:
        out.append(_gguf_str(key) + _struct.pack("<i", vtype) + _gguf_value(vtype, value, elem))
    running = 0
    for t in tensors:
        name, shape, typ = t[0], tuple(t[1]), t[2]
        qt = catalogue().by_id(typ) if isinstance(typ, int) else catalogue().get(typ)
        offset = t[3] if len(t) > 3 else running
        out.append(_gguf_str(name) + _struct.pack(f"<I{len(shape)}QiQ", len(shape), *shape, qt.id, offset))
        running += pad(qt.tensor_bytes(shape), alignment)
    head = b"".join(out)
    if not data:
        return head
    return head + bytes(pad(len(head), alignment) - len(head) + running)


def make_gguf(tmp_path, kv=(), tensors=(), *, name: str = "model.gguf", **options):
    """Write :func:`gguf_bytes` to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes(kv, tensors, **options))
    return path
