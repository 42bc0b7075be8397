"""A real OIP v2 model server on loopback, for the gateway's cloud fault tests.

The gateway calls the cloud model over HTTP (`POST <base>/v2/models/<name>/infer`) with a
pooled keep-alive client (aiohttp). This server answers those calls with a real ONNX model,
through the same data plane the Serve replicas use, and can be made slow, failing or dead:

    server = CloudServer(model_dir, "digits-cloud")
    server.behave("slow", delay_s=2.0)   # every request waits 2 s, then is answered
    server.behave("reset")               # connections are reset (RST), no response
    server.stop()                        # connection refused; keep-alive connections closed
    server.start()                       # back on the same port
    server.stop()

Modes apply to every request, the /ready check included, as a sick server would behave:
"ok", "slow", "hang" (no answer until the mode changes or the server stops), "error500"
(OIP error body), "garbage" (200, body not JSON), "bad_shape" (200, JSON that is not an OIP
response), "reset".
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from jointserve.protocol import InferenceError, LoadedModel, decode_request, dumps, infer

log = logging.getLogger(__name__)

MODES = frozenset({"ok", "slow", "hang", "error500", "garbage", "bad_shape", "reset"})


@dataclass(frozen=True)
class _Plan:
    """The mode one request was received in, and the generations that release its wait."""

    mode: str
    delay_s: float
    mode_gen: int
    run_gen: int


class CloudServer:
    """Serves one model's OIP v2 routes on http://127.0.0.1:<port> until `stop()`."""

    def __init__(
        self, model_dir: Path, model_name: str, version: str = "v1", port: int = 0
    ) -> None:
        self.model_name = model_name
        self.loaded = LoadedModel.load(model_name, version, Path(model_dir))
        self._cond = threading.Condition()
        self._mode = "ok"
        self._delay_s = 0.0
        self._mode_gen = 0  # bumped by behave(): releases "hang"
        self._run_gen = 0  # bumped by stop(): releases "hang" and "slow"
        self._requests = 0
        self._accepted = 0
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def infer_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.model_name}/infer"

    @property
    def ready_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.model_name}/ready"

    @property
    def request_count(self) -> int:
        """Requests received since creation, whatever happened to them."""
        with self._cond:
            return self._requests

    @property
    def connection_count(self) -> int:
        """Connections accepted since creation: a pooled client opens one per concurrent call."""
        with self._cond:
            return self._accepted

    def behave(self, mode: str, delay_s: float = 0.0) -> None:
        """Answer the following requests (and any request hanging now) in `mode`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        with self._cond:
            self._mode, self._delay_s = mode, delay_s
            self._mode_gen += 1
            self._cond.notify_all()

    def start(self) -> None:
        """Serve (again) on the same port; a no-op while serving."""
        if self._httpd is not None:
            return
        # HTTPServer sets SO_REUSEADDR, so the port is free again at once even though the
        # connections stop() closed are in TIME_WAIT.
        httpd = _Server(("127.0.0.1", self._port), _Handler)
        httpd.cloud = self
        self._port = httpd.server_address[1]
        # A short poll interval: stop() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.02,), name="test-cloudserver", daemon=True
        )
        self._httpd = httpd
        self._thread.start()

    def stop(self) -> None:
        """Refuse new connections, close open ones and release waiting handlers. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()  # the listening socket: new connections are refused
        thread.join()
        with self._cond:
            self._run_gen += 1
            self._cond.notify_all()
        # Idle keep-alive connections would otherwise stay open, and a pooled client would
        # keep talking to a server that is supposed to be dead.
        httpd.close_connections()

    def __enter__(self) -> CloudServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _plan(self) -> _Plan:
        with self._cond:
            self._requests += 1
            return _Plan(self._mode, self._delay_s, self._mode_gen, self._run_gen)

    def _wait(self, plan: _Plan) -> _Plan | None:
        """Hold the request as its mode says; the plan to answer with, or None once stopped."""
        with self._cond:
            while self._run_gen == plan.run_gen:
                if plan.mode == "hang":
                    self._cond.wait_for(
                        lambda: self._run_gen != plan.run_gen or self._mode_gen != plan.mode_gen
                    )
                    # Released by behave(): answer as the server behaves now.
                    plan = _Plan(self._mode, self._delay_s, self._mode_gen, plan.run_gen)
                    continue
                if plan.mode == "slow" and self._cond.wait_for(
                    lambda: self._run_gen != plan.run_gen, plan.delay_s
                ):
                    return None
                return plan
            return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in "hang" must not block stop()
    cloud: CloudServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        with self.cloud._cond:
            self.cloud._accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection; their handler threads then see EOF and exit."""
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed meanwhile by its handler
                pass

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that give up and connections cut by stop() make handlers' I/O fail;
        # expected here, not worth a traceback on stderr.
        log.debug("test cloud server: request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's pooled client expects
    server: _Server

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _handle(self, body: bytes) -> None:
        # The body is read before any fault so a keep-alive stream stays in step.
        cloud = self.server.cloud
        plan = cloud._wait(cloud._plan())
        if plan is None:  # stopped while waiting: the connection is gone, say nothing
            self.close_connection = True
            return
        if plan.mode == "reset":
            self._reset()
        elif plan.mode == "error500":
            self._send(500, json.dumps({"error": "injected failure (error500 mode)"}).encode())
        elif plan.mode == "garbage":
            self._send(200, b"<html>this is not JSON</html>")
        elif plan.mode == "bad_shape":
            self._send(200, json.dumps({"outputs": "nope"}).encode())
        else:
            self._answer(body)

    def _answer(self, body: bytes) -> None:
        cloud = self.server.cloud
        path = urlsplit(self.path).path.rstrip("/")
        prefix = f"/v2/models/{cloud.model_name}"
        try:
            if self.command == "POST" and path == f"{prefix}/infer":
                response = infer(cloud.loaded, decode_request(body))
                self._send(200, dumps(response))
            elif self.command == "GET" and path == f"{prefix}/ready":
                ready = {"name": cloud.model_name, "ready": True, "version": cloud.loaded.version}
                self._send(200, json.dumps(ready).encode())
            else:
                message = f"no route {self.command} {path!r} on the test cloud server"
                self._send(404, json.dumps({"error": message}).encode())
        except InferenceError as exc:
            self._send(exc.status_code, json.dumps({"error": exc.message}).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER on with a zero timeout makes close() send RST instead of FIN. Closing only
        # the socket object is not enough: rfile holds a reference that keeps the fd open.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.connection.close()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("test cloud server: " + format, *args)
