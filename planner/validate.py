"""Boundary validation of model headers: hyperparameters and tensor names, before any stage uses them.

The GGUF reader (:mod:`planner.gguf_header`) checks the *format* (counts, lengths, offsets, type ids);
this module checks the *numbers* a header carries, the way llama.cpp's loader does before it builds a
model, so the stages behind (memory, speed, solver, emitters) can assume sane values.  Every failure is
a :class:`~planner.errors.GGUFFormatError` (exit 4) whose ``field`` names the key or tensor.

Engine rules mirrored here (ggml-org/llama.cpp ``src/llama-model.cpp`` ``llama_model::load_hparams`` and
``src/llama-model-loader.cpp``; ik_llama.cpp ``src/llama.cpp`` ``llm_load_hparams``, reference 8337e4cd):

- hyperparameters are read with ``get_key``/``get_key_or_arr``, which accept an integer key or, for
  per-layer keys (``head_count``, ``head_count_kv``, ``feed_forward_length``), an array of integers;
- ``GGML_ASSERT(hparams.n_expert <= LLAMA_MAX_EXPERTS)``; ``if (n_expert > 0) GGML_ASSERT(n_expert_used > 0)
  else GGML_ASSERT(n_expert_used == 0)``; ``GGML_ASSERT(n_expert_used <= n_expert)``;
- ``n_layer`` is at most ``LLAMA_MAX_LAYERS`` (512, ``src/llama-hparams.h``);
- tensors are requested by the names ``LLM_TN`` formats with ``"blk.%d."``, so ``blk.-1.x``, ``blk.007.x``
  or ``blk.99.x`` in a 94-layer file are tensors nobody loads (``done_getting_tensors``: "wrong number of
  tensors"), and a layer whose tensors are missing fails ``create_tensor`` ("missing tensor").

The numeric caps below that are not engine asserts are our own plausibility bounds, far above any real
model, which keep every later computation bounded in time and memory.
"""

from __future__ import annotations

import math
import re
from typing import Any

from planner.errors import GGUFFormatError

LLAMA_MAX_LAYERS = 512        # src/llama-hparams.h (llama.cpp and ik_llama.cpp)
MAX_LAYERS = 4096             # our bound (8x the engines'), so a future engine bump still reads
MAX_EXPERTS = 1 << 16         # our bound; llama.cpp's LLAMA_MAX_EXPERTS is 512 (Qwen3-Next)
MAX_WIDTH = 1 << 20           # embedding / FFN / head widths: real models are < 2^16
MAX_HEADS = 1 << 16
MAX_CONTEXT = (1 << 32) - 1   # n_ctx_train is uint32_t in both engines
MAX_VOCAB = (1 << 31) - 1     # llama_vocab token ids are int32

# key suffix -> (minimum, maximum); absent keys are fine here (tensors.from_gguf says which are required)
INT_KEYS: dict[str, tuple[int, int]] = {
    "block_count": (1, MAX_LAYERS),
    "embedding_length": (1, MAX_WIDTH),
    "feed_forward_length": (0, MAX_WIDTH),
    "expert_feed_forward_length": (0, MAX_WIDTH),
    "expert_shared_feed_forward_length": (0, MAX_WIDTH),
    "expert_count": (0, MAX_EXPERTS),
    "expert_used_count": (0, MAX_EXPERTS),
    "expert_shared_count": (0, MAX_EXPERTS),
    "attention.head_count": (0, MAX_HEADS),          # 0: no attention at all (Mamba writes 0 for both)
    "attention.head_count_kv": (0, MAX_HEADS),
    "attention.key_length": (1, MAX_WIDTH),
    "attention.value_length": (1, MAX_WIDTH),
    "attention.key_length_mla": (1, MAX_WIDTH),
    "attention.value_length_mla": (1, MAX_WIDTH),
    "attention.kv_lora_rank": (0, MAX_WIDTH),
    "attention.q_lora_rank": (0, MAX_WIDTH),
    "rope.dimension_count": (0, MAX_WIDTH),
    "context_length": (0, MAX_CONTEXT),
    "vocab_size": (0, MAX_VOCAB),
    "leading_dense_block_count": (0, MAX_LAYERS),
    "nextn_predict_layers": (0, MAX_LAYERS),
}
# keys llama.cpp reads with get_key_or_arr (one value per layer allowed); 0 marks a layer without attention
PER_LAYER_KEYS = frozenset({"attention.head_count", "attention.head_count_kv", "feed_forward_length"})

