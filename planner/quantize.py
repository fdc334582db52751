"""Emulation of ``llama-quantize``: which type every tensor gets, and how many bytes it takes.

Both engines are covered: ik_llama.cpp (``--custom-q``, its ftype list and row-interleaved types) and
mainline llama.cpp (``--tensor-type``).  The facts live in data files, this module is the small
interpreter that walks them:

* ``data/ftypes.csv``: the named file types (the TYPE argument), their LLAMA_FTYPE ids and default types;
* ``data/ftype_rules.toml``: ``llama_tensor_get_type``'s per-tensor rules as ordered arms and clauses (its
  header documents the condition language), the never-quantized name lists and the imatrix refusals.

The pipeline for one tensor, ik (``src/llama-quantize.cpp``)::

    never-quantized checks (keep the source type)
    -> pure:                  ftype default, row-size fallback
       default is quantized:  llama_tensor_get_type rules, then the first matching --custom-q rule
                              (regex_search), then the row-size fallback
       default is F16/BF16/F32: the default (custom-q ignored)
    -> --token-embedding-type / --output-tensor-type / --ffn-gate-inp-type (no fallback check)
    -> token_embd cannot be row-interleaved: back to the base type
    -> type unchanged: copied; else imatrix refusal, requantize refusal, rows check (ne[1] % rows -> base)

Mainline (``src/llama-quant.cpp``) checks --token-embedding-type / --output-tensor-type first, then the
first matching ``--tensor-type`` rule (which skips the mixture rules and their counters) or the mixture
rules, then its own fallback table; it processes tensors in its loader's order (layer, then name).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.errors import RecipeError, RegexDialectError, UnsupportedTensorSizeError, UsageError
from planner.ftype_rules import _BLK, _COUNTERS, QuantizeState, _Ctx, _model_class, _rules, _Rules, _run_arms
from planner.ftypes import (DEFAULT_BASE_TYPE, Ftype, QuantizeSpec, Rule, _check_engine, _option_type,
                            ftype_names, get_ftype)
from planner.quants import GGUF_DEFAULT_ALIGNMENT, QuantType, catalogue, pad
from planner.ecma_regex import EcmaPattern
from planner.regexes import compile_user_regex, search
from planner.tensors import ModelParams, TensorInfo, TensorMap
from planner.units import GIB

__all__ = [
    "Ftype", "Rule", "QuantizeSpec", "TensorResult", "Footprint", "QuantizeState",
    "get_ftype", "ftype_names", "parse_custom_q", "parse_recipe_text",
    "target_type", "quantize", "is_quantizable", "quantizable", "default_base_type", "DEFAULT_BASE_TYPE",
    "imatrix_types", "format_type_counts", "format_size_line", "keep_prequantized_items",
]


# ================================================================================== data models







@dataclass(frozen=True, slots=True)
class TensorResult:
    """The type llama-quantize writes for one tensor, its size and why."""

    name: str
    src_type: str
    type_name: str
    shape: tuple[int, ...]
    nbytes: int               # ggml_nbytes of the written tensor (unpadded)
    reason: str               # e.g. "custom rule 3 (...)", "ftype IQ3_K default", "not quantized: 1-D"
    fallback: str | None      # why the written type differs from the chosen one (row size, rows, token_embd)


@dataclass(frozen=True, slots=True)
class Footprint:
    """The predicted output of one llama-quantize run."""

    model: str
    engine: str
    base_type: str
    tensors: tuple[TensorResult, ...]          # in the order llama-quantize writes them
    total_bytes: int                           # sum of nbytes: llama.cpp's "model size"
    data_bytes: int                            # sum of PAD(nbytes, alignment): the GGUF data section
    n_elements: int
    bpw: float                                 # total_bytes * 8 / n_elements
    type_counts: dict[str, int]                # by catalogue id order
    fallbacks: tuple[TensorResult, ...]        # tensors whose written type differs from the chosen one
    file_bytes: int | None = None              # exact output file size, when the source is a GGUF header
                                               # (llama-quantize's KVs; without the optional imatrix KVs)
    imatrix: str = ""                          # the imatrix assumption in words (planner.imatrix_use), when known

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB






# ================================================================================== ftypes











# ================================================================================== rules data




























# ================================================================================== evaluation context









# ================================================================================== types and options



@dataclass(frozen=True, slots=True)
class _Prepared:
    spec: QuantizeSpec
    ftype: Ftype
    rules: _Rules
    default: QuantType
    patterns: tuple[tuple[EcmaPattern, Rule], ...]


@functools.lru_cache(maxsize=256)
def _prepare(spec: QuantizeSpec) -> _Prepared:
    _check_engine(spec.engine)
    ftype = get_ftype(spec.base_type, spec.engine)
    for option, value in (("--token-embedding-type", spec.token_embedding_type),
                          ("--output-tensor-type", spec.output_tensor_type),
                          ("--ffn-gate-inp-type", spec.ffn_gate_inp_type)):
        if value is not None:
            _option_type(value, spec.engine, option)
    if spec.engine == "mainline" and spec.ffn_gate_inp_type is not None:
        raise UsageError("--ffn-gate-inp-type is an ik_llama.cpp option; mainline never quantizes ffn_gate_inp")
    patterns = []
    for rule in spec.custom_q:
        _option_type(rule.type_name, spec.engine, f"custom rule {rule.index}")
        patterns.append((compile_user_regex(rule.pattern, f"custom rule {rule.index}"), rule))
    return _Prepared(spec=spec, ftype=ftype, rules=_rules(spec.engine),
                     default=catalogue().get(ftype.default_type), patterns=tuple(patterns))


# ================================================================================== never quantized

def _n_dims(shape: Sequence[int]) -> int:
    # ggml_n_dims: trailing dimensions of 1 do not count ([4096, 1] is 1-D)
    dims = len(shape)
    while dims > 1 and shape[dims - 1] == 1:
        dims -= 1
    return dims


def _never_reason(t: TensorInfo, spec: QuantizeSpec, prep: _Prepared) -> str | None:
    name, rules = t.name, prep.rules
    src = catalogue().get(t.dtype)
    if src.kind == "index":
        return "not quantized: integer type"
    if not name.endswith("weight"):
        return "not quantized: name does not end in 'weight'"
    if _n_dims(t.shape) < 2:
        return "not quantized: 1-D"
    if prep.ftype.copy_only:
        return "not quantized: COPY"
    for sub, label in rules.never_find:
        if sub in name:
            return f"not quantized: {label}"
    if spec.leave_output_tensor and name == "output.weight":
        return "not quantized: output.weight with --leave-output-tensor"
    if rules.engine == "ik" and "ffn_gate_inp.weight" in name:
        wanted = spec.ffn_gate_inp_type
        if wanted is None or wanted == t.dtype:
            return "not quantized: ffn_gate_inp"
    for eq, label in rules.never_eq:
        if name == eq:
            return f"not quantized: {label}"
    return None


def imatrix_types(engine: str = "ik") -> frozenset[str]:
    """Types llama-quantize refuses to write without an imatrix (``imatrix_types`` of ftype_rules.toml)."""
    return _rules("mainline" if engine == "mainline" else "ik").imatrix_types


def is_quantizable(t: TensorInfo, spec: QuantizeSpec) -> bool:
    """Whether llama-quantize even considers ``t`` (the "never quantized" rules of the engine)."""
    return _never_reason(t, spec, _prepare(spec)) is None


@functools.cache
def quantizable(t: TensorInfo, engine: str = "ik") -> bool:
    """The one "may this tensor get a chosen type" predicate of the planner and the recipe emitter: what
    llama-quantize quantizes under a plain ftype (Q8_0, known to both engines), before any recipe."""
    return is_quantizable(t, QuantizeSpec(base_type="Q8_0", engine=engine))


def default_base_type(engine: str) -> str:
    """The base TYPE assumed for a recipe that names none, per quant engine."""
    return DEFAULT_BASE_TYPE["mainline" if engine == "mainline" else "ik"]


# ================================================================================== one tensor

def _row_fallback(type_name: str, t: TensorInfo, engine: str) -> tuple[str, str | None]:
    cat = catalogue()
    try:
        qt, why = cat.row_fallback(cat.get(type_name), t.shape[0], engine)
    except UnsupportedTensorSizeError as exc:
        raise UnsupportedTensorSizeError(f"{t.name}: {exc.message}", hint=exc.hint) from exc
    return qt.name, why


def _first_rule(prep: _Prepared, name: str) -> Rule | None:
    for pattern, rule in prep.patterns:
        if search(pattern, name):
            return rule
    return None


def _rule_reason(rule: Rule) -> str:
    return f"custom rule {rule.index} ({rule.pattern}={rule.type_name})"


def _decide(t: TensorInfo, params: ModelParams, prep: _Prepared, state: QuantizeState,
            model_class: str) -> TensorResult:
    spec, ftype, engine = prep.spec, prep.ftype, prep.spec.engine
    cat = catalogue()
    src = t.dtype
    never = _never_reason(t, spec, prep)
    if never is not None:
        return TensorResult(t.name, src, src, tuple(t.shape), cat.get(src).tensor_bytes(t.shape), never, None)

    default = prep.default.name
    fallback: str | None = None
    rules_ran = False
    if engine == "mainline" and spec.token_embedding_type is not None and \
            t.name in ("token_embd.weight", "per_layer_token_embd.weight"):
        new = _option_type(spec.token_embedding_type, engine, "--token-embedding-type").name
        reason = "--token-embedding-type"
    elif engine == "mainline" and spec.output_tensor_type is not None and t.name == "output.weight":
        new = _option_type(spec.output_tensor_type, engine, "--output-tensor-type").name
        reason = "--output-tensor-type"
    elif spec.pure:
        new, reason = default, f"ftype {ftype.name} default (--pure)"
        if engine == "ik":
            new, fallback = _row_fallback(new, t, engine)
        elif not cat.get(new).fits_row(t.shape[0]):
            raise UnsupportedTensorSizeError(
                f"{t.name}: --pure {new} cannot store rows of {t.shape[0]} weights and mainline "
                "llama-quantize applies no fallback with --pure")
    elif not prep.default.is_quantized:
        new, reason = default, f"ftype {ftype.name} default"
    else:
        rules_ran = True
        rule = _first_rule(prep, t.name)
        if engine == "mainline" and rule is not None:
            # a --tensor-type match skips the mixture rules (and their counters)
            new, reason = rule.type_name, _rule_reason(rule)
        else:
            c = _Ctx(t, params, spec, ftype, state, default, model_class)
            new, why = _run_arms(prep.rules.arms, prep.rules.groups, c)
            reason = why or f"ftype {ftype.name} default"
            if rule is not None:
                new, reason = rule.type_name, _rule_reason(rule)
        new, fallback = _row_fallback(new, t, engine)

    if engine == "ik":
        for option, value, hit in (
                ("--token-embedding-type", spec.token_embedding_type, t.name == "token_embd.weight"),
                ("--output-tensor-type", spec.output_tensor_type, t.name == "output.weight"),
                ("--ffn-gate-inp-type", spec.ffn_gate_inp_type, "ffn_gate_inp.weight" in t.name)):
            if value is not None and hit:
                new, reason, fallback = _option_type(value, engine, option).name, option, None
        if t.name == "token_embd.weight" or (rules_ran and t.name == "per_layer_token_embd.weight"):
            qt = cat.get(new)
            if qt.is_repacked and qt.repack_base:
                fallback = _join(fallback, f"token embeddings cannot be row-interleaved: {new} -> {qt.repack_base}")
                new = qt.repack_base

    if new != src:
        _check_imatrix(t, new, prep)
        if cat.get(src).is_quantized and not spec.allow_requantize:
            raise RecipeError(f"{t.name}: requantizing from type {src} is disabled",
                              hint="quantize from the bf16/f16 source, or pass --allow-requantize")
        qt = cat.get(new)
        if engine == "ik" and qt.is_repacked and qt.repack_base:
            ne1 = t.shape[1] if len(t.shape) > 1 else 1
            if ne1 % qt.repack_rows:
                fallback = _join(fallback, f"ne1={ne1} not a multiple of {qt.repack_rows} rows: "
                                           f"{new} -> {qt.repack_base}")
                new = qt.repack_base
    return TensorResult(t.name, src, new, tuple(t.shape), cat.get(new).tensor_bytes(t.shape), reason, fallback)


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def _check_ftype_imatrix(prep: _Prepared) -> None:
    spec, ftype = prep.spec, prep.ftype
    if ftype.needs_imatrix and not spec.has_imatrix and not (spec.engine == "ik" and spec.ignore_imatrix_rules):
        raise RecipeError(f"llama-quantize refuses {ftype.name} without an importance matrix",
                          hint="pass --imatrix FILE"
                               + (" or --ignore-imatrix-rules" if spec.engine == "ik" else ""))


def _check_imatrix(t: TensorInfo, new: str, prep: _Prepared) -> None:
    spec, rules = prep.spec, prep.rules
    if spec.has_imatrix or (spec.engine == "ik" and spec.ignore_imatrix_rules):
        return
    if t.name in ("token_embd.weight", "output.weight"):
        return
    if new in rules.imatrix_types or (new == "q2_K" and prep.ftype.name == rules.imatrix_q2k_ftype):
        raise RecipeError(f"{t.name}: llama-quantize refuses {new} without an importance matrix "
                          "('Missing importance matrix for tensor ... in a very low-bit quantization')",
                          hint="pass --imatrix FILE"
                               + (" or --ignore-imatrix-rules" if spec.engine == "ik" else ""))


def target_type(t: TensorInfo, params: ModelParams, spec: QuantizeSpec, *,
                state: QuantizeState | None = None) -> tuple[str, str, str | None]:
    """The full pipeline for one tensor: ``(type_name, reason, fallback reason)``.

    ``state`` carries llama-quantize's per-category counters; pass the same state for every tensor in
    file order (what :func:`quantize` does).  Without one, a state is derived from the tensor alone:
    the counters equal its block number and the output is untied unless ``params.tied``, which matches
    a whole-file run for the usual one-tensor-per-kind-per-layer layouts.

    Raises:
        UnknownQuantTypeError, RecipeError, UnsupportedTensorSizeError: as llama-quantize would fail.
    """
    prep = _prepare(spec)
    _check_ftype_imatrix(prep)
    if state is None:
        state = QuantizeState(has_output=not params.tied, n_attention_wv=params.n_layer)
        if t.layer is not None:
            state.counters = dict.fromkeys(_COUNTERS, t.layer)
    r = _decide(t, params, prep, state, _model_class(params, spec.engine))
    return r.type_name, r.reason, r.fallback


def _check_wv_count(tmap: TensorMap, state: QuantizeState, rules: _Rules) -> None:
    """llama-quantize's sanity check on the attn_v-like tensor count (``wv_multiples`` of ftype_rules.toml)."""
    n_layer = tmap.params.n_layer
    if (not rules.wv_multiples or tmap.params.arch in rules.wv_exempt_archs
            or any(state.n_attention_wv == m * n_layer for m in rules.wv_multiples)):
        return
    raise RecipeError(f"llama-quantize would abort on {tmap.name}: {state.n_attention_wv} attn_v/attn_qkv tensors "
                      f"for {n_layer} blocks (\"n_attention_wv is unexpected\")",
                      hint="the engine accepts " + ", ".join(f"{m} x block_count" for m in rules.wv_multiples))


