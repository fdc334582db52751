"""Read GGUF headers over HTTP with Range requests (huggingface.co or any server that honours Range).

:class:`HTTPRangeSource` implements the reader's source interface (``read``, ``size``, ``name``).  It
fetches large blocks (1 MiB first; the parser asks for doubling sizes) and keeps the last few, so
parsing a header costs a handful of requests.  ``hf://owner/repo[@revision]/path.gguf`` and
``https://huggingface.co/owner/repo/blob/...`` map to ``.../resolve/...`` URLs.

Every read ends: each block has an overall deadline (connection, headers and body together, enforced by
a watchdog that shuts the socket, so a server trickling one byte at a time cannot hold it open), 429 and
5xx answers are retried with exponential backoff inside that deadline, and a body shorter than its
Content-Range/Content-Length is a :class:`~planner.errors.RemoteReadError` (exit 5), not a corrupt file.
A read that takes longer than a second shows its progress on stderr when stderr is a terminal.

``HF_TOKEN`` is sent only to the Hub's origin (https, huggingface.co or a subdomain, default port) or to
the exact origin of ``HF_ENDPOINT`` when the user set one, and is dropped by any redirect that leaves
that origin (the hub redirects to a CDN).  A malformed URL is a :class:`~planner.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import functools
import http.client
import os
import posixpath
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

from planner import __version__
from planner.errors import RemoteReadError, UsageError

DEFAULT_TIMEOUT_S = 30.0        # one socket operation (connect, one recv)
DEFAULT_DEADLINE_S = 120.0      # one block read, all attempts together
DEFAULT_RETRIES = 4             # attempts after the first, on 429/5xx, resets and truncated bodies
DEFAULT_BACKOFF_S = 0.5         # first pause; doubles each retry (Retry-After wins when larger, within the deadline)
PROGRESS_AFTER_S = 1.0
RETRY_STATUS = frozenset((429, 500, 502, 503, 504))
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_HF_BLOB = re.compile(r"^(/[^/]+/[^/]+)/blob/(.+)$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
_HUB_HOST = "huggingface.co"

ProgressFn = Callable[[str, int, "int | None", float], None]


def hf_endpoint() -> str:
    """The Hugging Face endpoint: ``HF_ENDPOINT`` (read at call time) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


# ---------------------------------------------------------------------------- URLs

def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path: '.' and '..' segments resolved, never above the root."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if seg == ".":
            if i == len(segments) - 1:
                out.append("")
            continue
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
            continue
        out.append(seg)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