_INT_VTYPES = frozenset((0, 1, 2, 3, 4, 5, 10, 11))
_FLOAT_VTYPES = frozenset((6, 12))
_GGUF_ARRAY = 9
_BLK_NAME = re.compile(r"blk\.([^.]*)\.")
_CANONICAL_LAYER = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# every name the engines request is built from these (LLM_TN: "blk.%d.attn_q" + ".weight", "token_embd", ...)
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]+")


def _error(message: str, key: str, source: str, hint: str = "") -> GGUFFormatError:
    return GGUFFormatError(message, field=key, source=source, hint=hint)


def validate_header(header: Any) -> None:
    """Check the ``{arch}.*`` hyperparameters and the tensor names of a parsed header.

    Integer keys must hold integers (or, for per-layer keys, a non-empty array of integers) within
    :data:`INT_KEYS`; every float under ``{arch}.`` must be finite; tensor names must not contain
    control characters, and ``blk.N.`` names must carry a canonical decimal ``N``.

    Raises:
        GGUFFormatError: naming the key or tensor (exit 4).
    """
    arch = header.arch
    source = header.source
    if _CONTROL.search(arch) or len(arch) > 64:
        raise _error(f"general.architecture {arch[:80]!r} is not an architecture name", "general.architecture",
                     source)
    prefix = arch + "."
    for entry in header.kv:
        key = entry.key
        if not key.startswith(prefix):
            continue
        suffix = key[len(prefix):]
        if entry.vtype in _FLOAT_VTYPES and not math.isfinite(entry.value):
            raise _error(f"{key} is {entry.value}, not a finite number", key, source)
        if entry.vtype == _GGUF_ARRAY and entry.elem_type in _FLOAT_VTYPES and isinstance(entry.value, tuple) \
                and not all(math.isfinite(v) for v in entry.value):
            raise _error(f"{key} holds a value that is not a finite number", key, source)
        bounds = INT_KEYS.get(suffix)
        if bounds is None:
            continue
        values = _int_values(entry, suffix in PER_LAYER_KEYS, key, source)
        lo, hi = bounds
        for v in values:
            # a per-layer array may mark layers without attention/FFN with 0 (hybrid models)
            low = 0 if (len(values) > 1 or entry.vtype == _GGUF_ARRAY) and suffix in PER_LAYER_KEYS else lo
            if not low <= v <= hi:
                raise _error(f"{key} = {v} is outside {lo}..{hi}", key, source)
        if suffix in PER_LAYER_KEYS and max(values) < lo:
            raise _error(f"{key}: every layer's value is {max(values)}, at least one must be >= {lo}", key, source)
    heads = header.entry(prefix + "attention.head_count")
    kv_heads = header.entry(prefix + "attention.head_count_kv")
    def largest(entry: Any) -> int:
        return int(entry.value) if entry.vtype in _INT_VTYPES else max(entry.value or (0,))

    if heads is not None and kv_heads is not None and largest(kv_heads) == 0:
        n_head = largest(heads)
        if n_head:
            key = prefix + "attention.head_count_kv"
            raise _error(f"{key} = 0 with {n_head} attention heads: no K/V head to share", key, source)
    for t in header.tensors:
        _check_tensor_name(t.name, source)


def _int_values(entry: Any, per_layer: bool, key: str, source: str) -> tuple[int, ...]:
    if entry.vtype in _INT_VTYPES:
        return (int(entry.value),)
    if entry.vtype == _GGUF_ARRAY and per_layer and entry.elem_type in _INT_VTYPES:
        if not isinstance(entry.value, tuple):
            raise _error(f"{key} has {len(entry.value)} values, more than any layer count", key, source)
        if not entry.value:
            raise _error(f"{key} is an empty array", key, source)
        return tuple(int(v) for v in entry.value)
    what = "an integer or an array of integers" if per_layer else "an integer"
    raise _error(f"{key} must be {what}, not {entry.type_name}", key, source)