def _mainline_order(t: TensorInfo) -> tuple[int, str]:
    # llama_model_loader::weight_name_comparer: by blk.N (else -1), then by name
    m = _BLK.match(t.name)
    return (int(m.group(1)) if m else -1, t.name)


def quantize(tmap: TensorMap, spec: QuantizeSpec, *, alignment: int = GGUF_DEFAULT_ALIGNMENT) -> Footprint:
    """Predict llama-quantize's output for every tensor of ``tmap``.

    ik keeps the file order; mainline writes tensors in its loader's order (block number, then name),
    and the order matters because of the per-category counters.

    Raises:
        UnknownQuantTypeError, RecipeError, RegexDialectError, UnsupportedTensorSizeError.
    """
    prep = _prepare(spec)
    _check_ftype_imatrix(prep)
    tensors = tmap.tensors if spec.engine == "ik" else tuple(sorted(tmap.tensors, key=_mainline_order))
    state = QuantizeState.for_tensors(tensors, spec.engine)
    _check_wv_count(tmap, state, prep.rules)
    model_class = _model_class(tmap.params, spec.engine)
    results = tuple(_decide(t, tmap.params, prep, state, model_class) for t in tensors)
    total = sum(r.nbytes for r in results)
    n_elements = sum(t.n_elements for t in tensors)
    cat = catalogue()
    counts = Counter(r.type_name for r in results)
    type_counts = {k: counts[k] for k in sorted(counts, key=lambda n: cat.get(n).id)}
    file_bytes = None
    header = tmap.header
    if header is not None:
        # the output keeps the source's KVs plus quantization_version/file_type, minus split.* (gguf-py GGUFWriter; ik src/llama-quantize.cpp copies the KVs, then sets general.quantization_version and
        # general.file_type)
        from planner.gguf_encode import data_start_for, quantized_kv

        alignment = header.alignment
        kv = quantized_kv(header.kv, prep.ftype.id)
        file_bytes = data_start_for(kv, results, alignment) + sum(pad(r.nbytes, alignment) for r in results)
    return Footprint(model=tmap.name, engine=spec.engine, base_type=prep.ftype.name, tensors=results,
                     total_bytes=total, data_bytes=sum(pad(r.nbytes, alignment) for r in results),
                     n_elements=n_elements, bpw=total * 8 / n_elements if n_elements else 0.0,
                     type_counts=type_counts, fallbacks=tuple(r for r in results if r.fallback),
                     file_bytes=file_bytes)


