"""The Ray Serve deployment of an edge-layer InferenceModel served on its own."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from jointserve.contract import MODEL_DEPLOYMENT
from jointserve.protocol import ModelReplica


@serve.deployment(name=MODEL_DEPLOYMENT, max_ongoing_requests=256)
class EdgeModelServer(ModelReplica):
    """An edge-layer InferenceModel: small model, served next to the data."""


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Serve config `import_path`; args: {"model_name": str}."""
    return EdgeModelServer.bind(model_name=args["model_name"])
