"""Two-service design as Sedna does it: an edge service that calls a cloud service per hard example.

Sedna's joint inference (kubeedge/sedna, lib/sedna/core/joint_inference) runs the little model
in the edge worker and, when its hard example mining says so, calls the big model's HTTP
service with `requests.request(...)` - a fresh session, so a fresh TCP connection, for every
hard example - and keeps the edge result when that call fails. Its inference server is a
FastAPI app with a synchronous predict endpoint, i.e. run in the framework's threadpool.

Here: two uvicorn processes.
  cloud service  the plain endpoint (plain_http) serving the cloud model as digits-cloud;
  edge service   this module: edge model + MaxProb(0.6); a hard request is forwarded as is to
                 the cloud service with a fresh synchronous urllib request (10 s timeout); the
                 answer carries parameters.tier ("edge" | "cloud"), and a failed cloud call
                 gives the edge answer with parameters.fallback_reason.

    python -m benchmarks.systems.sedna_style --port 8001 --edge-dir DIR --cloud-url URL
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.systems import (LOGICAL_MODEL, ServiceProcess, System, free_port, infer_url,
                                make_log_dir)
from benchmarks.systems._oip import (BadRequest, OnnxModel, decode_input, encode_response,
                                     error_body, max_prob)
from benchmarks.systems.plain_http import STARTUP_TIMEOUT_S, plain_service, run_uvicorn

CLOUD_MODEL = "digits-cloud"
CLOUD_TIMEOUT_S = 10.0
# No proxy handler: an http_proxy in the environment must not reroute loopback calls. An
# opener keeps no connections; every open() is a new TCP connection, as in Sedna.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call_cloud(cloud_url: str, body: bytes) -> list[dict[str, Any]]:
    """The cloud model's OIP outputs for `body`, over a fresh connection; raises on failure."""
    request = urllib.request.Request(cloud_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=CLOUD_TIMEOUT_S) as answer:  # non-2xx raises HTTPError
        return json.loads(answer.read())["outputs"]


def build_app(edge_dir: Path, cloud_url: str) -> Starlette:
    edge = OnnxModel(edge_dir)

    def infer_sync(body: bytes) -> dict[str, Any]:
        outputs = edge.run(decode_input(body))
        hard, top = max_prob(outputs)
        parameters: dict[str, Any] = {"tier": "edge", "hard": hard, "top_probability": top}
        response = encode_response(LOGICAL_MODEL, outputs, parameters)
        if hard:
            try:
                response["outputs"] = call_cloud(cloud_url, body)
                parameters["tier"] = "cloud"
            except Exception as exc:  # Sedna logs any failure and keeps the edge result
                parameters["fallback_reason"] = f"cloud call failed: {type(exc).__name__}: {exc}"
        return response

    async def infer(request: Request) -> JSONResponse:
        # A sync Starlette endpoint cannot read the body (Request.body() is async), so it is
        # read here and the rest runs in Starlette's threadpool - what FastAPI does for
        # Sedna's sync predict endpoint.
        body = await request.body()
        try:
            return JSONResponse(await run_in_threadpool(infer_sync, body))
        except BadRequest as exc:
            return JSONResponse(error_body(exc), status_code=400)

    return Starlette(routes=[Route(f"/v2/models/{LOGICAL_MODEL}/infer", infer, methods=["POST"])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--edge-dir", type=Path, required=True, help="holds model.onnx")
    parser.add_argument("--cloud-url", required=True, help="the cloud service's infer URL")
    args = parser.parse_args(argv)
    run_uvicorn(build_app(args.edge_dir, args.cloud_url), args.port)


class SednaTwoServices(System):
    """Cloud service, then edge service; infer_url() is the edge service's.

    `cloud_url_via` maps the cloud service's own URL (`cloud_url()`) to the one the edge
    service calls, so the runner can put a WAN emulator between them:

        SednaTwoServices(edge, cloud, cloud_url_via=lambda url: proxy.front(url))

    It is called in start(), after the cloud service is up; without it the edge service calls
    the cloud service directly. The readiness probe does not prove the cloud path works: a
    cloud call that fails (a proxy not up yet) still answers 200, with the edge answer.
    """

    name = "sedna-two-services"

    def __init__(self, edge_dir: Path, cloud_dir: Path, *,
                 cloud_url_via: Callable[[str], str] | None = None,
                 log_dir: Path | None = None) -> None:
        self.edge_port, self.cloud_port = free_port(), free_port()
        self.cloud_url_via = cloud_url_via
        self.edge_dir = edge_dir
        self.log_dir = make_log_dir(self.name, log_dir)
        self.cloud = plain_service(cloud_dir, CLOUD_MODEL, self.cloud_port,
                                   self.log_dir / "sedna-cloud.log")
        self.edge: ServiceProcess | None = None

    def cloud_url(self) -> str:
        """The cloud service's infer URL, as reached directly."""
        return infer_url(self.cloud_port, CLOUD_MODEL)

    def start(self) -> None:
        self.cloud.start()
        self.cloud.wait_ready(self.cloud_url(), STARTUP_TIMEOUT_S)
        via = self.cloud_url_via(self.cloud_url()) if self.cloud_url_via else self.cloud_url()
        args = ["--port", str(self.edge_port), "--edge-dir", str(self.edge_dir), "--cloud-url", via]
        self.edge = ServiceProcess("benchmarks.systems.sedna_style", args,
                                   self.log_dir / "sedna-edge.log")
        self.edge.start()
        self.edge.wait_ready(self.infer_url(), STARTUP_TIMEOUT_S)

    def stop(self) -> None:
        if self.edge is not None:
            self.edge.stop()
        self.cloud.stop()

    def infer_url(self) -> str:
        return infer_url(self.edge_port)


if __name__ == "__main__":
    main()