# ================================================================================== formatting

def format_type_counts(counts: Mapping[str, int]) -> str:
    """Per-type tensor counts as llama.cpp's loader prints them (``%4s: %4d tensors``, right-aligned).

    Lines are joined with newlines, without a trailing newline, in catalogue id order.
    """
    cat = catalogue()
    names = sorted(counts, key=lambda n: (cat.get(n).id if cat.has(n) else 1 << 30, n))
    wn = max([4, *(len(n) for n in names)])
    wc = max([4, *(len(str(counts[n])) for n in names)])
    return "\n".join(f"{n:>{wn}}: {counts[n]:>{wc}} tensors" for n in names)


def format_size_line(fp: Footprint) -> str:
    """The size headline of a model card, e.g. ``106.830 GiB (3.903 BPW)``."""
    return f"{fp.total_bytes / GIB:.3f} GiB ({fp.bpw:.3f} BPW)"


# ================================================================================== recipes

def parse_recipe_text(text: str) -> list[str]:
    """The rule items of a recipe block such as the seed card's ``custom="..."``.

    Mirrors the card's shell: ``grep -v '^#'`` drops lines that start with '#', ``sed -Ez 's:\\n+:,:g'``
    joins the rest with commas (so blank lines vanish), and llama-quantize then splits on commas.
    Whitespace-only lines are dropped too (the shell would pass them on and llama-quantize would reject
    them); other whitespace is kept, as the shell keeps it.
    """
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    kept = [ln for ln in lines if not ln.startswith("#") and ln.strip()]
    return ",".join(kept).split(",") if kept else []


