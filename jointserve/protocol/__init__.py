"""Open Inference Protocol v2: wire models, the data plane and its HTTP adapter, and the
model replica logic both tiers share (ModelReplica: an endpoint whose version follows
`reconfigure`)."""

from ._dataplane import (
    INLINE_MAX_S,
    JSON_LENGTH_HEADER,
    LoadedModel,
    decode_request,
    encode_output,
    infer,
    metadata,
    model_info,
    request_tensor,
    run_model,
    to_array,
)
from ._errors import InferenceError, InvalidInput, MethodNotAllowed, ModelNotFound, ModelNotReady
from ._http import (
    ModelEndpoint,
    ServerEndpoint,
    answer,
    error_response,
    json_header_length,
    json_response,
    relative_path,
    require_method,
)
from ._oip import InferenceRequest, InferenceResponse, ModelMetadata, RequestInput
from ._replica import ModelReplica, TensorAnswer, load_artifact

__all__ = [
    "ModelReplica",
    "TensorAnswer",
    "load_artifact",
    "INLINE_MAX_S",
    "JSON_LENGTH_HEADER",
    "InferenceError",
    "InferenceRequest",
    "InferenceResponse",
    "InvalidInput",
    "LoadedModel",
    "MethodNotAllowed",
    "ModelEndpoint",
    "ModelMetadata",
    "ModelNotFound",
    "ModelNotReady",
    "RequestInput",
    "ServerEndpoint",
    "answer",
    "decode_request",
    "encode_output",
    "error_response",
    "infer",
    "json_header_length",
    "json_response",
    "metadata",
    "model_info",
    "relative_path",
    "request_tensor",
    "require_method",
    "run_model",
    "to_array",
]
