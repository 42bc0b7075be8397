"""Cloud tier: the Ray Serve deployment that serves a cloud-layer InferenceModel over OIP v2.

Same protocol as the edge tier; it differs in where it is placed (cloud nodes) and, with the
joint-inference gateway, in batching hard examples.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from jointserve.protocol._replica import ModelReplica


@serve.deployment(name="model", max_ongoing_requests=256)
class CloudModelServer(ModelReplica):
    """A cloud-layer InferenceModel: the big, accurate model."""


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Serve config `import_path`; args: {"model_name": str}."""
    return CloudModelServer.bind(model_name=args["model_name"])


__all__ = ["CloudModelServer", "build_app"]
