"""BYTES tensors and the binary data extension in the OIP data plane and its HTTP adapter, without Ray."""

from __future__ import annotations

import base64
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from jointserve.protocol import (
    asgi_app,
    InvalidInput,
    LoadedModel,
    ModelEndpoint,
    decode_request,
    encode_output,
    json_header_length,
    request_tensor,
    to_array,
)
from jointserve.runtime import TensorSpec, numpy_dtype

FP32_SPEC = TensorSpec("x", "FP32", (-1, 3), np.dtype(np.float32))
BYTES_SPEC = TensorSpec("image", "BYTES", (-1,), np.dtype(object))


def _json(*inputs: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def _binary(*inputs: tuple[dict[str, Any], bytes]) -> tuple[bytes, int]:
    """A binary-extension body: JSON header (inputs with binary_data_size) + raw data."""
    described = []
    for inp, raw in inputs:
        params = {**inp.get("parameters", {}), "binary_data_size": len(raw)}
        described.append({**inp, "parameters": params})
    header = _json(*described)
    return header + b"".join(raw for _, raw in inputs), len(header)


def _prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _tensors(body: bytes, json_length: int | None = None) -> dict[str, np.ndarray]:
    return {inp.name: request_tensor(inp) for inp in decode_request(body, json_length).inputs}


# -- JSON ---------------------------------------------------------------------------------------


def test_json_bytes_are_utf8() -> None:
    body = _json({"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["héllo", ""]})
    array = _tensors(body)["text"]
    assert array.dtype == object and array.shape == (2, 1)
    assert array.ravel().tolist() == ["héllo".encode(), b""]


def test_json_bytes_base64_content_type() -> None:
    raw = [b"\x89PNG\r\n\x1a\n\x00\xff", b"abc"]
    body = _json({"name": "image", "shape": [2], "datatype": "BYTES",
                  "parameters": {"content_type": "base64"},
                  "data": [base64.b64encode(r).decode() for r in raw]})
    [inp] = decode_request(body).inputs
    assert to_array(inp, BYTES_SPEC).tolist() == raw


def test_json_bytes_nested_rows() -> None:
    body = _json({"name": "t", "shape": [2, 2], "datatype": "BYTES", "data": [["a", "b"], ["c", "d"]]})
    assert _tensors(body)["t"].tolist() == [[b"a", b"b"], [b"c", b"d"]]


def test_json_numbers_unchanged() -> None:
    body = _json({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": list(range(6))})
    [inp] = decode_request(body).inputs
    array = to_array(inp, FP32_SPEC)
    assert array.dtype == np.float32 and array.shape == (2, 3)
    assert array.ravel().tolist() == list(range(6))


@pytest.mark.parametrize(
    ("inp", "message"),
    [
        pytest.param({"name": "t", "shape": [1], "datatype": "BYTES",
                      "parameters": {"content_type": "base64"}, "data": ["not base64!"]},
                     "input 't': BYTES element 0 is not valid base64", id="bad-base64"),
        pytest.param({"name": "t", "shape": [2], "datatype": "BYTES", "data": ["a", 1]},
                     "input 't': BYTES element 1 is int, not a string", id="not-a-string"),
        pytest.param({"name": "t", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]},
                     "input 't': shape [3] needs 3 elements, got 2", id="count"),
        pytest.param({"name": "t", "shape": [1], "datatype": "BF16", "data": [1]},
                     "input 't': unknown or unsupported OIP datatype 'BF16'", id="datatype"),
    ],
)
def test_bad_json_tensors_name_the_input(inp: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        _tensors(_json(inp))
    assert message in err.value.message


# -- binary data extension ----------------------------------------------------------------------


def test_binary_fp32_and_bytes_inputs_mixed_with_json() -> None:
    x = np.arange(6, dtype="<f4").reshape(2, 3)
    images = [b"\x89PNG...", b"", b"\xff\xd8jpeg"]
    body, length = _binary(
        ({"name": "x", "shape": [2, 3], "datatype": "FP32"}, x.tobytes()),
        ({"name": "image", "shape": [3], "datatype": "BYTES"}, _prefixed(*images)),
    )
    # A JSON-data input in between the binary ones takes no bytes.
    request = json.loads(body[:length])
    request["inputs"].insert(1, {"name": "k", "shape": [1], "datatype": "INT64", "data": [7]})
    header = json.dumps(request).encode()
    body = header + body[length:]
    request_ = decode_request(body, len(header))
    x_in, k_in, image_in = request_.inputs
    np.testing.assert_array_equal(to_array(x_in, FP32_SPEC), x)
    assert to_array(x_in, FP32_SPEC).dtype == np.float32
    assert request_tensor(k_in).tolist() == [7]
    assert to_array(image_in, BYTES_SPEC).tolist() == images


@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "INT16", "INT64", "FP16", "FP64"])
def test_binary_numeric_datatypes_are_little_endian(datatype: str) -> None:
    values = np.array([[0, 1], [1, 0]], dtype=numpy_dtype(datatype))
    raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
    body, length = _binary(({"name": "v", "shape": [2, 2], "datatype": datatype}, raw))
    array = _tensors(body, length)["v"]
    assert array.dtype == values.dtype and array.dtype.isnative
    np.testing.assert_array_equal(array, values)


def test_json_length_header_without_binary_inputs() -> None:
    body = _json({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]})
    assert _tensors(body, len(body))["x"].tolist() == [[1, 2, 3]]


def _header(length: int, *inputs: dict[str, Any], tail: bytes = b"") -> tuple[bytes, int]:
    header = _json(*inputs)
    return header + tail, length if length >= 0 else len(header)


FP32 = {"name": "x", "shape": [2], "datatype": "FP32"}
BYTES = {"name": "s", "shape": [2], "datatype": "BYTES"}


def _sized(inp: dict[str, Any], size: Any) -> dict[str, Any]:
    return {**inp, "parameters": {"binary_data_size": size}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(_header(10_000, _sized(FP32, 8), tail=b"\0" * 8),
                     "Inference-Header-Content-Length is 10000, but the body has", id="header-too-long"),
        pytest.param(_header(0, _sized(FP32, 8), tail=b"\0" * 8),
                     "Inference-Header-Content-Length is 0", id="header-zero"),
        pytest.param(_header(-1, _sized(FP32, 8), tail=b"\0" * 4),
                     "input 'x': binary_data_size 8 runs past the end of the body (4 binary bytes left)",
                     id="short-data"),
        pytest.param(_header(-1, _sized(FP32, 8), tail=b"\0" * 12),
                     "12 bytes of binary data after the JSON header, but the inputs' "
                     "binary_data_size add up to 8", id="extra-data"),
        pytest.param(_header(-1, _sized(FP32, 4), tail=b"\0" * 4),
                     "input 'x': binary_data_size 4 does not fit shape [2] of FP32 "
                     "(2 elements x 4 bytes = 8)", id="numeric-count"),
        pytest.param(_header(-1, {**FP32, "data": [1, 2], "parameters": {"binary_data_size": 8}},
                             tail=b"\0" * 8),
                     "input 'x': has both data and parameters.binary_data_size", id="both"),
        pytest.param(_header(-1, FP32), "input 'x': needs data or parameters.binary_data_size",
                     id="neither"),
        pytest.param(_header(-1, _sized(FP32, -8)),
                     "input 'x': parameters.binary_data_size must be a byte count >= 0, got -8",
                     id="negative-size"),
        pytest.param(_header(-1, _sized(FP32, "8"), tail=b"\0" * 8),
                     "binary_data_size must be a byte count >= 0, got '8'", id="string-size"),
        pytest.param(_header(-1, _sized(BYTES, 9), tail=_prefixed(b"abcde")),
                     "input 's': shape [2] needs 2 elements, binary data holds 1", id="bytes-count"),
        pytest.param(_header(-1, _sized(BYTES, 15), tail=_prefixed(b"a", b"b", b"c")),
                     "input 's': binary data holds more than 2 BYTES elements", id="bytes-extra"),
        pytest.param(_header(-1, _sized(BYTES, 9), tail=_prefixed(b"abc") + b"\1\0"),
                     "input 's': BYTES element 1 has a cut-off length prefix", id="bytes-prefix"),
        pytest.param(_header(-1, _sized(BYTES, 6), tail=struct.pack("<I", 5) + b"ab"),
                     "input 's': BYTES element 0 declares 5 bytes, 2 are left", id="bytes-overrun"),
        pytest.param(_header(-1, _sized({**FP32, "shape": [-2]}, 0)),
                     "input 'x': shape [-2] has a negative dimension", id="negative-dim"),
    ],
)
def test_binary_inconsistencies_are_invalid_input(body: tuple[bytes, int], message: str) -> None:
    data, length = body
    with pytest.raises(InvalidInput) as err:
        decode_request(data, length)
    assert message in err.value.message
    assert err.value.status_code == 400


def test_binary_data_size_without_the_header_is_refused() -> None:
    with pytest.raises(InvalidInput, match="binary_data_size needs the binary data extension's "
                                           "Inference-Header-Content-Length header"):
        decode_request(_json(_sized(FP32, 8)))


def test_binary_tensor_is_checked_against_the_model() -> None:
    body, length = _binary(({"name": "x", "shape": [2, 2], "datatype": "FP32"}, bytes(16)))
    [inp] = decode_request(body, length).inputs
    with pytest.raises(InvalidInput, match=r"shape \[2, 2\] does not fit the model's \[-1, 3\]"):
        to_array(inp, FP32_SPEC)
    with pytest.raises(InvalidInput, match="datatype FP32 does not match the model's BYTES"):
        to_array(inp, BYTES_SPEC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, None, id="absent"),
        pytest.param({"inference-header-content-length": " 42 "}, 42, id="value"),
    ],
)
def test_json_header_length(headers: dict[str, str], expected: int | None) -> None:
    assert json_header_length(headers) == expected


