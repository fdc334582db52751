"""Strict reading of the user-editable TOML files (hardware profiles, cluster files): one reader and one checker,
so every such file fails the same way: a :class:`~planner.errors.ProfileError` that names the file and the dotted
key (``remote[0].link.latency_us``), never a ``KeyError`` or a silently ignored typo.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from planner.errors import ProfileError

# Value kinds a schema may name: table -> key -> (kind, required).
TYPE_WORDS = {"int": "an integer", "num": "a number", "str": "a string", "bool": "true or false",
              "[str]": "a list of strings", "[num]": "a list of numbers", "str|table": "a preset name or a table"}


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "num":
        return _is_num(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "[num]":
        return isinstance(value, list) and all(_is_num(v) for v in value)
    if kind == "str|table":
        return isinstance(value, (str, dict))
    raise ValueError(f"unknown schema kind {kind!r}")


def find_toml_file(name_or_path: str, folder: Path | Traversable, what: str) -> Path | Traversable | None:
    """A user's ``NAME`` (``folder/NAME.toml``) or ``PATH`` (it has a ``/``, ends in ``.toml`` or is a file); None
    for a NAME that ``folder`` does not have (the caller says which names it has).

    Raises:
        ProfileError: a PATH that is not a file ("<what> not found").
    """
    as_path = Path(name_or_path).expanduser()
    if os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(".toml") or as_path.is_file():
        if not as_path.is_file():
            raise ProfileError(f"{what} not found", path=name_or_path)
        return as_path
    candidate = folder / f"{name_or_path}.toml"
    return candidate if candidate.is_file() else None


def read_toml_file(path: str | os.PathLike[str] | Traversable, what: str) -> dict[str, Any]:
    """The parsed TOML of a user file; ``what`` names it in the error ("profile", "cluster file").

    Raises:
        ProfileError: unreadable, not UTF-8, or not valid TOML.
    """
    where = str(path)
    source = path if isinstance(path, (Path, Traversable)) else Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        detail = str(exc).strip()
        raise ProfileError(f"cannot read {what} ({type(exc).__name__}{': ' + detail if detail else ''})",
                           path=where) from exc
    except UnicodeDecodeError as exc:
        raise ProfileError("not UTF-8 text", path=where) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"not valid TOML: {exc}", path=where) from exc


class TomlChecker:
    """Strict reads from one parsed TOML file; every complaint names the file and the dotted key.

    ``nonnegative_gib``: numbers under keys ending in ``_gib`` (sizes) must not be negative (hardware profiles).
    """

    def __init__(self, path: str | os.PathLike[str] | Traversable, *, nonnegative_gib: bool = False) -> None:
        self.path = str(path)
        self.nonnegative_gib = nonnegative_gib

    def fail(self, key: str, message: str, hint: str = "") -> ProfileError:
        return ProfileError(message, path=self.path, key=key, hint=hint)

    def table(self, where: str, data: Any, schema: Mapping[str, tuple[str, bool]]) -> dict[str, Any]:
        """The keys of table ``where`` checked against ``schema``: no unknown key, every required key, each value of
        its kind; numbers finite and returned as float."""
        if not isinstance(data, dict):
            raise self.fail(where, "must be a table")
        for key in data:
            if key not in schema:
                raise self.fail(f"{where}.{key}", "unknown key", hint="known keys: " + ", ".join(schema))
        out: dict[str, Any] = {}
        for key, (kind, required) in schema.items():
            dotted = f"{where}.{key}"
            if key not in data:
                if required:
                    raise self.fail(dotted, "missing required key")
                continue
            value = data[key]
            if not _has_kind(value, kind):
                raise self.fail(dotted, f"must be {TYPE_WORDS[kind]}, not {type(value).__name__} {value!r}")
            if kind == "num":
                if not math.isfinite(value):
                    raise self.fail(dotted, f"must be finite, not {value!r}")
                value = float(value)
                if self.nonnegative_gib and key.endswith("_gib") and value < 0:
                    raise self.fail(dotted, f"negative size {value:g} GiB")
            if kind == "[num]":
                if not all(math.isfinite(v) for v in value):
                    raise self.fail(dotted, f"must be finite numbers, not {value!r}")
                value = [float(v) for v in value]
            out[key] = value
        return out

    def positive(self, where: str, values: Mapping[str, Any], *keys: str) -> None:
        for key in keys:
            if key in values and values[key] <= 0:
                raise self.fail(f"{where}.{key}", f"must be positive, not {values[key]!r}")

    def choice(self, dotted: str, value: Any, allowed: Sequence[Any]) -> None:
        if value not in allowed:
            raise self.fail(dotted, f"{value!r} is not one of {', '.join(map(str, allowed))}")
