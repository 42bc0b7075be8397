"""The cluster's registry of replica listeners (the table, kept by the server application's
replica, and the long poll that follows it) and the gateways' counters (in Ray's GCS).

Its own package, importing little (jointserve.api and .contract): the listener and serving
packages import it, and it must not bring them into one another.
"""

from ._counters import counter_totals, forget_counters, report_counters
from ._registry import (
    ENTRY_TTL_S,
    HEARTBEAT_S,
    ListenerRegistry,
    Routes,
    follow,
    listener_registry,
)

__all__ = [
    "ENTRY_TTL_S",
    "HEARTBEAT_S",
    "ListenerRegistry",
    "Routes",
    "counter_totals",
    "follow",
    "forget_counters",
    "listener_registry",
    "report_counters",
]
