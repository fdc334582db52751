"""Where GGUF header bytes come from: the small :class:`Source` interface (``read(offset, n)``, ``size()``, ``name``)
the header reader parses from, with bytes in memory and local files (HTTP ranges: ``planner.remote``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from planner.errors import GGUFFormatError

@runtime_checkable
class Source(Protocol):
    """Where header bytes come from. ``read`` returns fewer than ``n`` bytes only at the end."""

    name: str

    def read(self, offset: int, n: int) -> bytes: ...

    def size(self) -> int | None: ...


class BytesSource:
    """Bytes in memory (tests, benchmarks)."""

    chunk_bytes = 1 << 20

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self._data = bytes(data)
        self.name = name

    def read(self, offset: int, n: int) -> bytes:
        return self._data[offset:offset + n]

    def size(self) -> int:
        return len(self._data)


class LocalFile:
    """A local file read with plain ``read`` calls: no mmap, only the header region is touched."""

    chunk_bytes = 64 << 10
    max_chunk_bytes = 1 << 20

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        self._f: BinaryIO | None = None
        self._size: int | None = None

    def _file(self) -> BinaryIO:
        if self._f is None:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; anything but a regular file is refused
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                    raise GGUFFormatError(f"{self.name} is {what}", source=self.name,
                                          hint="give the path of a .gguf file")
                if hasattr(os, "set_blocking"):
                    os.set_blocking(fd, True)
                self._f = os.fdopen(fd, "rb")  # noqa: SIM115 - closed by close()/__exit__
            except BaseException:
                os.close(fd)
                raise
            self._size = st.st_size
        return self._f

    def read(self, offset: int, n: int) -> bytes:
        f = self._file()
        f.seek(offset)
        return f.read(max(0, min(n, (self._size or 0) - offset)))

    def size(self) -> int:
        self._file()
        return self._size  # type: ignore[return-value]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
