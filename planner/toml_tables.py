"""A data file of ``[group.name]`` tables read one table at a time: ``engine_graphs.toml`` holds ~26 compute-graph
templates (225 kB, ~0.09 CPU s to parse whole on the 2-core CI machine) of which a plan replays one or two.

:func:`two_level_tables` cuts the text at its table headers and parses a table's text on first use; the result
equals ``tomllib.loads`` of the whole text (tests/test_toml_tables.py checks every shipped table).  A file this
cut could misread (a header of another depth, an array of tables, a key before the first table, a multi-line
string) is parsed whole instead.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["two_level_tables"]

_HEADER = re.compile(r"\[([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\][ \t]*(?:#.*)?\n?")
# a line at column 0 that goes on an array value (`["name", ...],`) and could not be a header with quoted keys
_ROW = re.compile(r'\["')
_QUOTED_HEADER = re.compile(r'\[\[?[ \t]*"[^"]*"(?:[ \t]*\.[ \t]*(?:"[^"]*"|[A-Za-z0-9_-]+))*[ \t]*\]\]?[ \t]*(?:#.*)?\n?')
_PREAMBLE = re.compile(r"[ \t]*(?:#.*)?\n?")      # blank or comment


class _Tables(Mapping[str, Any]):
    """One group's tables by name, each parsed when first read (membership and iteration parse nothing)."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = texts
        self._parsed: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._parsed:
            doc = tomllib.loads(self._texts[name])
            self._parsed[name] = next(iter(next(iter(doc.values())).values()))
        return self._parsed[name]

    def __contains__(self, name: object) -> bool:
        return name in self._texts

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)


def _cut(text: str) -> dict[str, dict[str, str]] | None:
    """The text of each ``[group.name]`` table (its header included), or None where cutting could misread."""
    if '"""' in text or "'''" in text:
        return None
    out: dict[str, dict[str, list[str]]] = {}
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith("[") and not (_ROW.match(line) and not _QUOTED_HEADER.fullmatch(line)):
            m = _HEADER.fullmatch(line)
            if m is None or m.group(2) in out.get(m.group(1), {}):
                return None         # another kind of header, or a table twice (tomllib names the error)
            current = [line]
            out.setdefault(m.group(1), {})[m.group(2)] = current
        elif current is not None:
            current.append(line)
        elif not _PREAMBLE.fullmatch(line):
            return None
    return {g: {n: "".join(lines) for n, lines in tables.items()} for g, tables in out.items()}


def two_level_tables(text: str) -> dict[str, Mapping[str, Any]]:
    """``tomllib.loads(text)`` for a file of ``[group.name]`` tables, each table parsed on first read.

    Raises:
        tomllib.TOMLDecodeError: the text is not TOML (a cut table's text: when that table is read).
    """
    cut = _cut(text)
    if cut is None:
        return tomllib.loads(text)
    return {group: _Tables(texts) for group, texts in cut.items()}
