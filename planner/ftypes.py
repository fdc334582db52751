"""The llama-quantize command line as data: the named file types (its TYPE argument, ``data/ftypes.csv`` per
engine, with their LLAMA_FTYPE ids and default tensor types: ik_llama.cpp ``examples/quantize/quantize.cpp``
QUANT_OPTIONS at 8337e4cd, llama.cpp ``tools/quantize/quantize.cpp``), the options that change tensor types
(:class:`QuantizeSpec`) and the ``--custom-q``/``--tensor-type`` rules (:class:`Rule`)."""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from planner.errors import RecipeError, UnknownQuantTypeError, UsageError
from planner.quants import QuantType, catalogue
from planner.tables import read_csv_table

ENGINES = ("ik", "mainline")


@dataclass(frozen=True, slots=True)
class Ftype:
    """One named llama-quantize file type (the TYPE positional argument)."""

    name: str                 # as QUANT_OPTIONS spells it, e.g. "IQ3_K", "Q4_K_M"
    id: int                   # LLAMA_FTYPE_* value written to general.file_type
    default_type: str         # catalogue name of the default tensor type (for COPY: f32, unused)
    engine: str
    needs_imatrix: bool       # llama-quantize refuses the ftype without --imatrix
    copy_only: bool = False   # COPY: every tensor is copied as stored
    source: str = ""


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", hint="use 'ik' (ik_llama.cpp) or 'mainline' (llama.cpp)")


@functools.cache
def _ftypes(engine: str) -> tuple[Ftype, ...]:
    out = []
    for row in read_csv_table("ftypes.csv"):
        if engine in row["engines"].split(";"):
            out.append(Ftype(name=row["name"], id=int(row["id"]), default_type=row["default_type"], engine=engine,
                             needs_imatrix=row["needs_imatrix"] == "1", copy_only=row["copy_only"] == "1",
                             source=row["source"]))
    return tuple(out)


def ftype_names(engine: str = "ik") -> list[str]:
    """The TYPE names llama-quantize accepts, in its QUANT_OPTIONS order."""
    _check_engine(engine)
    return [f.name for f in _ftypes(engine)]


_STOI = re.compile(r"\s*([+-]?\d+)")


@functools.cache
def get_ftype(name: str | int, engine: str = "ik") -> Ftype:
    """Resolve llama-quantize's TYPE argument like ``try_parse_ftype``.

    The name is upper-cased and compared with the engine's names; failing that, a leading integer
    (``std::stoi``) selects the first ftype with that LLAMA_FTYPE id.

    Raises:
        UnknownQuantTypeError: with close matches, or a hint when only the other engine knows the name.
    """
    _check_engine(engine)
    table = _ftypes(engine)
    text = str(name)
    upper = text.upper()
    for f in table:
        if f.name == upper:
            return f
    m = _STOI.match(text)
    if m:
        wanted = int(m.group(1))
        for f in table:
            if f.id == wanted:
                return f
    names = [f.name for f in table]
    other = "mainline" if engine == "ik" else "ik"
    hint = ""
    if any(f.name == upper for f in _ftypes(other)):
        hint = f"{upper} is a llama-quantize type of {other}, not of {engine}"
    else:
        close = difflib.get_close_matches(upper, names, n=3, cutoff=0.6)
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    raise UnknownQuantTypeError(text, known=(), context=f"llama-quantize TYPE for {engine}",
                                hint=hint or f"known: {', '.join(names)}")


# llama-quantize has no default TYPE; these are the base types the CLI assumes when a recipe gives none
# (a mid-size ftype each engine knows: ik's IQ3_K of the seed card, mainline's common Q4_K_M).
DEFAULT_BASE_TYPE = {"ik": "IQ3_K", "mainline": "Q4_K_M"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``regex=type`` item of ``--custom-q`` (ik) or ``--tensor-type`` (mainline).

    ``index`` is the rule's 1-based position, as reasons and errors print it ("custom rule 3").
    ``type_name`` is the catalogue spelling (mainline input is case-insensitive; ik input is exact).
    """

    pattern: str
    type_name: str
    index: int


@dataclass(frozen=True, slots=True)
class QuantizeSpec:
    """Everything on a llama-quantize command line that changes the output's tensor types."""

    base_type: str = DEFAULT_BASE_TYPE["ik"]  # the TYPE argument: ftype name or numeric id
    custom_q: tuple[Rule, ...] = ()           # parse_custom_q(...) for the same engine
    engine: str = "ik"
    token_embedding_type: str | None = None   # --token-embedding-type
    output_tensor_type: str | None = None     # --output-tensor-type
    pure: bool = False                        # --pure
    has_imatrix: bool = False                 # --imatrix given (assumed to cover every tensor)
    ffn_gate_inp_type: str | None = None      # --ffn-gate-inp-type (ik only)
    leave_output_tensor: bool = False         # --leave-output-tensor
    ignore_imatrix_rules: bool = False        # --ignore-imatrix-rules (ik only)
    allow_requantize: bool = False            # --allow-requantize


def _option_type(name: str | None, engine: str, option: str) -> QuantType:
    """A type named on the command line (exact spelling in ik, case-insensitive in mainline)."""
    assert name is not None
    qt = catalogue().get(name, engine=engine, context=option)
    if engine == "ik" and qt.name != name:
        raise UnknownQuantTypeError(name, context=option,
                                    hint=f"ik's llama-quantize only knows the spelling {qt.name!r}")
    if qt.kind == "index":
        raise RecipeError(f"{option}: {qt.name} holds integers and is not a quantization target")
    return qt
