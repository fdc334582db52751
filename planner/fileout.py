"""File output: every file the planner writes (plan JSON, scripts, profiles, plots) goes through one writer.

Rules: a new file is written to a temporary file in the same folder, ``fsync``-ed and renamed into place, so no
reader ever sees half a file and a failure leaves nothing behind; an existing path is replaced only with
``force`` and only when it is a regular file (never a device, FIFO, socket, directory or symbolic link:
``os.replace`` would swap the special file itself, e.g. ``--out /dev/full --force`` as root); a replaced file
keeps its permission bits; a new one gets the usual ``0o666 & ~umask`` (``mode`` for scripts, also under the
umask).  Every failure is one typed error.
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
_REASONS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file size limit (ulimit -f) was reached",
            errno.EDQUOT: "the disk quota is exceeded", errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_new_file(path: str | os.PathLike[str], content: str | bytes, *, force: bool = False,
                   mode: int | None = None) -> Path:
    """Write ``content`` to ``path`` atomically; returns the path written.

    ``mode`` is the permission of a *new* file before the umask (default ``0o666``); a replaced file keeps
    its own.

    Raises:
        OutputExistsError: the file exists and ``force`` is false (exit 3).
        UsageError: the path is not a regular file, or its folder does not exist (exit 2).
        OutputWriteError: the write failed: disk full, file size limit, permissions (exit 3).
    """
    target = Path(path)
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputWriteError(str(target), _REASONS.get(exc.errno or 0, exc.strerror or str(exc))) from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            kind = _KIND.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise UsageError(f"{target} is {kind}; only a regular file is ever replaced",
                             hint="choose another path" + ("" if force else ", or remove it"))
        if not force:
            raise OutputExistsError(str(target))
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"the folder of {target} does not exist", hint=f"create {folder} first")
    new_mode = stat.S_IMODE(st.st_mode) if st is not None else (0o666 if mode is None else mode) & ~_umask()
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name[:64]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, new_mode)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputWriteError(str(target), _REASONS.get(exc.errno or 0, exc.strerror or type(exc).__name__),
                               hint="nothing was written") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target


__all__ = ["write_new_file"]
