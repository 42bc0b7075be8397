"""Names the operator gives Serve applications and deployments, and the replicas answer to."""

from __future__ import annotations

from jointserve.api import InferenceModel, JointInferenceService, ResourceKey

# The server application: /v2, /v2/health/*, and 404s for models served nowhere.
SERVER_APP = "jointserve"
SERVER_ROUTE = "/v2"
SERVER_DEPLOYMENT = "server"
SERVER_IMPORT_PATH = "jointserve.ingress:build_app"

# An InferenceModel's application has one deployment; its code depends on the layer.
MODEL_DEPLOYMENT = "model"
MODEL_IMPORT_PATHS: dict[str, str] = {
    "edge": "jointserve.edge_serving:build_app",
    "cloud": "jointserve.cloud_serving:build_app",
}

# A JointInferenceService's application: one gateway deployment.
GATEWAY_DEPLOYMENT = "gateway"
GATEWAY_IMPORT_PATH = "jointserve.gateway:build_joint_app"

_APP_PREFIXES = {InferenceModel.KIND: "im", JointInferenceService.KIND: "jis"}


def route_prefix(model_name: str) -> str:
    """Where a model's OIP routes live: /v2/models/<name>."""
    return f"/v2/models/{model_name}"


def app_name(key: ResourceKey) -> str:
    """Serve application name of a resource: unambiguous since namespaces hold no dots."""
    kind, namespace, name = key
    return f"{_APP_PREFIXES.get(kind, kind)}.{namespace}.{name}"
