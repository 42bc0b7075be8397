"""The OIP v2 data plane for one model: decode -> validate against the model -> run -> encode.

Protocol-agnostic and Ray-agnostic: the HTTP adapter (jointserve/protocol/_http.py, exported
through jointserve.protocol) and the Serve deployments call into it, and so can a plain ASGI
server (the benchmarks' baseline). Model versions are immutable `LoadedModel` values; swapping
one in is a single reference assignment, so a request in flight finishes on the version it
started with.

Tensors arrive as JSON `data` or, with the binary data extension, as raw bytes after the JSON
header (`decode_request(body, json_length)`); either way `request_tensor` yields one numpy
array per input (BYTES: an object array of `bytes`). Responses are always JSON.
"""

from __future__ import annotations

import asyncio
import binascii
import math
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from jointserve.runtime import OnnxModel, TensorSpec, numpy_dtype, oip_datatype

from ._errors import InvalidInput, ModelNotReady
from ._oip import InferenceRequest, MetadataTensor, ModelMetadata, RequestInput

PLATFORM = "onnxruntime_onnx"
# Binary data extension: length of the JSON part of the body.
JSON_LENGTH_HEADER = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")  # BYTES element length prefix in binary data


@dataclass(frozen=True)
class LoadedModel:
    """One version of one model, loaded and warmed up."""

    name: str
    version: str
    model: OnnxModel
    # A warm call on one sample, timed at load: callers on an event loop use it to decide
    # between calling the model inline and handing it to a thread.
    call_s: float = 0.0
    # What the model is (task, labels, description): the resource's spec.metadata over the
    # archive's metadata.json (see `model_info`).
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, version: str, path: Path,
             info: Mapping[str, Any] | None = None) -> "LoadedModel":
        """Load `path` and run it on zeros, so a broken model fails here, not on a request.
        `info`: the resource's own description of the model, over the archive's."""
        model = OnnxModel(path)
        feeds = {spec.name: _zeros_like(spec) for spec in model.inputs}
        model.run(feeds)  # the first call pays one-time setup; time the second
        started = time.perf_counter()
        model.run(feeds)
        return cls(name=name, version=version, model=model, call_s=time.perf_counter() - started,
                   info=model_info(model.metadata, info))

    @property
    def labels(self) -> list[str] | None:
        """Class names by class id, if the model has them."""
        labels = self.info.get("labels")
        return list(labels) if labels is not None else None


INFO_FIELDS = ("task", "labels", "description")


