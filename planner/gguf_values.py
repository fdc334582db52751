"""Bounded reads of GGUF values: a cursor over a :class:`~planner.gguf_source.Source` that checks every length
against the bytes left before it allocates, the scalar, string and array value types of ``gguf.h``, and the
metadata key/value pairs.  Large arrays and strings are stepped over (:class:`Unread`), never materialised."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from planner.errors import GGUFFormatError
from planner.gguf_source import Source

MAX_HEADER_BYTES = 256 << 20       # a header must end within this; real ones are < 32 MiB
MAX_ARRAY_ELEMENTS = 1 << 24       # real tokenizers have < 300k entries
MAX_STRING_ARRAY_ELEMENTS = 1 << 20  # 4x the largest real vocabulary (262,144); walking them takes ~0.3 s
MAX_KEY_BYTES = (1 << 16) - 1      # GGUF spec (ggml docs/gguf.md): a key is at most 65535 bytes
MAX_KV = 1 << 16                   # our bound: real files carry < 100 pairs
MAX_TENSORS = 1 << 17              # our bound: real models have < 3,000 tensors
# values larger than these are not materialised: the planner never reads them, and a hostile header could
# otherwise cost gigabytes (a 2^24-element array as a tuple, a 250 MiB string decoded)
MAX_MATERIALISED_ELEMENTS = 4096   # arrays up to this many elements are kept (per-layer keys need <= 4096)
MAX_MATERIALISED_STRING = 1 << 20  # strings up to 1 MiB are kept (chat templates are < 100 KiB)
MAX_CHUNK_BYTES = 16 << 20

# gguf_type value ids (gguf.h)
GGUF_UINT8, GGUF_INT8, GGUF_UINT16, GGUF_INT16, GGUF_UINT32, GGUF_INT32 = 0, 1, 2, 3, 4, 5
GGUF_FLOAT32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_UINT64, GGUF_INT64, GGUF_FLOAT64 = 6, 7, 8, 9, 10, 11, 12
VALUE_TYPE_NAMES = ("u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "array", "u64", "i64", "f64")
# struct format and byte size of each fixed-size value type
_SCALAR_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_SCALAR_SIZE = {t: struct.calcsize("<" + f) for t, f in _SCALAR_FMT.items()}
_SCALAR_STRUCT = {t: struct.Struct("<" + f) for t, f in _SCALAR_FMT.items()}
_INT_TYPES = frozenset((0, 1, 2, 3, 4, 5, 10, 11))

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class Unread:
    """A metadata value the reader stepped over without materialising it (a large array or string).

    ``count`` is the number of elements of an array or the byte length of a string; ``len()`` gives it.
    """

    elem_type: int | None        # element gguf_type of an array, None for a string
    count: int

    def __len__(self) -> int:
        return self.count

    def __str__(self) -> str:
        what = "string" if self.elem_type is None else f"array[{VALUE_TYPE_NAMES[self.elem_type]}]"
        return f"<{what} of {self.count} {'bytes' if self.elem_type is None else 'elements'}, not read>"


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One metadata pair. ``nbytes`` is the encoded size of the whole pair (key, type, value)."""

    key: str
    vtype: int                   # gguf_type; 9 = array
    value: Any                   # int | float | bool | str, a tuple for arrays, or Unread when large
    nbytes: int
    elem_type: int | None = None  # element gguf_type of an array

    @property
    def type_name(self) -> str:
        if self.vtype == GGUF_ARRAY and self.elem_type is not None:
            return f"array[{VALUE_TYPE_NAMES[self.elem_type]}]"
        return VALUE_TYPE_NAMES[self.vtype]


# ---------------------------------------------------------------------------- cursor

