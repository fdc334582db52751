"""The ECMAScript regex grammar as libstdc++ reads it for ``std::regex<char>``: pattern text → AST.

A recursive-descent parser over ECMA-262 3rd ed. section 15.10.1 (the grammar ``std::regex`` uses by default),
with libstdc++'s byte semantics (``bits/regex_scanner.tcc``, ``bits/regex_compiler.tcc``): classes, ranges and
escapes work on bytes, ``\\d \\w \\s`` are ASCII, back-references are refused.  :mod:`planner.ecma_regex` compiles
the AST into a bounded backtracking program.
"""

from __future__ import annotations


from planner.errors import RecipeError

_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_DIGIT = frozenset(b"0123456789")
_SPACE = frozenset(b" \t\n\v\f\r")
_ALL = frozenset(range(256))
_LINE_TERMINATORS = frozenset(b"\n\r")
_CONTROL_ESCAPES = {"t": 9, "n": 10, "v": 11, "f": 12, "r": 13}
_CLASS_ESCAPES = {"d": _DIGIT, "D": _ALL - _DIGIT, "w": _WORD, "W": _ALL - _WORD, "s": _SPACE, "S": _ALL - _SPACE}
_SYNTAX = set("^$\\.*+?()[]{}|")



def _show(pattern: str) -> str:
    """A pattern as the user typed it (quoted), or its repr when it holds unprintable characters."""
    return f"'{pattern}'" if pattern.isprintable() else repr(pattern)


class RegexSyntaxError(RecipeError):
    """The pattern is not valid ECMAScript (std::regex would throw regex_error)."""


# ---------------------------------------------------------------------------- AST
# ("char", byte) ("set", frozenset) ("any",) ("bol",) ("eol",) ("wordb", bool) ("cat", [nodes])
# ("alt", [nodes]) ("group", node) ("look", node, positive) ("rep", node, min, max|None, greedy)