def _check_tensor_name(name: str, source: str) -> None:
    if _CONTROL.search(name):
        raise _error(f"tensor name {name!r} contains a control character", f"tensor {name!r}", source)
    if not _NAME_CHARS.fullmatch(name):
        raise _error(f"tensor name {name!r} is empty or has characters no engine tensor name has "
                     "(letters, digits, '_', '.', '-')", f"tensor {name!r}", source)
    if name.startswith("blk."):
        m = _BLK_NAME.match(name)
        if m is None or not _CANONICAL_LAYER.fullmatch(m.group(1)):
            raise _error(f"tensor {name!r} does not name a layer as blk.N. with a decimal N (the engines "
                         "request blk.%d. names, so nothing would load it)", f"tensor {name}", source)


def display_name(name: str, max_len: int = 200) -> str:
    """A model name from a header made fit to show and to write into files: control characters become
    ``\\xHH`` escapes and the length is bounded (``general.name`` is free text in a GGUF)."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                  for c in name[:max_len])
    return out


def layer_of(name: str) -> int | None:
    """The layer index of a ``blk.N.`` tensor name (canonical decimal), else None."""
    m = _BLK_NAME.match(name)
    if m is None or not _CANONICAL_LAYER.fullmatch(m.group(1)):
        return None
    return int(m.group(1))


def validate_model(tmap: Any) -> None:
    """Check that a header's tensors and hyperparameters agree (a TensorMap built from a GGUF).

    - at least one tensor; every ``blk.N.`` tensor has ``N < block_count`` and the last layer,
      ``block_count - 1``, has tensors (llama.cpp: "missing tensor" / "wrong number of tensors");
    - ``expert_used_count <= expert_count``, and ``expert_used_count >= 1`` exactly when there are experts
      (llama.cpp ``load_hparams`` asserts); a 3-D ``*_exps`` tensor's ``ne[2]`` equals ``expert_count``
      (``create_tensor`` checks the shape ``{.., .., n_expert}``);
    - ``token_embd.weight`` / ``output.weight`` are ``[n_embd, n_vocab]`` (``create_tensor`` checks shapes);
    - ``head_count_kv`` divides ``head_count`` (ggml broadcasts K/V heads over query heads),
      ``leading_dense_block_count`` and ``nextn_predict_layers`` are below ``block_count``.

    Raises:
        GGUFFormatError: naming the key (``{arch}.expert_count`` ...) or the tensor (exit 4).
    """
    p = tmap.params
    source = tmap.source
    arch = p.arch
    if not tmap.tensors:
        raise _error("the file holds no tensors", "n_tensors", source,
                     hint="a metadata-only file is not a model; pass the model's first shard")
    key = f"{arch}.block_count"
    present: set[int] = set()
    for t in tmap.tensors:
        layer = layer_of(t.name)
        if layer is None:
            continue
        if layer >= p.n_layer:
            raise _error(f"tensor {t.name} is outside the {p.n_layer} layers {key} declares",
                         f"tensor {t.name}", source)
        present.add(layer)
    last = max(present, default=-1)
    if last + 1 != p.n_layer:
        raise _error(f"{key} = {p.n_layer} but the last layer with tensors is "
                     f"{'none' if last < 0 else last} ({len(present)} layers have tensors)", key, source)
    if p.n_expert_used > p.n_expert:
        raise _error(f"{arch}.expert_used_count = {p.n_expert_used} exceeds {arch}.expert_count = {p.n_expert}",
                     f"{arch}.expert_used_count", source)
    if p.n_expert > 0 and p.n_expert_used < 1:
        raise _error(f"{arch}.expert_count = {p.n_expert} but {arch}.expert_used_count is 0 or absent",
                     f"{arch}.expert_used_count", source)
    for t in tmap.tensors:
        if t.role.endswith("_exps") and len(t.shape) == 3 and t.shape[2] != p.n_expert:
            raise _error(f"tensor {t.name} holds {t.shape[2]} experts but {arch}.expert_count = {p.n_expert}",
                         f"{arch}.expert_count", source)
    if p.n_head_kv > p.n_head and not (p.n_head == 0 and p.wkv_head_size):
        # (rwkv6qwen2: head_count 0 and head_count_kv grouping the time mix's key/value, conversion/rwkv.py:118-124
        # @0c1e57098; a model without attention heads)
        raise _error(f"{arch}.attention.head_count = {p.n_head} is below head_count_kv = {p.n_head_kv}",
                     f"{arch}.attention.head_count", source)
    if p.n_head > 0 and (p.n_head_kv < 1 or p.n_head % p.n_head_kv):
        raise _error(f"{arch}.attention.head_count_kv = {p.n_head_kv} does not divide "
                     f"{arch}.attention.head_count = {p.n_head}", f"{arch}.attention.head_count_kv", source)
    for name, value in (("leading_dense_block_count", p.n_dense_lead), ("nextn_predict_layers", p.n_nextn)):
        if value >= p.n_layer:
            raise _error(f"{arch}.{name} = {value} is not below {key} = {p.n_layer}", f"{arch}.{name}", source)
    for t in tmap.tensors:
        # llama.cpp create_tensor(tn(LLM_TENSOR_TOKEN_EMBD / LLM_TENSOR_OUTPUT), {n_embd, n_vocab}); the planner
        # reads every tensor of these roles (token_embd, token_embd.weight, output.bias ...) as that matrix
        if t.role in ("token_embd", "output") and (len(t.shape) != 2 or t.shape[0] != p.n_embd):
            raise _error(f"tensor {t.name} has shape {list(t.shape)}; the engines expect [{p.n_embd}, n_vocab] "
                         f"({arch}.embedding_length = {p.n_embd})", f"tensor {t.name}", source)
    if p.n_head > 0 and p.head_dim < 1:
        raise _error(f"the head width is {p.head_dim}: set {arch}.attention.key_length",
                     f"{arch}.attention.key_length", source)


# ============================================================================ options

class Range:
    """An option's allowed values: ``lo..hi`` (``lo`` excluded when ``open_lo``), integers when ``integer``."""

    __slots__ = ("lo", "hi", "unit", "integer", "open_lo")

    def __init__(self, lo: float, hi: float, unit: str = "", *, integer: bool = False, open_lo: bool = False) -> None:
        self.lo, self.hi, self.unit, self.integer, self.open_lo = lo, hi, unit, integer, open_lo

    def describe(self) -> str:
        def show(v: float) -> str:
            return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"

        lo = f"> {show(self.lo)}" if self.open_lo else show(self.lo)
        text = f"{lo} and <= {show(self.hi)}" if self.open_lo else f"{lo}..{show(self.hi)}"
        return f"{text} {self.unit}".rstrip() + (" (a whole number)" if self.integer else "")

    def contains(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        return (self.lo < value if self.open_lo else self.lo <= value) and value <= self.hi


# Bounds a real machine or run can have, generous on purpose: they stop typos and hostile values
# (a negative margin that invents memory, 1e30 GiB reaching the solver) before any stage sees them.
OPTION_RANGES: dict[str, Range] = {
    "--vram": Range(0, 1024, "GiB per GPU"),
    "--ram": Range(0, 65536, "GiB", open_lo=True),
    "--cores": Range(1, 4096, integer=True),
    "--threads": Range(1, 4096, integer=True),
    "--ram-bw": Range(0, 100_000, "GB/s", open_lo=True),
    "--gpu-margin": Range(0, 64, "GiB"),
    "--os-reserve": Range(0, 1024, "GiB"),
    "--ctx": Range(1, 1 << 30, "tokens", integer=True),
    "--ub": Range(1, 65536, "tokens", integer=True),
    "--batch": Range(1, 1 << 20, "tokens", integer=True),
    "--amb": Range(1, 1 << 20, "MiB", integer=True),
    "--port": Range(1, 65535, integer=True),
    "--min-tg": Range(0, 1e6, "tokens/s", open_lo=True),
    "--min-pp": Range(0, 1e7, "tokens/s", open_lo=True),
    "--max-size": Range(0, 1 << 20, "GiB", open_lo=True),
    "--quality-slack": Range(0, 100, "%"),
    "--pareto": Range(0, 32, "plans", integer=True),
}


def check_option(option: str, value: Any, allowed: Range | None = None) -> Any:
    """``value`` unchanged when it is inside the option's range (None passes: the option was not given).

    Raises:
        UsageError: one line naming the option, the value and the allowed range (exit 2).
    """
    from planner.errors import UsageError

    if value is None:
        return None
    rng = allowed or OPTION_RANGES[option]
    if not rng.contains(value):
        raise UsageError(f"{option} {value!r} is out of range: allowed {rng.describe()}")
    return value


def check_options(values: dict[str, Any]) -> None:
    """:func:`check_option` for every ``--option: value`` given (lists are checked item by item)."""
    for option, value in values.items():
        for v in (value if isinstance(value, (list, tuple)) else (value,)):
            check_option(option, v)


# ============================================================================ JSON documents

class Schema:
    """A JSON schema in a few combinators; :meth:`check` raises PlanFileError with the JSON path.

    Kinds: ``int(lo, hi)``, ``num(lo, hi)``, ``text(max_len, pattern)``, ``enum(*values)``, ``boolean()``,
    ``obj(required={...}, optional={...})`` (no other keys), ``array(item, max_len)``,
    ``mapping(key, value, max_len)``, ``nullable(schema)``, ``anything()``.
    """

    __slots__ = ("kind", "args")

    def __init__(self, kind: str, *args: Any) -> None:
        self.kind, self.args = kind, args

    def check(self, value: Any, path: str = "$", source: str = "") -> None:
        from planner.errors import PlanFileError

        def fail(expected: str) -> None:
            shown = repr(value)
            raise PlanFileError(f"expected {expected}, got {shown[:60] + ('...' if len(shown) > 60 else '')}",
                                path=path, source=source,
                                hint="the file was not written by gguf-planner or was edited; write it again with --out")

        k, a = self.kind, self.args
        if k == "anything":
            return
        if k == "nullable":
            if value is not None:
                a[0].check(value, path, source)
            return
        if k == "int":
            if isinstance(value, bool) or not isinstance(value, int) or not a[0] <= value <= a[1]:
                fail(f"an integer in {a[0]}..{a[1]}")
        elif k == "num":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not a[0] <= value <= a[1]:
                fail(f"a finite number in {a[0]:g}..{a[1]:g}")
        elif k == "bool":
            if not isinstance(value, bool):
                fail("true or false")
        elif k == "text":
            max_len, pattern = a
            if not isinstance(value, str) or len(value) > max_len or (pattern is not None and not pattern.fullmatch(value)):
                fail(f"a string of at most {max_len} characters" + (f" matching {pattern.pattern}" if pattern else ""))
        elif k == "enum":
            if value not in a[0] or isinstance(value, bool) != any(isinstance(x, bool) for x in a[0]):
                fail("one of " + ", ".join(repr(x) for x in sorted(a[0], key=str)))
        elif k == "obj":
            required, optional = a
            if not isinstance(value, dict):
                fail("an object")
            for key in value:
                if key not in required and key not in optional:
                    raise PlanFileError(f"unknown field {key!r}", path=f"{path}.{key}", source=source)
            for key, sub in required.items():
                if key not in value:
                    raise PlanFileError("missing field", path=f"{path}.{key}", source=source)
                sub.check(value[key], f"{path}.{key}", source)
            for key, sub in optional.items():
                if key in value:
                    sub.check(value[key], f"{path}.{key}", source)
        elif k == "array":
            item, max_len = a
            if not isinstance(value, list) or len(value) > max_len:
                fail(f"a list of at most {max_len} items")
            for i, v in enumerate(value):
                item.check(v, f"{path}[{i}]", source)
        elif k == "tuple":
            items = a[0]
            if not isinstance(value, list) or len(value) != len(items):
                fail(f"a list of exactly {len(items)} items")
            for i, (sub, v) in enumerate(zip(items, value)):
                sub.check(v, f"{path}[{i}]", source)
        elif k == "mapping":
            key_schema, item, max_len = a
            if not isinstance(value, dict) or len(value) > max_len:
                fail(f"an object of at most {max_len} entries")
            for key, v in value.items():
                key_schema.check(key, f"{path}.{key!s}"[:200], source)
                item.check(v, f"{path}.{key!s}"[:200], source)
        else:  # pragma: no cover - the combinators below make only these kinds
            raise AssertionError(k)


def int_(lo: int, hi: int) -> Schema:
    return Schema("int", lo, hi)


def num(lo: float, hi: float) -> Schema:
    return Schema("num", lo, hi)


def text(max_len: int = 256, pattern: str | None = None) -> Schema:
    return Schema("text", max_len, re.compile(pattern) if pattern else None)


def enum(*values: Any) -> Schema:
    return Schema("enum", frozenset(values))


def boolean() -> Schema:
    return Schema("bool")


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return Schema("obj", required, optional or {})


def array(item: Schema, max_len: int = 100_000) -> Schema:
    return Schema("array", item, max_len)


def mapping(key: Schema, value: Schema, max_len: int = 200_000) -> Schema:
    return Schema("mapping", key, value, max_len)


def nullable(schema: Schema) -> Schema:
    return Schema("nullable", schema)


def anything() -> Schema:
    return Schema("anything")




MAX_JSON_INT = 1 << 62
MAX_JSON_TEXT = 4096


def schema_for(cls: type, overrides: dict[str, Schema] | None = None, *, _seen: tuple = ()) -> Schema:
    """The JSON schema of what :func:`planner.output.to_jsonable` writes for dataclass ``cls``.

    Fields map by their annotations (``int``, ``float``, ``str``, ``bool``, ``X | None``, ``tuple[X, ...]``,
    ``list[X]``, ``dict[str, X]``, nested dataclasses; fields with ``metadata={"json": False}`` are not
    written, so not allowed); a field without a default is required.  ``overrides`` maps a field name (at
    any depth) or ``Class.field`` to a stricter schema (enums, name patterns, ranges).  Every string is at
    most :data:`MAX_JSON_TEXT` characters and every integer within +-2^62 unless overridden.
    """
    import dataclasses
    import types
    import typing

    overrides = overrides or {}
    hints = _type_hints(cls, typing)
    required: dict[str, Schema] = {}
    optional: dict[str, Schema] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("json") is False:
            continue
        sub = overrides.get(f"{cls.__name__}.{f.name}") or overrides.get(f.name)
        if sub is None:
            sub = _schema_of_type(hints[f.name], overrides, (*_seen, cls), types, typing)
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional if has_default else required)[f.name] = sub
    return obj(required, optional)


