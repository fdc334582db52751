"""User and emitted regexes: the one place a tensor-name regex is compiled and searched.

Every regex that reaches a llama.cpp tool (``--custom-q``/``--tensor-type`` recipes, ``-ot``/
``--override-tensor``, ``--fixed``) goes through :func:`compile_user_regex` and is applied with :func:`search`.
The engines compile these with C++ ``std::regex`` (ECMAScript grammar) and apply ``std::regex_search``
(unanchored): llama.cpp ``src/llama-quant.cpp`` (``tensor_type_option``) and ``common/arg.cpp``
(``--override-tensor``); ik_llama.cpp ``src/llama.cpp`` at 8337e4cd (``llama_model_quantize_internal``,
``custom_quants``).  :mod:`planner.ecma_regex` parses the ECMAScript grammar itself and matches the bytes of
the name in a bounded number of backtracking steps, so a catastrophic pattern fails fast with a usage error
naming the rule (the engine's own backtracking matcher would stall on it).  Python-only constructs are refused
first with a message that says which (:func:`dialect_problem`).  The layer-range builders
(:func:`layers_regex`) write the compressed ranges the emitters use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from planner import ecma_regex
from planner.ecma_regex import EcmaPattern
from planner.errors import RegexDialectError

__all__ = ["compile_user_regex", "search", "dialect_problem", "layers_regex", "roles_regex"]


def compile_user_regex(pattern: str, where: str = "") -> EcmaPattern:
    """Compile a tensor-name regex (ECMAScript, parse cached); each call has its own step budget.

    Raises:
        RegexDialectError: the pattern uses a Python-only construct (the message says which).
        RecipeError: the pattern is not valid ECMAScript, or too large (``RegexSyntaxError``).
    """
    prefix = f"{where}: " if where else ""
    problem = dialect_problem(pattern)
    if problem:
        raise RegexDialectError(f"{prefix}regex {pattern!r}: {problem}",
                                hint="rewrite it with plain ECMAScript syntax (., *, +, ?, [..], (..|..), ^, $)")
    return ecma_regex.compile(pattern, where=where)


def search(compiled: EcmaPattern, name: str) -> bool:
    """``std::regex_search`` semantics: does ``compiled`` match anywhere in the tensor name?

    Raises:
        RegexBudgetError: the pattern needs more backtracking than the budget (exit 2, names the rule).
    """
    return compiled.search(name)


# ------------------------------------------------------------------------- dialect check

_QUANT_BRACE = re.compile(r"\{(\d+)(,(\d*))?\}")


def dialect_problem(p: str) -> str | None:
    """The first construct whose meaning differs between Python ``re`` and C++ std::regex ECMAScript.

    Checked: lookbehind; named groups (both spellings); atomic groups; possessive quantifiers; inline
    flags and other ``(?x`` extensions; comments; conditionals; ``\\A \\Z \\z \\G`` and the escapes
    ``\\a \\U \\N \\c``; POSIX bracket expressions (``[[:alpha:]]``, ``[[=a=]]``, ``[[.a.]]``); a ']'
    first in a class (ECMAScript's ``[]`` is an empty class); ``{,n}`` and braces that are not a quantifier.
    Everything else Python compiles is read the same way by both for tensor names (ASCII, one line).
    """
    i, n = 0, len(p)
    prev_quant = False   # the previous token was a quantifier
    while i < n:
        c = p[i]
        if c == "\\":
            e = p[i + 1] if i + 1 < n else ""
            if e in ("A", "Z", "z", "G"):
                return (f"\\{e} is a Python anchor with no ECMAScript meaning "
                        "(use ^ and $: std::regex_search sees one tensor name)")
            if e in ("a", "U", "N", "c"):
                return f"the escape \\{e} means different things (or nothing) in Python and ECMAScript"
            i += 2
            prev_quant = False
            continue
        if c == "[":
            j = i + 1
            if j < n and p[j] == "^":
                j += 1
            if j < n and p[j] == "]":
                return ("']' first in a character class is a literal in Python but closes an empty class "
                        "in ECMAScript; escape it as \\]")
            while j < n and p[j] != "]":
                if p[j] == "\\":
                    j += 2
                    continue
                if p[j] == "[" and j + 1 < n and p[j + 1] in ":=.":
                    return ("POSIX bracket expressions like [[:alpha:]] are classes in ECMAScript "
                            "but literal characters in Python")
                j += 1
            i = j + 1
            prev_quant = False
            continue
        if c == "(":
            if p.startswith("(?", i):
                ext = p[i + 2:i + 4]
                if ext.startswith(("<=", "<!")):
                    return "lookbehind (?<= / (?<! does not exist in ECMAScript std::regex"
                if ext.startswith(("P", "p")):
                    return "(?P...) named groups are Python-only"
                if ext.startswith("<"):
                    return "named groups (?<name>...) are not supported by C++ std::regex"
                if ext.startswith(">"):
                    return "atomic groups (?>...) are not ECMAScript"
                if ext.startswith("#"):
                    return "(?#...) comments are Python-only"
                if ext.startswith("("):
                    return "conditional groups (?(...)...) are Python-only"
                if ext[:1].isalpha() or ext.startswith("-"):
                    return "inline flags and extensions such as (?i) are Python-only"
            i += 1
            prev_quant = False
            continue
        if c in "*+?":
            if prev_quant and c == "+":
                return "possessive quantifiers (*+, ++, ?+, {n}+) are Python 3.11+ only"
            prev_quant = not (prev_quant and c == "?")   # a '?' after a quantifier only makes it lazy
            i += 1
            continue
        if c == "{":
            m = _QUANT_BRACE.match(p, i)
            if m is None:
                if re.match(r"\{,\d*\}", p[i:]):
                    return "{,n} means {0,n} in Python but is not a quantifier in ECMAScript"
                return "a literal '{' must be escaped: Python reads it literally, std::regex rejects it"
            if prev_quant:
                return "a quantifier after a quantifier is an error in ECMAScript"
            i = m.end()
            prev_quant = True
            continue
        if c == "}":
            return "an unescaped '}' is a literal in Python but an error in std::regex"
        prev_quant = False
        i += 1
    return None


# ------------------------------------------------------------------------- layer ranges

def _range_regex(lo: int, hi: int) -> list[str]:
    """Regex alternatives matching exactly the decimal integers lo..hi (no leading zeros)."""
    if lo > hi:
        return []
    slo, shi = str(lo), str(hi)
    if len(slo) < len(shi):
        # split at the first power of ten above lo
        edge = 10 ** len(slo) - 1
        return _range_regex(lo, edge) + _range_regex(edge + 1, hi)
    if lo == hi:
        return [slo]
    # same length: longest common prefix, then digit ranges
    i = 0
    while slo[i] == shi[i]:
        i += 1
    prefix = slo[:i]
    rest = len(slo) - i - 1
    if slo[i + 1:] == "0" * rest and shi[i + 1:] == "9" * rest:
        d = slo[i] if slo[i] == shi[i] else f"[{slo[i]}-{shi[i]}]"
        return [prefix + d + "[0-9]" * rest]
    out: list[str] = []
    lo_tail_full = slo[i + 1:] == "0" * rest
    hi_tail_full = shi[i + 1:] == "9" * rest
    a, b = int(slo[i]), int(shi[i])
    if not lo_tail_full:
        out += [prefix + slo[i] + x for x in _suffix_from(slo[i + 1:])]
        a += 1
    if not hi_tail_full:
        b_hi = b - 1
    else:
        b_hi = b
    if a <= b_hi:
        d = str(a) if a == b_hi else f"[{a}-{b_hi}]"
        out.append(prefix + d + "[0-9]" * rest)
    if not hi_tail_full:
        out += [prefix + shi[i] + x for x in _suffix_to(shi[i + 1:])]
    return out


def _digits(a: int, b: int) -> str:
    return str(a) if a == b else f"[{a}-{b}]"


def _suffix_from(s: str) -> list[str]:
    """Patterns for all digit strings of len(s) that are >= s."""
    if not s:
        return [""]
    d, rest = int(s[0]), s[1:]
    if rest == "0" * len(rest):
        return [_digits(d, 9) + "[0-9]" * len(rest)]
    out = [s[0] + x for x in _suffix_from(rest)]
    if d < 9:
        out.append(_digits(d + 1, 9) + "[0-9]" * len(rest))
    return out


def _suffix_to(s: str) -> list[str]:
    """Patterns for all digit strings of len(s) that are <= s."""
    if not s:
        return [""]
    d, rest = int(s[0]), s[1:]
    if rest == "9" * len(rest):
        return [_digits(0, d) + "[0-9]" * len(rest)]
    out = []
    if d > 0:
        out.append(_digits(0, d - 1) + "[0-9]" * len(rest))
    out += [s[0] + x for x in _suffix_to(rest)]
    return out


def layers_regex(layers: Sequence[int]) -> str:
    """A regex group matching exactly these layer numbers, e.g. ``(1[2-9]|[2-8][0-9]|9[0-3])``."""
    xs = sorted(set(layers))
    runs: list[tuple[int, int]] = []
    for x in xs:
        if runs and x == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], x)
        else:
            runs.append((x, x))
    alts = [a for lo, hi in runs for a in _range_regex(lo, hi)]
    return alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")"


def roles_regex(roles: Sequence[str]) -> str:
    """A regex alternative over tensor roles; expert roles share ``ffn_(a|b)_exps``."""
    roles = sorted(set(roles))
    m = [re.fullmatch(r"ffn_(\w+?)_exps", r) for r in roles]
    if len(roles) > 1 and all(m):
        return "ffn_(" + "|".join(x.group(1) for x in m if x) + ")_exps"
    if len(roles) == 1:
        return roles[0]
    return "(" + "|".join(roles) + ")"
