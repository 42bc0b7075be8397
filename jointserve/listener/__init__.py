"""Each serving replica's own HTTP listener, published in the cluster's registry.

Ray Serve manages the replicas (placement, health, restarts, rolling reconfiguration,
scaling); the requests do not pass through its request machinery. Each replica answers OIP
on a `Listener` of its own and publishes it (`Publication`) in the registry
(jointserve.registry); the front door (jointserve.ingress) programs HAProxy from that
registry, and gateways find their cloud model's listeners in it.
"""

from ._publication import Publication
from ._replica import IN_FLIGHT_METRIC, ListenerReplica, in_flight_autoscaling_policy, listen_host
from ._server import HEALTH_PATH, Listener

__all__ = ["HEALTH_PATH", "IN_FLIGHT_METRIC", "Listener", "ListenerReplica",
           "in_flight_autoscaling_policy", "listen_host", "Publication"]