def _type_hints(cls: type, typing: Any) -> dict[str, Any]:
    """The field annotations of ``cls``; a name imported only for type checking becomes ``Any``."""
    import sys

    try:
        return dict(typing.get_type_hints(cls))
    except NameError:
        module = vars(sys.modules[cls.__module__])
        out: dict[str, Any] = {}
        for name, ann in cls.__annotations__.items():
            try:
                out[name] = eval(ann, module) if isinstance(ann, str) else ann  # noqa: S307 - our own source
            except NameError:
                out[name] = Any
        return out


def _schema_of_type(tp: Any, overrides: dict[str, Schema], seen: tuple, types: Any, typing: Any) -> Schema:
    import dataclasses

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return anything()
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _schema_of_type(rest[0], overrides, seen, types, typing) if len(rest) == 1 else anything()
        return nullable(inner) if len(rest) < len(args) else inner
    if origin is typing.Literal:
        return enum(*args)
    if tp is bool:
        return boolean()
    if tp is int:
        return int_(-MAX_JSON_INT, MAX_JSON_INT)
    if tp is float:
        return Schema("num", -1e300, 1e300)
    if tp is str:
        return text(MAX_JSON_TEXT)
    if origin is tuple and args and args[-1] is not Ellipsis:     # tuple[int, float]: one schema per position
        return Schema("tuple", tuple(_schema_of_type(a, overrides, seen, types, typing) for a in args))
    if origin in (tuple, list):
        item = args[0] if args else Any
        return array(_schema_of_type(item, overrides, seen, types, typing))
    if origin is dict:
        return mapping(text(MAX_JSON_TEXT), _schema_of_type(args[1] if len(args) > 1 else Any, overrides, seen,
                                                            types, typing))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp in seen:
            return anything()
        return schema_for(tp, overrides, _seen=seen)
    return anything()


__all__ = ["OPTION_RANGES", "Range", "Schema", "anything", "array", "boolean", "check_option", "check_options",
           "display_name", "enum", "int_", "layer_of", "mapping", "nullable", "num", "obj", "schema_for", "text",
           "validate_header", "validate_model"]
