"""Streaming GGUF header reader: bytes -> :class:`GGUFHeader`.

The reader parses from a small source interface (``read(offset, n)``, ``size()``, ``name``) so local
files, split shards, HTTP ranges (``planner.remote``) and test bytes all fit.  It reads the header
sequentially in growing chunks, never maps the file and never reads the tensor data section on
purpose.  Every count and length is checked against the bytes left before anything is allocated,
and every failure is a :class:`~planner.errors.GGUFFormatError` carrying the byte offset and field.

Layout (ggml ``gguf.cpp``; ik ``ggml/src/ggml.c`` matches; all little-endian)::

    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv      x { key: str, vtype: i32, value }            str = u64 length + UTF-8 bytes
    n_tensors x { name: str, n_dims: u32, ne: u64[n_dims], type: i32, offset: u64 }
    zero padding to ALIGNMENT | tensor data, each tensor padded to ALIGNMENT
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from planner.errors import (
    FileSizeMismatchError,
    GGUFFormatError,
    RemoteReadError,
    UnknownModelError,
    UnsupportedTensorSizeError,
)
from planner.quants import GGUF_DEFAULT_ALIGNMENT, catalogue, pad

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)        # gguf.cpp rejects v1; v2 and v3 share this layout (v3 added big-endian)
GGML_MAX_DIMS = 4                  # ggml.h
GGML_MAX_NAME = 64                 # ggml.h; gguf.cpp rejects a tensor name of GGML_MAX_NAME bytes or more
MAX_TENSOR_ELEMENTS = 1 << 62      # our bound on ne0*ne1*ne2*ne3 (gguf.cpp: < INT64_MAX)
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
_FIXED = struct.Struct("<4sIQQ")   # magic, version, n_tensors, n_kv
# per n_dims: ne as signed int64 (a u64 >= 2^63 reads negative and is rejected), type i32, offset u64
_TI_TAIL = {n: struct.Struct(f"<{n}qiQ") for n in range(1, GGML_MAX_DIMS + 1)}
_MIN_KV_BYTES = 8 + 4 + 1          # empty key, type, 1-byte value
_MIN_TI_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one ne, type, offset

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


# ---------------------------------------------------------------------------- sources

@runtime_checkable
class Source(Protocol):
    """Where header bytes come from. ``read`` returns fewer than ``n`` bytes only at the end."""

    name: str

    def read(self, offset: int, n: int) -> bytes: ...

    def size(self) -> int | None: ...


class BytesSource:
    """Bytes in memory (tests, benchmarks)."""

    chunk_bytes = 1 << 20

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self._data = bytes(data)
        self.name = name

    def read(self, offset: int, n: int) -> bytes:
        return self._data[offset:offset + n]

    def size(self) -> int:
        return len(self._data)


class LocalFile:
    """A local file read with plain ``read`` calls: no mmap, only the header region is touched."""

    chunk_bytes = 64 << 10
    max_chunk_bytes = 1 << 20

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        self._f: BinaryIO | None = None
        self._size: int | None = None

    def _file(self) -> BinaryIO:
        if self._f is None:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; anything but a regular file is refused
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                    raise GGUFFormatError(f"{self.name} is {what}", source=self.name,
                                          hint="give the path of a .gguf file")
                if hasattr(os, "set_blocking"):
                    os.set_blocking(fd, True)
                self._f = os.fdopen(fd, "rb")  # noqa: SIM115 - closed by close()/__exit__
            except BaseException:
                os.close(fd)
                raise
            self._size = st.st_size
        return self._f

    def read(self, offset: int, n: int) -> bytes:
        f = self._file()
        f.seek(offset)
        return f.read(max(0, min(n, (self._size or 0) - offset)))

    def size(self) -> int:
        self._file()
        return self._size  # type: ignore[return-value]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- data model

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


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    """One tensor info. ``offset`` is relative to its shard's data start; ``nbytes`` is ggml_nbytes."""

    name: str
    shape: tuple[int, ...]       # ggml ne order, as stored (n_dims entries)
    type_name: str
    type_id: int
    offset: int
    nbytes: int
    shard: int = 0


@dataclass(frozen=True, slots=True)
class Shard:
    """One GGUF file of a (possibly split) model."""

    path: str
    version: int
    n_kv: int
    n_tensors: int
    alignment: int
    header_bytes: int            # end of the tensor infos, before padding
    data_start: int              # PAD(header_bytes, alignment)
    expected_file_bytes: int     # data_start + sum(PAD(nbytes, alignment))
    actual_file_bytes: int | None


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """A parsed model header: shard 0's metadata, every shard's tensors in order."""

    source: str
    kv: tuple[KVEntry, ...]
    tensors: tuple[GGUFTensor, ...]
    shards: tuple[Shard, ...]
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {e.key: e for e in self.kv})

    def get(self, key: str, default: Any = None) -> Any:
        """The value of metadata ``key`` (a tuple for arrays), or ``default``."""
        entry = self._index.get(key)
        return default if entry is None else entry.value

    def entry(self, key: str) -> KVEntry | None:
        return self._index.get(key)

    @property
    def arch(self) -> str:
        return str(self.get("general.architecture", ""))

    @property
    def alignment(self) -> int:
        return self.shards[0].alignment

    @property
    def data_start(self) -> int:
        return self.shards[0].data_start

    @property
    def file_bytes(self) -> int | None:
        """Size on disk of all shards together (None when a size is unknown)."""
        sizes = [s.actual_file_bytes for s in self.shards]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]

    @property
    def expected_file_bytes(self) -> int:
        return sum(s.expected_file_bytes for s in self.shards)

    @property
    def tensor_data_bytes(self) -> int:
        """Sum of padded tensor sizes (the data sections of all shards)."""
        return sum(s.expected_file_bytes - s.data_start for s in self.shards)


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


