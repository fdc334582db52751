"""The one way text from an input reaches a shell script or a file name.

Values in an emitted script (a model name from ``general.name``, a path, a regex, a number from a plan
file) are untrusted: :func:`shell_quote` renders any of them as one bash word that means exactly the
value, can never end the line, close a quote or expand (``$(...)``, backticks, ``${...}``, globs), and is
used for arguments and for the text in ``#`` comment lines alike.  :func:`safe_filename` derives a file
name from a model name that cannot leave the folder it is joined to.
"""

from __future__ import annotations

import re

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_FILENAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def shell_quote(value: object) -> str:
    """``value`` as a single bash word with no line break in it.

    Plain words stay as they are (``-ngl``, ``/models/m.gguf``, ``blk\\.0``); printable ASCII goes in
    single quotes (``'`` written as ``'\\''``); anything with control or non-ASCII characters becomes an
    ANSI-C ``$'...'`` string whose every unusual byte is a ``\\xHH`` escape of its UTF-8 encoding.

    Raises:
        ValueError: the value holds a NUL, which no shell word can carry (validate such input earlier).
    """
    text = str(value)
    if "\x00" in text:
        raise ValueError("a NUL character cannot be part of a shell word")
    if text and _SAFE_WORD.fullmatch(text) and not text.startswith(("=", "~")):
        return text
    if _PRINTABLE.fullmatch(text):
        return "'" + text.replace("'", "'\\''") + "'"
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        ch = chr(byte)
        if 0x20 <= byte <= 0x7E and ch not in "\\'":
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return "$'" + "".join(out) + "'"


def comment_line(template: str, *values: object) -> str:
    """A ``# `` comment line: our own ``template`` with every ``{}`` filled by :func:`shell_quote` of a value,
    so no value can end the line (bash ends a comment only at a newline).

    Raises:
        ValueError: the template itself holds a control character (a bug in the caller).
    """
    if not _PRINTABLE.fullmatch(template):
        raise ValueError(f"comment template {template!r} is not one line of printable ASCII")
    return "# " + template.format(*(shell_quote(v) for v in values))


def safe_filename(name: str, *, default: str = "model", max_len: int = 96) -> str:
    """A file name (no folder) from ``name``: letters, digits, ``.``, ``_`` and ``-`` only, no leading
    dot or dash, at most ``max_len`` characters; ``default`` when nothing is left.

    ``../../etc/x``, ``/abs/path`` and ``a\\nb`` all become plain names in the current folder.
    """
    cleaned = _FILENAME_BAD.sub("-", name).strip(".-")
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:max_len].rstrip(".-")
    return cleaned or default


__all__ = ["comment_line", "safe_filename", "shell_quote"]
