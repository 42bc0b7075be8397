"""Edge tier: the Ray Serve deployment that serves an edge-layer InferenceModel over OIP v2,
and the hard example mining policies that decide which edge answers go on to the cloud.

The operator points a Serve application at `jointserve.edge_serving:build_app` and places its
replicas on edge nodes through the deployment's ray_actor_options (see
jointserve.operator's Serve config builder).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from jointserve.protocol._replica import ModelReplica

from ._hem import POLICIES, HemDecision, HemPolicy, build_policy


@serve.deployment(name="model", max_ongoing_requests=256)
class EdgeModelServer(ModelReplica):
    """An edge-layer InferenceModel: small model, served next to the data."""


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Serve config `import_path`; args: {"model_name": str}."""
    return EdgeModelServer.bind(model_name=args["model_name"])


__all__ = ["POLICIES", "EdgeModelServer", "HemDecision", "HemPolicy", "build_app", "build_policy"]
