"""Whether llama-quantize gets an importance matrix: what the user declared, what a GGUF records, or the default.

One answer for every command that predicts a quantization (``plan``, ``footprint``, ``place``, ``check``,
``compare``, and ``verify``/``calibrate`` where they size a recipe):

* ``--imatrix FILE``: llama-quantize runs with it; its imatrix rules apply (mainline's ftype rules bump
  ``ffn_down``/``attn_v`` of some ftypes only without one; imatrix-only types are allowed) and the quality model
  weighs errors by the imatrix (and sharpens its importances with the file where it reads one).
* ``--no-imatrix``: llama-quantize runs without one: the no-imatrix rules, imatrix-only types refused unless ik's
  own override ``--ignore-imatrix-rules`` (ik ``examples/quantize/quantize.cpp`` line 161 at 8337e4cd; mainline's
  llama-quantize has no such flag: ``tools/quantize/quantize.cpp`` usage()).
* neither: **an imatrix is assumed** — the default of every command, so that a recipe printed by ``plan`` (whose
  workflow computes an imatrix) is sized the same by ``footprint``/``check``/``compare``, and because the
  published quants people compare against are made with one (all but the converter's two BF16 files of
  known recipe in ``tests/test_published_sizes_cli.py``).  The output says so and names ``--no-imatrix``.
* a quantized GGUF records the fact: llama-quantize writes ``quantize.imatrix.file`` (and ``entries_count``)
  whenever it used an imatrix, ``"top_secret"`` under ik's ``--hide-imatrix`` (ik ``examples/quantize/quantize.cpp``
  lines 517-545 at 8337e4cd); for that file the record wins over any declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.errors import UsageError

if TYPE_CHECKING:
    from planner.tensors import TensorMap

IMATRIX_FILE_KEY = "quantize.imatrix.file"
IMATRIX_ENTRIES_KEY = "quantize.imatrix.entries_count"


@dataclass(frozen=True, slots=True)
class ImatrixUse:
    """Whether the quantization uses an imatrix, which file, and where that answer comes from."""

    used: bool                       # llama-quantize gets an imatrix: its imatrix rules and weighted errors apply
    origin: str                      # "given" | "none" | "default" | "recorded"
    file: str | None = None          # the user's imatrix file ("given") or the name a GGUF records ("recorded")
    ignore_rules: bool = False       # ik's --ignore-imatrix-rules (imatrix-only types without an imatrix)

    @property
    def note(self) -> str:
        """One line for the output: the imatrix assumption and how to change it."""
        if self.origin == "given":
            return f"imatrix: {self.file} (llama-quantize's imatrix rules and importances applied)"
        if self.origin == "recorded":
            return (f"imatrix: recorded in the GGUF header ({IMATRIX_FILE_KEY} = {self.file})" if self.used else
                    f"imatrix: none recorded in the GGUF header (no {IMATRIX_FILE_KEY}): made without one")
        if self.origin == "none":
            return ("imatrix: none (--no-imatrix): llama-quantize's no-imatrix rules"
                    + ("; --ignore-imatrix-rules lets ik write imatrix-only types" if self.ignore_rules else
                       "; imatrix-only types refused"))
        return ("imatrix: assumed (default, as plan's workflow and published quants use one; --no-imatrix if "
                "llama-quantize will run without --imatrix)")


def declared_imatrix(imatrix_file: str | None, no_imatrix: bool, ignore_rules: bool = False,
                     engine: str = "ik") -> ImatrixUse:
    """The user's declaration: ``--imatrix FILE``, ``--no-imatrix``, or neither (an imatrix is assumed).

    Raises:
        UsageError: --imatrix with --no-imatrix, or --ignore-imatrix-rules with a quant engine that lacks it.
    """
    from planner.engines import quant_engine

    if imatrix_file and no_imatrix:
        raise UsageError("--imatrix and --no-imatrix contradict each other")
    if ignore_rules and quant_engine(engine) != "ik":
        raise UsageError("--ignore-imatrix-rules is ik_llama.cpp's llama-quantize flag; mainline has no override",
                         hint="mainline: pass --imatrix FILE to use imatrix-only types")
    if imatrix_file:
        return ImatrixUse(True, "given", str(imatrix_file), ignore_rules)
    if no_imatrix:
        return ImatrixUse(False, "none", None, ignore_rules)
    return ImatrixUse(True, "default", None, ignore_rules)


def recorded_imatrix(tmap: TensorMap) -> ImatrixUse | None:
    """What a quantized GGUF's header records about its imatrix; None for sources and built-ins (nothing recorded
    because nothing was quantized)."""
    header = tmap.header
    if header is None or not tmap.is_quantized:
        return None
    name = header.get(IMATRIX_FILE_KEY)
    if name is None and header.get(IMATRIX_ENTRIES_KEY) is None:
        return ImatrixUse(False, "recorded")
    return ImatrixUse(True, "recorded", str(name) if name is not None else "(unnamed)")


def imatrix_for(tmap: TensorMap, declared: ImatrixUse) -> ImatrixUse:
    """The answer for one model: a quantized GGUF's record wins (nothing will be quantized: it is what the file
    is); otherwise the declaration (or the default) applies to the quantization to come."""
    rec = recorded_imatrix(tmap)
    return rec if rec is not None else declared


__all__ = ["IMATRIX_ENTRIES_KEY", "IMATRIX_FILE_KEY", "ImatrixUse", "declared_imatrix", "imatrix_for",
           "recorded_imatrix"]


def validate_declared(use: ImatrixUse, tmap: TensorMap) -> None:
    """Read a declared ``--imatrix FILE`` where it enters, for commands that otherwise apply only its rules
    (``footprint``, ``place``): it must be an imatrix, made for this model.

    Raises:
        ImatrixFormatError: the file is malformed, hostile or made for another model.
    """
    if use.origin == "given" and use.file:
        from planner.imatrix import read_imatrix

        read_imatrix(use.file, tmap=tmap)

