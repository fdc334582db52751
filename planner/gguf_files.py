"""GGUF locations: local paths, URLs and split models (``-00001-of-0000N.gguf``) read shard by shard and
merged into one :class:`~planner.gguf_header.GGUFHeader`.

Split metadata (``split.no``, ``split.count``, ``split.tensors.count``) as llama.cpp's ``gguf-split`` writes it
(ggml-org/llama.cpp ``tools/gguf-split/gguf-split.cpp``); remote shards go through :mod:`planner.remote`.
"""

from __future__ import annotations

from pathlib import Path

from planner.errors import (
    GGUFFormatError,
    RemoteReadError,
    UnknownModelError,
)

from planner.gguf_header import SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS, GGUFHeader, _SPLIT_NAME, parse_gguf
from planner.gguf_source import LocalFile, Source
from planner.gguf_values import _INT_TYPES

# ---------------------------------------------------------------------------- split models and entry point

def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "hf://"))


def _open(location: str) -> Source:
    if _is_url(location):
        from planner.remote import HTTPRangeSource  # only remote reads pay for urllib/huggingface_hub
        return HTTPRangeSource(location)
    return LocalFile(location)


def _parse_location(location: str, *, check_size: bool, shard: int, missing: str = "") -> GGUFHeader:
    """Open and parse one file; ``missing`` turns 'not found' into a GGUFFormatError about the split."""
    try:
        src = _open(location)
        try:
            return parse_gguf(src, check_size=check_size, shard=shard)
        finally:
            close = getattr(src, "close", None)
            if close is not None:
                close()
    except FileNotFoundError as exc:
        if missing:
            raise GGUFFormatError(missing, source=location, field=SPLIT_COUNT) from exc
        raise UnknownModelError(f"no such file: {location}", hint="check the path") from exc
    except IsADirectoryError as exc:
        raise GGUFFormatError(f"{location} is a directory, not a GGUF file", source=location) from exc
    except RemoteReadError as exc:
        if missing and getattr(exc, "status", None) == 404:
            raise GGUFFormatError(missing, source=location, field=SPLIT_COUNT) from exc
        raise
    except OSError as exc:
        raise GGUFFormatError(f"cannot read {location}: {exc.strerror or exc}", source=location) from exc


def split_name(location: str) -> tuple[str, int, int, str] | None:
    """``(prefix, no, count, query)`` for ``PREFIX-0000N-of-0000M.gguf[?query]`` (1-based), else None."""
    path, sep, query = location.partition("?") if _is_url(location) else (location, "", "")
    m = _SPLIT_NAME.match(path)
    if not m:
        return None
    return m.group("prefix"), int(m.group("no")), int(m.group("count")), sep + query


def shard_location(prefix: str, no: int, count: int, query: str = "") -> str:
    """The llama.cpp split file name ``%s-%05d-of-%05d.gguf`` (``no`` is 1-based)."""
    return f"{prefix}-{no:05d}-of-{count:05d}.gguf{query}"


def _split_int(head: GGUFHeader, key: str, location: str) -> int | None:
    entry = head.entry(key)
    if entry is None:
        return None
    if entry.vtype not in _INT_TYPES:
        raise GGUFFormatError(f"{key} must be an integer, not {entry.type_name}", source=location, field=key)
    return int(entry.value)


def read_gguf(path_or_url: str | Path, *, check_size: bool = True) -> GGUFHeader:
    """Read a model's header from a local path, a split model's first shard, or a URL.

    URLs: ``http(s)://...`` (Range requests) and ``hf://owner/repo/path.gguf``.  For a file named
    ``NAME-00001-of-0000N.gguf`` the other shards are found by name next to it and merged.

    Raises:
        GGUFFormatError: malformed header, a non-first shard, a missing shard or inconsistent split keys.
        FileSizeMismatchError: a file's size differs from what its header implies (``check_size``).
        UnknownQuantTypeError: a tensor type id nobody knows.
        RemoteReadError: an HTTP read failed.
        UnknownModelError: the local file does not exist.
    """
    location = str(path_or_url)
    named = split_name(location)
    if named and named[1] != 1:
        first = shard_location(named[0], 1, named[2], named[3])
        raise GGUFFormatError(f"{location} is shard {named[1]} of {named[2]} of a split model",
                              source=location, field=SPLIT_NO, hint=f"pass the first shard: {first}")
    head = _parse_location(location, check_size=check_size, shard=0)
    count = _split_int(head, SPLIT_COUNT, location)
    no = _split_int(head, SPLIT_NO, location)
    if count is None:
        if named and named[2] > 1:
            raise GGUFFormatError(f"file is named as shard 1 of {named[2]} but has no {SPLIT_COUNT} key",
                                  source=location, field=SPLIT_COUNT)
        return head
    if no not in (None, 0):
        raise GGUFFormatError(f"{location} is shard {no + 1} of {count} (split.no = {no})",
                              source=location, field=SPLIT_NO, hint="pass the first shard (split.no = 0)")
    if count < 1:
        raise GGUFFormatError(f"split.count is {count}", source=location, field=SPLIT_COUNT)
    if count == 1:
        return head
    if not named:
        raise GGUFFormatError(f"split.count is {count} but the file name does not end in "
                              f"-00001-of-{count:05d}.gguf, so the other shards cannot be found",
                              source=location, field=SPLIT_COUNT,
                              hint="keep the names llama-gguf-split wrote")
    if named[2] != count:
        raise GGUFFormatError(f"file name says {named[2]} shards but split.count is {count}",
                              source=location, field=SPLIT_COUNT)
    return _merge_split(head, named[0], count, named[3], check_size=check_size)


def _merge_split(first: GGUFHeader, prefix: str, count: int, query: str, *, check_size: bool) -> GGUFHeader:
    heads = [first]
    for no in range(1, count):
        loc = shard_location(prefix, no + 1, count, query)
        head = _parse_location(loc, check_size=check_size, shard=no,
                               missing=f"shard {no + 1} of {count} is missing: {loc}")
        got_no, got_count = _split_int(head, SPLIT_NO, loc), _split_int(head, SPLIT_COUNT, loc)
        if got_no != no or got_count != count:
            raise GGUFFormatError(f"shard file {no + 1} of {count} says split.no = {got_no}, "
                                  f"split.count = {got_count}", source=loc, field=SPLIT_NO)
        heads.append(head)
    total = _split_int(first, SPLIT_TENSORS, first.source)
    found = sum(len(h.tensors) for h in heads)
    if total is not None and total != found:
        raise GGUFFormatError(f"split.tensors.count is {total} but the {count} shards hold {found} tensors",
                              source=first.source, field=SPLIT_TENSORS)
    tensors = tuple(t for h in heads for t in h.tensors)
    names: set[str] = set()
    for t in tensors:
        if t.name in names:
            raise GGUFFormatError(f"tensor {t.name!r} appears in more than one shard",
                                  source=heads[t.shard].source, field=f"tensor {t.name}")
        names.add(t.name)
    return GGUFHeader(first.source, first.kv, tensors, tuple(h.shards[0] for h in heads))
