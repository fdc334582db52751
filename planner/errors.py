"""One exception hierarchy for the whole package.

Every error a user can cause derives from :class:`PlannerError`.  Each carries structured
attributes (so tests and the JSON output can read them) and a message that says what went
wrong, where, and what to do next.  :data:`EXIT_CODES` maps classes to process exit codes in
one place; the CLI uses :func:`exit_code_for` and :func:`format_error`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

from planner.units import GIB, MIB


class PlannerError(Exception):
    """Root of every error gguf-planner raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(PlannerError):
    """The command line or an option value is wrong."""


class GGUFFormatError(PlannerError):
    """A GGUF header is malformed, truncated or hostile.

    ``offset`` is the byte offset where reading failed, ``field`` names what was being read.
    """

    def __init__(self, message: str, *, offset: int | None = None, field: str = "",
                 source: str = "", hint: str = "") -> None:
        where = []
        if source:
            where.append(source)
        if offset is not None:
            where.append(f"offset {offset}")
        if field:
            where.append(f"field {field}")
        full = f"{message} [{', '.join(where)}]" if where else message
        super().__init__(full, hint=hint)
        self.offset = offset
        self.field = field
        self.source = source


class FileSizeMismatchError(GGUFFormatError):
    """The file on disk is shorter/longer than its header implies (typically a truncated download)."""

    def __init__(self, source: str, expected_bytes: int, actual_bytes: int) -> None:
        super().__init__(
            f"file size {actual_bytes} bytes differs from the {expected_bytes} bytes its header implies "
            f"({actual_bytes - expected_bytes:+d})",
            source=source,
            hint="the download is probably incomplete: fetch the file again",
        )
        self.expected_bytes = expected_bytes
        self.actual_bytes = actual_bytes


class UnknownQuantTypeError(PlannerError):
    """A quant type name or ggml type id is not in the catalogue (or not valid for the engine)."""

    def __init__(self, name: str | int, *, known: Iterable[str] = (), context: str = "",
                 hint: str = "") -> None:
        close: list[str] = []
        if isinstance(name, str):
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
            lowered = [k for k in known if k.lower() == name.lower() and k != name]
            close = lowered + [c for c in close if c not in lowered]
        what = f"unknown quant type {name!r}" if isinstance(name, str) else f"unknown ggml type id {name}"
        if context:
            what += f" ({context})"
        if close and not hint:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        super().__init__(what, hint=hint)
        self.name = name
        self.close_matches = close


class UnknownModelError(PlannerError):
    """MODEL is neither a file, a config.json, nor a built-in architecture name."""


class RecipeError(PlannerError):
    """A --custom-q / --tensor-type recipe cannot be parsed or applied."""


class RegexDialectError(RecipeError):
    """A user regex means different things in Python ``re`` and C++ std::regex (ECMAScript)."""


class RegexBudgetError(RecipeError):
    """A user regex needs more backtracking work than the budget (catastrophic backtracking)."""


class UnsupportedTensorSizeError(RecipeError):
    """No type (not even the fallback) can store a tensor with this row width."""