def _alignment(cur: _Cursor, kv: Sequence[KVEntry], starts: dict[str, int]) -> int:
    entry = next((e for e in kv if e.key == "general.alignment"), None)
    if entry is None:
        return GGUF_DEFAULT_ALIGNMENT
    at = starts[entry.key]
    if entry.vtype != GGUF_UINT32:
        raise cur.error(f"general.alignment must be u32, not {entry.type_name}", "general.alignment", offset=at)
    a = entry.value
    if a <= 0 or a & (a - 1):
        raise cur.error(f"general.alignment {a} is not a power of 2", "general.alignment", offset=at)
    return a


# ---------------------------------------------------------------------------- tensor infos

def _read_tensor_infos(cur: _Cursor, n_tensors: int, alignment: int, shard: int) -> tuple[GGUFTensor, ...]:
    by_id = catalogue().by_id
    out: list[GGUFTensor] = []
    seen: set[str] = set()
    expect = 0
    for t in range(n_tensors):
        start = cur.pos
        name = cur.string(f"tensor[{t}].name", GGML_MAX_NAME - 1)
        if name in seen:
            raise cur.error(f"duplicate tensor name {name!r}", f"tensor[{t}].name", offset=start)
        seen.add(name)
        dims_at = cur.pos
        n_dims = cur.u32(f"tensor {name} n_dims")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise cur.error(f"n_dims {n_dims} is outside 1..{GGML_MAX_DIMS}", f"tensor {name} n_dims",
                            offset=dims_at)
        tail = _TI_TAIL[n_dims]
        i = cur.need(tail.size, f"tensor {name} ne/type/offset")
        *ne, type_id, offset = tail.unpack_from(cur.buf, i)
        for d, v in enumerate(ne):
            if v <= 0:
                raise cur.error(f"dimension ne[{d}] = {v} is not positive", f"tensor {name} ne[{d}]",
                                offset=cur.pos + 8 * d)
        shape = tuple(ne)
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise cur.error(f"{shape} has more than 2^62 elements", f"tensor {name} ne", offset=cur.pos)
        qt = by_id(type_id, context=f"tensor {name}")
        try:
            nbytes = qt.tensor_bytes(shape)
        except UnsupportedTensorSizeError as exc:
            raise cur.error(f"{exc.message}", f"tensor {name} type", offset=cur.pos + 8 * n_dims) from exc
        if offset != expect:
            raise cur.error(f"tensor data offset {offset} is not the running padded sum {expect}",
                            f"tensor {name} offset", offset=cur.pos + 8 * n_dims + 4)
        cur.pos += tail.size
        out.append(GGUFTensor(name, shape, qt.name, type_id, offset, nbytes, shard))
        expect += pad(nbytes, alignment)
    return tuple(out)


# ---------------------------------------------------------------------------- one file

def parse_gguf(source: Source, *, check_size: bool = True, shard: int = 0) -> GGUFHeader:
    """Parse one GGUF file's header (no split resolution) from a byte source.

    Raises:
        GGUFFormatError: malformed, truncated or hostile header (with offset and field).
        UnknownQuantTypeError: a tensor's type id is not in the catalogue (names the tensor).
        FileSizeMismatchError: ``check_size`` and the source's size differs from what the header implies.
    """
    cur = _Cursor(source)
    i = cur.need(4, "magic")
    magic = cur.buf[i:i + 4]
    if magic != GGUF_MAGIC:
        raise cur.error(f"not a GGUF file (magic {magic!r}, expected b'GGUF')", "magic")
    i = cur.need(_FIXED.size, "version/n_tensors/n_kv")
    _, version, n_tensors, n_kv = _FIXED.unpack_from(cur.buf, i)
    if version not in SUPPORTED_VERSIONS:
        hint = "GGUF v1 is no longer supported by llama.cpp" if version == 1 else \
            "only GGUF versions 2 and 3 are known (a huge number may mean big-endian)"
        raise cur.error(f"unsupported GGUF version {version}", "version", offset=4, hint=hint)
    cur.pos = 24
    cur.count(n_tensors, _MIN_TI_BYTES, "n_tensors", 8)
    cur.count(n_kv, _MIN_KV_BYTES, "n_kv", 16)
    if n_tensors > MAX_TENSORS:
        raise cur.error(f"n_tensors = {n_tensors} exceeds the limit of {MAX_TENSORS}", "n_tensors", offset=8)
    if n_kv > MAX_KV:
        raise cur.error(f"n_kv = {n_kv} exceeds the limit of {MAX_KV}", "n_kv", offset=16)
    kv, starts = _read_kvs(cur, n_kv)
    alignment = _alignment(cur, kv, starts)
    tensors = _read_tensor_infos(cur, n_tensors, alignment, shard)
    header_bytes = cur.pos
    data_start = pad(header_bytes, alignment)
    expected = data_start + sum(pad(t.nbytes, alignment) for t in tensors)
    actual = source.size()
    info = Shard(source.name, version, n_kv, n_tensors, alignment, header_bytes, data_start, expected, actual)
    if check_size and actual is not None and actual != expected:
        # a metadata-only shard may end right after its tensor infos when written without padding (gguf-py)
        if not (n_tensors == 0 and actual == header_bytes):
            raise FileSizeMismatchError(source.name, expected, actual)
    return GGUFHeader(source.name, kv, tensors, (info,))


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


