"""Edge tier: the Ray Serve deployment that serves an edge-layer InferenceModel over OIP v2,
and the hard example mining policies that decide which edge answers go on to the cloud.

The operator points a Serve application at `jointserve.edge_serving:build_app` and places its
replicas on edge nodes through the deployment's ray_actor_options (see
jointserve.operator's Serve config builder).

The deployment is imported on first use: resource validation (jointserve.api) checks HEM
policy names and parameters, and must not pay for importing Ray to do so.
"""

from __future__ import annotations

from typing import Any

from ._hem import POLICIES, HemDecision, HemPolicy, build_policy

_DEPLOYMENT_NAMES = ("EdgeModelServer", "build_app")


def __getattr__(name: str) -> Any:
    if name in _DEPLOYMENT_NAMES:
        from . import _deployment

        return getattr(_deployment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["POLICIES", "EdgeModelServer", "HemDecision", "HemPolicy", "build_app", "build_policy"]
