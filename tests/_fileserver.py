"""A real loopback HTTP file server for tests, with per-file fault injection.

Serves the files under one directory from 127.0.0.1 on a free port, in a daemon thread, so
code that downloads over HTTP (the artifact store, anything fetching a model) is tested
against real sockets rather than a mocked transport. Faults are set per file name:

    with FileServer(tmp_path) as server:
        server.fail("a.tar.gz", status=503, times=2)   # two 503s, then the file
        server.truncate("b.zip", 100)                  # full Content-Length, 100 bytes, close
        server.slow("c.tar", 0.5)                      # wait 0.5 s before answering
        server.unsized("d.csv")                        # no Content-Length: body until close
        fetch(server.url("a.tar.gz"))
        assert server.request_count("a.tar.gz") == 3
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)


@dataclass
class _Faults:
    fail_status: int = 500
    fail_times: int = 0
    truncate_at: int | None = None
    delay_s: float = 0.0
    unsized: bool = False


@dataclass(frozen=True)
class _Plan:
    """What to do for one request, decided (and fail counters consumed) under the lock."""

    status: int | None
    truncate_at: int | None
    delay_s: float
    unsized: bool


class FileServer:
    """Serves `root` on http://127.0.0.1:<free port> until `stop()` or the `with` block ends."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._faults: dict[str, _Faults] = {}
        self._counts: Counter[str] = Counter()
        self._not_modified: Counter[str] = Counter()
        self._stopped = False
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.files = self
        # A short poll interval: stop() waits for the serving loop to notice, every test's teardown.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="test-fileserver", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{quote(name)}"

    def request_count(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def fail(self, name: str, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` requests for `name` with `status`, then serve it normally."""
        with self._lock:
            faults = self._faults.setdefault(name, _Faults())
            faults.fail_status, faults.fail_times = status, times

    def truncate(self, name: str, nbytes: int) -> None:
        """Send the real Content-Length but close the connection after `nbytes` of body."""
        with self._lock:
            self._faults.setdefault(name, _Faults()).truncate_at = nbytes

    def slow(self, name: str, delay_s: float) -> None:
        """Wait `delay_s` before answering each request for `name`."""
        with self._lock:
            self._faults.setdefault(name, _Faults()).delay_s = delay_s

    def unsized(self, name: str) -> None:
        """Send `name` without Content-Length, its end marked by closing the connection."""
        with self._lock:
            self._faults.setdefault(name, _Faults()).unsized = True

    def not_modified_count(self, name: str) -> int:
        """How many requests for `name` were answered 304 (their If-None-Match matched)."""
        with self._lock:
            return self._not_modified[name]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def stop(self) -> None:
        """Stop accepting connections; later requests get 'connection refused'. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _plan(self, name: str) -> _Plan:
        with self._lock:
            self._counts[name] += 1
            faults = self._faults.get(name, _Faults())
            status = None
            if faults.fail_times > 0:
                faults.fail_times -= 1
                status = faults.fail_status
            return _Plan(status, faults.truncate_at, faults.delay_s, faults.unsized)

    def _resolve(self, name: str) -> Path | None:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in a slow() delay must not block stop()
    files: FileServer

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that give up (timeouts, truncation tests) make the handler's writes fail;
        # that is expected here, not worth a traceback on stderr.
        log.debug("test file server: request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and Content-Length framing, as real servers
    server: _Server

    def do_GET(self) -> None:
        files = self.server.files
        name = unquote(urlsplit(self.path).path).lstrip("/")
        plan = files._plan(name)
        if plan.delay_s:
            time.sleep(plan.delay_s)
        if plan.status is not None:
            self.send_error(plan.status)
            return
        path = files._resolve(name)
        if path is None:
            self.send_error(404)
            return
        data = path.read_bytes()
        # An ETag of the content, as object stores send; a matching If-None-Match gets 304.
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        if self.headers.get("If-None-Match") == etag:
            with files._lock:
                files._not_modified[name] += 1
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", etag)
        if plan.unsized:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if plan.truncate_at is None:
            self.wfile.write(data)
        else:
            self.wfile.write(data[: plan.truncate_at])
            self.close_connection = True  # the client sees EOF before Content-Length bytes

    def log_message(self, format: str, *args: object) -> None:
        log.debug("test file server: " + format, *args)
