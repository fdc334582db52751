"""The quant catalogue and exact ggml size arithmetic.

Facts live in ``planner/data/quant_types.csv`` (one row per storable ggml type, with its source);
this module only loads and looks them up.  Size rules (ik_llama.cpp ``ggml/src/ggml.c``)::

    row_bytes    = row_meta + type_size * ne0 / block_size          (ggml_row_size)
    tensor_bytes = row_bytes * ne1 * ne2 * ne3                      (ggml_nbytes; every row of every expert)
    stored       = PAD(tensor_bytes, alignment)                      (GGUF data section)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from planner.errors import UnknownQuantTypeError, UnsupportedTensorSizeError
from planner.tables import read_csv_table

ENGINES = ("ik", "mainline")
GGUF_DEFAULT_ALIGNMENT = 32  # gguf.h GGUF_DEFAULT_ALIGNMENT


def pad(n: int, alignment: int = GGUF_DEFAULT_ALIGNMENT) -> int:
    """Round ``n`` up to a multiple of ``alignment`` (GGML_PAD)."""
    return (n + alignment - 1) // alignment * alignment


@dataclass(frozen=True, slots=True)
class QuantType:
    """One ggml tensor type as stored in a GGUF."""

    name: str                 # exact spelling ggml_type_name() prints (case-sensitive in ik's --custom-q)
    id: int                   # enum ggml_type value written in the GGUF tensor info
    block_size: int
    type_size: int            # bytes per block
    row_meta: int             # bytes once per row (ik only)
    repack_rows: int          # rows interleaved together (1 = not repacked)
    repack_base: str | None   # the type it is a repack of (llama-quantize falls back to it)
    cuda_ik: str              # ik CUDA MUL_MAT kernel, "no" when the op runs on the CPU, "" when unknown
    engines: frozenset[str]   # engines whose GGUF loader knows the type id
    kind: str                 # "float" | "quant" | "index"
    fallback_ik: str | None
    fallback_mainline: str | None
    size_rule: str            # "row" or "i2_s"
    aliases: tuple[str, ...]
    source: str
    bpw: float = field(init=False)  # bits per weight without row metadata

    def __post_init__(self) -> None:
        object.__setattr__(self, "bpw", 8.0 * self.type_size / self.block_size)

    # -- exact arithmetic -------------------------------------------------------------------
    def row_bytes(self, ne0: int) -> int:
        """Bytes of one row of ``ne0`` weights (ggml_row_size). ``ne0`` must be a block multiple."""
        if ne0 % self.block_size:
            raise UnsupportedTensorSizeError(
                f"row width {ne0} is not a multiple of {self.name}'s block size {self.block_size}")
        return self.row_meta + self.type_size * (ne0 // self.block_size)

    def tensor_bytes(self, shape: Sequence[int]) -> int:
        """ggml_nbytes of a contiguous tensor with ggml ``ne`` shape (row metadata once per row)."""
        n_rows = math.prod(shape[1:]) if len(shape) > 1 else 1
        if self.size_rule == "i2_s":
            return math.prod(shape) // 4 + 32
        return self.row_bytes(shape[0]) * n_rows

    # -- properties of the type -------------------------------------------------------------
    @property
    def is_quantized(self) -> bool:
        return self.kind == "quant"

    @property
    def is_repacked(self) -> bool:
        return self.repack_rows > 1

    def fits_row(self, ne0: int) -> bool:
        return ne0 % self.block_size == 0

    def runs_on_cuda(self, engine: str) -> bool:
        """Whether the engine's CUDA backend has a matmul for this type (else the op runs on CPU)."""
        if engine == "mainline":
            return "mainline" in self.engines and self.kind != "index"
        return self.cuda_ik not in ("", "no")

    def fallback(self, engine: str) -> str | None:
        return self.fallback_ik if engine == "ik" else self.fallback_mainline


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All known types, indexed by name and id."""

    types: tuple[QuantType, ...]
    _by_name: dict[str, QuantType] = field(init=False, repr=False, compare=False)
    _by_id: dict[int, QuantType] = field(init=False, repr=False, compare=False)
    _by_lower: dict[str, QuantType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, QuantType] = {}
        by_id: dict[int, QuantType] = {}
        by_lower: dict[str, QuantType] = {}
        for t in self.types:
            by_name[t.name] = t
            by_id[t.id] = t
            by_lower.setdefault(t.name.lower(), t)
            for a in t.aliases:
                by_lower.setdefault(a.lower(), t)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_lower", by_lower)

    def names(self, engine: str | None = None) -> list[str]:
        return [t.name for t in self.types if engine is None or engine in t.engines]

    def get(self, name: str, *, engine: str | None = None, case_sensitive: bool | None = None,
            context: str = "") -> QuantType:
        """Look a type up by name.

        ik's llama-quantize compares --custom-q type names with case-sensitive strcmp, mainline
        case-insensitively; ``case_sensitive`` defaults to that engine's behaviour (insensitive
        when no engine is named).

        Raises:
            UnknownQuantTypeError: with close matches, if the name is unknown or the engine
                does not know the type.
        """
        if case_sensitive is None:
            case_sensitive = engine == "ik"
        t = self._by_name.get(name)
        if t is None and not case_sensitive:
            t = self._by_lower.get(name.lower())
        if t is None and engine == "ik":
            # ik spells e.g. q1_0_g128; accept an exact mainline alias only case-sensitively
            t = next((x for x in self.types if name in x.aliases), None)
        if t is None:
            hint = ""
            if case_sensitive and name.lower() in self._by_lower:
                hint = (f"ik's llama-quantize matches type names case-sensitively: "
                        f"use {self._by_lower[name.lower()].name!r}")
            raise UnknownQuantTypeError(name, known=self.names(engine), context=context, hint=hint)
        if engine is not None and engine not in t.engines:
            raise UnknownQuantTypeError(
                name, known=(), context=context,
                hint=f"{t.name} exists only in {', '.join(sorted(t.engines))}, not in {engine}")
        return t

    def by_id(self, type_id: int, *, context: str = "") -> QuantType:
        t = self._by_id.get(type_id)
        if t is None:
            raise UnknownQuantTypeError(type_id, context=context,
                                        hint="no ggml type with this id is known to ik_llama.cpp or llama.cpp")
        return t

    def has(self, name: str) -> bool:
        return name in self._by_name

    def row_fallback(self, qtype: QuantType, ne0: int, engine: str) -> tuple[QuantType, str | None]:
        """llama-quantize's row-size fallback: the type actually written for row width ``ne0``.

        Returns the type and a reason string when it changed.

        Raises:
            UnsupportedTensorSizeError: ik has no fallback for the type ("Unsupported tensor size").
        """
        if qtype.fits_row(ne0):
            return qtype, None
        fb_name = qtype.fallback(engine)
        if fb_name:
            fb = self._by_name[fb_name]
            if fb.fits_row(ne0):
                return fb, f"ne0={ne0} not a multiple of {qtype.block_size}: {qtype.name} -> {fb.name}"
        if engine == "mainline":
            f16 = self._by_name["f16"]
            return f16, f"ne0={ne0} fits neither {qtype.name} nor its fallback: -> f16"
        raise UnsupportedTensorSizeError(
            f"{qtype.name} cannot store rows of {ne0} weights and ik's llama-quantize has no fallback for it",
            hint="choose a type with block size 32 (q8_0, q5_0, iq4_nl...)")


def _parse_row(row: dict) -> QuantType:
    def opt(v: str) -> str | None:
        return v or None

    return QuantType(
        name=row["name"], id=int(row["id"]), block_size=int(row["block_size"]),
        type_size=int(row["type_size"]), row_meta=int(row["row_meta"]),
        repack_rows=int(row["repack_rows"]), repack_base=opt(row["repack_base"]),
        cuda_ik=row["cuda_ik"], engines=frozenset(row["engines"].split(";")), kind=row["kind"],
        fallback_ik=opt(row["fallback_ik"]), fallback_mainline=opt(row["fallback_mainline"]),
        size_rule=row["size_rule"], aliases=tuple(a for a in row["aliases"].split(";") if a),
        source=row["source"])


@functools.cache
def catalogue() -> Catalogue:
    """The catalogue loaded once from ``data/quant_types.csv``."""
    rows = read_csv_table("quant_types.csv")
    return Catalogue(tuple(_parse_row(r) for r in rows))
