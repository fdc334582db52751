"""GGUF encoding and exact size prediction: the bytes a GGUF writer emits for metadata pairs and tensor
infos, and the data-section offset of a file llama-quantize would write (ggml ``gguf.cpp`` ``gguf_write_to_buf``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from planner.quants import GGUF_DEFAULT_ALIGNMENT, pad

from planner.gguf_header import _FIXED
from planner.gguf_values import GGUF_ARRAY, GGUF_STRING, GGUF_UINT32, _I32, _SCALAR_FMT, _SCALAR_STRUCT, _U64, KVEntry

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