@pytest.mark.parametrize("value", ["-1", "+4", "1_0", "x", ""])
def test_bad_json_header_length_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length must be a byte count"):
        json_header_length({"inference-header-content-length": value})


# -- responses ----------------------------------------------------------------------------------


def test_bytes_outputs_encode_as_text() -> None:
    labels = np.empty((1, 2), dtype=object)
    labels[0] = ["chat".encode(), "été".encode()]
    assert encode_output("labels", labels) == {
        "name": "labels", "shape": [1, 2], "datatype": "BYTES", "data": ["chat", "été"]}
    assert encode_output("u", np.array(["a", "b"]))["data"] == ["a", "b"]
    json.dumps(encode_output("labels", labels))


def test_non_utf8_bytes_outputs_encode_as_base64_throughout() -> None:
    blobs = np.empty(2, dtype=object)
    blobs[:] = [b"ok", b"\xff\xfe"]
    out = encode_output("blob", blobs)
    assert out["parameters"] == {"content_type": "base64"}
    assert [base64.b64decode(item) for item in out["data"]] == [b"ok", b"\xff\xfe"]
    # The same convention requests use: the output can be sent back as an input.
    [inp] = decode_request(_json({**out, "name": "blob"})).inputs
    assert request_tensor(inp).tolist() == [b"ok", b"\xff\xfe"]


