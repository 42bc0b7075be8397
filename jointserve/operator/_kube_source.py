"""Kubernetes source: the resources of Kubernetes mode, kept current by list + watch.

Per kind, one thread lists the objects (remembering the list's resourceVersion), then
watches from that resourceVersion, moving it forward with every event and bookmark. A watch
that ends (the server's timeout, a dropped connection, an API server restart) is re-opened
from the last resourceVersion, so nothing is missed and nothing is replayed; when the server
answers 410 Gone (that resourceVersion has been compacted away) the thread lists again, which
also catches deletions it could not see.

Why not kopf: kopf runs one handler per object and event, while jointserve's reconcile is one
function over all resources (a JointInferenceService is planned from its models' plans, and
the Serve config is one declarative document). An informer-style cache feeding that one
function is less code than adapting kopf's per-object model, and keeps both modes alike.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from jointserve.api import (
    API_GROUP,
    Dataset,
    InferenceModel,
    JointInferenceService,
    Resource,
    ResourceError,
    ResourceKey,
    TrainingModel,
    parse_resource,
)


log = logging.getLogger(__name__)

VERSION = "v1alpha1"
PLURALS = {InferenceModel.KIND: InferenceModel.PLURAL,
           JointInferenceService.KIND: JointInferenceService.PLURAL,
           Dataset.KIND: Dataset.PLURAL,
           TrainingModel.KIND: TrainingModel.PLURAL}
# The server ends each watch after this long; re-opening it costs one request.
WATCH_TIMEOUT_S = 60
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
# Metadata the reconciler reads; the rest (managedFields, resourceVersion, finalizers, ...)
# changes on every write and would make each status write look like a new spec.
KEPT_METADATA = ("name", "namespace", "labels", "annotations", "generation", "uid")


def kube_client(kubeconfig: Path | None) -> client.ApiClient:
    """An API client from `kubeconfig`, or from the pod's service account inside a cluster."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)


def object_key(obj: Mapping[str, Any]) -> ResourceKey:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", "default"), meta["name"])


def to_resource(obj: Mapping[str, Any]) -> Resource:
    """The typed resource of an API object, with only the metadata the reconciler reads."""
    meta = {k: v for k, v in obj["metadata"].items() if k in KEPT_METADATA}
    doc = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta,
           "spec": obj.get("spec", {})}
    return parse_resource(doc, f"{obj['kind']} {meta.get('namespace')}/{meta['name']}")


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


@dataclass
class _KindState:
    resource_version: str | None = None
    synced: threading.Event = field(default_factory=threading.Event)
    relists: int = 0


