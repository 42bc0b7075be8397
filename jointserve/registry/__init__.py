"""The cluster's registry of replica listeners (and of the gateways' counters): one detached
Ray actor, and the long poll that follows it.

Its own package, importing little (Ray, jointserve.api): the actor's process imports the
module that defines it, and the listener and serving packages would bring uvicorn, Serve and
onnxruntime into it (~40 MiB more).
"""

from ._registry import (
    ENTRY_TTL_S,
    HEARTBEAT_S,
    ListenerRegistry,
    Routes,
    follow,
    listener_registry,
)

__all__ = ["ENTRY_TTL_S", "HEARTBEAT_S", "ListenerRegistry", "Routes", "follow", "listener_registry"]
