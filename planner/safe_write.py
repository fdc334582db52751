"""The one writer for every file the tool produces (plan JSON, scripts, plots, profiles).

Rules: a new file is written to a temporary file in the same folder and renamed into place, so no reader
ever sees a partial file and a failure leaves nothing behind; an existing path is replaced only with
``force`` and only when it is a regular file (never a device, FIFO, socket, directory or symbolic link:
``os.replace`` would swap the special file itself); a replaced file keeps its permission bits; a new one
gets the usual ``0o666 & ~umask`` (``0o777`` for executables).  Every failure is one typed error.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from planner.errors import OutputExistsError, OutputWriteError, UsageError

_KIND = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_new_file(path: str | os.PathLike, content: str | bytes, *, force: bool = False,
                   executable: bool = False) -> Path:
    """Write ``content`` to ``path`` atomically; return the path.

    Raises:
        OutputExistsError: the path exists and ``force`` is false (exit 3).
        UsageError: the path is not a regular file, or its folder does not exist (exit 2).
        OutputWriteError: the write failed: disk full, file size limit, permissions (exit 3).
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputWriteError(f"cannot use {path}: {exc.strerror or exc}") from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            kind = _KIND.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise UsageError(f"{path} is {kind}; only a regular file is ever replaced",
                             hint="choose another path" + ("" if force else ", or remove it"))
        if not force:
            raise OutputExistsError(str(path))
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"the folder of {path} does not exist", hint=f"create {folder} first")
    mode = stat.S_IMODE(st.st_mode) if st is not None else (0o777 if executable else 0o666) & ~_umask()
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name[:64]}.", suffix=".tmp")
    except OSError as exc:
        raise OutputWriteError(f"cannot create a file in {folder}: {exc.strerror or exc}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except OSError as exc:
            reason = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file size limit (ulimit -f) was reached",
                      errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno, exc.strerror or str(exc))
            raise OutputWriteError(f"cannot write {path}: {reason}", hint="nothing was written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["write_new_file"]
