"""Open Inference Protocol v2: wire models, the data plane and its HTTP adapter."""

from ._dataplane import LoadedModel, decode_request, encode_output, infer, metadata, to_array
from ._errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from ._http import ModelEndpoint, error_response, json_response, relative_path
from ._oip import InferenceRequest, InferenceResponse, ModelMetadata, RequestInput

__all__ = [
    "InferenceError",
    "InferenceRequest",
    "InferenceResponse",
    "InvalidInput",
    "LoadedModel",
    "ModelEndpoint",
    "ModelMetadata",
    "ModelNotFound",
    "ModelNotReady",
    "RequestInput",
    "decode_request",
    "encode_output",
    "error_response",
    "infer",
    "json_response",
    "metadata",
    "relative_path",
    "to_array",
]
