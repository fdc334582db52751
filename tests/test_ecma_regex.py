"""ECMAScript regex_search in bounded steps: against node's RegExp, the fast path against the matcher,
catastrophic patterns refused with a usage error naming the rule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import ecma_regex
from planner.ecma_regex import MAX_STEPS_PER_NAME, RegexSyntaxError, _core, _run
from planner.errors import EXIT_CODES, RecipeError, RegexBudgetError, exit_code_for
from planner.tensors import builtin

NODE = json.loads((Path(__file__).parent / "fixtures/ecma_regex_node.json").read_text())
QWEN_NAMES = [t.name for t in builtin("qwen3-235b-a22b").tensors]


def _vm(pattern: str, subject: str) -> bool:
    """The backtracking matcher alone (no fast path), with a generous budget."""
    core = _core(pattern)
    s = subject.encode()
    budget = [10**7]
    return any(_run(core.prog, s, i, budget) is not None for i in range(len(s) + 1))


@pytest.mark.parametrize("case", NODE["cases"], ids=[c["pattern"] for c in NODE["cases"]])
def test_agrees_with_node_regexp(case):
    # node's RegExp.prototype.test is ECMAScript regex search; on ASCII subjects it is std::regex_search's answer
    pattern = case["pattern"]
    for subject, expected in zip(NODE["subjects"], case["matches"]):
        assert ecma_regex.compile(pattern).search(subject) is expected, (pattern, subject)
        assert _vm(pattern, subject) is expected, (pattern, subject)


def test_bytes_semantics_of_std_regex_char():
    # std::regex<char> sees the UTF-8 bytes of a name: 'é' is two bytes, \w is ASCII only
    assert ecma_regex.search("^..$", "é") and not ecma_regex.search("^.$", "é")
    assert not ecma_regex.search(r"^\w$", "é")
    # '.' excludes \n and \r; '$' matches only at the very end (Python's '$' also matches before a final \n)
    assert not ecma_regex.search("a.b", "a\rb") and not ecma_regex.search("x$", "x\n")


@pytest.mark.parametrize("pattern", [
    r"^(\w+\.?)+x$",          # the example: exponential in any backtracking matcher
    r"(.*)*x",                # nested stars
    r".*.*.*.*.*.*x",         # polynomial of degree 6 on 20-30 byte names
    r"(\w|[a-z]|[a-z_])*\d{4}$",  # overlapping alternatives under a star: 3^13 ways for ffn_down_exps
])
def test_catastrophic_patterns_fail_fast_naming_the_rule(pattern):
    rule = ecma_regex.compile(pattern, where="custom rule 3")
    t0 = time.process_time()
    with pytest.raises(RegexBudgetError, match=r"custom rule 3: regex .* needs more than") as e:
        for name in QWEN_NAMES:
            rule.search(name)
    assert time.process_time() - t0 < 2
    assert exit_code_for(e.value) == 2 and EXIT_CODES[RecipeError] == 2


def test_the_budget_is_deterministic():
    _core.cache_clear()
    a = ecma_regex.compile(r"(\w|\d)*x$")
    ra = [a.search(n) for n in QWEN_NAMES[:200]]
    _core.cache_clear()
    b = ecma_regex.compile(r"(\w|\d)*x$")
    rb = [b.search(n) for n in QWEN_NAMES[:200]]
    assert ra == rb and a.steps_used == b.steps_used > 0


def test_the_per_pattern_budget_bounds_many_names(monkeypatch):
    # a pattern costing a few thousand steps per name stops at the lifetime budget instead of running on
    monkeypatch.setattr(ecma_regex, "MAX_STEPS_PER_PATTERN", 50_000)
    rule = ecma_regex.compile(r"(\w|\d)*x$", where="rule 1")
    with pytest.raises(RegexBudgetError, match="over this model's tensor names"):
        for i in range(10_000):
            rule.search(f"blk.{i}.ffn_down_exps.{i}{i}{i}")


@pytest.mark.parametrize("pattern, why", [
    (r"(a)\1", "back-reference"),
    ("a{2,1}", "maximum is below the minimum"),
    ("(a", "missing ')'"),
    ("a)", "unbalanced"),
    ("[z-a]", "out of order"),
    ("a**", "quantifier after a quantifier"),
    ("*a", "nothing to repeat"),
    ("a{", "not a quantifier"),
    ("}", "must be escaped"),
    ("[abc", "missing ']'"),
    ("(?<=a)b", "extensions"),
    ("(?P<x>a)", "extensions"),
    ("[[:alpha:]]", "POSIX"),
    ("a{1001}", "above 1000"),
    ("\\", "trailing backslash"),
    ("\\q", "unknown escape"),
    ("^*", "nothing to repeat"),
    ("[\\d-z]", "cannot bound a range"),
])
def test_invalid_ecmascript_is_a_usage_error(pattern, why):
    with pytest.raises(RegexSyntaxError, match="rule 2: .*" + __import__("re").escape(why)):
        ecma_regex.compile(pattern, where="rule 2")


# ---------------------------------------------------------------------------- fast path == matcher

_ATOMS = st.sampled_from(["a", "b", ".", r"\.", r"\d", r"\w", "[ab]", "[^a]", "[]", "[^]", "^", "$", r"\b", "x"])


def _quant(s):
    return st.tuples(s, st.sampled_from(["", "*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "+?"])).map(
        lambda t: t[0] + t[1] if t[0] not in ("^", "$", r"\b") else t[0])


_PATTERNS = st.recursive(
    _quant(_ATOMS),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map("".join),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + "|".join(xs) + ")"),
        _quant(inner.map(lambda x: "(" + x + ")")),
        inner.map(lambda x: "(?=" + x + ")"),
        inner.map(lambda x: "(?!" + x + ")"),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(_PATTERNS, st.text(alphabet="ab.x1_\n", max_size=10))
def test_fast_path_agrees_with_the_matcher(pattern, subject):
    try:
        core = _core(pattern)
    except RegexSyntaxError:
        return
    budget = [10**6]
    try:
        vm = any(_run(core.prog, subject.encode(), i, budget) is not None for i in range(len(subject) + 1))
    except ecma_regex._OutOfSteps:
        return
    assert (core.fast.search(subject.encode()) is not None) is vm, (pattern, subject)


def test_a_recipe_over_a_large_model_is_quick():
    rules = [r"blk\..*\.attn_k.*", r"blk\.([0-9]|1[0-1]|8[3-9]|90)\.attn_k\.weight", r"^token_embd\.weight",
             r"blk\..*\.ffn_(gate|up)_exps", r"^output\.weight"]
    t0 = time.process_time()
    for r in rules:
        rule = ecma_regex.compile(r)
        hits = sum(rule.search(n) for n in QWEN_NAMES)
        assert hits > 0 and rule.steps_used <= MAX_STEPS_PER_NAME
    assert time.process_time() - t0 < 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.*+?()[]{}|^$\\-,0123456789dwsbBx=!:", max_size=40), st.text(max_size=20))
def test_any_pattern_compiles_or_is_a_usage_error(pattern, name):
    try:
        rule = ecma_regex.compile(pattern, where="rule 1")
    except RegexSyntaxError as e:
        assert exit_code_for(e) == 2 and "\n" not in str(e)
        return
    try:
        assert rule.search(name) in (True, False)
    except RegexBudgetError:
        pass


@pytest.mark.parametrize("pattern", ["(" * 5000 + "a" + ")" * 5000, "a" * 60000 + "{1000}", "(a{1000}){1000}",
                                     "|".join(["a"] * 30000), "(a|b){1000}" * 10])
def test_oversized_patterns_are_refused(pattern):
    with pytest.raises(RegexSyntaxError):
        ecma_regex.compile(pattern)
