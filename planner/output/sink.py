"""The shared printing helpers of the output sink: results to stdout as rich tables or JSON, progress and notes
to stderr, and the size and percentage formats every renderer uses.

``to_jsonable`` turns any dataclass tree into plain JSON with a stable key order (field order, then sorted dict
keys).  rich is imported only inside this package's functions, never at import.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.units import GIB, MIB

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod

MAX_TABLE_ROWS = 200   # rows of a table in the text output; --json has them all


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, tuples, enums and paths into JSON-ready values (stable order)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("json") is False:
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("json") == "omit_default" and value == f.default:
                continue                      # an option left at its default leaves the JSON as it was
            out[f.name] = to_jsonable(value)
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


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)


def note(text: str) -> None:
    """Progress / informational line on stderr (never mixes with --json stdout)."""
    print(text, file=sys.stderr)


def print_json(obj: Any) -> None:
    """JSON on stdout; \\u escapes when stdout's encoding is not UTF-8 (PYTHONIOENCODING=ascii), so the
    document stays valid JSON whatever the terminal."""
    encoding = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "")
    if encoding == "utf8":
        sys.stdout.write(dumps(obj))
    else:
        sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=True) + "\n")


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, justify: Sequence[JustifyMethod] | None = None, caption: str | None = None) -> None:
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


def pct(gap: float) -> str:
    """A solver gap as a percentage: below 0.1 % with two significant digits, so a gap is never rounded onto the
    0.01 % limits it is compared with (0.0060 % and 0.0112 % both read "0.01%" with two decimals) nor to 0.00 %."""
    if 0 < gap < 1e-3:
        return f"{gap * 100:#.2g}%"
    return f"{gap:.2%}"