def model_info(archive: Mapping[str, Any], spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """task, labels and description: from `spec` (the resource) where set, else the archive's
    metadata.json; fields neither gives are left out."""
    given = {k: v for k, v in (spec or {}).items() if v is not None}
    merged = {name: given.get(name, archive.get(name)) for name in INFO_FIELDS}
    return {name: value for name, value in merged.items() if value is not None}


# Above this warm call time a model runs in a worker thread instead of on the event loop: a
# thread hop (asyncio.to_thread) costs ~35 µs, worth paying only for calls much longer than
# that, while a slow model inline would stall every other request of the replica. The digits
# edge model's warm call takes ~6 µs, so it runs inline. Both figures: docs/architecture.md,
# section "Measured figures the code relies on".
INLINE_MAX_S = 0.002


async def run_model(loaded: LoadedModel, feeds: Mapping[str, np.ndarray],
                    output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The outputs of `loaded` for `feeds` (all, or `output_names`), without stalling the
    event loop on a slow model."""
    if loaded.call_s <= INLINE_MAX_S:
        return loaded.model.run(feeds, output_names)
    return await asyncio.to_thread(loaded.model.run, feeds, output_names)


def _zeros_like(spec: TensorSpec) -> np.ndarray:
    shape = tuple(1 if dim < 0 else dim for dim in spec.shape)
    return np.zeros(shape, dtype=spec.numpy_dtype)


def decode_request(body: bytes, json_length: int | None = None) -> InferenceRequest:
    """Parse and check the request envelope; any problem is an InvalidInput naming it.

    `json_length` is the Inference-Header-Content-Length header of the binary data extension:
    the first `json_length` bytes are the JSON request, the rest the raw data of the inputs
    that give `parameters.binary_data_size`, in input order. Without it the body is all JSON.
    """
    if not body:
        raise InvalidInput("request body is empty; expected an OIP v2 JSON inference request")
    if json_length is None:
        request = _parse_json(body)
        for inp in request.inputs:
            if _binary_size(inp) is not None:
                raise InvalidInput(
                    f"input {inp.name!r}: parameters.binary_data_size needs the binary data "
                    f"extension's {JSON_LENGTH_HEADER} header"
                )
        return request
    if not 0 < json_length <= len(body):
        raise InvalidInput(
            f"{JSON_LENGTH_HEADER} is {json_length}, but the body has {len(body)} bytes"
        )
    # Only the JSON part is copied; tensors are numpy views of the body.
    request = _parse_json(body[:json_length])
    binary = memoryview(body)[json_length:]
    offset = 0
    for inp in request.inputs:
        size = _binary_size(inp)
        if size is None:
            continue
        if offset + size > len(binary):
            raise InvalidInput(
                f"input {inp.name!r}: binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} binary bytes left)"
            )
        inp._tensor = _binary_tensor(inp, binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary)} bytes of binary data after the JSON header, but the "
            f"inputs' binary_data_size add up to {offset}"
        )
    return request


def _parse_json(body: bytes) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        if first["type"] == "json_invalid":
            raise InvalidInput(f"request body is not valid JSON: {first['msg']}") from None
        raise InvalidInput(f"invalid inference request: {where}: {first['msg']}") from None


def _binary_size(inp: RequestInput) -> int | None:
    """parameters.binary_data_size, checked: a byte count, and never beside `data`."""
    size = inp.parameters.get("binary_data_size") if inp.parameters else None
    if size is None:
        if inp.data is None:
            raise InvalidInput(f"input {inp.name!r}: needs data or parameters.binary_data_size")
        return None
    if inp.data is not None:
        raise InvalidInput(
            f"input {inp.name!r}: has both data and parameters.binary_data_size; give one"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(
            f"input {inp.name!r}: parameters.binary_data_size must be a byte count >= 0, "
            f"got {size!r}"
        )
    return size


def _binary_tensor(inp: RequestInput, raw: memoryview) -> np.ndarray:
    """Raw extension bytes -> the input's tensor: little-endian values, or length-prefixed BYTES."""
    dtype = _numpy_dtype(inp)
    count = _element_count(inp)
    if inp.datatype == "BYTES":
        return _length_prefixed(inp, raw, count).reshape(inp.shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {inp.name!r}: binary_data_size {len(raw)} does not fit shape {inp.shape} "
            f"of {inp.datatype} ({count} elements x {dtype.itemsize} bytes = "
            f"{count * dtype.itemsize})"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    if not array.dtype.isnative:  # big-endian hosts only
        array = array.astype(dtype)
    return array.reshape(inp.shape)


def _length_prefixed(inp: RequestInput, raw: memoryview, count: int) -> np.ndarray:
    """BYTES elements in the extension's form: a 4-byte little-endian length, then the bytes."""
    name = inp.name
    # A list first: `count` comes from the client's shape and must not size an allocation.
    items: list[bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        n = len(items)
        if n == count:
            raise InvalidInput(f"input {name!r}: binary data holds more than {count} BYTES elements")
        if pos + 4 > end:
            raise InvalidInput(f"input {name!r}: BYTES element {n} has a cut-off length prefix")
        (length,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInput(
                f"input {name!r}: BYTES element {n} declares {length} bytes, "
                f"{end - pos} are left"
            )
        items.append(bytes(raw[pos : pos + length]))
        pos += length
    if len(items) != count:
        raise InvalidInput(
            f"input {name!r}: shape {inp.shape} needs {count} elements, "
            f"binary data holds {len(items)}"
        )
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def infer(loaded: LoadedModel | None, request: InferenceRequest) -> dict[str, Any]:
    """Run one request; returns the OIP response as a JSON-ready dict."""
    loaded = require_loaded(loaded)
    feeds, wanted = prepare(loaded, request)
    return respond(loaded.name, loaded.version, request, loaded.model.run(feeds, wanted), wanted)


def require_loaded(loaded: LoadedModel | None) -> LoadedModel:
    if loaded is None:
        raise ModelNotReady("model has no loaded version yet")
    return loaded


def prepare(loaded: LoadedModel, request: InferenceRequest) -> tuple[dict[str, np.ndarray], list[str]]:
    """The request's tensors checked against the model (InvalidInput naming what is wrong),
    and the names of the outputs it asks for."""
    model = loaded.model
    feeds = {inp.name: to_array(inp, _input_spec(model, inp.name)) for inp in request.inputs}
    missing = [spec.name for spec in model.inputs if spec.name not in feeds]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}; model {loaded.name} needs {_names(model.inputs)}")
    return feeds, _requested_outputs(model, request)


def respond(name: str, version: str, request: InferenceRequest,
            outputs: Mapping[str, np.ndarray], wanted: list[str]) -> dict[str, Any]:
    """The OIP response for `outputs` of `version`, the `wanted` ones in the order asked."""
    response: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "outputs": [encode_output(output, outputs[output]) for output in wanted],
    }
    if request.id is not None:
        response["id"] = request.id
    return response


def to_array(inp: RequestInput, spec: TensorSpec) -> np.ndarray:
    """The request tensor checked against the model's input spec (datatype, shape), or InvalidInput."""
    if inp.datatype != spec.datatype:
        raise InvalidInput(
            f"input {inp.name!r}: datatype {inp.datatype} does not match the model's {spec.datatype}"
        )
    _check_dims(inp)
    if len(inp.shape) != len(spec.shape) or any(
        want >= 0 and got != want for got, want in zip(inp.shape, spec.shape)
    ):
        raise InvalidInput(
            f"input {inp.name!r}: shape {inp.shape} does not fit the model's {list(spec.shape)} "
            "(-1 = any size)"
        )
    return request_tensor(inp)


def request_tensor(inp: RequestInput) -> np.ndarray:
    """The input as sent: a numpy array of its own datatype and shape, or InvalidInput.

    BYTES become an object array of `bytes`: JSON strings encoded as UTF-8, or base64-decoded
    when the input's parameters say `"content_type": "base64"` (MLServer's convention).
    """
    if inp.tensor is not None:  # binary data extension: decoded and checked by decode_request
        return inp.tensor
    dtype = _numpy_dtype(inp)
    count = _element_count(inp)
    if inp.data is None:
        raise InvalidInput(f"input {inp.name!r}: needs data or parameters.binary_data_size")
    if inp.datatype == "BYTES":
        array = _bytes_from_json(inp)
    else:
        try:
            array = np.asarray(inp.data, dtype=dtype)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"input {inp.name!r}: data is not {inp.datatype}: {exc}") from None
    if array.size != count:
        raise InvalidInput(
            f"input {inp.name!r}: shape {inp.shape} needs {count} elements, got {array.size}"
        )
    return array.reshape(inp.shape)


def _numpy_dtype(inp: RequestInput) -> np.dtype:
    try:
        return numpy_dtype(inp.datatype)
    except ValueError as exc:
        raise InvalidInput(f"input {inp.name!r}: {exc}") from None


def _check_dims(inp: RequestInput) -> None:
    if any(dim < 0 for dim in inp.shape):
        raise InvalidInput(f"input {inp.name!r}: shape {inp.shape} has a negative dimension")


def _element_count(inp: RequestInput) -> int:
    _check_dims(inp)
    return math.prod(inp.shape)


def _bytes_from_json(inp: RequestInput) -> np.ndarray:
    items = _flatten(inp.data or [])
    is_base64 = bool(inp.parameters) and inp.parameters.get("content_type") == "base64"
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInput(
                f"input {inp.name!r}: BYTES element {i} is {type(item).__name__}, not a string"
            )
        if is_base64:
            try:
                out[i] = binascii.a2b_base64(item, strict_mode=True)
            except binascii.Error as exc:
                raise InvalidInput(
                    f"input {inp.name!r}: BYTES element {i} is not valid base64 ({exc})"
                ) from None
        else:
            out[i] = item.encode("utf-8")
    return out


def _flatten(data: list[Any]) -> list[Any]:
    # JSON tensor data may be nested row-major lists; BYTES elements are the leaves.
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def encode_output(name: str, array: np.ndarray) -> dict[str, Any]:
    """One OIP output tensor: row-major flattened data, as the spec's JSON form prescribes
    (a flat numpy array for numbers, for `protocol.dumps` to write).

    BYTES elements become JSON strings: UTF-8 text as is; if any element is not valid UTF-8,
    every element is base64 and the output's parameters say `"content_type": "base64"` (the
    convention requests use), so a client never has to guess per element.
    """
    datatype = oip_datatype(array.dtype)
    output: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
    if datatype != "BYTES":
        # The array itself: protocol.dumps (orjson) writes it from its buffer. Stdlib json
        # cannot: callers that need lists call `.tolist()` on it.
        output["data"] = np.ascontiguousarray(array.ravel())
        return output
    items = [item if isinstance(item, (bytes, bytearray)) else str(item).encode("utf-8")
             for item in array.ravel().tolist()]
    try:
        output["data"] = [item.decode("utf-8") for item in items]
    except UnicodeDecodeError:
        output["data"] = [binascii.b2a_base64(item, newline=False).decode("ascii") for item in items]
        output["parameters"] = {"content_type": "base64"}
    return output


def metadata(loaded: LoadedModel, inputs: Sequence[TensorSpec] | None = None) -> ModelMetadata:
    """OIP model metadata (GET /v2/models/<name>). `inputs`: what a client sends instead of
    the model's own inputs (a service whose steps decode images)."""
    model = loaded.model
    return ModelMetadata(
        name=loaded.name,
        versions=[loaded.version],
        platform=PLATFORM,
        inputs=[_tensor_metadata(spec) for spec in (model.inputs if inputs is None else inputs)],
        outputs=[_tensor_metadata(spec) for spec in model.outputs],
        parameters=dict(loaded.info) or None,
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