def check_url(url: str) -> str:
    """Validate an http(s) URL and return it with its path's dot segments resolved.

    Raises:
        UsageError: not http(s), no host, a bad port or IPv6 literal, spaces or control characters.
    """
    if _BAD_URL_CHARS.search(url):
        raise UsageError(f"bad URL {url!r}: it contains spaces or control characters",
                         hint="percent-encode them (%20)")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise UsageError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"bad URL {url!r}: only http and https are read")
    if not host:
        raise UsageError(f"bad URL {url!r}: no host")
    if port == 0:
        raise UsageError(f"bad URL {url!r}: port 0")
    path = _remove_dot_segments(parts.path or "/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def resolve_url(location: str) -> str:
    """The HTTP(S) URL that serves the bytes of ``location``.

    ``hf://owner/repo/path.gguf`` -> ``{endpoint}/owner/repo/resolve/main/path.gguf``
    (``hf://owner/repo@rev/path`` picks a revision); a ``/blob/`` page URL on the hub becomes
    its ``/resolve/`` URL; any URL's path has its ``.``/``..`` segments resolved.

    Raises:
        UsageError: an ``hf://`` location that is not OWNER/REPO/PATH inside the repository, or a bad URL.
    """
    if location.startswith("hf://"):
        parts = location[len("hf://"):].split("?", 1)[0].split("/", 2)
        example = "e.g. hf://unsloth/Qwen3-235B-A22B-GGUF/Q4_K_M/model-00001-of-00003.gguf"
        if len(parts) < 3 or not all(parts):
            raise UsageError(f"{location!r} is not hf://OWNER/REPO/PATH.gguf", hint=example)
        owner, repo, path = parts
        repo, _, revision = repo.partition("@")
        for what, value in (("owner", owner), ("repository", repo)):
            if not _REPO_PART.match(value) or ".." in value:
                raise UsageError(f"{location!r}: {what} {value!r} is not a Hub name", hint=example)
        if revision and (_BAD_URL_CHARS.search(revision) or ".." in revision):
            raise UsageError(f"{location!r}: revision {revision!r} is not a branch, tag or commit")
        if _BAD_URL_CHARS.search(path) or "\\" in path:
            raise UsageError(f"{location!r}: the file path contains spaces, control characters or '\\'")
        norm = posixpath.normpath(path)
        if norm.startswith("../") or norm in ("..", ".") or norm.startswith("/"):
            raise UsageError(f"{location!r}: the file path {path!r} leaves the repository", hint=example)
        endpoint = check_url(hf_endpoint()).rstrip("/")
        return check_url(f"{endpoint}/{owner}/{repo}/resolve/{quote(revision or 'main', safe='')}/"
                         f"{quote(norm, safe='/')}")
    url = check_url(location)
    split = urlsplit(url)
    if _is_hub_origin(url):
        m = _HF_BLOB.match(split.path)
        if m:
            return urlunsplit((split.scheme, split.netloc, f"{m.group(1)}/resolve/{m.group(2)}", split.query, ""))
    return url


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _is_hub_origin(url: str) -> bool:
    """Whether ``url`` is on the Hub: https on the default port of huggingface.co (or a subdomain),
    or exactly the origin of a user-set ``HF_ENDPOINT``."""
    scheme, host, port = _origin(url)
    if scheme == "https" and port == 443 and (host == _HUB_HOST or host.endswith("." + _HUB_HOST)):
        return True
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        try:
            return _origin(url) == _origin(endpoint)
        except ValueError:
            return False
    return False


# ---------------------------------------------------------------------------- one request under a deadline

class _Deadline:
    """A wall-clock limit for one block read; :meth:`expire` shuts every socket opened under it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self.expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("deadline passed")
            self._sockets.append(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self) -> None:
        self._timer.cancel()


class _DeadlineConnection(http.client.HTTPConnection):
    """A connection whose socket the read's deadline watchdog may close (HTTP and, through the MRO, HTTPS)."""

    def __init__(self, *args: Any, deadline: _Deadline, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.add(self.sock)


class _HTTPConnection(_DeadlineConnection):
    pass


class _HTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHandler(urllib.request.AbstractHTTPHandler):
    """A handler whose connections carry the read's deadline (HTTP and, through the MRO, HTTPS)."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline


class _HTTPHandler(_DeadlineHandler, urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:  # urllib hook
        return self.do_open(functools.partial(_HTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(_DeadlineHandler, urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:  # urllib hook
        return self.do_open(functools.partial(_HTTPSConnection, deadline=self._deadline), req,
                            context=getattr(self, "_context", None))


class _AuthStaysOnOrigin(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the token to another origin (scheme, host or port)."""

    max_redirections = 10

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,  # urllib hook
                         headers: http.client.HTTPMessage, newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            try:
                same = _origin(newurl) == _origin(req.full_url)
                check_url(newurl)
            except (ValueError, UsageError):
                raise urllib.error.URLError(f"redirect to a bad URL {newurl!r}") from None
            if not same or not _is_hub_origin(newurl):
                new.remove_header("Authorization")
        return new


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline), _AuthStaysOnOrigin)


def _error(url: str, message: str, status: int | None = None, hint: str = "") -> RemoteReadError:
    return RemoteReadError(f"{message} [{url}]", hint=hint, url=url, status=status)