class InfeasibleBudgetError(PlannerError):
    """The model cannot fit the given memory budgets.

    ``shortfall_bytes`` maps device name to the number of bytes missing; ``options`` lists
    the nearest changes that would make it feasible.
    """

    def __init__(self, message: str, *, shortfall_bytes: Mapping[str, int] | None = None,
                 options: Sequence[str] = (), hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.shortfall_bytes = dict(shortfall_bytes or {})
        self.options = list(options)

    def __str__(self) -> str:
        text = self.message
        if self.shortfall_bytes:
            parts = [f"{dev} short by {_size(b)}" for dev, b in self.shortfall_bytes.items()]
            text += "; " + ", ".join(parts)
        if self.options:
            text += "; nearest feasible: " + "; ".join(self.options)
        if self.hint:
            text += f" ({self.hint})"
        return text


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB // 100 else f"{n / MIB:.1f} MiB"


class HardwareProbeError(PlannerError):
    """Probing the machine failed in a way that cannot be degraded gracefully."""


class ProfileError(PlannerError):
    """A hardware profile TOML is missing, malformed or invalid (names the file and key)."""

    def __init__(self, message: str, *, path: str = "", key: str = "", hint: str = "") -> None:
        where = ", ".join(x for x in (path, f"key {key!r}" if key else "") if x)
        super().__init__(f"{message} [{where}]" if where else message, hint=hint)
        self.path = path
        self.key = key


class OutputExistsError(PlannerError):
    """Refusing to overwrite an existing file without --force."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} already exists", hint="pass --force to overwrite it")
        self.path = path


class OutputWriteError(PlannerError):
    """An output file could not be written (folder missing, permission, disk full, file size limit);
    nothing is left behind."""

    def __init__(self, path: str, reason: str, *, hint: str = "check the folder exists and is writable") -> None:
        super().__init__(f"cannot write {path} ({reason})", hint=hint)
        self.path = path


class RemoteReadError(PlannerError):
    """Reading a remote GGUF over HTTP failed (``url``, and the HTTP ``status`` when there was one)."""

    def __init__(self, message: str, *, hint: str = "", url: str = "", status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status


class PlanFileError(PlannerError):
    """A plan JSON does not match the schema the tool writes (``path`` is the JSON path of the bad field)."""

    def __init__(self, message: str, *, path: str = "", source: str = "", hint: str = "") -> None:
        where = ", ".join(x for x in (source, f"at {path}" if path else "") if x)
        super().__init__(f"{message} [{where}]" if where else message, hint=hint)
        self.path = path
        self.source = source


class ImatrixFormatError(PlannerError):
    """An imatrix file (legacy .dat or GGUF) is malformed (``offset`` and ``source`` say where, when known)."""

    def __init__(self, message: str, *, hint: str = "", offset: int | None = None, source: str = "") -> None:
        super().__init__(message, hint=hint)
        self.offset = offset
        self.source = source


class LogFormatError(PlannerError):
    """Engine output (a load log, a sweep-bench/llama-bench table, perplexity output) that cannot be read."""


class SolverError(PlannerError):
    """The optimizer failed for a reason other than infeasibility (time limit without a solution...)."""


class EmitterError(PlannerError):
    """An emitted recipe or -ot set failed its own re-application check: a bug in the planner, never emitted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="this is a bug in gguf-planner; please report it with the command you ran")


class EngineFlagError(PlannerError):
    """A launch flag is not known to the target engine / binary."""


# One table: class -> exit code.  Looked up along the MRO, so subclasses inherit.
EXIT_CODES: dict[type[BaseException], int] = {
    UsageError: 2,
    InfeasibleBudgetError: 2,
    UnknownQuantTypeError: 2,
    UnknownModelError: 2,
    RecipeError: 2,
    ProfileError: 2,
    OutputExistsError: 3,
    OutputWriteError: 3,
    GGUFFormatError: 4,
    ImatrixFormatError: 4,
    PlanFileError: 4,
    LogFormatError: 4,
    RemoteReadError: 5,
    HardwareProbeError: 6,
    EngineFlagError: 2,
    SolverError: 7,
    EmitterError: 70,
    PlannerError: 1,
}

INTERNAL_ERROR_EXIT = 70


def exit_code_for(exc: BaseException) -> int:
    """Exit code for an exception: the nearest class in :data:`EXIT_CODES`, else 70."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return INTERNAL_ERROR_EXIT


def format_error(exc: BaseException) -> str:
    """One line for the user, never a traceback."""
    if isinstance(exc, PlannerError):
        return "error: " + " ".join(str(exc).split("\n"))
    return (f"internal error: {type(exc).__name__}: {exc} "
            "(set GGUF_PLANNER_DEBUG=1 for the traceback and please report it)")
