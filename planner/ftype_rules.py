"""``llama_tensor_get_type`` as data: the per-tensor rules of ``data/ftype_rules.toml`` (ordered arms of clauses
in a small condition language documented in the TOML's header), compiled once per engine, and the counters state
llama-quantize threads through a file (ik_llama.cpp ``src/llama-quantize.cpp`` at 8337e4cd,
llama.cpp ``src/llama-quant.cpp``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.errors import RecipeError
from planner.quants import catalogue
from planner.tables import read_toml
from planner.tensors import ModelParams, TensorInfo
from planner.ftypes import Ftype, QuantizeSpec, _check_engine, _option_type, ftype_names

_COUNTERS = ("attention_wv", "ffn_down", "ffn_gate", "ffn_up")


@dataclass(slots=True)
class QuantizeState:
    """The mutable part of quantize_state_internal: counters that llama_tensor_get_type consults.

    Rules such as Q3_K_M's "first two attn_v get q5_K" or the low-bit group's ffn_down bump depend on
    how many tensors of a kind came before, so :func:`quantize` threads one state through the file.
    """

    has_output: bool = True          # the file has output.weight (else token_embd doubles as output)
    n_attention_wv: int = 0          # attn_v(-like) tensors in the file
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))

    @classmethod
    def for_tensors(cls, tensors: Iterable[TensorInfo], engine: str = "ik") -> QuantizeState:
        """The state llama-quantize builds in its first pass over the tensor list."""
        rules = _rules(engine)
        names = [t.name for t in tensors]
        return cls(has_output="output.weight" in names,
                   n_attention_wv=sum(1 for n in names if any(s in n for s in rules.wv_count)))




_QUANTITIES: dict[str, Callable[[Any], int]] = {
    "gqa": lambda c: c.params.n_gqa,
    "n_expert": lambda c: c.params.n_expert,
    "n_vocab": lambda c: c.params.n_vocab,
    "n_embd": lambda c: c.params.n_embd,
    "n_head": lambda c: c.params.n_head,
    "n_head_kv": lambda c: c.params.n_head_kv,
    "n_layer": lambda c: c.params.n_layer,
    "ne0": lambda c: c.t.shape[0],
    "ne1": lambda c: c.t.shape[1] if len(c.t.shape) > 1 else 1,
    "ne2": lambda c: c.t.shape[2] if len(c.t.shape) > 2 else 1,
    "wv": lambda c: c.state.counters["attention_wv"],
    "layer": lambda c: c.layer()[0],
    "n/8": lambda c: c.layer()[1] // 8,
    "n/16": lambda c: c.layer()[1] // 16,
    "7n/8": lambda c: 7 * c.layer()[1] // 8,
}


def _use_more_bits(i: int, n: int) -> bool:
    # llama_tensor_get_type's use_more_bits; i >= n/8 whenever the modulo is reached, so % agrees with C
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


_BOOLEANS: dict[str, Callable[[Any], bool]] = {
    "tied": lambda c: not c.state.has_output,
    "imatrix": lambda c: c.spec.has_imatrix,
    "falcon": lambda c: c.params.arch == "falcon",
    "more_bits": lambda c: _use_more_bits(*c.layer()),
    "more_bits_wv": lambda c: _use_more_bits(c.state.counters["attention_wv"], c.state.n_attention_wv),
    "output_type_given": lambda c: c.spec.output_tensor_type is not None,
    "token_type_given": lambda c: c.spec.token_embedding_type is not None,
}


_OPS = {">=": int.__ge__, "<=": int.__le__, "==": int.__eq__, "!=": int.__ne__, "<": int.__lt__, ">": int.__gt__}


_CMP = re.compile(r"^([\w/]+)(>=|<=|==|!=|<|>)([\w/]+)$")


_MOD = re.compile(r"^ne0%(\d+|block)!=0$")


def _operand(token: str) -> Callable[[Any], int]:
    if token.isdigit():
        value = int(token)
        return lambda c: value
    if token in _QUANTITIES:
        return _QUANTITIES[token]
    raise ValueError(f"unknown quantity {token!r}")


def _compile_atom(atom: str) -> Callable[[Any], bool]:
    neg = atom.startswith("!")
    body = atom[1:] if neg else atom
    fn: Callable[[Any], bool]
    if body.startswith("name="):
        s = body[5:]
        fn = lambda c: c.t.name == s  # noqa: E731
    elif body.startswith("name~"):
        s = body[5:]
        fn = lambda c: s in c.t.name  # noqa: E731
    elif body.startswith("model:"):
        cls = body[6:]
        fn = lambda c: c.model_class == cls  # noqa: E731
    elif body in _BOOLEANS:
        fn = _BOOLEANS[body]
    elif m := _MOD.match(body):
        block = m.group(1)
        if block == "block":
            fn = lambda c: c.t.shape[0] % catalogue().get(c.type).block_size != 0  # noqa: E731
        else:
            k = int(block)
            fn = lambda c: c.t.shape[0] % k != 0  # noqa: E731
    elif m := _CMP.match(body):
        a, op, b = _operand(m.group(1)), _OPS[m.group(2)], _operand(m.group(3))
        fn = lambda c: op(a(c), b(c))  # noqa: E731
    else:
        raise ValueError(f"unknown atom {atom!r}")
    return (lambda c: not fn(c)) if neg else fn


def _compile_when(text: str | None) -> Callable[[Any], bool] | None:
    """A DNF condition string ("a && b || c") as a predicate on the evaluation context."""
    if not text:
        return None
    if "(" in text or ")" in text:
        raise ValueError(f"parentheses are not part of the rule language: {text!r}")
    alternatives = [[_compile_atom(a.strip()) for a in alt.split("&&")] for alt in text.split("||")]
    return lambda c: any(all(atom(c) for atom in conj) for conj in alternatives)


@dataclass(frozen=True, slots=True)
class _Clause:
    when_text: str
    when: Callable[[Any], bool] | None
    ftypes: frozenset[str] | None
    unless_type: frozenset[str]
    type: str | None
    mapping: Mapping[str, str] | None
    keep: bool

    def applies(self, c: _Ctx) -> bool:
        if self.ftypes is not None and (c.ftype is None or c.ftype.name not in self.ftypes):
            return False
        if self.unless_type and c.type in self.unless_type:
            return False
        return self.when is None or self.when(c)

    def result(self, c: _Ctx) -> str:
        if self.keep:
            return c.type
        if self.mapping is not None:
            return self.mapping.get(c.type, c.type)
        if self.type == "@output_tensor_type":
            return _option_type(c.spec.output_tensor_type, c.spec.engine, "--output-tensor-type").name
        if self.type == "@token_embedding_type":
            return _option_type(c.spec.token_embedding_type, c.spec.engine, "--token-embedding-type").name
        return self.type  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Arm:
    label: str
    when: Callable[[Any], bool] | None
    ftypes: frozenset[str] | None
    group: str | None
    counter: str | None
    layer: str | None
    chains: tuple[tuple[_Clause, ...], ...]


@dataclass(frozen=True, slots=True)
class _Rules:
    engine: str
    arms: tuple[_Arm, ...]
    groups: Mapping[str, tuple[_Arm, ...]]
    wv_count: tuple[str, ...]
    wv_multiples: tuple[int, ...]          # allowed n_attention_wv / block_count ratios; () = not checked
    wv_exempt_archs: frozenset[str]
    never_find: tuple[tuple[str, str], ...]
    never_eq: tuple[tuple[str, str], ...]
    imatrix_types: frozenset[str]
    imatrix_q2k_ftype: str
    model_classes: tuple[tuple[str, Callable[[Any], bool], str], ...]


def _expand(names: Iterable[str], sets: Mapping[str, list[str]]) -> list[str]:
    out: list[str] = []
    for n in names:
        out.extend(sets[n[1:]] if n.startswith("$") else [n])
    return out


def _build_clause(raw: Mapping[str, Any], sets: Mapping[str, list[str]], engine: str) -> _Clause:
    known_ftypes = set(ftype_names(engine))
    ftypes = frozenset(_expand(raw["ftypes"], sets)) if "ftypes" in raw else None
    for f in ftypes or ():
        if f not in known_ftypes:
            raise ValueError(f"{engine} rule names unknown ftype {f!r}")
    results = [k for k in ("type", "map", "keep") if k in raw]
    if len(results) != 1:
        raise ValueError(f"{engine} rule needs exactly one of type/map/keep: {raw!r}")
    cat = catalogue()
    named = [raw.get("type")] if "type" in raw else []
    named += [x for kv in raw.get("map", {}).items() for x in kv]
    unless = _expand(raw.get("unless_type", ()), sets)
    for t in named + unless:
        if t and not t.startswith("@"):
            cat.get(t, engine=engine, case_sensitive=True)
    return _Clause(when_text=raw.get("when", ""), when=_compile_when(raw.get("when")), ftypes=ftypes,
                   unless_type=frozenset(unless), type=raw.get("type"),
                   mapping=dict(raw["map"]) if "map" in raw else None, keep=bool(raw.get("keep", False)))


def _build_arm(raw: Mapping[str, Any], sets: Mapping[str, list[str]], engine: str) -> _Arm:
    chains = [raw.get("rules", ())] + list(raw.get("then", ()))
    if raw.get("counter") not in (None, *_COUNTERS) or raw.get("layer") not in (None, "info", "count"):
        raise ValueError(f"bad counter/layer in {engine} arm {raw.get('label')!r}")
    ftypes = frozenset(_expand(raw["ftypes"], sets)) if "ftypes" in raw else None
    return _Arm(label=raw["label"], when=_compile_when(raw.get("when")), ftypes=ftypes, group=raw.get("group"),
                counter=raw.get("counter"), layer=raw.get("layer"),
                chains=tuple(tuple(_build_clause(c, sets, engine) for c in chain) for chain in chains))


@functools.cache
def _rules(engine: str) -> _Rules:
    """The rule tables of one engine, compiled and checked against the catalogue and ftypes.csv."""
    _check_engine(engine)
    doc = read_toml("ftype_rules.toml")
    sec = doc[engine]
    sets = sec.get("sets", {})
    arms = tuple(_build_arm(a, sets, engine) for a in sec["arms"])
    groups = {g: tuple(_build_arm(a, sets, engine) for a in sub) for g, sub in sec.get("group", {}).items()}
    for a in arms:
        if a.group and a.group not in groups:
            raise ValueError(f"{engine} arm {a.label!r} names missing group {a.group!r}")
    classes = tuple((m["arch"], _compile_when(m["when"]), m["class"]) for m in doc.get("model_class", ()))
    return _Rules(engine=engine, arms=arms, groups=groups, wv_count=tuple(sec["wv_count"]),
                  wv_multiples=tuple(sec.get("wv_multiples", ())),
                  wv_exempt_archs=frozenset(sec.get("wv_exempt_archs", ())),
                  never_find=tuple((a, b) for a, b in sec["never_find"]),
                  never_eq=tuple((a, b) for a, b in sec["never_eq"]),
                  imatrix_types=frozenset(sec["imatrix_types"]), imatrix_q2k_ftype=sec["imatrix_q2k_ftype"],
                  model_classes=classes)  # type: ignore[arg-type]


_BLK = re.compile(r"blk\.([+-]?\d+)\.")


class _Ctx:
    """What one clause can look at: the tensor, the model, the spec, the counters, the current type."""

    __slots__ = ("t", "params", "spec", "ftype", "state", "type", "model_class", "arm", "_layer")

    def __init__(self, t: TensorInfo | None, params: ModelParams, spec: QuantizeSpec, ftype: Ftype | None,
                 state: QuantizeState, type_name: str, model_class: str) -> None:
        self.t, self.params, self.spec, self.ftype, self.state = t, params, spec, ftype, state
        self.type, self.model_class = type_name, model_class
        self.arm: _Arm | None = None
        self._layer: tuple[int, int] | None = None

    def layer(self) -> tuple[int, int]:
        """(i_layer, n_layer) as the current arm computes it (layer_info() or the raw counter)."""
        if self._layer is None:
            arm = self.arm
            if arm is None or arm.layer is None or arm.counter is None:
                raise ValueError("layer atom used in an arm without `layer`")
            n = self.params.n_layer
            i = self.state.counters[arm.counter]
            if arm.layer == "info" and self.params.n_expert > 1:
                assert self.t is not None
                m = _BLK.match(self.t.name)
                if not m:
                    raise RecipeError(f"failed to determine the layer of tensor {self.t.name} "
                                      "(llama-quantize's layer_info needs a blk.N. name in MoE models)")
                i = int(m.group(1))
                if not 0 <= i < n:
                    raise RecipeError(f"bad layer {i} for tensor {self.t.name}: must be in [0, {n})")
            self._layer = (i, n)
        return self._layer


def _model_class(params: ModelParams, engine: str) -> str:
    rules = _rules(engine)
    ctx = _Ctx(None, params, QuantizeSpec(engine=engine), None, QuantizeState(), "f32", "")
    for arch, when, cls in rules.model_classes:
        if arch == params.arch and when(ctx):
            return cls
    return ""


def _run_arms(arms: Sequence[_Arm], groups: Mapping[str, tuple[_Arm, ...]], c: _Ctx,
              prefix: str = "") -> tuple[str, str | None]:
    """The first arm that applies decides; returns (type, reason or None when the type is unchanged)."""
    assert c.ftype is not None
    for arm in arms:
        if arm.ftypes is not None and c.ftype.name not in arm.ftypes:
            continue
        if arm.when is not None and not arm.when(c):
            continue
        if arm.group is not None:
            return _run_arms(groups[arm.group], groups, c, prefix=f"{arm.label} ")
        c.arm, c._layer = arm, None
        if arm.layer == "info":
            c.layer()  # layer_info() runs (and may throw) before any rule is tested
        start, reasons = c.type, []
        for chain in arm.chains:
            for clause in chain:
                if clause.applies(c):
                    new = clause.result(c)
                    if new != c.type:
                        what = f" with {clause.when_text}" if clause.when_text else ""
                        if clause.ftypes is not None:
                            what += f" ({c.ftype.name})"
                        change = f": {c.type} -> {new}" if clause.mapping is not None else f" -> {new}"
                        reasons.append(f"ftype rule: {prefix}{arm.label}{what}{change}")
                        c.type = new
                    break
        if arm.counter is not None:
            c.state.counters[arm.counter] += 1
        c.arm = None
        return c.type, ("; ".join(reasons) if c.type != start else None)
    return c.type, None