class _Cursor:
    """Sequential reader over a source with a growing buffer; raises GGUFFormatError on short data."""

    __slots__ = ("src", "name", "buf", "base", "pos", "size", "limit", "chunk", "max_chunk")

    def __init__(self, src: Source) -> None:
        self.src = src
        self.name = src.name
        self.buf = b""
        self.base = 0             # file offset of buf[0]
        self.pos = 0              # file offset of the next byte to parse
        self.size = src.size()
        self.limit = MAX_HEADER_BYTES if self.size is None else min(self.size, MAX_HEADER_BYTES)
        # reads start small and double, so a header costs O(log size) reads and little over-read
        self.chunk = int(getattr(src, "chunk_bytes", 64 << 10))
        self.max_chunk = int(getattr(src, "max_chunk_bytes", MAX_CHUNK_BYTES))

    def remaining(self) -> int:
        return self.limit - self.pos

    def error(self, message: str, field: str, offset: int | None = None, hint: str = "") -> GGUFFormatError:
        return GGUFFormatError(message, offset=self.pos if offset is None else offset, field=field,
                               source=self.name, hint=hint)

    def short(self, n: int, field: str) -> GGUFFormatError:
        if self.size is not None and self.pos + n > self.size:
            return self.error(f"file ends inside the header: {n} bytes needed, {self.size - self.pos} left",
                              field, hint="the file is truncated or not a GGUF; download it again")
        return self.error(f"header would extend past {self.limit} bytes ({n} bytes needed here)", field,
                          hint="this is not a plausible GGUF header")

    def need(self, n: int, field: str) -> int:
        """Make ``n`` bytes at ``pos`` available; return their index into ``buf``."""
        i = self.pos - self.base
        if i + n <= len(self.buf):
            return i
        if n < 0 or self.pos + n > self.limit:
            raise self.short(n, field)
        parts = [self.buf[i:]]
        got = len(parts[0])
        read_at = self.pos + got
        while got < n:
            step = min(max(n - got, self.chunk), self.limit - read_at)
            data = self.src.read(read_at, step)
            self.chunk = min(self.chunk * 2, self.max_chunk)
            if not data:
                break
            parts.append(data)
            got += len(data)
            read_at += len(data)
            if len(data) < step:
                break
        self.buf = b"".join(parts)
        self.base = self.pos
        if len(self.buf) < n:
            self.size = self.limit = self.base + len(self.buf)  # the source was shorter than it said
            raise self.short(n, field)
        return 0

    def u32(self, field: str) -> int:
        i = self.need(4, field)
        self.pos += 4
        return _U32.unpack_from(self.buf, i)[0]

    def i32(self, field: str) -> int:
        i = self.need(4, field)
        self.pos += 4
        return _I32.unpack_from(self.buf, i)[0]

    def u64(self, field: str) -> int:
        i = self.need(8, field)
        self.pos += 8
        return _U64.unpack_from(self.buf, i)[0]

    def skip(self, n: int, field: str) -> None:
        """Step over ``n`` bytes without buffering them (they must exist within the limit)."""
        if n < 0 or self.pos + n > self.limit:
            raise self.short(n, field)
        self.pos += n
        if self.pos - self.base > len(self.buf):
            self.buf = b""
            self.base = self.pos

    def string(self, field: str, max_bytes: int | None = None) -> str:
        start = self.pos
        n = self.u64(field)
        if n > self.remaining():
            self.pos = start
            raise self.error(f"string length {n} exceeds the {self.remaining() - 8} bytes left", field)
        if max_bytes is not None and n > max_bytes:
            raise self.error(f"string of {n} bytes exceeds the limit of {max_bytes}", field, offset=start)
        i = self.need(n, field)
        try:
            s = str(self.buf[i:i + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"string is not valid UTF-8 ({exc.reason} at byte {exc.start})", field) from None
        self.pos += n
        return s

    def count(self, n: int, min_bytes: int, field: str, start: int) -> None:
        """Reject a count that cannot fit in the bytes left, before anything is allocated."""
        if n * min_bytes > self.remaining():
            raise self.error(f"{field} = {n} cannot fit: it needs at least {n * min_bytes} bytes and only "
                             f"{self.remaining()} are left", field, offset=start,
                             hint="the file is truncated or corrupt")


# ---------------------------------------------------------------------------- values

def _read_value(cur: _Cursor, vtype: int, field: str) -> Any:
    if vtype == GGUF_STRING:
        start = cur.pos
        n = cur.u64(field)
        cur.pos = start
        if n > MAX_MATERIALISED_STRING and n <= cur.remaining() - 8:
            cur.skip(8 + n, field)
            return Unread(None, n)
        return cur.string(field)
    st = _SCALAR_STRUCT.get(vtype)
    if st is None:
        raise cur.error(f"invalid value type {vtype}", field, offset=cur.pos - 4)
    i = cur.need(st.size, field)
    cur.pos += st.size
    return st.unpack_from(cur.buf, i)[0]


def _read_array(cur: _Cursor, field: str) -> tuple[int, tuple[Any, ...] | Unread]:
    type_at = cur.pos
    etype = cur.i32(field + " element type")
    if etype == GGUF_ARRAY:
        raise cur.error("nested arrays are not allowed", field, offset=type_at)
    if etype != GGUF_STRING and etype not in _SCALAR_FMT:
        raise cur.error(f"invalid array element type {etype}", field, offset=type_at)
    count_at = cur.pos
    n = cur.u64(field + " count")
    esize = 8 if etype == GGUF_STRING else _SCALAR_SIZE[etype]
    cur.count(n, esize, field + " count", count_at)
    limit = MAX_STRING_ARRAY_ELEMENTS if etype == GGUF_STRING else MAX_ARRAY_ELEMENTS
    if n > limit:
        raise cur.error(f"array of {n} elements exceeds the limit of {limit}", field + " count",
                        offset=count_at)
    if etype != GGUF_STRING:
        nbytes = n * esize
        if n > MAX_MATERIALISED_ELEMENTS:
            cur.skip(nbytes, field)
            return etype, Unread(etype, n)
        i = cur.need(nbytes, field)
        cur.pos += nbytes
        return etype, struct.unpack_from(f"<{n}{_SCALAR_FMT[etype]}", cur.buf, i)
    if n > MAX_MATERIALISED_ELEMENTS:
        _skip_str_array(cur, n, field)
        return etype, Unread(etype, n)
    return etype, _read_str_array(cur, n, field)


def _skip_str_array(cur: _Cursor, n: int, field: str) -> None:
    """Walk ``n`` length-prefixed strings without decoding or keeping them (bounded chunks of the source)."""
    unpack = _U64.unpack_from
    j = 0
    while j < n:
        buf, base = cur.buf, cur.base
        size = len(buf)
        i = cur.pos - base
        while j < n and i + 8 <= size:
            end = i + 8 + unpack(buf, i)[0]
            if end > size:
                break
            i = end
            j += 1
        cur.pos = base + i
        if j < n:
            at = cur.pos
            length = cur.u64(f"{field}[{j}]")
            if length > cur.remaining():
                raise cur.error(f"string length {length} exceeds the {cur.remaining()} bytes left", f"{field}[{j}]",
                                offset=at)
            if length <= cur.max_chunk:
                cur.pos = at
                cur.need(8 + length, f"{field}[{j}]")   # buffer this element and what follows it
                cur.pos = at + 8 + length
            else:
                cur.skip(length, f"{field}[{j}]")
            j += 1


def _read_str_array(cur: _Cursor, n: int, field: str) -> tuple[str, ...]:
    out: list[str] = []
    append = out.append
    unpack = _U64.unpack_from
    j = 0
    while j < n:
        # tight loop over the elements already buffered; anything unusual takes the checked path
        buf, base = cur.buf, cur.base
        size = len(buf)
        i = cur.pos - base
        try:
            while j < n and i + 8 <= size:
                end = i + 8 + unpack(buf, i)[0]
                if end > size:
                    break
                append(buf[i + 8:end].decode())
                i = end
                j += 1
        except UnicodeDecodeError:
            pass  # cur.string below raises with the element's offset and field
        cur.pos = base + i
        if j < n:
            append(cur.string(f"{field}[{j}]"))
            j += 1
    return tuple(out)


def _read_kvs(cur: _Cursor, n_kv: int) -> tuple[tuple[KVEntry, ...], dict[str, int]]:
    """The pairs, and the file offset where each key starts (for error messages)."""
    entries: list[KVEntry] = []
    starts: dict[str, int] = {}
    for k in range(n_kv):
        start = cur.pos
        key = cur.string(f"kv[{k}].key", MAX_KEY_BYTES)
        if key in starts:
            raise cur.error(f"duplicate key {key!r}", f"kv[{k}].key", offset=start)
        starts[key] = start
        vtype = cur.i32(key + " type")
        elem = None
        if vtype == GGUF_ARRAY:
            elem, value = _read_array(cur, key)
        else:
            value = _read_value(cur, vtype, key)
        entries.append(KVEntry(key, vtype, value, cur.pos - start, elem))
    return tuple(entries), starts
