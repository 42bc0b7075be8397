"""The operator loop of Kubernetes mode: watched objects -> finalizers -> reconcile -> clean up.

    every change (watch) and every `resync_s`:
        add our finalizer to objects that lack it
        reconcile the objects that are not being deleted (the same Reconciler as embedded mode)
        for each object being deleted: once Serve no longer runs its application, remove its
        image workload and model files (unless another resource uses them), then release the
        finalizer so the API server can drop it; a Dataset has no application, so its files
        go and its finalizer is released at once

The finalizer is what makes `kubectl delete im` clean: without it the object would vanish
before the operator had taken its application down, and an operator that was not running
at that moment would never learn that anything needed removing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from jointserve.api import (
    API_GROUP,
    Dataset,
    InferenceModel,
    JointInferenceService,
    Resource,
    ResourceKey,
)
from jointserve.contract import app_name
from jointserve.store import ArtifactStore

from ._datasets import store_name
from ._kube_source import PLURALS, VERSION, KubeSource, is_deleting
from ._reconcile import Backend, EventSink, Reconciler

log = logging.getLogger(__name__)

FINALIZER = "jointserve.io/operator"


@dataclass
class KubeOperator:
    """Reconciles the watched objects until stopped (while this replica leads)."""

    source: KubeSource
    reconciler: Reconciler
    api: client.CustomObjectsApi
    backend: Backend
    store: ArtifactStore
    events: EventSink
    workloads: Any = None  # ImageWorkloads, when image-based models are enabled
    # Serve status moves on its own (rollouts, deletions): look again this often.
    resync_s: float = 1.0
    first_pass: threading.Event = field(default_factory=threading.Event)
    _last_good: dict[ResourceKey, Resource] = field(default_factory=dict)
    _reported: dict[ResourceKey, str] = field(default_factory=dict)
    _warned_in_use: set[tuple[ResourceKey, str]] = field(default_factory=set)  # (key, uid)

    def run(self, *stops: threading.Event) -> None:
        """Reconcile now, then after every change and at least every `resync_s`, until one of
        `stops` is set (shutdown, or the leader Lease lost)."""
        self._remove_orphan_workloads()
        try:
            while not any(stop.is_set() for stop in stops):
                self.source.changed.clear()
                self.step()
                self.source.changed.wait(self.resync_s)
        finally:
            # Training runs end with the term, so two replicas never train one job at once.
            # This replica leading again resumes them from the checkpoints in its state dir;
            # another replica taking over starts them over (the checkpoints stay here).
            self.reconciler.close()

    def step(self) -> None:
        """One pass; errors are logged and the next pass tries again."""
        objects = self.source.objects()
        live = {k: o for k, o in objects.items() if not is_deleting(o)}
        try:
            for key, obj in live.items():
                self._ensure_finalizer(key, obj)
            resources = self._resources(live)
            deleting = {k: o for k, o in objects.items() if is_deleting(o)}
            self._warn_in_use(deleting, resources)
            self.reconciler.reconcile(resources, deleting=set(deleting))
            self._finalize(deleting, resources)
        except Exception:  # noqa: BLE001 - one failed pass must not end the operator
            log.exception("reconcile pass failed; retrying on the next change or resync")
        else:
            self.first_pass.set()

    # -- resources --------------------------------------------------------------------------

    def _resources(self, live: Mapping[ResourceKey, dict[str, Any]]) -> dict[ResourceKey, Resource]:
        """Typed resources; one that stops validating keeps its last good spec (as a file
        with a typo does in embedded mode) and gets a Warning event naming the problem."""
        resources, errors = self.source.parsed(live)
        for key in set(self._last_good) - set(live):
            del self._last_good[key]
        self._last_good.update(resources)
        for key, error in errors.items():
            if self._reported.get(key) != error:
                kept = " (still serving its last good spec)" if key in self._last_good else ""
                self.events(key, "Warning", "InvalidSpec", error + kept)
                self._reported[key] = error
            if key in self._last_good:
                resources[key] = self._last_good[key]
        for key in set(self._reported) - set(errors):
            del self._reported[key]
        return resources

    def _warn_in_use(self, deleting: Mapping[ResourceKey, dict[str, Any]],
                     live: Mapping[ResourceKey, Resource]) -> None:
        """A Warning on each InferenceModel being deleted that a live service still uses, once
        per deletion: `kubectl delete im` gives no other sign that it breaks a service."""
        for key, obj in deleting.items():
            uid = obj["metadata"].get("uid", "")
            if key[0] != InferenceModel.KIND or (key, uid) in self._warned_in_use:
                continue
            uses = _services_using(key, live)
            if uses:
                self.events(key, "Warning", "InUse",
                            f"deleted while used by {'; '.join(uses)}; those services report "
                            "EdgeModelDeleting (not served) or CloudModelDeleting (edge answers "
                            "only) until it is gone, then EdgeModelNotFound / CloudModelNotFound")
                self._warned_in_use.add((key, uid))
        self._warned_in_use &= {(k, o["metadata"].get("uid", "")) for k, o in deleting.items()}

    # -- finalizers -------------------------------------------------------------------------

    def _ensure_finalizer(self, key: ResourceKey, obj: dict[str, Any]) -> None:
        finalizers = obj["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers:
            self._set_finalizers(key, obj, [*finalizers, FINALIZER])

    def _finalize(self, deleting: Mapping[ResourceKey, dict[str, Any]],
                  live: Mapping[ResourceKey, Resource]) -> None:
        if not any(FINALIZER in (o["metadata"].get("finalizers") or []) for o in deleting.values()):
            return
        running = set(self.backend.app_states())
        for key, obj in deleting.items():
            finalizers = obj["metadata"].get("finalizers") or []
            if FINALIZER not in finalizers or (_has_app(key) and app_name(key) in running):
                continue  # not ours, or Serve is still taking the application down
            self._clean_up(key, obj, live)
            self._set_finalizers(key, obj, [f for f in finalizers if f != FINALIZER])
            log.info("%s %s/%s removed; finalizer released", *key)

    def _clean_up(self, key: ResourceKey, obj: dict[str, Any],
                  live: Mapping[ResourceKey, Resource]) -> None:
        if key[0] == Dataset.KIND:
            self.store.remove_files(store_name(key))  # its own directory: no one shares it
            return
        if key[0] != InferenceModel.KIND:
            return
        spec = obj.get("spec", {})
        if spec.get("image") and self.workloads is not None:
            self.workloads.delete(key[1], key[2])
        model_name = spec.get("modelName")
        in_use = any(isinstance(r, InferenceModel) and r.spec.modelName == model_name
                     for r in live.values())
        if model_name and not in_use:
            self.store.remove(model_name)

    def _set_finalizers(self, key: ResourceKey, obj: dict[str, Any], finalizers: list[str]) -> None:
        kind, namespace, name = key
        # resourceVersion makes this a compare-and-swap: another writer's finalizer is never
        # overwritten; on 409 the watch brings the newer object and the next pass retries.
        patch = {"metadata": {"finalizers": finalizers,
                              "resourceVersion": obj["metadata"]["resourceVersion"]}}
        try:
            self.api.patch_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURALS[kind],
                                                    name, patch)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
            log.debug("finalizers of %s %s/%s: %s; next pass retries", kind, namespace, name,
                      exc.reason)

    def _remove_orphan_workloads(self) -> None:
        """Workloads whose InferenceModel went away while no operator was running."""
        if self.workloads is None:
            return
        objects = self.source.objects()
        for namespace, name in self.workloads.managed():
            if (InferenceModel.KIND, namespace, name) not in objects:
                log.info("removing workload %s/%s: its InferenceModel is gone", namespace, name)
                self.workloads.delete(namespace, name)


def _has_app(key: ResourceKey) -> bool:
    """True for kinds Serve runs an application for (a Dataset has none to wait for)."""
    return key[0] in (InferenceModel.KIND, JointInferenceService.KIND)


def _services_using(model: ResourceKey, live: Mapping[ResourceKey, Resource]) -> list[str]:
    """'JointInferenceService <name> (edge model)' for each live service naming `model`."""
    _, namespace, name = model
    out = []
    for (kind, ns, service_name), resource in sorted(live.items()):
        if kind != JointInferenceService.KIND or ns != namespace:
            continue
        assert isinstance(resource, JointInferenceService)
        roles = [role for role, ref in (("edge model", resource.spec.edgeModel.name),
                                        ("cloud model", resource.spec.cloudModel.name))
                 if ref == name]
        if roles:
            out.append(f"JointInferenceService {service_name} ({' and '.join(roles)})")
    return out
