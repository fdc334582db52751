"""ECMAScript ``std::regex_search`` on tensor names, in bounded work.

llama-quantize (``--custom-q`` / ``--tensor-type``) and llama-server (``-ot``) compile user patterns with
C++ ``std::regex`` (default grammar ECMAScript) and test each tensor name with ``std::regex_search``
(ik_llama.cpp ``examples/quantize/quantize.cpp`` and ``src/llama.cpp`` ``llama_model_loader``; llama.cpp
``src/llama-quant.cpp`` and ``src/llama-model-loader.cpp``).  ``std::regex<char>`` works on the bytes of
the name, and libstdc++'s default executor is a depth-first backtracking matcher
(``bits/regex_executor.tcc``, ``_Executor::_M_dfs``), so a pattern such as ``^(\\w+\\.?)+x$`` takes
exponential time in the engine too.

This module parses the ECMAScript grammar itself (no Python ``re`` dialect in between) and runs a
backtracking matcher over the UTF-8 bytes of the name that follows the ECMAScript order of choices and its
empty-iteration rule (ECMA-262 3rd ed. 15.10.2.5 RepeatMatcher).  Every executed instruction is a step;
a pattern that needs more than :data:`MAX_STEPS_PER_NAME` steps for one name, or
:data:`MAX_STEPS_PER_PATTERN` over its lifetime, raises :class:`~planner.errors.RegexBudgetError`
(a usage error, exit 2) naming the rule: the engine would spend at least that much work on it as well.
The count is deterministic, so the same pattern and names give the same answer on any machine.

Semantics, as libstdc++ implements ECMAScript for ``char``:
``.`` is any byte but ``\\n`` and ``\\r``; ``^``/``$`` only at the ends of the name (no multiline);
``\\d \\w \\s`` and ``\\b`` are ASCII (classic locale); classes, ranges and escapes work on bytes;
``(?=...)``/``(?!...)`` are lookaheads.  Back-references (``\\1``) are refused: no tensor-name rule needs
them and they are not regular.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from planner.ecma_parse import _WORD, RegexSyntaxError, _Parser, _show  # noqa: F401  (RegexSyntaxError: part of this module's API)
from planner.errors import RegexBudgetError

MAX_STEPS_PER_NAME = 100_000        # one regex_search of one tensor name
MAX_STEPS_PER_PATTERN = 10_000_000  # all searches of one compiled pattern (a few seconds here)
MAX_PROGRAM = 20_000                # instructions after expanding {n,m}
MAX_PATTERN_BYTES = 65_536

# instruction codes
CHAR, SET, ANY, SPLIT, JMP, BOL, EOL, WORDB, NWORDB, MARK, CHECK, LOOK, MATCH = range(13)

# ---------------------------------------------------------------------------- compiler

@dataclass
class _Program:
    code: list[tuple] = field(default_factory=list)
    n_regs: int = 0
    subs: list[_Program] = field(default_factory=list)


class _Compiler:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def compile(self, node: tuple) -> _Program:
        prog = _Program()
        self.emit_node(prog, node)
        prog.code.append((MATCH,))
        return prog

    def emit(self, prog: _Program, ins: tuple) -> int:
        if len(prog.code) >= MAX_PROGRAM:
            raise RegexSyntaxError(f"regex {self.pattern!r} is too large once its repetitions are expanded "
                                   f"(over {MAX_PROGRAM} instructions)")
        prog.code.append(ins)
        return len(prog.code) - 1

    def emit_node(self, prog: _Program, node: tuple) -> None:
        kind = node[0]
        if kind == "char":
            self.emit(prog, (CHAR, node[1]))
        elif kind == "set":
            members = node[1]
            self.emit(prog, (SET, bytes(1 if b in members else 0 for b in range(256))))
        elif kind == "bol":
            self.emit(prog, (BOL,))
        elif kind == "eol":
            self.emit(prog, (EOL,))
        elif kind == "wordb":
            self.emit(prog, (WORDB if node[1] else NWORDB,))
        elif kind == "cat":
            for n in node[1]:
                self.emit_node(prog, n)
        elif kind == "group":
            self.emit_node(prog, node[1])
        elif kind == "alt":
            # SPLIT a, next; a: alt0; JMP end; next: SPLIT b, next2 ... last alternative falls through
            jumps = []
            alts = node[1]
            for k, alt in enumerate(alts):
                if k < len(alts) - 1:
                    split = self.emit(prog, (SPLIT, 0, 0))
                    self.emit_node(prog, alt)
                    jumps.append(self.emit(prog, (JMP, 0)))
                    prog.code[split] = (SPLIT, split + 1, len(prog.code))
                else:
                    self.emit_node(prog, alt)
            for j in jumps:
                prog.code[j] = (JMP, len(prog.code))
        elif kind == "look":
            sub = _Compiler(self.pattern).compile(node[1])
            prog.subs.append(sub)
            self.emit(prog, (LOOK, len(prog.subs) - 1, node[2]))
        elif kind == "rep":
            self.emit_rep(prog, *node[1:])
        else:  # pragma: no cover - parser produces only the kinds above
            raise AssertionError(kind)

    def emit_rep(self, prog: _Program, atom: tuple, lo: int, hi: int | None, greedy: bool) -> None:
        for _ in range(lo):
            self.emit_node(prog, atom)
        if hi is None:
            reg = prog.n_regs
            prog.n_regs += 1
            loop = self.emit(prog, (SPLIT, 0, 0))
            self.emit(prog, (MARK, reg))
            self.emit_node(prog, atom)
            self.emit(prog, (CHECK, reg))        # an iteration that matched nothing fails (RepeatMatcher)
            self.emit(prog, (JMP, loop))
            end = len(prog.code)
            prog.code[loop] = (SPLIT, loop + 1, end) if greedy else (SPLIT, end, loop + 1)
            return
        splits = []
        for _ in range(hi - lo):
            splits.append(self.emit(prog, (SPLIT, 0, 0)))
            self.emit_node(prog, atom)
        end = len(prog.code)
        for s in splits:
            prog.code[s] = (SPLIT, s + 1, end) if greedy else (SPLIT, end, s + 1)


def _first(node: tuple) -> tuple[frozenset, bool]:
    """(bytes that can start a match, whether the node can match without consuming)."""
    kind = node[0]
    if kind == "char":
        return frozenset((node[1],)), False
    if kind == "set":
        return node[1], False
    if kind in ("bol", "eol", "wordb", "look"):
        return frozenset(), True
    if kind == "group":
        return _first(node[1])
    if kind == "rep":
        f, nullable = _first(node[1])
        return f, nullable or node[2] == 0
    if kind == "alt":
        out: set[int] = set()
        nullable = False
        for a in node[1]:
            f, n = _first(a)
            out |= f
            nullable = nullable or n
        return frozenset(out), nullable
    out = set()
    for n in node[1]:                           # cat
        f, nullable = _first(n)
        out |= f
        if not nullable:
            return frozenset(out), False
    return frozenset(out), True


def _anchored(node: tuple) -> bool:
    """Every match must start at position 0 (each alternative begins with ^)."""
    kind = node[0]
    if kind == "bol":
        return True
    if kind == "group":
        return _anchored(node[1])
    if kind == "alt":
        return all(_anchored(a) for a in node[1])
    if kind == "cat":
        for n in node[1]:
            if n[0] == "bol":
                return True
            if n[0] in ("wordb", "look", "eol"):
                continue      # zero-width before ^ does not move the start
            return _anchored(n) if n[0] in ("group", "alt") else False
    return False


# ---------------------------------------------------------------------------- fast path

def _py_set(members: frozenset) -> bytes:
    if not members:
        return rb"(?!)"                           # ECMAScript [] matches nothing
    ranges = []
    vals = sorted(members)
    lo = prev = vals[0]
    for v in vals[1:]:
        if v != prev + 1:
            ranges.append((lo, prev))
            lo = v
        prev = v
    ranges.append((lo, prev))
    body = b"".join(b"\\x%02x" % a if a == z else b"\\x%02x-\\x%02x" % (a, z) for a, z in ranges)
    return b"[" + body + b"]"


def _to_python(node: tuple) -> bytes:
    """The same language as a Python ``re`` bytes pattern (only constructs both read alike, spelled out)."""
    kind = node[0]
    if kind == "char":
        return b"\\x%02x" % node[1]
    if kind == "set":
        return _py_set(node[1])
    if kind == "bol":
        return rb"\A"
    if kind == "eol":
        return rb"\Z"
    if kind == "wordb":
        # Python's \B never matches an empty string (before 3.14); spell "not a boundary" out
        return rb"\b" if node[1] else rb"(?:(?<=\w)(?=\w)|(?<!\w)(?!\w))"
    if kind == "cat":
        return b"".join(_to_python(n) for n in node[1])
    if kind == "group":
        return b"(?:" + _to_python(node[1]) + b")"
    if kind == "alt":
        return b"(?:" + b"|".join(_to_python(a) for a in node[1]) + b")"
    if kind == "look":
        return (b"(?=" if node[2] else b"(?!") + _to_python(node[1]) + b")"
    _, atom, lo, hi, greedy = node
    q = b"{%d,%s}" % (lo, b"" if hi is None else b"%d" % hi)
    return b"(?:" + _to_python(atom) + b")" + q + (b"" if greedy else b"?")


_INF = float("inf")


def _ways(node: tuple, n: int) -> float:
    """An upper bound on the ways ``node`` can match (choices a backtracking run may explore) in a string
    of ``n`` bytes; infinite where repetition of a non-trivial body or a lookahead makes it hard to bound."""
    kind = node[0]
    if kind in ("char", "set", "bol", "eol", "wordb"):
        return 1
    if kind == "look":
        return _INF
    if kind == "group":
        return _ways(node[1], n)
    if kind == "cat":
        out = 1.0
        for c in node[1]:
            out *= _ways(c, n)
        return out
    if kind == "alt":
        return sum(_ways(a, n) for a in node[1])
    _, atom, lo, hi, _ = node
    if atom[0] in ("char", "set"):                 # one byte per iteration: at most n + 1 lengths
        return min(n if hi is None else hi, n) - min(lo, n) + 1
    if hi is None:
        return _INF
    w = _ways(atom, n)
    if w <= 1:
        return hi - lo + 1
    try:
        return sum(w ** k for k in range(lo, hi + 1))
    except OverflowError:
        return _INF


# ---------------------------------------------------------------------------- matcher

def _run(prog: _Program, s: bytes, start: int, budget: list[int]) -> int | None:
    """Backtracking run of ``prog`` at ``start``; the end position of the first match (ECMAScript order)."""
    code = prog.code
    n = len(s)
    regs = [-1] * prog.n_regs
    stack: list[tuple] = [(0, start)]
    steps = budget[0]
    try:
        while stack:
            item = stack.pop()
            if item[0] < 0:                      # undo a MARK
                regs[item[1]] = item[2]
                continue
            pc, pos = item
            while True:
                steps -= 1
                if steps < 0:
                    raise _OutOfSteps
                ins = code[pc]
                op = ins[0]
                if op == CHAR:
                    if pos < n and s[pos] == ins[1]:
                        pc += 1
                        pos += 1
                        continue
                    break
                if op == SET:
                    if pos < n and ins[1][s[pos]]:
                        pc += 1
                        pos += 1
                        continue
                    break
                if op == SPLIT:
                    stack.append((ins[2], pos))
                    pc = ins[1]
                    continue
                if op == JMP:
                    pc = ins[1]
                    continue
                if op == MARK:
                    stack.append((-1, ins[1], regs[ins[1]]))
                    regs[ins[1]] = pos
                    pc += 1
                    continue
                if op == CHECK:
                    if regs[ins[1]] == pos:
                        break
                    pc += 1
                    continue
                if op == MATCH:
                    return pos
                if op == BOL:
                    if pos == 0:
                        pc += 1
                        continue
                    break
                if op == EOL:
                    if pos == n:
                        pc += 1
                        continue
                    break
                if op in (WORDB, NWORDB):
                    a = pos > 0 and s[pos - 1] in _WORD
                    b = pos < n and s[pos] in _WORD
                    if (a != b) == (op == WORDB):
                        pc += 1
                        continue
                    break
                if op == LOOK:
                    budget[0] = steps
                    found = _run(prog.subs[ins[1]], s, pos, budget) is not None
                    steps = budget[0]
                    if found == ins[2]:
                        pc += 1
                        continue
                    break
                raise AssertionError(op)  # pragma: no cover
        return None
    finally:
        budget[0] = steps


class _OutOfSteps(Exception):
    pass


class _Core:
    """A parsed and compiled pattern with its per-name results (shared by every use of the same pattern)."""

    __slots__ = ("pattern", "tree", "prog", "first", "nullable", "anchored", "results", "fast", "_bounds",
                 "_first_table")

    def __init__(self, pattern: str) -> None:
        if len(pattern.encode("utf-8", "surrogatepass")) > MAX_PATTERN_BYTES:
            raise RegexSyntaxError(f"regex of {len(pattern)} characters is too long")
        tree = _Parser(pattern).parse()
        self.pattern = pattern
        self.tree = tree
        self.prog = _Compiler(pattern).compile(tree)
        self.first, self.nullable = _first(tree)
        self.anchored = _anchored(tree)
        self.results: dict[str, bool] = {}
        self.fast = re.compile(_to_python(tree), re.DOTALL)
        self._bounds: dict[int, float] = {}
        self._first_table = bytes(0 if b in self.first else 1 for b in range(256))

    def bound(self, s: bytes) -> float:
        """An upper bound on the backtracking steps of one search of ``s`` (see :func:`_ways`)."""
        n = len(s)
        per_start = self._bounds.get(n)
        if per_start is None:
            per_start = self._bounds[n] = _ways(self.tree, n) * (len(self.prog.code) + n + 1)
        if self.anchored:
            starts = 1
        elif self.nullable:
            starts = n + 1
        else:
            starts = n - s.translate(self._first_table).count(1) if n else 0
        return starts * per_start

    def search(self, s: bytes, budget: list[int]) -> bool:
        prog = self.prog
        if self.anchored:
            return _run(prog, s, 0, budget) is not None
        first, nullable = self.first, self.nullable
        for start in range(len(s) + 1):
            if not nullable and (start == len(s) or s[start] not in first):
                continue
            if _run(prog, s, start, budget) is not None:
                return True
        return False


@functools.lru_cache(maxsize=1024)
def _core(pattern: str) -> _Core:
    return _Core(pattern)


class EcmaPattern:
    """A compiled pattern: :meth:`search` is ``std::regex_search`` on a tensor name, in bounded steps.

    ``steps_used`` counts this object's work; :data:`MAX_STEPS_PER_PATTERN` bounds it (one object per use
    of a rule, e.g. one recipe applied to one model).
    """

    __slots__ = ("pattern", "where", "_core", "steps_used")

    def __init__(self, pattern: str, where: str = "") -> None:
        try:
            self._core = _core(pattern)
        except RegexSyntaxError as exc:
            raise RegexSyntaxError(f"{_prefix(where)}{exc.message}",
                                   hint="std::regex (ECMAScript) would reject it too") from None
        self.pattern = pattern
        self.where = where
        self.steps_used = 0

    def search(self, name: str) -> bool:
        """Whether ``std::regex_search(name, regex)`` is true.

        Raises:
            RegexBudgetError: the pattern needs more than the step budget (catastrophic backtracking).
        """
        core = self._core
        hit = core.results.get(name)
        if hit is not None:
            return hit
        s = name.encode("utf-8", "surrogatepass")
        if core.bound(s) <= MAX_STEPS_PER_NAME:
            # provably within the budget: Python's C matcher on the same language gives the same answer
            found = core.fast.search(s) is not None
            if len(core.results) < 1 << 16:
                core.results[name] = found
            return found
        allowed = min(MAX_STEPS_PER_NAME, MAX_STEPS_PER_PATTERN - self.steps_used)
        budget = [allowed]
        try:
            found = core.search(s, budget)
        except _OutOfSteps:
            self.steps_used += allowed
            scope = "for one tensor name" if allowed == MAX_STEPS_PER_NAME else "over this model's tensor names"
            raise RegexBudgetError(
                f"{_prefix(self.where)}regex {_show(self.pattern)} needs more than {allowed:,} backtracking steps "
                f"{scope} (at {name!r}): llama.cpp's std::regex would stall on it as well",
                hint="avoid nested quantifiers such as (\\w+\\.?)+ and overlapping alternatives under * or +, "
                     "e.g. write blk\\.[0-9]+\\.ffn_.*_exps") from None
        self.steps_used += allowed - budget[0]
        if len(core.results) < 1 << 16:
            core.results[name] = found
        return found

    def __repr__(self) -> str:
        return f"EcmaPattern({self.pattern!r})"


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def compile(pattern: str, *, where: str = "") -> EcmaPattern:  # noqa: A001 - mirrors re.compile
    """Parse ``pattern`` as ECMAScript (std::regex's default grammar) into a bounded matcher.

    Parsing and per-name results are cached per pattern; each call returns a fresh step budget.
    ``where`` names the rule in error messages.

    Raises:
        RegexSyntaxError: the pattern is not valid ECMAScript, uses a back-reference, or is too large.
    """
    return EcmaPattern(pattern, where)


def search(pattern: str | EcmaPattern, name: str, *, where: str = "") -> bool:
    """``std::regex_search(name, std::regex(pattern))``, in bounded steps.

    Raises:
        RegexSyntaxError, RegexBudgetError: both usage errors (exit 2) that name ``where``.
    """
    compiled = pattern if isinstance(pattern, EcmaPattern) else compile(pattern, where=where)
    return compiled.search(name)


__all__ = ["EcmaPattern", "MAX_STEPS_PER_NAME", "MAX_STEPS_PER_PATTERN", "RegexSyntaxError", "compile", "search"]
