"""The gateways' counters for the resource status, kept in Ray's GCS key-value store.

    gateway replica --report(service, replica, counts), when changed, at most 1/s--> GCS
    operator pass   <--totals()-- each service's counts, summed over its replicas

Each replica writes its cumulative counts under a key of its own, so a lost or repeated
report is harmless and a dead replica's last counts stay in the sum. They live in the GCS,
which every home has, rather than in the listener registry (a Serve replica): reading them
there took a Serve DeploymentHandle in the operator's process, whose router, long-poll
client and event-loop thread cost memory and CPU to read four numbers a second. The counts
also outlive a restarted server replica.

Both sides are blocking GCS calls: the gateway makes them off its event loop, the operator
from its counters thread.
"""

from __future__ import annotations

from ray.experimental.internal_kv import (
    _internal_kv_del,
    _internal_kv_get,
    _internal_kv_list,
    _internal_kv_put,
)

from jointserve.api import ServiceCounters

NAMESPACE = "jointserve"
_PREFIX = "counters/"


def _service_prefix(service: str) -> str:
    # The trailing "/" keeps service "a" from matching service "ab".
    return f"{_PREFIX}{service}/"


def report_counters(service: str, replica_id: str, counters: ServiceCounters) -> None:
    """Replica `replica_id` of `service` has counted `counters` so far (cumulative)."""
    _internal_kv_put(_service_prefix(service) + replica_id, counters.model_dump_json(),
                     namespace=NAMESPACE)


def counter_totals() -> dict[str, dict[str, int]]:
    """Each service's counters, summed over its replicas."""
    totals: dict[str, dict[str, int]] = {}
    for key in _internal_kv_list(_PREFIX, namespace=NAMESPACE):
        stored = _internal_kv_get(key, namespace=NAMESPACE)
        if stored is None:  # forgotten since the listing
            continue
        service = key.decode()[len(_PREFIX):].rpartition("/")[0]
        counts = ServiceCounters.model_validate_json(stored)
        summed = totals.setdefault(service, dict.fromkeys(ServiceCounters.model_fields, 0))
        for name in summed:
            summed[name] += getattr(counts, name)
    return totals


def forget_counters(service: str) -> None:
    """The service was deleted: a new one of the same name starts from zero."""
    _internal_kv_del(_service_prefix(service), del_by_prefix=True, namespace=NAMESPACE)
