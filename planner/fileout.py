"""File output: every file the planner writes (plan JSON, scripts, profiles, plots) goes through one writer.

Atomic (temp file in the target folder, ``fsync``, ``os.replace``), so a crash never leaves half a file, and
it refuses to overwrite an existing file unless ``force`` is given.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from planner.errors import OutputExistsError, OutputWriteError


def write_new_file(path: str | os.PathLike[str], content: str | bytes, *, force: bool = False,
                   mode: int | None = None) -> Path:
    """Write ``content`` to ``path`` atomically; returns the path written.

    Raises:
        OutputExistsError: the file exists and ``force`` is false.
        OutputWriteError: the file cannot be written.
    """
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(str(target))
    folder = target.parent if str(target.parent) else Path(".")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(content.encode("utf-8") if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputWriteError(str(target), exc.strerror or type(exc).__name__) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target