class _Retry(Exception):
    """A failed attempt worth another try (429/5xx, reset, truncated body)."""

    def __init__(self, error: RemoteReadError, after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.after = after


def _tty_progress(name: str, done: int, total: int | None, elapsed: float) -> None:
    """Default progress: one rewritten line on stderr, only when stderr is a terminal."""
    stream = sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return
    if done < 0:                       # finished: clear the line
        stream.write("\r\x1b[K")
    else:
        of = f" of {total / 2**20:.1f}" if total else ""
        stream.write(f"\rreading {name[-60:]}: {done / 2**20:.1f}{of} MiB, {elapsed:.0f} s")
    stream.flush()


# ---------------------------------------------------------------------------- the source

class HTTPRangeSource:
    """A remote file read with HTTP Range requests, with a small block cache.

    ``requests`` and ``bytes_fetched`` count what was transferred (every attempt counts as a request).

    Raises (from ``read``/``size``):
        RemoteReadError: HTTP errors, unreachable host, deadline passed, truncated body (exit 5).
    """

    chunk_bytes = 1 << 20
    max_chunk_bytes = 16 << 20

    def __init__(self, location: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 cache_blocks: int = 4, deadline: float = DEFAULT_DEADLINE_S, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF_S, progress: ProgressFn | None = _tty_progress) -> None:
        self.name = location
        self.url = resolve_url(location)
        if token is None:
            token = os.environ.get("HF_TOKEN") or None
        self._token = token if token and _is_hub_origin(self.url) else None
        self.timeout = timeout
        self.deadline = deadline
        self.retries = max(0, retries)
        self.backoff = backoff
        self.progress = progress
        self._size: int | None = None
        self._size_known = False
        self._cache: list[tuple[int, bytes]] = []
        self._cache_blocks = max(1, cache_blocks)
        self.requests = 0
        self.bytes_fetched = 0

    # -- source interface ----------------------------------------------------------------------
    def size(self) -> int | None:
        """Total size, from Content-Range (or Content-Length); None if the server does not say."""
        if not self._size_known:
            self._fetch(0, self.chunk_bytes)
        return self._size

    def read(self, offset: int, n: int) -> bytes:
        if n <= 0:
            return b""
        if self._size is not None:
            n = min(n, self._size - offset)
            if n <= 0:
                return b""
        for start, data in reversed(self._cache):
            if start <= offset and offset + n <= start + len(data):
                return data[offset - start:offset - start + n]
        data = self._fetch(offset, max(n, self.chunk_bytes))
        return data[:n]

    def close(self) -> None:
        self._cache.clear()

    # -- HTTP ----------------------------------------------------------------------------------
    def _request(self, offset: int, n: int) -> urllib.request.Request:
        req = urllib.request.Request(self.url, headers={
            "Range": f"bytes={offset}-{offset + n - 1}",
            "User-Agent": f"gguf-planner/{__version__}",
            "Accept-Encoding": "identity",
        })
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        return req

    def _fetch(self, offset: int, n: int) -> bytes:
        if self._size is not None:
            n = min(n, self._size - offset)
            if n <= 0:
                return b""
        deadline = _Deadline(self.deadline)
        started = time.monotonic()
        shown = [False]

        def report(done: int) -> None:
            elapsed = time.monotonic() - started
            if self.progress is not None and elapsed >= PROGRESS_AFTER_S:
                shown[0] = True
                self.progress(self.url, done, n, elapsed)

        try:
            attempt = 0
            while True:
                try:
                    data = self._attempt(offset, n, deadline, report)
                    break
                except _Retry as retry:
                    attempt += 1
                    pause = self.backoff * 2 ** (attempt - 1)
                    if retry.after is not None:
                        pause = max(pause, retry.after)
                    if attempt > self.retries or pause >= deadline.remaining():
                        raise retry.error from None
                    time.sleep(pause)
        finally:
            deadline.cancel()
            if shown[0] and self.progress is not None:
                self.progress(self.url, -1, n, time.monotonic() - started)
        self.bytes_fetched += len(data)
        self._cache.append((offset, data))
        del self._cache[:-self._cache_blocks]
        return data

    def _attempt(self, offset: int, n: int, deadline: _Deadline, report: Callable[[int], None]) -> bytes:
        self.requests += 1
        url = self.url
        limit = f"{deadline.seconds:g} s"
        try:
            if deadline.remaining() <= 0:
                raise TimeoutError
            with _opener(deadline).open(self._request(offset, n),
                                        timeout=min(self.timeout, max(0.05, deadline.remaining()))) as resp:
                status = resp.status
                if resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
                    raise _error(url, f"server sent a {resp.headers.get('Content-Encoding')}-encoded body "
                                      "although identity was asked", status)
                if status == 206:
                    expected = self._set_size_from_range(resp.headers.get("Content-Range"), offset, n)
                elif status == 200:
                    # the server ignored Range: only the start is usable, and only read what was asked
                    if offset:
                        raise _error(url, "server ignores HTTP Range requests", status,
                                     hint="use a server that supports ranges, or download the file")
                    length = resp.headers.get("Content-Length")
                    self._size = int(length) if length and length.isdigit() else None
                    self._size_known = True
                    expected = n if self._size is None else min(n, self._size)
                else:
                    raise _error(url, f"unexpected HTTP status {status}", status)
                data = self._read_body(resp, expected, status, deadline, report)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # offset at or past the end
                self._set_size_from_range(exc.headers.get("Content-Range"), offset, n, required=False)
                return b""
            error = _error(url, f"HTTP {exc.code} {exc.reason}", exc.code, hint=_hint(exc.code))
            if exc.code in RETRY_STATUS:
                raise _Retry(error, _retry_after(exc.headers.get("Retry-After"))) from None
            raise error from None
        except RemoteReadError:
            raise
        except TimeoutError as exc:
            raise _error(url, f"no complete answer within {limit}" if deadline.expired or deadline.remaining() <= 0
                         else f"read timed out ({exc or 'no data'})",
                         hint="the server is too slow or stalled; try again later") from None
        except urllib.error.URLError as exc:
            if deadline.expired:
                raise _error(url, f"no complete answer within {limit}", hint="try again later") from None
            reason = exc.reason
            if isinstance(reason, (ConnectionResetError, TimeoutError)):
                raise _Retry(_error(url, f"connection failed: {reason}", hint="try again")) from None
            raise _error(url, f"cannot connect: {reason}", hint="check the URL and the network") from None
        except (http.client.HTTPException, OSError, ValueError) as exc:
            if deadline.expired:
                raise _error(url, f"no complete answer within {limit}", hint="try again later") from None
            error = _error(url, f"read failed: {type(exc).__name__}: {exc}", hint="try again")
            if isinstance(exc, (ConnectionError, http.client.IncompleteRead, http.client.RemoteDisconnected)):
                raise _Retry(error) from None
            raise error from None
        return data

    def _read_body(self, resp: http.client.HTTPResponse, expected: int, status: int, deadline: _Deadline,
                   report: Callable[[int], None]) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < expected:
            piece = resp.read1(min(1 << 16, expected - got)) if hasattr(resp, "read1") else \
                resp.read(min(1 << 16, expected - got))
            if deadline.expired:
                raise TimeoutError
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
            report(got)
        if got < expected and not (status == 200 and self._size is None):   # no length: EOF ends the file
            raise _Retry(_error(self.url, f"the body ended after {got} of {expected} bytes (truncated transfer)",
                                status, hint="the connection dropped; try again"))
        if status == 206 and resp.read(1):
            raise _error(self.url, f"server sent more than the {expected} bytes requested", 206)
        return b"".join(parts)

    def _set_size_from_range(self, header: str | None, offset: int, n: int, required: bool = True) -> int:
        """Record the total size from Content-Range; return how many bytes this 206 body must hold."""
        m = _CONTENT_RANGE.match(header or "")
        if not m:
            if required:
                raise _error(self.url, f"206 response without a valid Content-Range ({header!r})", 206)
            return 0
        if m.group(1) is not None and int(m.group(1)) != offset:
            raise _error(self.url, f"server answered range {m.group(1)}- for a request at {offset}", 206)
        self._size = None if m.group(3) == "*" else int(m.group(3))
        self._size_known = True
        if m.group(1) is None:
            return 0
        first, last = int(m.group(1)), int(m.group(2))
        if last < first or last - first + 1 > n:
            raise _error(self.url, f"server answered range {first}-{last} for {n} bytes at {offset}", 206)
        return last - first + 1


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _hint(status: int) -> str:
    if status in (401, 403):
        return "the repository may be gated or private: set HF_TOKEN to a token with access"
    if status == 404:
        return "check the repository, revision and file path"
    if status == 429:
        return "rate limited: wait and try again"
    return ""
