"""Naive Ray Serve composition: what a Ray user writes first for edge-cloud joint inference.

    HTTP -> Ingress (parses the Starlette request)
              -> await EdgeModel.infer via DeploymentHandle
              -> MaxProb(0.6) hard? -> await CloudModel.infer via DeploymentHandle

One replica each, no batching, default Serve settings, in a fresh local Ray that this
subprocess starts and shuts down. The answer carries parameters.tier like the joint systems'.

    python -m benchmarks.systems.naive_serve --port 8002 --edge-dir DIR --cloud-dir DIR

Runs until SIGTERM (or SIGINT), then serve.shutdown() and ray.shutdown().
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

from benchmarks.systems import (LOGICAL_MODEL, ServiceProcess, System, free_port, infer_url,
                                make_log_dir)
from benchmarks.systems._oip import (BadRequest, OnnxModel, Outputs, decode_input, encode_response,
                                     error_body, max_prob)

ROUTE_PREFIX = f"/v2/models/{LOGICAL_MODEL}"


def serve_haproxy_env() -> dict[str, str]:
    """Ray Serve's own fastest HTTP path: Serve-driven HAProxy in front of each ingress
    replica's direct-ingress port (what jointserve used before its own front door). Serve's
    defaults are fixed paths and ports, so this instance gets its own."""
    files = Path(tempfile.mkdtemp(prefix="jsh-", dir="/tmp"))
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(files / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(files / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(files),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(files / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
    }
# Ray start-up alone takes ~10-20 s here, then three replicas start; generous on a busy box.
STARTUP_TIMEOUT_S = 120.0
# serve.shutdown() + ray.shutdown() take a few seconds; past this, stop() kills the tree.
SHUTDOWN_GRACE_S = 60.0
# Replicas ask for 0.1 CPU, as jointserve's do (its replica_num_cpus default), instead of
# Serve's default 1: Ray counts 2 CPUs on this machine, and three 1-CPU replicas would leave
# one pending forever. num_cpus is scheduling accounting only (no pinning, no CPU quota):
# nothing runs slower or faster for it.
REPLICA_OPTIONS: dict[str, Any] = {"num_cpus": 0.1}


@serve.deployment(ray_actor_options=REPLICA_OPTIONS)
class OnnxDeployment:
    """One ONNX model in a replica; deployed twice, as EdgeModel and as CloudModel."""

    def __init__(self, model_dir: str) -> None:
        self.model = OnnxModel(model_dir)

    def infer(self, x: np.ndarray) -> Outputs:
        return self.model.run(x)


@serve.deployment(ray_actor_options=REPLICA_OPTIONS)
class Ingress:
    def __init__(self, edge: DeploymentHandle, cloud: DeploymentHandle) -> None:
        self.edge = edge
        self.cloud = cloud

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method != "POST" or not request.url.path.endswith("/infer"):
            return JSONResponse({"error": "POST .../infer only"}, status_code=404)
        try:
            x = decode_input(await request.body())
            outputs = await self.edge.infer.remote(x)
        except BadRequest as exc:
            # A wrong shape is found in the edge replica; Ray re-raises it here as a
            # RayTaskError that is also a BadRequest, whose text is the remote traceback.
            return JSONResponse(error_body(getattr(exc, "cause", exc)), status_code=400)
        hard, top = max_prob(outputs)
        if hard:
            outputs = await self.cloud.infer.remote(x)
        parameters = {"tier": "cloud" if hard else "edge", "hard": hard, "top_probability": top}
        return JSONResponse(encode_response(LOGICAL_MODEL, outputs, parameters))


def build_app(edge_dir: Path, cloud_dir: Path) -> serve.Application:
    edge = OnnxDeployment.options(name="EdgeModel").bind(str(edge_dir))
    cloud = OnnxDeployment.options(name="CloudModel").bind(str(cloud_dir))
    return Ingress.bind(edge, cloud)


def serve_until_signalled(edge_dir: Path, cloud_dir: Path, port: int) -> None:
    stop = threading.Event()
    try:
        # "local": a fresh single-node Ray, never a cluster this machine happens to run.
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        # After ray.init, which installs its own SIGTERM handler (sys.exit).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(edge_dir, cloud_dir), name=LOGICAL_MODEL, route_prefix=ROUTE_PREFIX)
        print(f"naive Ray Serve composition serving on {infer_url(port)}", flush=True)
        while not stop.wait(1.0):  # a timed wait, so the handler gets to run promptly
            pass
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--edge-dir", type=Path, required=True, help="holds model.onnx")
    parser.add_argument("--cloud-dir", type=Path, required=True, help="holds model.onnx")
    args = parser.parse_args(argv)
    serve_until_signalled(args.edge_dir.resolve(), args.cloud_dir.resolve(), args.port)


class NaiveRayServe(System):
    """The naive composition in its own subprocess and its own Ray.

    `env` goes into the subprocess's environment (so Ray's and Serve's processes inherit it).
    By default it is Ray Serve's fastest own HTTP path (`serve_haproxy_env`: HAProxy + direct
    ingress, with HAProxy files and ports of its own, never those of a Ray this process may
    have started): the naive design at its best Serve settings. It starts a fresh local Ray (address="local"), which works next to another
    Ray but would share the 2 cores and /tmp/ray with it: run Ray-based systems one after
    another, never side by side.
    """

    name = "naive-ray-serve"

    def __init__(self, edge_dir: Path, cloud_dir: Path, *, env: Mapping[str, str] | None = None,
                 port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_dir = make_log_dir(self.name, log_dir)
        args = ["--port", str(self.port),
                "--edge-dir", str(edge_dir), "--cloud-dir", str(cloud_dir)]
        self.process = ServiceProcess("benchmarks.systems.naive_serve", args,
                                      self.log_dir / "naive-ray-serve.log",
                                      serve_haproxy_env() if env is None else env)

    def start(self) -> None:
        self.process.start()
        self.process.wait_ready(self.infer_url(), STARTUP_TIMEOUT_S)

    def stop(self) -> None:
        self.process.stop(grace_s=SHUTDOWN_GRACE_S)

    def infer_url(self) -> str:
        return infer_url(self.port)


if __name__ == "__main__":
    main()