# ---------------------------------------------------------------------------- encoding and size prediction

def _encode_scalar(vtype: int, value: Any) -> bytes:
    if vtype == GGUF_STRING:
        data = str(value).encode("utf-8")
        return _U64.pack(len(data)) + data
    return _SCALAR_STRUCT[vtype].pack(value)


def encode_kv(key: str, vtype: int, value: Any, elem_type: int | None = None) -> bytes:
    """The bytes of one metadata pair as a GGUF writer emits them."""
    out = [_encode_scalar(GGUF_STRING, key), _I32.pack(vtype)]
    if vtype == GGUF_ARRAY:
        if elem_type is None or elem_type == GGUF_ARRAY:
            raise ValueError("an array needs a non-array elem_type")
        items = list(value)
        out += [_I32.pack(elem_type), _U64.pack(len(items))]
        if elem_type == GGUF_STRING:
            out += [_encode_scalar(GGUF_STRING, v) for v in items]
        else:
            out.append(struct.pack(f"<{len(items)}{_SCALAR_FMT[elem_type]}", *items))
    else:
        out.append(_encode_scalar(vtype, value))
    return b"".join(out)


def make_kv(key: str, vtype: int, value: Any, elem_type: int | None = None) -> KVEntry:
    """A KVEntry with its encoded size computed."""
    return KVEntry(key, vtype, value, len(encode_kv(key, vtype, value, elem_type)), elem_type)


def set_kv(entries: Iterable[KVEntry], entry: KVEntry) -> tuple[KVEntry, ...]:
    """Replace the pair with ``entry.key`` in place, or append it."""
    out = list(entries)
    for i, e in enumerate(out):
        if e.key == entry.key:
            out[i] = entry
            return tuple(out)
    return (*out, entry)


def quantized_kv(entries: Iterable[KVEntry], ftype: int, *, keep_split: bool = False) -> tuple[KVEntry, ...]:
    """The metadata llama-quantize writes: ``general.quantization_version`` = u32 2 and
    ``general.file_type`` = u32 ``ftype`` set or added, ``split.*`` removed unless ``keep_split``."""
    out = tuple(e for e in entries if keep_split or not e.key.startswith("split."))
    out = set_kv(out, make_kv("general.quantization_version", GGUF_UINT32, 2))  # GGML_QNT_VERSION
    return set_kv(out, make_kv("general.file_type", GGUF_UINT32, ftype))


def ggml_n_dims(shape: Sequence[int]) -> int:
    """Dimensions a ggml writer stores: trailing 1s are dropped, at least 1 (ggml_n_dims)."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def tensor_info_bytes(name: str, shape: Sequence[int]) -> int:
    """Encoded size of one tensor info: name, n_dims, ne[n_dims], type, offset."""
    return 8 + len(name.encode("utf-8")) + 4 + 8 * ggml_n_dims(shape) + 4 + 8


def header_bytes_for(kv_entries: Iterable[KVEntry], tensors: Iterable[Any]) -> int:
    """Unpadded encoded header size (magic .. last tensor info) for these pairs and tensors.

    ``tensors`` are anything with ``.name`` and ``.shape`` (GGUFTensor, TensorInfo); types do not
    change the size.  The data section starts at ``pad(result, alignment)``: see :func:`data_start_for`.
    """
    return (_FIXED.size + sum(e.nbytes for e in kv_entries)
            + sum(tensor_info_bytes(t.name, t.shape) for t in tensors))


def data_start_for(kv_entries: Iterable[KVEntry], tensors: Iterable[Any],
                   alignment: int = GGUF_DEFAULT_ALIGNMENT) -> int:
    """Offset of the data section of a file written with these pairs and tensors."""
    return pad(header_bytes_for(kv_entries, tensors), alignment)


__all__ = [
    "BytesSource", "GGUFHeader", "GGUFTensor", "KVEntry", "LocalFile", "Shard", "Source", "Unread",
    "data_start_for", "encode_kv", "ggml_n_dims", "header_bytes_for", "make_kv", "parse_gguf",
    "quantized_kv", "read_gguf", "set_kv", "shard_location", "split_name", "tensor_info_bytes",
]
