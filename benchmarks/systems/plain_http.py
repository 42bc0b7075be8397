"""Plain HTTP baseline: one ONNX model behind a minimal uvicorn + Starlette OIP v2 endpoint.

What a user could hand-write in twenty lines: POST /v2/models/<name>/infer -> json.loads ->
numpy -> InferenceSession.run -> JSON. One uvicorn worker, no access log. The endpoint is
async and calls the session inline: the digits models take ~11 µs, far less than a thread
hand-off would cost.

    python -m benchmarks.systems.plain_http --port 8000 --model-dir DIR [--model-name digits]

The Sedna-style system runs this same server as its cloud service (--model-name digits-cloud).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.systems import (LOGICAL_MODEL, ServiceProcess, System, free_port, infer_url,
                                make_log_dir)
from benchmarks.systems._oip import BadRequest, OnnxModel, decode_input, encode_response, error_body

STARTUP_TIMEOUT_S = 60.0  # imports + session load take ~1-2 s; generous for a loaded machine


def build_app(model_dir: Path, model_name: str) -> Starlette:
    model = OnnxModel(model_dir)

    async def infer(request: Request) -> JSONResponse:
        try:
            outputs = model.run(decode_input(await request.body()))
        except BadRequest as exc:
            return JSONResponse(error_body(exc), status_code=400)
        return JSONResponse(encode_response(model_name, outputs))

    return Starlette(routes=[Route(f"/v2/models/{model_name}/infer", infer, methods=["POST"])])


def run_uvicorn(app: Starlette, port: int) -> None:
    """How every baseline HTTP service runs: one worker on loopback, quiet."""
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, required=True, help="holds model.onnx")
    parser.add_argument("--model-name", default=LOGICAL_MODEL, help="default: %(default)s")
    args = parser.parse_args(argv)
    run_uvicorn(build_app(args.model_dir, args.model_name), args.port)


class PlainHttp(System):
    """The edge model alone behind the plain endpoint, at /v2/models/digits/infer."""

    name = "plain-http"

    def __init__(self, edge_dir: Path, *, port: int | None = None,
                 log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_dir = make_log_dir(self.name, log_dir)
        self.process = plain_service(edge_dir, LOGICAL_MODEL, self.port,
                                     self.log_dir / "plain-http.log")

    def start(self) -> None:
        self.process.start()
        self.process.wait_ready(self.infer_url(), STARTUP_TIMEOUT_S)

    def stop(self) -> None:
        self.process.stop()

    def infer_url(self) -> str:
        return infer_url(self.port)


def plain_service(model_dir: Path, model_name: str, port: int, log_path: Path) -> ServiceProcess:
    """A plain endpoint subprocess serving `model_dir` as `model_name` (not started)."""
    args = ["--port", str(port), "--model-dir", str(model_dir), "--model-name", model_name]
    return ServiceProcess("benchmarks.systems.plain_http", args, log_path)


if __name__ == "__main__":
    main()
