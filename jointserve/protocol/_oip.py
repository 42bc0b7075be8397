"""Open Inference Protocol v2 wire format (REST, JSON tensors).

Spec: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md

    $inference_request = { "id" : $string #optional, "parameters" : $parameters #optional,
                           "inputs" : [ $request_input, ... ], "outputs" : [ $request_output, ... ] #optional }
    $request_input = { "name" : $string, "shape" : [ $number, ... ], "datatype" : $string,
                       "parameters" : $parameters #optional, "data" : $tensor_data }
    $inference_response = { "model_name" : $string, "model_version" : $string #optional,
                            "id" : $string, "parameters" : $parameters #optional,
                            "outputs" : [ $response_output, ... ] }

Pydantic validates the envelope at the boundary (its Rust core parses the JSON); tensor data
is handed to numpy as is.

With the binary data extension (Triton's, also KServe's:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md)
an input carries `parameters.binary_data_size` instead of `data`; the data plane decodes those
bytes and attaches the tensor to the input (`RequestInput.tensor`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class _Wire(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


class RequestInput(_Wire):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    # Absent when the tensor travels as binary data (parameters.binary_data_size).
    data: list[Any] | None = None
    _tensor: np.ndarray | None = PrivateAttr(default=None)

    @property
    def tensor(self) -> np.ndarray | None:
        """The tensor decoded from binary data, if it came that way."""
        return self._tensor


class RequestOutput(_Wire):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Wire):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Wire):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(_Wire):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(_Wire):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Wire):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any] | None = None