# -- over HTTP, on the real example model ---------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint(example: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelEndpoint:
    target = tmp_path_factory.mktemp("edge-v1")
    with tarfile.open(example / "archives" / "digits-edge-v1.tar.gz") as tar:
        tar.extractall(target, filter="data")
    served = ModelEndpoint("digits-edge")
    served.loaded = LoadedModel.load("digits-edge", "v1", target)
    return served


def _post(endpoint: ModelEndpoint, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = TestClient(asgi_app(endpoint.handle)).post("/v2/models/digits-edge/infer",
                                                          content=body, headers=headers)
    return response.status_code, response.json()


def test_binary_request_over_http_answers_like_json(endpoint: ModelEndpoint) -> None:
    x = np.random.default_rng(0).uniform(0, 16, size=(2, 64)).astype("<f4")
    plain = _json({"name": "input", "shape": [2, 64], "datatype": "FP32", "data": x.ravel().tolist()})
    body, length = _binary(({"name": "input", "shape": [2, 64], "datatype": "FP32"}, x.tobytes()))
    assert _post(endpoint, body, {"Inference-Header-Content-Length": str(length)}) == \
        _post(endpoint, plain, {})
    status, error = _post(endpoint, body, {"Inference-Header-Content-Length": "many"})
    assert status == 400 and "Inference-Header-Content-Length must be a byte count" in error["error"]
