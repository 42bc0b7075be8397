"""A Ray cluster of its own and `jointserve operator` processes, for Kubernetes-mode e2e tests.

As in a cluster, the operator is a process apart from Ray: `ray start --head` runs the Ray
that Serve lives in, and the operator joins it with --ray-address. So a test can kill the
operator with SIGKILL mid-reconcile and start another, while the applications it deployed
keep running, and then check that the new one adopts them instead of duplicating them.

    ray = RayHead(tmp); ray.start()
    op = OperatorProcess(kube, ray, tmp / "op", serve_port=...); op.start()
    op.kill(); op.start()           # the same state dir, as a restarted pod with its volume
    ray.serve_apps()                # names of the Serve applications, asked of Ray itself
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from jointserve.operator._ingress import SERVE_ENV
from jointserve.operator._serve_config import FRONT_DOOR_RESOURCE, LAYER_RESOURCES
from tests._kube import KubeAPIServer, free_port

REPO = Path(__file__).resolve().parent.parent
RAY_START_S = 90.0
STOP_S = 30.0


class RayHead:
    """`ray start --head --block` on loopback with its own free ports and temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = root / "ray-head.log"
        # `ray start` turns on token authentication; every client of this cluster (the
        # operator, serve_apps' driver) needs the token in its environment.
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        resources = json.dumps({name: 1000 for name in [*LAYER_RESOURCES.values(),
                                                        FRONT_DOOR_RESOURCE]})
        ports = {flag: str(free_port()) for flag in (
            "--ray-client-server-port", "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
            "--node-manager-port", "--object-manager-port")}
        argv = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                "--node-ip-address=127.0.0.1", f"--port={self.port}", "--num-cpus=2",
                f"--resources={resources}", "--include-dashboard=false",
                "--disable-usage-stats", *(f"{flag}={port}" for flag, port in ports.items())]
        # Serve reads its switches from the cluster's environment (see _ingress.py).
        env = {**os.environ, **SERVE_ENV, **self.env}
        log = self.log_path.open("w")
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        deadline = time.monotonic() + RAY_START_S
        while "Ray runtime started" not in self.log_path.read_text(errors="replace"):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)  # --block: ray stops its processes
            try:
                self._proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()

    def serve_apps(self) -> dict[str, str]:
        """Serve application name -> status, asked of Ray by a driver of its own (this test
        process is a driver of the session's other Ray already)."""
        script = ("import json, ray; from ray import serve; "
                  f"ray.init(address={self.address!r}, namespace='jointserve', log_to_driver=False); "
                  "print(json.dumps({n: str(a.status.value) "
                  "for n, a in serve.status().applications.items()}), flush=True); "
                  # Exit at once: a driver's clean shutdown can stall on a busy cluster.
                  "import os; os._exit(0)")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=90, check=False, env={**os.environ, **self.env})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


class OperatorProcess:
    """`jointserve operator` against `kube`, joined to `ray`, logging to `root/operator.log`."""

    def __init__(self, kube: KubeAPIServer, ray: RayHead, root: Path, serve_port: int,
                 *extra: str) -> None:
        self.kube, self.ray, self.root = kube, ray, root
        self.serve_port = serve_port
        self.extra = extra
        self.archive_port = free_port()
        self.state_dir = root / "state"
        self.log_path = root / "operator.log"
        self._proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def store(self) -> Path:
        return self.state_dir / "store"

    def start(self, *extra: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = [sys.executable, "-m", "jointserve.cli", "operator",
                "--kubeconfig", str(self.kube.kubeconfig), "--ray-address", self.ray.address,
                "--port", str(self.serve_port), "--state-dir", str(self.state_dir),
                "--identity", f"{self.root.name}-{self.starts}",
                # Its own port for published archives: a standby runs beside the leader.
                "--archive-port", str(self.archive_port), *self.extra, *extra]
        env = {**os.environ, **self.ray.env, "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("a")
        log.write(f"\n===== start {self.starts}: {' '.join(argv)}\n")
        log.flush()
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      cwd=REPO, start_new_session=True)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no Lease release, as when a node dies."""
        if self.running():
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> int | None:
        """SIGTERM and wait: a graceful stop (the Lease is released)."""
        if not self.running():
            return None if self._proc is None else self._proc.returncode
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            return self._proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""
