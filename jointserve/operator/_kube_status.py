"""Status and Events of Kubernetes mode: what `kubectl get` and `kubectl describe` show.

`KubeStatus` is the reconciler's status record store (the part embedded mode keeps in JSON
files): a write is a merge patch of the status subresource, so it never touches the spec and
never bumps metadata.generation. `KubeEvents` records core/v1 Events on the resource.
"""

from __future__ import annotations

import datetime
import logging
import secrets
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from jointserve.api import API_GROUP, ResourceKey

from ._kube_source import PLURALS, VERSION, KubeSource

log = logging.getLogger(__name__)

COMPONENT = "jointserve-operator"
# A repeat of the same event within this many seconds bumps its count instead of adding one.
REPEAT_WINDOW_S = 600


class KubeStatus:
    """Status records on the objects themselves, through the status subresource."""

    def __init__(self, api_client: client.ApiClient, source: KubeSource) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.source = source
        self._written: dict[ResourceKey, dict[str, Any]] = {}  # what this process last sent

    def keys(self) -> list[ResourceKey]:
        return sorted(self.source.objects())

    def read(self, key: ResourceKey) -> dict[str, Any] | None:
        """The object's status as the API has it; the resource part is rebuilt by the
        reconciler (so the first pass after a restart writes only what really changed)."""
        obj = self.source.get(key)
        if obj is None or not obj.get("status"):
            return None
        return {"resource": None, "status": obj["status"]}

    def write(self, key: ResourceKey, record: dict[str, Any]) -> None:
        kind, namespace, name = key
        # The watch may not have brought our last write back yet: null what either held.
        current = (self.source.get(key) or {}).get("status") or {}
        patch = merge_patch(current, record["status"])
        patch = merge_patch(self._written.get(key, {}), patch)
        try:
            self.api.patch_namespaced_custom_object_status(
                API_GROUP, VERSION, namespace, PLURALS[kind], name, {"status": patch})
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to report on
                return
            raise
        self._written[key] = record["status"]

    def delete(self, key: ResourceKey) -> None:
        """Nothing to do: the status goes with its object."""
        self._written.pop(key, None)


def merge_patch(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that turns `current` into `new`.

    A merge patch only sets the keys it names and merges objects key by key, so every key
    `current` has and `new` lacks is sent as null, at every depth where both hold an object:
    a class gone from a Dataset's status.classes goes from the cluster too. Lists are
    replaced whole."""
    patch = dict(new)
    for field, old in current.items():
        if field not in new:
            patch[field] = None
        elif isinstance(old, dict) and isinstance(new[field], dict):
            patch[field] = merge_patch(old, new[field])
    return patch


class KubeEvents:
    """core/v1 Events about jointserve resources (the Events section of `kubectl describe`)."""

    def __init__(self, api_client: client.ApiClient, source: KubeSource, host: str) -> None:
        self.api = client.CoreV1Api(api_client)
        self.source = source
        self.host = host
        # (uid, reason, message) -> (event name, count, first time): repeats bump the count.
        self._recent: dict[tuple[str, str, str], tuple[str, int, datetime.datetime]] = {}

    def __call__(self, key: ResourceKey, type_: str, reason: str, message: str) -> None:
        obj = self.source.get(key)
        if obj is None:
            return
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO,
                "%s %s/%s: %s %s", key[0], key[1], key[2], reason, message)
        try:
            self._record(obj, type_, reason, message[:1024])
        except (ApiException, OSError) as exc:  # an event is worth a log line, not a failed pass
            log.warning("could not record event %s on %s/%s: %s", reason, key[1], key[2], exc)

    def _record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.timezone.utc)
        repeat_key = (meta["uid"], reason, message)
        recent = self._recent.get(repeat_key)
        if recent and (now - recent[2]).total_seconds() < REPEAT_WINDOW_S:
            name, count, first = recent
            self.api.patch_namespaced_event(name, meta["namespace"],
                                            {"count": count + 1, "lastTimestamp": now})
            self._recent[repeat_key] = (name, count + 1, first)
            return
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        self.api.create_namespaced_event(meta["namespace"], client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=name, namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=obj["apiVersion"], kind=obj["kind"], name=meta["name"],
                namespace=meta["namespace"], uid=meta["uid"],
                resource_version=meta.get("resourceVersion")),
            type=type_, reason=reason, message=message, count=1,
            first_timestamp=now, last_timestamp=now,
            source=client.V1EventSource(component=COMPONENT, host=self.host),
            reporting_component=COMPONENT, reporting_instance=self.host))
        self._recent[repeat_key] = (name, 1, now)
