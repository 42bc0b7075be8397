"""The cluster's registry of replica listeners (and of the gateways' counters): the table,
kept by the server application's replica, and the long poll that follows it.

Its own package, importing little (jointserve.api and .contract): the listener and serving
packages import it, and it must not bring them into one another.
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
