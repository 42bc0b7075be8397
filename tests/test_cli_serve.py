"""`jointserve serve` as a user runs it: its own local Ray, a printed curl line that answers.

This is `make serve` minus the example build, in a subprocess with its own ports and state
directory, so it also proves embedded mode needs nothing but the directory it is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tests._fileserver import FileServer
from tests._procs import alive, live_descendants, processes
from tests.conftest import free_port

STARTUP_S = 240.0
# Ray's own processes notice their driver is gone within seconds; generous on a busy box.
ORPHAN_DEADLINE_S = 60.0


def _example_dir(target: Path, example: Path, archive_server: FileServer) -> Path:
    target.mkdir()
    for name in ("digits-edge", "digits-cloud"):
        doc = yaml.safe_load((example / f"{name}.yaml").read_text())
        for entry in doc["spec"]["manifest"]:
            entry["downloadURL"] = archive_server.url(entry["downloadURL"].rsplit("/", 1)[1])
        (target / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(example / "request.json", target / "request.json")
    return target


class Serving:
    """`jointserve serve` on the example, as a user starts it, in a session of its own."""

    def __init__(self, resources: Path, state: Path) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "jointserve.cli", "serve", str(resources),
                   "--port", str(self.port), "--state-dir", str(state)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, start_new_session=True)
        self.lines: list[str] = []
        reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                  daemon=True)
        reader.start()

    def curl_line(self) -> str:
        """The curl command it prints once the models are served."""
        deadline = time.monotonic() + STARTUP_S
        while not any(line.lstrip().startswith("curl ") for line in self.lines):
            assert self.proc.poll() is None, "jointserve serve exited early:\n" + "".join(self.lines)
            assert time.monotonic() < deadline, "no curl line printed:\n" + "".join(self.lines)
            time.sleep(0.5)
        return next(line.strip() for line in self.lines if line.lstrip().startswith("curl "))

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def test_serve_prints_a_curl_line_that_answers(tmp_path: Path, example: Path,
                                               archive_server: FileServer) -> None:
    resources = _example_dir(tmp_path / "digits", example, archive_server)
    serving = Serving(resources, tmp_path / "state")
    try:
        curl = serving.curl_line()
        assert f"http://127.0.0.1:{serving.port}/v2/models/" in curl
        answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, check=True)
        assert json.loads(answer.stdout)["model_version"] == "v1", answer.stdout + answer.stderr
        assert '"outputs"' in answer.stdout
    finally:
        serving.proc.send_signal(signal.SIGINT)
        try:
            code = serving.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serving.kill_all()
            raise
    assert code == 0, "".join(serving.lines[-30:])


def test_nothing_outlives_a_sigkilled_serve(tmp_path: Path, example: Path,
                                            archive_server: FileServer) -> None:
    """Ray's processes, the replicas and the front door's HAProxy all go with their
    `jointserve serve`, even when it gets no chance to stop them."""
    resources = _example_dir(tmp_path / "digits", example, archive_server)
    serving = Serving(resources, tmp_path / "state")
    try:
        serving.curl_line()
        started = live_descendants(serving.proc.pid)
        names = {p.pid: p.name for p in processes() if p.pid in started}
        assert "haproxy" in names.values(), names
        serving.proc.send_signal(signal.SIGKILL)  # the process only, not its group
        serving.proc.wait()
        deadline = time.monotonic() + ORPHAN_DEADLINE_S
        while left := {pid: names[pid] for pid in started if alive(pid)}:
            assert time.monotonic() < deadline, f"outlived jointserve serve: {left}"
            time.sleep(0.5)
    finally:
        serving.kill_all()
