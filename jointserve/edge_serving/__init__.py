"""Edge tier: the Ray Serve deployment that serves an edge-layer InferenceModel over OIP v2.

The operator points a Serve application at `jointserve.edge_serving:build_app` and places its
replicas on edge nodes through the deployment's ray_actor_options (see
jointserve.operator's Serve config builder). The routing policies that decide which edge
answers go on to the cloud are not the edge tier's: they live in jointserve.routing.
"""

from ._deployment import EdgeModelServer, build_app

__all__ = ["EdgeModelServer", "build_app"]