class KubeSource:
    """The jointserve objects of the cluster (or of one namespace), as the API last said."""

    def __init__(self, api_client: client.ApiClient, namespace: str | None = None) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.changed = threading.Event()  # set on every change; the operator clears it
        self._objects: dict[ResourceKey, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._kinds = {kind: _KindState() for kind in PLURALS}

    # -- reading ----------------------------------------------------------------------------

    def objects(self) -> dict[ResourceKey, dict[str, Any]]:
        """A copy of every object as last seen (raw API dicts, status included)."""
        with self._lock:
            return dict(self._objects)

    def get(self, key: ResourceKey) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(key)

    def parsed(self, objects: Mapping[ResourceKey, dict[str, Any]]
               ) -> tuple[dict[ResourceKey, Resource], dict[ResourceKey, str]]:
        """Typed resources of `objects`, and the ones that do not validate (key -> error).

        The API server already checked the CRD schema; this also runs the Python-side rules
        (the same schemas), which a CRD installed from an older release might not have had.
        """
        resources, errors = {}, {}
        for key, obj in objects.items():
            try:
                resources[key] = to_resource(obj)
            except ResourceError as exc:
                errors[key] = str(exc)
        return resources, errors

    def wants_model(self, model_name: str) -> bool:
        """True while an InferenceModel not being deleted serves `model_name` (a download for
        it is worth finishing)."""
        return any(key[0] == InferenceModel.KIND and not is_deleting(obj)
                   and obj.get("spec", {}).get("modelName") == model_name
                   for key, obj in self.objects().items())

    def relists(self, kind: str) -> int:
        """How many times `kind` was listed (1 + one per 410 Gone): for logs and tests."""
        return self._kinds[kind].relists

    def wait_synced(self, stop: threading.Event, timeout_s: float | None = None) -> bool:
        """Block until every kind has been listed once (or `stop`, or the timeout)."""
        for state in self._kinds.values():
            while not state.synced.wait(0.2):
                if stop.is_set():
                    return False
                if timeout_s is not None:
                    timeout_s -= 0.2
                    if timeout_s <= 0:
                        return False
        return True

    # -- keeping current --------------------------------------------------------------------

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """One daemon thread per kind, running until `stop` is set."""
        threads = [threading.Thread(target=self._run, args=(kind, stop), daemon=True,
                                    name=f"watch-{PLURALS[kind]}") for kind in PLURALS]
        for thread in threads:
            thread.start()
        return threads

    def _run(self, kind: str, stop: threading.Event) -> None:
        state, delay = self._kinds[kind], RETRY_MIN_S
        while not stop.is_set():
            try:
                if state.resource_version is None:
                    state.resource_version = self._list(kind)
                    state.relists += 1
                    state.synced.set()
                self._watch(kind, state, stop)
                delay = RETRY_MIN_S
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s: resourceVersion %s is gone (410); listing again",
                             PLURALS[kind], state.resource_version)
                    state.resource_version = None
                    continue
                hint = (" (are the CRDs installed? kubectl apply -f deploy/crds/)"
                        if exc.status == 404 else "")
                log.warning("%s: API error %s %s%s; retrying in %.1fs", PLURALS[kind],
                            exc.status, exc.reason, hint, delay)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                log.warning("%s: API server unreachable (%s); retrying in %.1fs",
                            PLURALS[kind], exc.__class__.__name__, delay)
            stop.wait(delay)
            delay = min(RETRY_MAX_S, delay * 2)

    def _lister(self, kind: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The list call for `kind` and its arguments: one namespace, or the whole cluster.
        The same call lists and, with watch=True, watches."""
        if self.namespace:
            return (self.api.list_namespaced_custom_object,
                    (API_GROUP, VERSION, self.namespace, PLURALS[kind]))
        return self.api.list_cluster_custom_object, (API_GROUP, VERSION, PLURALS[kind])

    def _list(self, kind: str) -> str:
        plural = PLURALS[kind]
        func, args = self._lister(kind)
        answer = func(*args)
        listed = {object_key(obj): obj for obj in answer["items"]}
        with self._lock:
            stale = [k for k in self._objects if k[0] == kind and k not in listed]
            for key in stale:
                del self._objects[key]
            changed = stale or any(self._objects.get(k) != v for k, v in listed.items())
            self._objects.update(listed)
        if changed:
            self.changed.set()
        rv = answer["metadata"]["resourceVersion"]
        log.info("listed %d %s at resourceVersion %s", len(listed), plural, rv)
        return rv

    def _watch(self, kind: str, state: _KindState, stop: threading.Event) -> None:
        w = watch.Watch()
        func, args = self._lister(kind)
        # timeout_seconds: the server closes the watch; _request_timeout: a dead connection
        # (API server killed) is noticed on the client side too.
        for event in w.stream(func, *args, resource_version=state.resource_version,
                              allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT_S,
                              _request_timeout=WATCH_TIMEOUT_S + 10):
            obj = event["object"]
            state.resource_version = obj["metadata"]["resourceVersion"]
            if event["type"] != "BOOKMARK":
                self._apply(event["type"], obj)
            if stop.is_set():
                w.stop()

    def _apply(self, event_type: str, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        with self._lock:
            if event_type == "DELETED":
                self._objects.pop(key, None)
            else:
                self._objects[key] = obj
        self.changed.set()
