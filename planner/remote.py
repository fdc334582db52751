"""Read GGUF headers over HTTP with Range requests (huggingface.co or any server that honours Range).

:class:`HTTPRangeSource` implements the reader's source interface (``read``, ``size``, ``name``).  It
fetches large blocks (1 MiB first; the parser asks for doubling sizes) and keeps the last few, so
parsing a header costs a handful of requests.  ``hf://owner/repo[@revision]/path.gguf`` and
``https://huggingface.co/owner/repo/blob/...`` map to ``.../resolve/...`` URLs.  ``HF_TOKEN`` is
sent only to the Hugging Face host, and dropped when a redirect leaves it (e.g. to the CDN).
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from planner import __version__
from planner.errors import RemoteReadError

DEFAULT_TIMEOUT_S = 30.0
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_HF_BLOB = re.compile(r"^(/[^/]+/[^/]+)/blob/(.+)$")


def hf_endpoint() -> str:
    """The Hugging Face endpoint: ``HF_ENDPOINT`` (read at call time) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def resolve_url(location: str) -> str:
    """The HTTP(S) URL that serves the bytes of ``location``.

    ``hf://owner/repo/path.gguf`` -> ``{endpoint}/owner/repo/resolve/main/path.gguf``
    (``hf://owner/repo@rev/path`` picks a revision); a ``/blob/`` page URL on the hub becomes
    its ``/resolve/`` URL; anything else is returned unchanged.

    Raises:
        RemoteReadError: an ``hf://`` location without a file path.
    """
    if location.startswith("hf://"):
        parts = location[len("hf://"):].split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise RemoteReadError(f"{location!r} is not hf://OWNER/REPO/PATH.gguf",
                                  hint="e.g. hf://unsloth/Qwen3-235B-A22B-GGUF/Q4_K_M/model-00001-of-00003.gguf")
        owner, repo, path = parts
        repo, _, revision = repo.partition("@")
        from huggingface_hub import hf_hub_url  # huggingface_hub is used only in this module

        return hf_hub_url(f"{owner}/{repo}", path, revision=revision or None, endpoint=hf_endpoint())
    split = urlsplit(location)
    if _is_hf_host(split.netloc):
        m = _HF_BLOB.match(split.path)
        if m:
            return location.replace(split.path, f"{m.group(1)}/resolve/{m.group(2)}", 1)
    return location


def _is_hf_host(netloc: str) -> bool:
    host = netloc.rpartition("@")[2].split(":")[0].lower()
    if host == "huggingface.co" or host.endswith(".huggingface.co"):
        return True
    endpoint = os.environ.get("HF_ENDPOINT")
    return bool(endpoint) and host == urlsplit(endpoint).hostname


class _AuthStaysOnHost(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the token to another host (the hub redirects to a CDN)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib hook
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_AuthStaysOnHost)


def _error(url: str, message: str, status: int | None = None, hint: str = "") -> RemoteReadError:
    return RemoteReadError(f"{message} [{url}]", hint=hint, url=url, status=status)


class HTTPRangeSource:
    """A remote file read with HTTP Range requests, with a small block cache.

    ``requests`` and ``bytes_fetched`` count what was transferred.
    """

    chunk_bytes = 1 << 20
    max_chunk_bytes = 16 << 20

    def __init__(self, location: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 cache_blocks: int = 4) -> None:
        self.name = location
        self.url = resolve_url(location)
        if token is None:
            token = os.environ.get("HF_TOKEN") or None
        self._token = token if token and _is_hf_host(urlsplit(self.url).netloc) else None
        self.timeout = timeout
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
        self.requests += 1
        try:
            with _OPENER.open(self._request(offset, n), timeout=self.timeout) as resp:
                status = resp.status
                if status == 206:
                    self._set_size_from_range(resp.headers.get("Content-Range"), offset)
                    data = resp.read(n + 1)
                elif status == 200:
                    # the server ignored Range: only the start is usable, and only read what was asked
                    if offset:
                        raise _error(self.url, "server ignores HTTP Range requests", status,
                                     hint="use a server that supports ranges, or download the file")
                    length = resp.headers.get("Content-Length")
                    self._size = int(length) if length and length.isdigit() else None
                    self._size_known = True
                    data = resp.read(n)
                else:
                    raise _error(self.url, f"unexpected HTTP status {status}", status)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # offset at or past the end
                self._set_size_from_range(exc.headers.get("Content-Range"), offset, required=False)
                return b""
            raise _error(self.url, f"HTTP {exc.code} {exc.reason}", exc.code, hint=_hint(exc.code)) from exc
        except urllib.error.URLError as exc:
            raise _error(self.url, f"cannot connect: {exc.reason}",
                         hint="check the URL and the network") from exc
        except OSError as exc:  # timeouts, resets
            raise _error(self.url, f"read failed: {exc}", hint="try again") from exc
        if len(data) > n:
            raise _error(self.url, f"server sent more than the {n} bytes requested", 206)
        self.bytes_fetched += len(data)
        self._cache.append((offset, data))
        del self._cache[:-self._cache_blocks]
        return data

    def _set_size_from_range(self, header: str | None, offset: int, required: bool = True) -> None:
        m = _CONTENT_RANGE.match(header or "")
        if not m:
            if required:
                raise _error(self.url, f"206 response without a valid Content-Range ({header!r})", 206)
            return
        if m.group(1) is not None and int(m.group(1)) != offset:
            raise _error(self.url, f"server answered range {m.group(1)}- for a request at {offset}", 206)
        self._size = None if m.group(3) == "*" else int(m.group(3))
        self._size_known = True


def _hint(status: int) -> str:
    if status in (401, 403):
        return "the repository may be gated or private: set HF_TOKEN to a token with access"
    if status == 404:
        return "check the repository, revision and file path"
    if status == 429:
        return "rate limited: wait and try again"
    return ""

