"""imatrix files: legacy ``.dat`` and GGUF imatrix, read into one :class:`Imatrix`.

Formats (``../shared/reference/ik_llama_facts.md`` §6):

* legacy ``.dat`` (ik_llama.cpp ``examples/imatrix/imatrix.cpp``; the only format ik's llama-quantize reads),
  little-endian int32 throughout::

      i32 n_entries
      n_entries x { i32 len; name[len]; i32 ncall; i32 nval; f32 values[nval] }   # values = mean(x^2) * ncall
      [i32 last_call; i32 len; dataset[len]]                                      # optional tail

* GGUF imatrix (mainline ``tools/imatrix/imatrix.cpp``): a GGUF with ``general.type = "imatrix"``, tensors
  ``<name>.in_sum2`` (F32, ne = [ne0, n_mat], raw sums of x^2) and ``<name>.counts`` (F32, ne = [1, n_mat]);
  importance = in_sum2 / counts.  Other statistics (``.in_sum`` ...) are ignored.

The GGUF header goes through the project's reader (``planner.gguf_header``, header only); the F32 statistics
are read here.  Every count and length is bounded by the bytes left in the file before anything is allocated;
malformed input raises :class:`~planner.errors.ImatrixFormatError` naming the byte offset where known (also set
as ``exc.offset``).
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from planner.errors import ImatrixFormatError, PlannerError

if TYPE_CHECKING:
    from planner.tensors import TensorMap

MAX_NAME_BYTES = 1 << 16      # names are ~30 bytes; anything near this is corrupt
GGUF_MAGIC = b"GGUF"
_BLK = re.compile(r"^blk\.(\d+)\.")


# ------------------------------------------------------------------------------------------ data model

@dataclass(frozen=True, slots=True, eq=False)
class ImatrixEntry:
    """One weight's importance: per input column mean(x^2), expert-major for 3-D expert tensors."""

    name: str
    ncall: int
    values: np.ndarray                 # float32, n_expert * ne0
    n_expert: int = 1
    counts: np.ndarray | None = None   # activation rows per expert (GGUF), None for .dat

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        values.flags.writeable = False
        object.__setattr__(self, "values", values)
        if self.counts is not None:
            counts = np.ascontiguousarray(self.counts, dtype=np.float64)
            counts.flags.writeable = False
            object.__setattr__(self, "counts", counts)
        if self.n_expert < 1 or values.size % self.n_expert:
            raise ValueError(f"{self.name}: {values.size} values do not split into {self.n_expert} experts")

    @property
    def ne0(self) -> int:
        return self.values.size // self.n_expert

    def per_expert(self) -> np.ndarray:
        """Values as an (n_expert, ne0) array."""
        return self.values.reshape(self.n_expert, self.ne0)


@dataclass(frozen=True, slots=True, eq=False)
class Imatrix:
    """All entries of one imatrix file."""

    entries: dict[str, ImatrixEntry]
    chunks: int | None
    dataset: str | None
    format: str                        # "dat" | "gguf"
    source: str = ""

    def tensor_importance(self, name: str) -> float:
        """Mean importance of a tensor's input columns (experts weighted by their activation counts when known).

        Raises:
            KeyError: the imatrix has no entry for ``name``.
        """
        e = self.entries[name]
        if e.n_expert > 1:
            per_expert = e.per_expert().astype(np.float64).mean(axis=1)
            if e.counts is not None and e.counts.sum() > 0:
                return float(np.dot(per_expert, e.counts) / e.counts.sum())
            return float(per_expert.mean())
        return float(e.values.astype(np.float64).mean())

    def expert_activity(self, name: str) -> np.ndarray | None:
        """Per-expert activity: activation counts (GGUF) or per-expert mean importance (.dat); None if dense.

        Raises:
            KeyError: the imatrix has no entry for ``name``.
        """
        e = self.entries[name]
        if e.n_expert <= 1:
            return None
        if e.counts is not None:
            return e.counts.copy()
        return e.per_expert().astype(np.float64).mean(axis=1)

    def with_shapes(self, tmap: TensorMap) -> Imatrix:
        """Check every entry against the model's shapes and fill in expert counts.

        Raises:
            ImatrixFormatError: an entry's value count is not ne0 (dense) or ne0 * n_expert (experts).
        """
        by_name = tmap.by_name()
        out: dict[str, ImatrixEntry] = {}
        for name, e in self.entries.items():
            t = by_name.get(name)
            if t is None:
                out[name] = e
                continue
            want = t.ne0 * t.n_expert
            if e.values.size != want:
                raise _error(f"entry {name!r} has {e.values.size} values but the tensor {list(t.shape)} needs "
                             f"{want} (ne0 {t.ne0} x {t.n_expert} experts)", None, self.source,
                             hint="the imatrix was computed for a different model")
            if e.counts is not None and e.counts.size != t.n_expert:
                raise _error(f"entry {name!r} has counts for {e.counts.size} experts, the tensor has "
                             f"{t.n_expert}", None, self.source, hint="the imatrix was computed for a different model")
            out[name] = e if e.n_expert == t.n_expert else replace(e, n_expert=t.n_expert)
        return replace(self, entries=out)