def parse_custom_q(items: str | Sequence[str], engine: str = "ik") -> tuple[Rule, ...]:
    """Parse ``--custom-q`` arguments (ik) or ``--tensor-type`` arguments (mainline) into rules.

    ik: every argument is split on ',' and each item on its first '='; the type must be spelled exactly
    as ``ggml_type_name`` prints it (``q4_K``, ``iq4_ks``, ``q8_KV``).  Mainline: each argument is one
    ``NAME=TYPE``; NAME is lower-cased and TYPE matched case-insensitively.  Every pattern passes
    :func:`planner.regexes.compile_user_regex`.

    Raises:
        RecipeError: an item without '=' or with an empty pattern or type, or a regex Python cannot compile.
        RegexDialectError: a regex whose meaning differs between Python and C++ std::regex ECMAScript.
        UnknownQuantTypeError: a type the engine does not know (close matches in the hint).
    """
    _check_engine(engine)
    args = [items] if isinstance(items, str) else list(items)
    rules: list[Rule] = []
    for arg in args:
        for item in (arg.split(",") if engine == "ik" else [arg]):
            index = len(rules) + 1
            where = f"custom rule {index} {item!r}"
            if "=" not in item:
                raise RecipeError(f"{where} has no '=' (expected regex=type)",
                                  hint="a stray comma leaves an empty rule" if not item else
                                  "llama-quantize splits --custom-q at every ',', so a regex cannot contain one"
                                  if engine == "ik" else "")
            pattern, type_name = item.split("=", 1)
            if pattern.endswith("(?<"):
                raise RegexDialectError(
                    f"{where}: lookbehind (?<= does not exist in ECMAScript std::regex, and llama-quantize "
                    f"splits the rule at that '=' anyway (pattern {pattern!r})")
            if pattern.endswith("(?"):
                raise RecipeError(f"{where}: llama-quantize splits each rule at its first '=', which cuts the "
                                  f"lookahead (?= short (pattern {pattern!r})",
                                  hint="rewrite the rule without '=' in the regex")
            if engine == "mainline":
                pattern = pattern.lower()
            if not pattern:
                raise RecipeError(f"{where} has an empty pattern")
            if not type_name:
                raise RecipeError(f"{where} has an empty type")
            qt = _option_type(type_name, engine, where)
            compile_user_regex(pattern, where)
            rules.append(Rule(pattern=pattern, type_name=qt.name, index=index))
    return tuple(rules)


