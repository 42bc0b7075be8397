"""`jointserve serve` as a user runs it: its own local Ray, a printed curl line that answers.

This is `make serve` minus the example build, in a subprocess with its own ports and state
directory, so it also proves embedded mode needs nothing but the directory it is given.
"""

from __future__ import annotations

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
from tests.conftest import free_port

STARTUP_S = 240.0


def _example_dir(target: Path, example: Path, archive_server: FileServer) -> Path:
    target.mkdir()
    for name in ("digits-edge", "digits-cloud"):
        doc = yaml.safe_load((example / f"{name}.yaml").read_text())
        for entry in doc["spec"]["manifest"]:
            entry["downloadURL"] = archive_server.url(entry["downloadURL"].rsplit("/", 1)[1])
        (target / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(example / "request.json", target / "request.json")
    return target


def test_serve_prints_a_curl_line_that_answers(tmp_path: Path, example: Path,
                                               archive_server: FileServer) -> None:
    resources = _example_dir(tmp_path / "digits", example, archive_server)
    port = free_port()
    command = [sys.executable, "-m", "jointserve.cli", "serve", str(resources),
               "--port", str(port), "--state-dir", str(tmp_path / "state")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + STARTUP_S
        while not any(line.lstrip().startswith("curl ") for line in lines):
            assert proc.poll() is None, "jointserve serve exited early:\n" + "".join(lines)
            assert time.monotonic() < deadline, "no curl line printed:\n" + "".join(lines)
            time.sleep(0.5)
        curl = next(line.strip() for line in lines if line.lstrip().startswith("curl "))
        assert f"http://127.0.0.1:{port}/v2/models/" in curl
        answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, check=True)
        assert '"model_version": "v1"' in answer.stdout, answer.stdout + answer.stderr
        assert '"outputs"' in answer.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, "".join(lines[-30:])
