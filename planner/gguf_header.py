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

Modules: :mod:`planner.gguf_source` (byte sources), :mod:`planner.gguf_values` (the bounded cursor, value types and
key/value pairs); this one reads the fixed header and the tensor infos into a :class:`GGUFHeader`, and re-exports
the public names of the other two.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.errors import (
    FileSizeMismatchError,
    UnsupportedTensorSizeError,
)
from planner.gguf_source import BytesSource, LocalFile, Source
from planner.gguf_values import (GGUF_ARRAY, GGUF_BOOL, GGUF_FLOAT32, GGUF_FLOAT64, GGUF_INT8, GGUF_INT16, GGUF_INT32,
                                 GGUF_INT64, GGUF_STRING, GGUF_UINT8, GGUF_UINT16, GGUF_UINT32, GGUF_UINT64,
                                 MAX_ARRAY_ELEMENTS, MAX_CHUNK_BYTES, MAX_HEADER_BYTES, MAX_KEY_BYTES,
                                 MAX_MATERIALISED_ELEMENTS, MAX_MATERIALISED_STRING, MAX_STRING_ARRAY_ELEMENTS,
                                 VALUE_TYPE_NAMES, KVEntry, Unread, _Cursor, _read_kvs)
from planner.quants import GGUF_DEFAULT_ALIGNMENT, catalogue, pad

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)        # gguf.cpp rejects v1; v2 and v3 share this layout (v3 added big-endian)
GGML_MAX_DIMS = 4                  # ggml.h
GGML_MAX_NAME = 64                 # ggml.h; gguf.cpp rejects a tensor name of GGML_MAX_NAME bytes or more
MAX_TENSOR_ELEMENTS = 1 << 62      # our bound on ne0*ne1*ne2*ne3 (gguf.cpp: < INT64_MAX)
MAX_KV = 1 << 16                   # our bound: real files carry < 100 pairs
MAX_TENSORS = 1 << 17              # our bound: real models have < 3,000 tensors

_FIXED = struct.Struct("<4sIQQ")   # magic, version, n_tensors, n_kv
# per n_dims: ne as signed int64 (a u64 >= 2^63 reads negative and is rejected), type i32, offset u64
_TI_TAIL = {n: struct.Struct(f"<{n}qiQ") for n in range(1, GGML_MAX_DIMS + 1)}
_MIN_KV_BYTES = 8 + 4 + 1          # empty key, type, 1-byte value
_MIN_TI_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one ne, type, offset

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


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


__all__ = [
    "GGML_MAX_DIMS", "GGML_MAX_NAME", "GGUF_ARRAY", "GGUF_BOOL", "GGUF_FLOAT32", "GGUF_FLOAT64", "GGUF_INT8",
    "GGUF_INT16", "GGUF_INT32", "GGUF_INT64", "GGUF_MAGIC", "GGUF_STRING", "GGUF_UINT8", "GGUF_UINT16", "GGUF_UINT32",
    "GGUF_UINT64", "MAX_ARRAY_ELEMENTS", "MAX_CHUNK_BYTES", "MAX_HEADER_BYTES", "MAX_KEY_BYTES", "MAX_KV",
    "MAX_MATERIALISED_ELEMENTS", "MAX_MATERIALISED_STRING", "MAX_STRING_ARRAY_ELEMENTS", "MAX_TENSORS",
    "MAX_TENSOR_ELEMENTS", "SPLIT_COUNT", "SPLIT_NO", "SPLIT_TENSORS", "SUPPORTED_VERSIONS", "VALUE_TYPE_NAMES",
    "BytesSource", "GGUFHeader", "GGUFTensor", "KVEntry", "LocalFile", "Shard", "Source", "Unread", "parse_gguf",
]
