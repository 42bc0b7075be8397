"""What every baseline server shares: OIP v2 JSON in and out, one ONNX session, MaxProb.

Written the way a user hand-writes an OIP endpoint (json.loads, numpy, InferenceSession.run),
on purpose without jointserve's protocol package: the baselines stand for code a user would
write instead of using jointserve. Used inside the server subprocesses and Serve replicas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

# The joint baselines' hard example mining, as in examples/digits/digits.yaml:
# MaxProb, hard when the top edge probability is below 0.6.
MAX_PROB_THRESHOLD = 0.6

_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
              np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}

Outputs = dict[str, np.ndarray]


class BadRequest(ValueError):
    """The body is not an OIP v2 request this model can take; answered with a 400."""


def decode_input(body: bytes) -> np.ndarray:
    """The first input tensor of an OIP v2 JSON request, as float32 in its declared shape."""
    try:
        request = json.loads(body)
        tensor = request["inputs"][0]
        array = np.asarray(tensor["data"], dtype=np.float32)
        return array.reshape(tensor["shape"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"not an OIP v2 request: {type(exc).__name__}: {exc}") from None


def encode_response(model_name: str, outputs: Outputs,
                    parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OIP v2 response body (a dict for JSONResponse) with every output tensor."""
    response: dict[str, Any] = {"model_name": model_name}
    if parameters is not None:
        response["parameters"] = parameters
    response["outputs"] = [
        {"name": name, "shape": list(array.shape), "datatype": _DATATYPES[array.dtype],
         "data": array.ravel().tolist()}
        for name, array in outputs.items()
    ]
    return response


def error_body(exc: Exception) -> dict[str, str]:
    return {"error": str(exc)}


def max_prob(outputs: Outputs) -> tuple[bool, float]:
    """(hard, top probability): a request is hard when any row's top probability is below
    the threshold; the whole request then goes to the cloud, as Sedna does per request."""
    top = float(outputs["probabilities"].max(axis=1).min())
    return top < MAX_PROB_THRESHOLD, top


class OnnxModel:
    """One model directory's model.onnx, run on the CPU."""

    def __init__(self, model_dir: Path | str) -> None:
        self.session = ort.InferenceSession(str(Path(model_dir) / "model.onnx"),
                                            _session_options(), providers=["CPUExecutionProvider"])
        meta = self.session.get_inputs()[0]
        self.input_name = meta.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._features = meta.shape[1]  # [None, 64]: any batch size, 64 features

    def run(self, x: np.ndarray) -> Outputs:
        # Checked here so a wrong shape is the client's 400, not an onnxruntime 500.
        if x.ndim != 2 or x.shape[1] != self._features:
            raise BadRequest(f"input shape {list(x.shape)}; the model takes [N, {self._features}]")
        arrays = self.session.run(self.output_names, {self.input_name: x})
        return dict(zip(self.output_names, arrays))


def _session_options() -> ort.SessionOptions:
    # The same session settings jointserve's runtime uses (one compute thread, no idle
    # spinning): on 2 cores onnxruntime's default pool spins and steals the cores the server
    # needs. Sharing them keeps the comparison about serving, not onnxruntime threading.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
