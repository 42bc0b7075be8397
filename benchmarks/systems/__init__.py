"""Systems under test for the benchmark runner, each its own subprocess(es) on loopback.

    from benchmarks.systems import PlainHttp, unpack_example_models

    models = unpack_example_models(archives_dir, tmp_dir)     # {"edge": dir, "cloud": dir}
    with PlainHttp(models["edge"]) as system:
        httpx.post(system.infer_url(), content=request_body)

The baselines (issue 6, "Systems under test"):

    plain-http          plain_http.PlainHttp          edge model behind uvicorn + Starlette
    sedna-two-services  sedna_style.SednaTwoServices  edge service -(fresh HTTP)-> cloud service
    naive-ray-serve     naive_serve.NaiveRayServe     ingress -> edge handle -> (hard) cloud handle

`start()` returns once an infer request answers 200 and raises SystemStartError with the end
of the subprocess's log otherwise; `stop()` ends the subprocesses and everything they started.
Each module also holds its server's code: `python -m benchmarks.systems.<module> --help`.
Model directories (model.onnx inside) come from `benchmarks.systems.models`.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parents[2]
LOGICAL_MODEL = "digits"  # every system serves POST /v2/models/digits/infer
# A valid request for readiness probes: 64 zero pixels.
PROBE_BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                     "data": [0.0] * 64}]}).encode()
LOG_TAIL_LINES = 30

# Exported lazily (PEP 562): the server subprocesses import this package too, and must not
# pay for Ray's import when they are plain uvicorn services.
_EXPORTS = {
    "PlainHttp": ("plain_http", "PlainHttp"),
    "SednaTwoServices": ("sedna_style", "SednaTwoServices"),
    "SednaStyle": ("sedna_style", "SednaTwoServices"),  # the runner's name for it
    "NaiveRayServe": ("naive_serve", "NaiveRayServe"),
    "unpack_example_models": ("models", "unpack_example_models"),
}


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


class SystemStartError(RuntimeError):
    """A system did not come up; the message ends with its subprocess's last log lines."""


def free_port() -> int:
    """A loopback TCP port free right now (the OS picks it; a tiny race until it is bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def infer_url(port: int, model: str = LOGICAL_MODEL) -> str:
    return f"http://127.0.0.1:{port}/v2/models/{model}/infer"


class System(ABC):
    """A serving system under test: start, send requests to infer_url(), stop."""

    name: str  # short label for tables

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def infer_url(self) -> str: ...

    def __enter__(self) -> System:
        try:
            self.start()
        except BaseException:
            self.stop()  # a half-started system (sedna's cloud service) must not linger
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ServiceProcess:
    """One server subprocess: `python -m <module> <args>`, logging to `log_path`.

    It runs in its own session (process group), so stop() can end what it started too
    (Ray's raylet, GCS and workers) without touching any other process.
    """

    def __init__(self, module: str, args: Sequence[str], log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.log_path = log_path
        self.env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        # The repository root on the path: `benchmarks` is not an installed package, and
        # Ray's workers (started by the subprocess's raylet) need to import it too.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    def wait_ready(self, url: str, timeout_s: float) -> None:
        """Poll `url` with a valid request until it answers 200; raise if the process dies
        or the time runs out."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise SystemStartError(self._failure(f"exited with code {code}"))
            try:
                answer = httpx.post(url, content=PROBE_BODY, timeout=5.0,
                                    headers={"content-type": "application/json"})
                if answer.status_code == 200:
                    return
                last = f"HTTP {answer.status_code}: {answer.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise SystemStartError(self._failure(f"no 200 from {url} within {timeout_s:.0f} s "
                                             f"(last: {last})"))

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, wait up to `grace_s` for a clean exit, then SIGKILL whatever the process
        started that is still there. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        tree = _descendants(proc.pid)  # before the parent exits and its children are reparented
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid, started in tree:
            _kill(pid, started)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything else left in its process group
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str) -> str:
        return (f"{' '.join(self.argv[2:4])} {what}; last lines of {self.log_path}:\n"
                f"{self.log_tail()}")


def make_log_dir(name: str, log_dir: Path | None) -> Path:
    """`log_dir`, created, or a fresh temp dir named after the system."""
    if log_dir is None:
        return Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every live descendant of `pid` as (pid, start time), from /proc (Linux)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(path)
        if fields:
            children.setdefault(int(fields[1]), []).append((int(path.parent.name), fields[19]))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += [kid for kid, _ in kids]
    return found


def _stat_fields(path: Path) -> list[str]:
    """/proc/<pid>/stat from the state field on (ppid at 1, start time at 19); [] if gone."""
    try:
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its last ")".
        return path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _kill(pid: int, started: str) -> None:
    """SIGKILL `pid` if it is still the process seen earlier (same start time), so a
    recycled pid is never hit."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    if fields and fields[19] == started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
