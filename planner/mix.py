"""The mix to place or check: a quantized GGUF's stored types, or what llama-quantize writes for a recipe."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from planner.engines import quant_engine
from planner.errors import UsageError
from planner.quantize import (Footprint, QuantizeSpec, default_base_type, keep_prequantized_items, parse_custom_q,
                              parse_recipe_text, quantize)
from planner.tensors import TensorMap

if TYPE_CHECKING:
    from planner.imatrix_use import ImatrixUse


def mix_from_options(tmap: TensorMap, *, base_type: str | None, custom_q: Sequence[str] = (),
                     recipe_text: str | None = None, engine: str = "ik", token_embedding_type: str | None = None,
                     output_tensor_type: str | None = None, pure: bool = False, has_imatrix: bool = False,
                     ignore_imatrix_rules: bool = False, imatrix: ImatrixUse | None = None
                     ) -> tuple[dict[str, str], Footprint | None]:
    """The mix to place: stored types of a quantized GGUF, or the llama-quantize prediction of a recipe.

    ``imatrix`` (when given) replaces ``has_imatrix``/``ignore_imatrix_rules`` and its note goes into the footprint.

    Returns (types, footprint or None).

    Raises:
        UsageError: an unquantized model with no recipe (there is nothing sensible to place).
    """
    items = list(custom_q)
    if recipe_text:
        items += parse_recipe_text(recipe_text)
    qengine = quant_engine(engine)
    if imatrix is not None:
        has_imatrix, ignore_imatrix_rules = imatrix.used, imatrix.ignore_rules
    if base_type or items or token_embedding_type or output_tensor_type:
        if tmap.is_quantized:
            raise UsageError(f"{tmap.source} is already quantized: a recipe applies to an unquantized source",
                             hint="`gguf-planner inspect` shows its types and sizes; `place` and `check` take it "
                                  "without recipe options")
        # a converter's MXFP4/Q8_0 tensors keep their type (llama-quantize refuses to requantize them); the
        # keep rules go first, as llama-quantize takes the first matching rule
        items = keep_prequantized_items(tmap) + items
        spec = QuantizeSpec(base_type=base_type or default_base_type(qengine),
                            custom_q=parse_custom_q(items, qengine) if items else (), engine=qengine,
                            token_embedding_type=token_embedding_type, output_tensor_type=output_tensor_type,
                            pure=pure, has_imatrix=has_imatrix,
                            ignore_imatrix_rules=ignore_imatrix_rules and qengine == "ik")
        fp = quantize(tmap, spec)
        if imatrix is not None:
            fp = dataclasses.replace(fp, imatrix=imatrix.note)
        return {r.name: r.type_name for r in fp.tensors}, fp
    if not tmap.prequantized:
        raise UsageError(f"{tmap.name} is unquantized ({tmap.source})",
                         hint="say which mix to use: --base-type IQ4_KS, --custom-q RULES or --recipe-file FILE")
    return {t.name: t.dtype for t in tmap.tensors}, None