def _error(message: str, offset: int | None, source: str, *, hint: str = "") -> ImatrixFormatError:
    where = ", ".join(x for x in (source, f"offset {offset}" if offset is not None else "") if x)
    return ImatrixFormatError(f"{message} [{where}]" if where else message, hint=hint, offset=offset, source=source)


# ------------------------------------------------------------------------------------------ bounded reader

class _Reader:
    """Sequential little-endian reads from a file with every length checked against the file size."""

    def __init__(self, f: BinaryIO, size: int, source: str) -> None:
        self.f, self.size, self.source, self.pos = f, size, source, 0

    @property
    def left(self) -> int:
        return self.size - self.pos

    def fail(self, message: str, offset: int | None = None, hint: str = "") -> ImatrixFormatError:
        return _error(message, self.pos if offset is None else offset, self.source, hint=hint)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left:
            raise self.fail(f"truncated: {what} needs {n} bytes, {self.left} left",
                            hint="the file is incomplete or not an imatrix")
        self.f.seek(self.pos)
        data = self.f.read(n)
        if len(data) != n:
            raise self.fail(f"short read of {what}")
        self.pos += n
        return data

    def i32(self, what: str) -> int:
        """One little-endian int32 (the legacy .dat format's only integer type: llama-imatrix writes ``int``)."""
        value: int = struct.unpack("<i", self.take(4, what))[0]
        return value

    def seek(self, pos: int) -> None:
        self.pos = pos

    def floats(self, n: int, what: str) -> np.ndarray:
        start = self.pos
        arr = np.frombuffer(self.take(4 * n, what), dtype="<f4").astype(np.float32)
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise self.fail(f"{what}: value {i} is {arr[i]}", offset=start + 4 * i)
        neg = arr < 0
        if neg.any():
            i = int(np.argmax(neg))
            raise self.fail(f"{what}: value {i} is negative ({arr[i]}); sums of squares cannot be",
                            offset=start + 4 * i)
        return arr


