"""The OIP v2 data plane for one model: decode -> validate against the model -> run -> encode.

Protocol-agnostic and Ray-agnostic: the HTTP adapter (jointserve.protocol.http) and the Serve
deployments call into it, and so can a plain ASGI server (the benchmarks' baseline). Model
versions are immutable `LoadedModel` values; swapping one in is a single reference assignment,
so a request in flight finishes on the version it started with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from jointserve.runtime import OnnxModel, TensorSpec, oip_datatype

from ._errors import InvalidInput, ModelNotReady
from ._oip import InferenceRequest, MetadataTensor, ModelMetadata, RequestInput

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class LoadedModel:
    """One version of one model, loaded and warmed up."""

    name: str
    version: str
    model: OnnxModel

    @classmethod
    def load(cls, name: str, version: str, path: Path) -> "LoadedModel":
        """Load `path` and run it once on zeros, so a broken model fails here, not on a request."""
        model = OnnxModel(path)
        model.run({spec.name: _zeros_like(spec) for spec in model.inputs})
        return cls(name=name, version=version, model=model)


def _zeros_like(spec: TensorSpec) -> np.ndarray:
    shape = tuple(1 if dim < 0 else dim for dim in spec.shape)
    return np.zeros(shape, dtype=spec.numpy_dtype)


def decode_request(body: bytes) -> InferenceRequest:
    """Parse and check the request envelope; any problem is an InvalidInput naming it."""
    if not body:
        raise InvalidInput("request body is empty; expected an OIP v2 JSON inference request")
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        if first["type"] == "json_invalid":
            raise InvalidInput(f"request body is not valid JSON: {first['msg']}") from None
        raise InvalidInput(f"invalid inference request: {where}: {first['msg']}") from None


def infer(loaded: LoadedModel | None, request: InferenceRequest) -> dict[str, Any]:
    """Run one request; returns the OIP response as a JSON-ready dict."""
    if loaded is None:
        raise ModelNotReady("model has no loaded version yet")
    model = loaded.model
    feeds = {inp.name: to_array(inp, _input_spec(model, inp.name)) for inp in request.inputs}
    missing = [spec.name for spec in model.inputs if spec.name not in feeds]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}; model {loaded.name} needs {_names(model.inputs)}")
    wanted = _requested_outputs(model, request)
    outputs = model.run(feeds, wanted)
    response: dict[str, Any] = {
        "model_name": loaded.name,
        "model_version": loaded.version,
        "outputs": [encode_output(name, outputs[name]) for name in wanted],
    }
    if request.id is not None:
        response["id"] = request.id
    return response


def to_array(inp: RequestInput, spec: TensorSpec) -> np.ndarray:
    """The request tensor as a numpy array of the model's dtype and shape, or InvalidInput."""
    if inp.datatype != spec.datatype:
        raise InvalidInput(
            f"input {inp.name!r}: datatype {inp.datatype} does not match the model's {spec.datatype}"
        )
    if any(dim < 0 for dim in inp.shape):
        raise InvalidInput(f"input {inp.name!r}: shape {inp.shape} has a negative dimension")
    if len(inp.shape) != len(spec.shape) or any(
        want >= 0 and got != want for got, want in zip(inp.shape, spec.shape)
    ):
        raise InvalidInput(
            f"input {inp.name!r}: shape {inp.shape} does not fit the model's {list(spec.shape)} "
            "(-1 = any size)"
        )
    try:
        array = np.asarray(inp.data, dtype=spec.numpy_dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {inp.name!r}: data is not {inp.datatype}: {exc}") from None
    if array.size != math.prod(inp.shape):
        raise InvalidInput(
            f"input {inp.name!r}: shape {inp.shape} needs {math.prod(inp.shape)} elements, "
            f"got {array.size}"
        )
    return array.reshape(inp.shape)


def encode_output(name: str, array: np.ndarray) -> dict[str, Any]:
    """One OIP output tensor: row-major flattened data, as the spec's JSON form prescribes."""
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": oip_datatype(array.dtype),
        "data": array.ravel().tolist(),
    }


def metadata(loaded: LoadedModel) -> ModelMetadata:
    """OIP model metadata (GET /v2/models/<name>)."""
    model = loaded.model
    return ModelMetadata(
        name=loaded.name,
        versions=[loaded.version],
        platform=PLATFORM,
        inputs=[_tensor_metadata(spec) for spec in model.inputs],
        outputs=[_tensor_metadata(spec) for spec in model.outputs],
        parameters={"labels": model.metadata["labels"]} if "labels" in model.metadata else None,
    )


def _tensor_metadata(spec: TensorSpec) -> MetadataTensor:
    return MetadataTensor(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def _input_spec(model: OnnxModel, name: str) -> TensorSpec:
    for spec in model.inputs:
        if spec.name == name:
            return spec
    raise InvalidInput(f"unknown input {name!r}; the model's inputs are {_names(model.inputs)}")


def _requested_outputs(model: OnnxModel, request: InferenceRequest) -> list[str]:
    available = _names(model.outputs)
    if not request.outputs:
        return available
    wanted = [out.name for out in request.outputs]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; the model's outputs are {available}")
    return wanted


def _names(specs: tuple[TensorSpec, ...]) -> list[str]:
    return [spec.name for spec in specs]

