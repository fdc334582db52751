"""The one output sink: results to stdout as rich tables or JSON, progress and notes to stderr.

Library stages return frozen dataclasses; commands hand them here.  ``to_jsonable`` turns any
dataclass tree into plain JSON with a stable key order (field order, then sorted dict keys).
rich is imported only in this module.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

GIB = 1 << 30
MIB = 1 << 20


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, tuples, enums and paths into JSON-ready values (stable order)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("json") is False:
                continue
            out[f.name] = to_jsonable(getattr(obj, f.name))
        return out
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return round(obj, 6)
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n"


def gib(n_bytes: int | float, digits: int = 3) -> str:
    return f"{n_bytes / GIB:.{digits}f} GiB"


def mib(n_bytes: int | float, digits: int = 1) -> str:
    return f"{n_bytes / MIB:.{digits}f} MiB"


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)


def note(text: str) -> None:
    """Progress / informational line on stderr (never mixes with --json stdout)."""
    print(text, file=sys.stderr)


def print_json(obj: Any) -> None:
    sys.stdout.write(dumps(obj))


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, justify: Sequence[str] | None = None, caption: str | None = None) -> None:
    """Render one table to stdout."""
    from rich.table import Table

    table = Table(title=title, caption=caption, show_lines=False, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify=(justify[i] if justify else "left"), no_wrap=False)
    for row in rows:
        table.add_row(*[("" if v is None else str(v)) for v in row])
    _console().print(table)


def print_kv(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    """A two-column key/value table."""
    print_table(title, ["", ""], [(k, v) for k, v in pairs])


Renderer = Callable[[Any], None]


def emit(result: Any, *, as_json: bool, render: Renderer) -> None:
    """Send a command's result to stdout, as JSON or through its renderer."""
    if as_json:
        print_json(result)
    else:
        render(result)