def read_imatrix(path: str | os.PathLike[str], *, tmap: TensorMap | None = None) -> Imatrix:
    """Read a legacy ``.dat`` or GGUF imatrix (detected by the ``GGUF`` magic).

    With ``tmap`` every entry is checked against the model's tensor shapes (see :meth:`Imatrix.with_shapes`).

    Raises:
        ImatrixFormatError: malformed, truncated or hostile file (with the byte offset).
    """
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as exc:
        raise ImatrixFormatError(f"cannot open imatrix {p}: {exc.strerror or exc}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        r = _Reader(f, size, str(p))
        magic = f.read(4)
        imat = _read_gguf(r) if magic == GGUF_MAGIC else _read_dat(r)
    return imat.with_shapes(tmap) if tmap is not None else imat


def _read_dat(r: _Reader) -> Imatrix:
    n_entries = r.i32("n_entries")
    if n_entries < 0:
        raise r.fail(f"negative entry count {n_entries}", offset=0)
    # smallest entry: i32 len + 1 name byte + i32 ncall + i32 nval + one f32
    if n_entries * 17 > r.left:
        raise r.fail(f"{n_entries} entries cannot fit in the {r.left} bytes left", offset=0,
                     hint="not a legacy imatrix .dat, or truncated")
    entries: dict[str, ImatrixEntry] = {}
    for i in range(n_entries):
        start = r.pos
        length = r.i32(f"entry {i} name length")
        if length <= 0 or length > min(MAX_NAME_BYTES, r.left):
            raise r.fail(f"entry {i}: bad name length {length}", offset=start)
        raw = r.take(length, f"entry {i} name")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise r.fail(f"entry {i}: name is not UTF-8", offset=start + 4) from None
        ncall = r.i32(f"{name} ncall")
        if ncall < 0:
            raise r.fail(f"{name}: negative ncall {ncall}", offset=r.pos - 4)
        nval_at = r.pos
        nval = r.i32(f"{name} nval")
        if nval <= 0 or 4 * nval > r.left:
            raise r.fail(f"{name}: nval {nval} values do not fit in the {r.left} bytes left (truncated or corrupt)",
                         offset=nval_at)
        values = r.floats(nval, f"{name} values")
        if ncall > 0:
            values = values / np.float32(ncall)        # stored as mean(x^2) * ncall
        if name in entries:
            raise r.fail(f"duplicate entry {name!r}", offset=start)
        entries[name] = ImatrixEntry(name, ncall, values)
    chunks: int | None = None
    dataset: str | None = None
    if r.left:
        tail = r.pos
        if r.left < 8:
            raise r.fail(f"{r.left} trailing bytes: too short for the last_call/dataset tail", offset=tail)
        chunks = r.i32("last_call")
        length = r.i32("dataset name length")
        if chunks < 0 or length < 0 or length > r.left:
            raise r.fail(f"bad tail (last_call {chunks}, dataset length {length})", offset=tail)
        dataset = r.take(length, "dataset name").decode("utf-8", errors="replace")
        if r.left:
            raise r.fail(f"{r.left} unexpected bytes after the dataset name")
    return Imatrix(_infer_dat_experts(entries), chunks, dataset, "dat", r.source)


def _infer_dat_experts(entries: dict[str, ImatrixEntry]) -> dict[str, ImatrixEntry]:
    """Split ``*_exps`` entries into experts using a dense entry of the same layer (no tensor map needed).

    gate/up experts read the residual stream, as ffn_gate_inp / attn_q / attn_k / attn_v do, so their ne0 is the
    dense entry's length; ffn_down_exps then has the same expert count. Unresolved entries stay n_expert = 1.
    """
    widths: dict[str, int] = {}
    for name, e in entries.items():
        m = _BLK.match(name)
        if m and re.search(r"\.(ffn_gate_inp|attn_q|attn_k|attn_v|attn_qkv)\.weight$", name):
            widths.setdefault(m.group(1), e.values.size)
    n_exp: dict[str, int] = {}
    out = dict(entries)
    for suffix in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
        for name, e in entries.items():
            m = _BLK.match(name)
            if not m or f".{suffix}." not in name:
                continue
            layer = m.group(1)
            if suffix == "ffn_down_exps":
                n = n_exp.get(layer, 0)
            else:
                w = widths.get(layer, 0)
                n = e.values.size // w if w and e.values.size % w == 0 else 0
            if n > 1 and e.values.size % n == 0:
                n_exp.setdefault(layer, n)
                out[name] = replace(e, n_expert=n)
    return out


def _read_gguf(r: _Reader) -> Imatrix:
    """GGUF imatrix: the header through the project's GGUF reader, the F32 statistics read here, bounded."""
    from planner.gguf_header import LocalFile, parse_gguf  # noqa: PLC0415  (keeps .dat reading light)

    try:
        with LocalFile(r.source) as src:
            head = parse_gguf(src, check_size=False)
    except PlannerError as exc:       # GGUFFormatError (offset, field) or an unknown type id
        raise _error(f"bad GGUF imatrix header: {exc}", getattr(exc, "offset", None), r.source) from exc
    gtype = head.get("general.type")
    if gtype is not None and gtype != "imatrix":
        raise r.fail(f"general.type is {gtype!r}, not 'imatrix'", offset=None,
                     hint="this GGUF is a model, not an imatrix")
    infos = {t.name: t for t in head.tensors}

    def load(name: str) -> tuple[np.ndarray, tuple[int, ...]]:
        t = infos[name]
        if t.type_name != "f32":
            raise r.fail(f"{name}: tensor type {t.type_name}, expected F32", offset=None)
        n = math.prod(t.shape)
        start = head.data_start + t.offset
        if start + 4 * n > r.size:
            raise r.fail(f"{name}: {n} floats at data offset {t.offset} run past the end of the file "
                         f"({r.size} bytes; truncated)", offset=start)
        r.seek(start)
        return r.floats(n, name), t.shape

    entries: dict[str, ImatrixEntry] = {}
    chunk_size = head.get("imatrix.chunk_size")
    for tname in infos:
        # ".sums" is the older name convert_imatrix_gguf_to_dat.py also accepts
        suffix = next((x for x in (".in_sum2", ".sums") if tname.endswith(x)), None)
        if suffix is None:
            continue
        base = tname[: -len(suffix)]
        if base in entries or (suffix == ".sums" and base + ".in_sum2" in infos):
            continue
        if base + ".counts" not in infos:
            raise r.fail(f"{tname} has no matching {base}.counts tensor", offset=None)
        sums, ne = load(tname)
        counts, cne = load(base + ".counts")
        n_mat = math.prod(ne[1:])
        if cne[0] != 1 or counts.size != n_mat:
            raise r.fail(f"{base}.counts has shape {list(cne)}, expected [1, {n_mat}]", offset=None)
        c = counts.astype(np.float64)
        safe = np.where(c > 0, c, 1.0)
        per_expert = sums.reshape(n_mat, ne[0]).astype(np.float64) / safe[:, None]
        values = np.where(c[:, None] > 0, per_expert, 1.0)          # mainline uses 1 where a count is 0
        top = float(c.max())
        ncall = math.ceil(top / chunk_size) if isinstance(chunk_size, int) and chunk_size > 0 else int(top)
        entries[base] = ImatrixEntry(base, ncall, values.astype(np.float32).reshape(-1), n_mat, c)
    if not entries:
        raise r.fail("no <name>.in_sum2 tensors: not an imatrix GGUF", offset=None)
    chunks = head.get("imatrix.chunk_count")
    datasets = head.get("imatrix.datasets")
    dataset = ", ".join(str(d) for d in datasets) if isinstance(datasets, (list, tuple)) and datasets else None
    return Imatrix(entries, int(chunks) if isinstance(chunks, int) else None, dataset, "gguf", r.source)


# ------------------------------------------------------------------------------------------ lookup

_GATE_UP_EXPS = re.compile(r"ffn_(up|gate)_exps\.weight")
_MLA_ALTERNATIVES = (".attn_v_b.weight", ".attn_kv_b.weight")


def entry_for(imatrix: Imatrix, tensor_name: str, engine: str = "ik") -> str | None:
    """The imatrix entry llama-quantize uses for ``tensor_name``, or None when it finds none.

    ik (``src/llama-quantize.cpp`` ``llama_model_quantize_internal`` @ 8337e4cd, lines 1627-1663): the exact name,
    else for ``ffn_up_exps``/``ffn_gate_exps`` the merged ``ffn_gate_up_exps`` entry then ``ffn_up_exps``; for
    ``ffn_gate_up_exps`` the ``ffn_up_exps`` entry; for ``ffn_gate`` the ``ffn_up`` entry; for MLA the
    ``attn_v_b`` <-> ``attn_kv_b`` swap (they see the same activations).  ``attn_k_b`` has no alternative: an
    imatrix computed with standard attention lacks it.  Mainline looks the exact name up only.
    """
    e = imatrix.entries
    if tensor_name in e:
        return tensor_name
    if engine != "ik":
        return None
    m = _GATE_UP_EXPS.search(tensor_name)
    if m:
        stem = tensor_name[:m.start()]
        for alt in (stem + "ffn_gate_up_exps.weight", stem + "ffn_up_exps.weight"):
            if alt in e:
                return alt
        return None
    pos = tensor_name.find("ffn_gate_up_exps.weight")
    if pos >= 0:
        alt = tensor_name[:pos] + "ffn_up_exps.weight"
        return alt if alt in e else None
    pos = tensor_name.find("ffn_gate.weight")
    if pos >= 0:
        alt = tensor_name[:pos] + "ffn_up.weight"
        return alt if alt in e else None
    for j, suffix in enumerate(_MLA_ALTERNATIVES):
        pos = tensor_name.find(suffix)
        if pos >= 0:
            alt = tensor_name[:pos] + _MLA_ALTERNATIVES[(j + 1) % 2]
            return alt if alt in e else None
    return None


def uncovered(imatrix: Imatrix, names: Iterable[str], engine: str = "ik") -> list[str]:
    """Names (in order) for which llama-quantize finds no imatrix entry; with an imatrix-only type chosen for
    one of them (other than token_embd/output) llama-quantize stops ("Missing importance matrix for tensor")."""
    return [n for n in names if entry_for(imatrix, n, engine) is None]


# ------------------------------------------------------------------------------------------ writers

def _as_list(entries: Mapping[str, ImatrixEntry] | Iterable[ImatrixEntry]) -> list[ImatrixEntry]:
    return list(entries.values()) if isinstance(entries, Mapping) else list(entries)


def write_imatrix_dat(path: str | os.PathLike[str], entries: Mapping[str, ImatrixEntry] | Iterable[ImatrixEntry],
                      *, chunks: int | None = None, dataset: str | None = None) -> None:
    """Write a legacy ``.dat`` imatrix (values stored as importance * ncall, as ik's collector does).

    The optional tail (last_call, dataset name) is written when ``chunks`` or ``dataset`` is given.
    """
    items = _as_list(entries)
    out = bytearray(struct.pack("<i", len(items)))
    for e in items:
        name = e.name.encode("utf-8")
        stored = e.values * np.float32(e.ncall) if e.ncall > 0 else e.values
        out += struct.pack("<i", len(name)) + name + struct.pack("<ii", e.ncall, e.values.size)
        out += np.asarray(stored, dtype="<f4").tobytes()
    if chunks is not None or dataset is not None:
        ds = (dataset or "").encode("utf-8")
        out += struct.pack("<ii", chunks or 0, len(ds)) + ds
    Path(path).write_bytes(bytes(out))


def write_imatrix_gguf(path: str | os.PathLike[str], entries: Mapping[str, ImatrixEntry] | Iterable[ImatrixEntry],
                       *, chunks: int | None = None, chunk_size: int = 512, datasets: Iterable[str] = ()) -> None:
    """Write a GGUF imatrix the way mainline's llama-imatrix does (``in_sum2`` raw sums plus ``counts``).

    An entry without ``counts`` gets ``ncall * chunk_size`` rows per expert.
    """
    import gguf  # noqa: PLC0415  (only the writer needs gguf-py)

    w = gguf.GGUFWriter(str(path), arch="imatrix")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", list(datasets))
    w.add_uint32("imatrix.chunk_count", int(chunks or 0))
    w.add_uint32("imatrix.chunk_size", int(chunk_size))
    for e in sorted(_as_list(entries), key=lambda x: x.name):
        counts = e.counts if e.counts is not None else np.full(e.n_expert, float(e.ncall * chunk_size))
        counts32 = np.asarray(counts, dtype=np.float32)
        sums = e.per_expert().astype(np.float32) * counts32[:, None]
        if e.n_expert == 1:
            w.add_tensor(e.name + ".in_sum2", sums.reshape(-1))
            w.add_tensor(e.name + ".counts", counts32.reshape(1))
        else:
            w.add_tensor(e.name + ".in_sum2", sums)                       # numpy (n_mat, ne0) = ggml [ne0, n_mat]
            w.add_tensor(e.name + ".counts", counts32.reshape(e.n_expert, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


__all__ = ["Imatrix", "ImatrixEntry", "entry_for", "read_imatrix", "uncovered", "write_imatrix_dat", "write_imatrix_gguf"]
