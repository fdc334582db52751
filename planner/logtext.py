"""Engine output as text: reading a log file safely (size cap, binary refused, undecodable bytes replaced), the
line prefixes the engines add, and the number spellings every log parser matches."""

from __future__ import annotations

import re
from pathlib import Path

from planner.errors import LogFormatError

MAX_LOG_BYTES = 64 << 20    # a load log with every tensor override of a 1T model is a few MB

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_PM = r"\s*(?:±|\+/-)\s*"


def read_log(path: str | Path) -> str:
    """Read a log file as text (UTF-8, undecodable bytes replaced).

    Raises:
        LogFormatError: unreadable, too large, or binary.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_LOG_BYTES:
            raise LogFormatError(f"{p}: {size:,} bytes is larger than a log ({MAX_LOG_BYTES >> 20} MiB limit)")
        data = p.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    return _text(data, str(p))


def _text(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        return data
    if b"\x00" in data[:65536]:
        raise LogFormatError(f"{source}: binary data, not engine text output",
                             hint="pass the text that llama-server/llama-sweep-bench printed")
    return data.decode("utf-8", errors="replace")


def _strip_prefix(line: str) -> str:
    """Drop mainline's ``0.00.284.342 I `` timestamp/level prefix (``-lv``/log-prefix output) and ``> `` quotes."""
    line = line.rstrip("\r\n")
    line = re.sub(r"^\s*(?:>\s*)+", "", line)
    return re.sub(r"^\d+\.\d+\.\d+\.\d+\s+[A-Z]\s+", "", line)