MAX_NESTING = 100                   # parentheses inside parentheses (real rules use 1-3)


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.depth = 0

    def error(self, message: str) -> RegexSyntaxError:
        return RegexSyntaxError(f"regex {_show(self.p)}: {message} at character {self.i}")

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def parse(self) -> tuple:
        node = self.disjunction()
        if self.i < len(self.p):
            raise self.error("unbalanced ')'" if self.peek() == ")" else f"unexpected {self.peek()!r}")
        return node

    def disjunction(self) -> tuple:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"groups nested more than {MAX_NESTING} deep")
        try:
            return self._disjunction()
        finally:
            self.depth -= 1

    def _disjunction(self) -> tuple:
        alts = [self.alternative()]
        while self.peek() == "|":
            self.i += 1
            alts.append(self.alternative())
        return alts[0] if len(alts) == 1 else ("alt", alts)

    def alternative(self) -> tuple:
        items: list[tuple] = []
        while self.i < len(self.p) and self.peek() not in "|)":
            items.append(self.term())
        return ("cat", items)

    def term(self) -> tuple:
        c = self.peek()
        if c == "^":
            self.i += 1
            return self.no_quantifier(("bol",))
        if c == "$":
            self.i += 1
            return self.no_quantifier(("eol",))
        if c == "\\" and self.p[self.i + 1:self.i + 2] in ("b", "B"):
            positive = self.p[self.i + 1] == "b"
            self.i += 2
            return self.no_quantifier(("wordb", positive))
        if self.p.startswith(("(?=", "(?!"), self.i):
            positive = self.p[self.i + 2] == "="
            self.i += 3
            inner = self.disjunction()
            self.expect(")")
            return self.no_quantifier(("look", inner, positive))
        return self.quantified(self.atom())

    def no_quantifier(self, node: tuple) -> tuple:
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self.brace() is not None):
            raise self.error("nothing to repeat (a quantifier after an assertion)")
        return node

    def expect(self, c: str) -> None:
        if self.peek() != c:
            raise self.error(f"missing {c!r}")
        self.i += 1

    def brace(self) -> tuple[int, int | None, int] | None:
        """``{n}``, ``{n,}`` or ``{n,m}`` at i: (min, max, end index), else None."""
        j = self.i + 1
        k = j
        while k < len(self.p) and self.p[k].isdigit():
            k += 1
        if k == j:
            return None
        lo = int(self.p[j:k])
        if k < len(self.p) and self.p[k] == "}":
            return lo, lo, k + 1
        if k >= len(self.p) or self.p[k] != ",":
            return None
        k += 1
        m = k
        while m < len(self.p) and self.p[m].isdigit():
            m += 1
        if m >= len(self.p) or self.p[m] != "}":
            return None
        hi = int(self.p[k:m]) if m > k else None
        return lo, hi, m + 1

    def quantified(self, atom: tuple) -> tuple:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.i += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{":
            b = self.brace()
            if b is None:
                raise self.error("'{' that is not a quantifier {n}, {n,} or {n,m} (escape it as \\{)")
            lo, hi, self.i = b
            if hi is not None and hi < lo:
                raise self.error(f"{{{lo},{hi}}}: the maximum is below the minimum")
            if lo > 1000 or (hi or 0) > 1000:
                raise self.error("repetition counts above 1000 are not supported")
        else:
            return atom
        greedy = True
        if self.peek() == "?":
            self.i += 1
            greedy = False
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self.brace() is not None):
            raise self.error("a quantifier after a quantifier")
        return ("rep", atom, lo, hi, greedy)

    def atom(self) -> tuple:
        c = self.peek()
        if c == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("(? extensions other than (?: (?= (?! are not ECMAScript")
            inner = self.disjunction()
            self.expect(")")
            return ("group", inner)
        if c == ".":
            self.i += 1
            return ("set", _ALL - _LINE_TERMINATORS)
        if c == "[":
            return ("set", self.char_class())
        if c == "\\":
            return self.atom_escape()
        if c in ("*", "+", "?"):
            raise self.error("nothing to repeat")
        if c == "{" and self.brace() is not None:
            raise self.error("nothing to repeat")
        if c in ("{", "}", "]", ")"):
            # libstdc++ throws error_brace / error_brack for a lone brace or bracket
            raise self.error(f"a literal {c!r} must be escaped")
        self.i += 1
        return self.literal(c)

    def literal(self, c: str) -> tuple:
        data = c.encode("utf-8")
        if len(data) == 1:
            return ("char", data[0])
        return ("cat", [("char", b) for b in data])   # std::regex<char> sees a multi-byte character as bytes

    def escape_char(self, in_class: bool) -> int | frozenset:
        """After a backslash at i: a byte value or a class set."""
        self.i += 1
        if self.i >= len(self.p):
            raise self.error("trailing backslash")
        e = self.p[self.i]
        self.i += 1
        if e in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[e]
        if e in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[e]
        if e == "b" and in_class:
            return 8
        if e == "0":
            if self.peek().isdigit():
                raise self.error("octal escapes are not ECMAScript")
            return 0
        if e.isdigit():
            raise self.error(f"back-reference \\{e}: not supported (no tensor-name rule needs one)")
        if e == "x":
            h = self.p[self.i:self.i + 2]
            if len(h) != 2 or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise self.error("\\x needs two hex digits")
            self.i += 2
            return int(h, 16)
        if e == "u":
            h = self.p[self.i:self.i + 4]
            if len(h) != 4 or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise self.error("\\u needs four hex digits")
            self.i += 4
            v = int(h, 16)
            if v > 0xFF:
                raise self.error("\\u above 00FF cannot match a single byte of a std::string")
            return v
        if e == "c":
            ch = self.peek()
            if not ch.isascii() or not ch.isalpha():
                raise self.error("\\c needs a letter")
            self.i += 1
            return ord(ch) % 32
        if e.isalnum() or e == "_":
            # ECMAScript identity escapes are for syntax characters; libstdc++ rejects or reinterprets others
            raise self.error(f"unknown escape \\{e}")
        data = e.encode("utf-8")
        if len(data) != 1:
            raise self.error(f"escape of a non-ASCII character {e!r}")
        return data[0]

    def atom_escape(self) -> tuple:
        v = self.escape_char(in_class=False)
        return ("set", v) if isinstance(v, frozenset) else ("char", v)

    def char_class(self) -> frozenset:
        self.i += 1                               # '['
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        members: set[int] = set()
        first = True
        while True:
            if self.i >= len(self.p):
                raise self.error("missing ']'")
            c = self.peek()
            if c == "]":
                self.i += 1
                break
            if c == "[" and self.p[self.i + 1:self.i + 2] in (":", "=", "."):
                raise self.error("POSIX bracket expressions ([[:alpha:]]) are not supported; spell the class out")
            lo = self.class_atom()
            if self.peek() == "-" and self.p[self.i + 1:self.i + 2] not in ("]", ""):
                self.i += 1
                hi = self.class_atom()
                if isinstance(lo, frozenset) or isinstance(hi, frozenset):
                    raise self.error("a class escape (\\d, \\w, \\s) cannot bound a range")
                if hi < lo:
                    raise self.error("range out of order in a character class")
                members.update(range(lo, hi + 1))
            elif isinstance(lo, frozenset):
                members |= lo
            else:
                members.add(lo)
            first = False
        del first
        out = frozenset(members)
        return _ALL - out if negate else out

    def class_atom(self) -> int | frozenset:
        c = self.peek()
        if c == "\\":
            return self.escape_char(in_class=True)
        data = c.encode("utf-8")
        if len(data) != 1:
            raise self.error(f"non-ASCII character {c!r} in a class: std::regex<char> would see {len(data)} "
                             "separate bytes")
        self.i += 1
        return data[0]
