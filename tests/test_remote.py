"""Remote header reads against a Range-capable HTTP server on 127.0.0.1 (no network)."""

import re
import shutil
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import IK

from planner.errors import GGUFFormatError, RemoteReadError, UsageError
from planner.gguf_header import GGUFHeader, read_gguf
from planner.remote import HTTPRangeSource, resolve_url

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.ignore_range = False
        self.log: list[dict] = []          # one entry per request
        self.bytes_served = 0
        self.lock = threading.Lock()

    def url(self, rel: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_address[1]}/{rel}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return
        with self.server.lock:
            self.server.bytes_served += len(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.log.append({"path": path, "range": self.headers.get("Range"),
                                    "auth": self.headers.get("Authorization"), "host": self.headers.get("Host")})
        if path.startswith("/redirect/"):   # to the other spelling of this host, like the hub's CDN hop
            target = f"http://localhost:{self.server.server_address[1]}/{path[len('/redirect/'):]}"
            self._send(302, headers={"Location": target})
            return
        path = re.sub(r"^/[^/]+/[^/]+/resolve/[^/]+/", "/", path)   # hub-style resolve URLs
        file = self.server.root / path.lstrip("/")
        if not file.is_file():
            self._send(404, b"not found")
            return
        data = file.read_bytes()
        m = _RANGE.match(self.headers.get("Range") or "")
        if m is None or self.server.ignore_range:
            self._send(200, data)
            return
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            self._send(416, headers={"Content-Range": f"bytes */{len(data)}"})
            return
        self._send(206, data[start:end + 1], {"Content-Range": f"bytes {start}-{end}/{len(data)}"})


@pytest.fixture
def server():
    srv = _Server(IK)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _same(remote: GGUFHeader, local: GGUFHeader) -> None:
    assert remote.kv == local.kv
    assert remote.tensors == local.tensors
    assert [replace(s, path="") for s in remote.shards] == [replace(s, path="") for s in local.shards]


@pytest.mark.parametrize("fname", ["tiny-a-seed-mix-IQ3_K.gguf", "tiny-a-bf16.gguf", "tiny-b-seed-mix-IQ3_K.gguf"])
def test_remote_single_file_matches_local(server, fname):
    h = read_gguf(server.url(fname))
    _same(h, read_gguf(IK / fname))
    assert h.source == server.url(fname)
    assert len(server.log) <= 2
    assert server.bytes_served <= (1 << 20) + 4096
    assert all(e["range"] for e in server.log)
    assert server.bytes_served < (IK / fname).stat().st_size


def test_remote_split_matches_local(server):
    first = "split/tiny-a-seed-mix-IQ3_K-00001-of-00003.gguf"
    h = read_gguf(server.url(first))
    _same(h, read_gguf(IK / first))
    assert [s.path for s in h.shards] == [server.url(f"split/tiny-a-seed-mix-IQ3_K-0000{i}-of-00003.gguf")
                                          for i in (1, 2, 3)]
    assert len(server.log) <= 6   # one or two requests per shard
    assert server.bytes_served <= sum((IK / "split" / Path(s.path).name).stat().st_size for s in h.shards)


def test_range_source_caches_blocks(server):
    src = HTTPRangeSource(server.url("tiny-a-bf16.gguf"))
    assert src.size() == (IK / "tiny-a-bf16.gguf").stat().st_size
    assert src.read(0, 4) == b"GGUF"
    assert src.read(100, 1000) == (IK / "tiny-a-bf16.gguf").read_bytes()[100:1100]
    assert src.requests == 1 and len(server.log) == 1
    tail = src.read(src.size() - 10, 100)   # clamped at the end
    assert len(tail) == 10 and src.read(src.size(), 10) == b""
    assert src.requests == 2


def test_404_is_a_remote_read_error(server):
    with pytest.raises(RemoteReadError) as ei:
        read_gguf(server.url("nope.gguf"))
    assert ei.value.status == 404
    assert ei.value.url == server.url("nope.gguf")
    assert "404" in str(ei.value) and "nope.gguf" in str(ei.value)


def test_connection_refused_is_a_remote_read_error():
    srv = _Server(IK)
    port = srv.server_address[1]
    srv.server_close()
    with pytest.raises(RemoteReadError, match="cannot connect"):
        read_gguf(f"http://127.0.0.1:{port}/x.gguf")


def test_remote_missing_shard(server, tmp_path):
    for i in (1, 3):
        name = f"tiny-a-seed-mix-IQ3_K-0000{i}-of-00003.gguf"
        shutil.copy(IK / "split" / name, tmp_path / name)
    server.root = tmp_path
    with pytest.raises(GGUFFormatError, match="shard 2 of 3 is missing"):
        read_gguf(server.url("tiny-a-seed-mix-IQ3_K-00001-of-00003.gguf"))


def test_server_ignoring_range_still_reads_the_start(server):
    server.ignore_range = True
    h = read_gguf(server.url("tiny-b-seed-mix-IQ3_K.gguf"))
    _same(h, read_gguf(IK / "tiny-b-seed-mix-IQ3_K.gguf"))


def test_truncated_remote_file(server, tmp_path):
    data = (IK / "tiny-a-IQ4_KS.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:-4096])
    server.root = tmp_path
    with pytest.raises(GGUFFormatError, match="differs"):
        read_gguf(server.url("cut.gguf"))


def test_hf_urls_and_token(server, monkeypatch):
    # hf:// goes to the endpoint's resolve URL; the token goes to the hub host only
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    h = read_gguf("hf://someone/tiny-GGUF/split/tiny-a-seed-mix-IQ3_K-00001-of-00003.gguf")
    assert len(h.tensors) == 39 and len(h.shards) == 3
    assert all(e["path"].startswith("/someone/tiny-GGUF/resolve/main/split/") for e in server.log)
    assert all(e["auth"] == "Bearer hf_test_token" for e in server.log)

    # a redirect to another host drops the token but keeps the range
    server.log.clear()
    src = HTTPRangeSource(f"{endpoint}/redirect/tiny-a-bf16.gguf")
    assert src.read(0, 4) == b"GGUF"
    assert [e["auth"] for e in server.log] == ["Bearer hf_test_token", None]
    assert server.log[1]["host"].startswith("localhost") and server.log[1]["range"]


def test_token_not_sent_to_other_hosts(server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    read_gguf(server.url("tiny-b-bf16.gguf"))
    assert all(e["auth"] is None for e in server.log)


@pytest.mark.parametrize("location,url", [
    # hf://owner/repo/path -> resolve/main
    ("hf://org/Repo-GGUF/Q4_K_M/m-00001-of-00002.gguf",
     "https://huggingface.co/org/Repo-GGUF/resolve/main/Q4_K_M/m-00001-of-00002.gguf"),
    # a revision after @
    ("hf://org/Repo-GGUF@v2/m.gguf", "https://huggingface.co/org/Repo-GGUF/resolve/v2/m.gguf"),
    # the web page URL of a file
    ("https://huggingface.co/org/Repo-GGUF/blob/main/m.gguf",
     "https://huggingface.co/org/Repo-GGUF/resolve/main/m.gguf"),
    # already a resolve URL
    ("https://huggingface.co/org/R/resolve/main/m.gguf?download=true",
     "https://huggingface.co/org/R/resolve/main/m.gguf?download=true"),
    # any other server is left alone
    ("http://127.0.0.1:8000/blob/x.gguf", "http://127.0.0.1:8000/blob/x.gguf"),
])
def test_resolve_url(monkeypatch, location, url):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert resolve_url(location) == url


def test_bad_hf_location():
    with pytest.raises(UsageError, match="hf://OWNER/REPO/PATH"):
        resolve_url("hf://only-owner/repo")


# ---------------------------------------------------------------------------- misbehaving servers

import socket  # noqa: E402
import time  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from planner.cli import main  # noqa: E402

FILE = (IK / "tiny-a-bf16.gguf").read_bytes()


class _RawServer:
    """A 127.0.0.1 server whose answer per request is scripted: ``script(n, request_text) -> list of
    (bytes, pause_s)`` pieces sent in order, then the connection closes."""

    def __init__(self, script) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.script = script
        self.requests: list[str] = []
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/m.gguf"

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn) -> None:
        with conn:
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                req += chunk
            self.requests.append(req.decode("latin-1"))
            try:
                for data, pause in self.script(len(self.requests), req.decode("latin-1")):
                    if self.stop:
                        return
                    conn.sendall(data)
                    time.sleep(pause)
            except OSError:
                return

    def close(self) -> None:
        self.stop = True
        self.sock.close()


def _partial(req: str, body: bytes = FILE, declared: int | None = None) -> bytes:
    m = re.search(r"Range: bytes=(\d+)-(\d+)", req)
    start, end = int(m.group(1)), min(int(m.group(2)), len(body) - 1)
    part = body[start:end + 1]
    length = len(part) if declared is None else declared
    return (f"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{start + length - 1}/{len(body)}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode() + part


@pytest.fixture
def raw():
    servers = []

    def make(script):
        srv = _RawServer(script)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


def test_trickling_body_ends_at_the_deadline(raw):
    # headers at once, then one byte every 0.3 s: the 1 s deadline ends it, not the 30 s socket timeout
    def script(n, req):
        head = _partial(req)[:200]
        return [(head, 0)] + [(b"\0", 0.3)] * 100
    srv = raw(script)
    t0 = time.monotonic()
    with pytest.raises(RemoteReadError, match="no complete answer within 1 s"):
        HTTPRangeSource(srv.url, deadline=1.0, progress=None).read(0, 4)
    assert time.monotonic() - t0 < 3


def test_trickling_headers_end_at_the_deadline(raw):
    # the status line itself arrives one byte at a time
    srv = raw(lambda n, req: [(bytes([b]), 0.2) for b in b"HTTP/1.1 206 Partial Content\r\n" * 10])
    t0 = time.monotonic()
    with pytest.raises(RemoteReadError, match="within"):
        HTTPRangeSource(srv.url, deadline=0.8, progress=None).read(0, 4)
    assert time.monotonic() - t0 < 3


def test_retries_503_then_succeeds(raw):
    busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    srv = raw(lambda n, req: [(busy, 0)] if n <= 2 else [(_partial(req), 0)])
    src = HTTPRangeSource(srv.url, backoff=0.01, progress=None)
    assert src.read(0, 4) == b"GGUF" and src.requests == 3 and len(srv.requests) == 3


def test_persistent_500_gives_up_with_the_status(raw):
    err = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    srv = raw(lambda n, req: [(err, 0)])
    with pytest.raises(RemoteReadError) as e:
        HTTPRangeSource(srv.url, backoff=0.01, retries=2, progress=None).read(0, 4)
    assert e.value.status == 500 and len(srv.requests) == 3


def test_429_retry_after_beyond_the_deadline_stops_at_once(raw):
    limited = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    srv = raw(lambda n, req: [(limited, 0)])
    t0 = time.monotonic()
    with pytest.raises(RemoteReadError, match="429") as e:
        HTTPRangeSource(srv.url, deadline=5, progress=None).read(0, 4)
    assert e.value.status == 429 and len(srv.requests) == 1 and time.monotonic() - t0 < 2


def test_truncated_body_is_a_remote_error_not_a_corrupt_file(raw, monkeypatch):
    # Content-Length promises the whole range, the connection closes halfway: exit 5, after retries
    srv = raw(lambda n, req: [(_partial(req)[:-(1 << 19)], 0)])     # half of the 1 MiB block is missing
    with pytest.raises(RemoteReadError, match="truncated"):
        read_gguf_remote = HTTPRangeSource(srv.url, backoff=0.01, retries=1, progress=None)
        read_gguf_remote.read(0, 1 << 20)
    assert len(srv.requests) == 2
    monkeypatch.setattr("planner.remote.HTTPRangeSource.__init__.__kwdefaults__", {
        **HTTPRangeSource.__init__.__kwdefaults__, "backoff": 0.01})       # the CLI's retries, without the waits
    r = CliRunner().invoke(main, ["inspect", srv.url])
    assert r.exit_code == 5 and "truncated" in r.output


def test_progress_is_shown_for_slow_reads(raw):
    # the body arrives in 8 pieces over ~1.6 s: the progress callback sees growing counts, then a final clear
    def script(n, req):
        data = _partial(req)
        step = len(data) // 8 + 1
        return [(data[i:i + step], 0.2) for i in range(0, len(data), step)]
    srv = raw(script)
    seen = []
    src = HTTPRangeSource(srv.url, progress=lambda url, done, total, elapsed: seen.append((done, total)))
    assert src.read(0, 4) == b"GGUF"
    assert seen and seen[-1][0] == -1
    counts = [d for d, _ in seen[:-1]]
    assert counts == sorted(counts) and counts[-1] == 1 << 20     # the first block the reader asks for


@pytest.mark.parametrize("url, token_sent", [
    ("https://huggingface.co/o/r/resolve/main/m.gguf", True),
    ("https://cdn-lfs.huggingface.co/x", True),
    ("http://huggingface.co/o/r/resolve/main/m.gguf", False),       # plain http
    ("https://huggingface.co:8443/o/r/resolve/main/m.gguf", False),  # another port of the hub host
    ("https://huggingface.co.evil.example/m.gguf", False),
    ("https://evilhuggingface.co/m.gguf", False),
    ("https://user@evil.example/@huggingface.co/m.gguf", False),
])
def test_token_only_over_https_to_the_hub(monkeypatch, url, token_sent):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert (HTTPRangeSource(url, token="hf_x")._token == "hf_x") is token_sent


def test_token_not_sent_to_another_port_of_the_endpoint(server, monkeypatch, raw):
    other = raw(lambda n, req: [(_partial(req), 0)])
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    HTTPRangeSource(other.url, progress=None).read(0, 4)
    assert "Authorization" not in other.requests[0]
    HTTPRangeSource(server.url("tiny-a-bf16.gguf"), progress=None).read(0, 4)
    assert server.log[-1]["auth"] == "Bearer hf_test_token"


@pytest.mark.parametrize("location, expected", [
    ("hf://o/r/a/../b.gguf", "https://huggingface.co/o/r/resolve/main/b.gguf"),
    ("hf://o/r/./x/./m.gguf", "https://huggingface.co/o/r/resolve/main/x/m.gguf"),
    ("http://127.0.0.1:9/a/b/../../../m.gguf", "http://127.0.0.1:9/m.gguf"),       # never above the root
])
def test_dot_segments_are_normalised(monkeypatch, location, expected):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert resolve_url(location) == expected


@pytest.mark.parametrize("location", [
    "hf://o/r/../../x",             # leaves the repository
    "hf://o/r/..",
    "hf://../r/m.gguf",             # not a Hub owner name
    "hf://o/r@../m.gguf",
    "http://[::1/x.gguf",           # unclosed IPv6 literal
    "http://host:99999/x.gguf",     # port out of range
    "http:///x.gguf",               # no host
    "http://host/a b.gguf",         # a space
    "http://host/x.gguf\r\nX-Injected: 1",
])
def test_bad_locations_are_usage_errors(location):
    with pytest.raises(UsageError):
        resolve_url(location)


def test_bad_url_exit_2_on_the_cli():
    r = CliRunner().invoke(main, ["inspect", "http://[::1/x.gguf"])
    assert r.exit_code == 2 and r.output.startswith("error: bad URL") and r.output.count("\n") == 1


def test_default_progress_only_on_a_terminal(monkeypatch):
    import io

    from planner import remote

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((io.StringIO(), False), (Tty(), True)):
        monkeypatch.setattr(remote.sys, "stderr", stream)
        remote._tty_progress("http://h/m.gguf", 3 << 20, 16 << 20, 2.0)
        remote._tty_progress("http://h/m.gguf", -1, 16 << 20, 2.5)
        text = stream.getvalue()
        assert ("3.0 of 16.0 MiB" in text) is shown and ("\x1b[K" in text) is shown