def keep_prequantized_items(tmap: TensorMap) -> list[str]:
    """``regex=type`` items that keep a converter's already-quantized tensors (gpt-oss's and DeepSeek-V4's MXFP4
    experts, V4's FP8 linears written as Q8_0) at their stored type.

    Neither engine re-quantizes a quantized tensor without ``--allow-requantize`` (ik src/llama-quantize.cpp:1724
    @8337e4cd throws "requantizing from type %s is disabled"; mainline src/llama-quant.cpp the same), and a rule
    naming the tensor's own type makes llama-quantize copy it (ik line 1614: ``quantize &= tensor->type !=
    new_type``).  One item per (role, type), anchored to the block tensors of that role.
    """
    if not tmap.converter_types:
        return []
    by_name = tmap.by_name()
    seen: dict[tuple[bool, str, str], None] = {}
    for name in sorted(tmap.prequantized):
        t = by_name[name]
        seen[(t.layer is not None, t.role if t.layer is not None else name, t.dtype)] = None
    items = []
    for in_block, role, dtype in seen:
        rx = (rf"blk\.[0-9]+\.{re.escape(role)}\.weight" if in_block else "^" + re.escape(role) + "$")
        items.append(f"{rx.replace(chr(92) + '_', '_')}={dtype}")
    return items
