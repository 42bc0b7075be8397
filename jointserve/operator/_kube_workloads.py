"""Image-based InferenceModels in Kubernetes mode: one Deployment + one ClusterIP Service each.

An InferenceModel with `spec.image` brings its own Open Inference Protocol v2 model server, so
Ray has nothing to do with it (as in the seed design's "deployment through a docker image").
The operator hands the raw object to `ImageWorkloads.ensure`, which applies a Deployment and a
Service named like the InferenceModel, in its namespace, and returns a `WorkloadStatus`: the
Service's in-cluster URL (the InferenceModel's status.url) and how many replicas are ready.

    reconcile, spec.image set   ->  ensure(im)  ->  status.url, Ready condition
    finalizer released          ->  delete(namespace, name)
    operator start-up           ->  managed() minus existing InferenceModels  ->  delete(...)

Both objects are written with server-side apply
(https://kubernetes.io/docs/reference/using-api/server-side-apply/): the request states the
whole intent, the API server merges it, and an unchanged intent changes nothing (no new
resourceVersion, no rollout). Fields the operator stops sending (a removed nodeSelector key,
an unset frameworkType) are removed, because the operator's field manager owned them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client import (ApiException, AppsV1Api, CoreV1Api, V1Deployment,
                               V1DeploymentStatus)
from pydantic import ValidationError

from jointserve.api import API_VERSION, InferenceModel, InferenceModelSpec

DEFAULT_IMAGE_PORT = 8080  # KServe / OIP convention for model server containers
FIELD_MANAGER = "jointserve-operator"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON bodies are valid YAML; the client sends JSON
MANAGED_BY = "jointserve"
MODEL_LABEL = "jointserve.io/inference-model"
LAYER_LABEL = "jointserve.io/layer"
# What managed() lists: ours (managed-by) and made for an InferenceModel (the label exists).
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY},{MODEL_LABEL}"
CONTAINER_NAME = "model"
PORT_NAME = "http"
# Open Inference Protocol v2 health endpoints
# (https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md#health).
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
LIST_PAGE = 500
# HTTP statuses worth retrying: the server was busy or failing, the request itself was fine.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class WorkloadError(Exception):
    """The API server refused or failed a workload request.

    `reason` is the server's CamelCase Status reason (e.g. "Invalid", "Forbidden"), fit for a
    condition's reason; `message` names the object and carries the server's own words.
    `retryable` tells a timeout or overload (try again later) from a refusal (report it).
    """

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class WorkloadStatus:
    """What the operator reports on the InferenceModel after `ensure`."""

    url: str  # http://<service>.<namespace>.svc.cluster.local:<port>
    replicas: int  # desired (spec.replicas)
    ready_replicas: int  # from the Deployment's status (0 when no kubelet runs)
    ready: bool  # all desired replicas ready on the current spec; never with 0 replicas
    message: str  # e.g. "2/3 replicas ready (image example.com/digits:1)"


@dataclass(frozen=True)
class _Model:
    """The parts of a raw InferenceModel its Deployment and Service are built from."""

    name: str
    namespace: str
    uid: str
    api_version: str
    spec: InferenceModelSpec

    @property
    def image(self) -> str:
        assert self.spec.image is not None  # checked in _parse
        return self.spec.image

    @property
    def object_name(self) -> str:
        return f"{self.namespace}/{self.name}"


def service_url(name: str, namespace: str, port: int = DEFAULT_IMAGE_PORT) -> str:
    """The in-cluster URL of the Service `ensure` creates for InferenceModel `name`."""
    return f"http://{name}.{namespace}.svc.cluster.local:{port}"


class ImageWorkloads:
    """Creates, updates, lists and removes the Deployments + Services of image-based models.

    Calls are blocking (the kubernetes client is synchronous): an asyncio caller runs them in
    a thread.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, *, port: int = DEFAULT_IMAGE_PORT,
                 field_manager: str = FIELD_MANAGER) -> None:
        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._port = port
        self._field_manager = field_manager

    def ensure(self, model: dict) -> WorkloadStatus:
        """Create or update the Deployment + Service of one InferenceModel, given the raw
        object as read from the API (a dict with apiVersion, kind, metadata incl. uid, spec).

        Raises:
            WorkloadError: the spec does not parse, or the API server refused or failed a write.
            ValueError: the InferenceModel has no spec.image (it is served through Ray).
        """
        parsed = _parse(model)
        deployment = self._apply("Deployment", parsed, self._apps.patch_namespaced_deployment,
                                 self._deployment(parsed))
        self._apply("Service", parsed, self._core.patch_namespaced_service, self._service(parsed))
        return _status(deployment, parsed, service_url(parsed.name, parsed.namespace, self._port))

    def delete(self, namespace: str, name: str) -> None:
        """Remove both objects (missing is fine). Owner references would let the garbage
        collector do it in a full cluster; the operator also does it itself when it releases the
        finalizer, so nothing is left where no controller-manager runs."""
        # Background: the Deployment goes at once and the GC removes its ReplicaSets later.
        # Foreground or Orphan would add a finalizer that, without a GC, is never removed.
        _delete("Deployment", namespace, name, lambda: self._apps.delete_namespaced_deployment(
            name, namespace, propagation_policy="Background"))
        _delete("Service", namespace, name, lambda: self._core.delete_namespaced_service(
            name, namespace, propagation_policy="Background"))

    def managed(self) -> set[tuple[str, str]]:
        """(namespace, name) of every Deployment this operator manages (by label), in all
        namespaces, so the operator can remove ones whose InferenceModel disappeared while it
        was down."""
        found: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            try:
                page = self._apps.list_deployment_for_all_namespaces(
                    label_selector=MANAGED_SELECTOR, limit=LIST_PAGE, _continue=token)
            except ApiException as error:
                raise _workload_error(error, f"listing Deployments ({MANAGED_SELECTOR})") from error
            found.update((d.metadata.namespace, d.metadata.name) for d in page.items)
            token = page.metadata._continue if page.metadata else None
            if not token:
                return found

    # -- the objects -------------------------------------------------------------------------

    def _apply(self, kind: str, model: _Model, patch: Callable[..., Any],
               body: dict[str, Any]) -> Any:
        # force: the operator's intent wins over fields someone else (kubectl edit) set since.
        try:
            return patch(model.name, model.namespace, body, field_manager=self._field_manager,
                         force=True, _content_type=APPLY_PATCH)
        except ApiException as error:
            raise _workload_error(error, f"{kind} {model.object_name}") from error

    def _deployment(self, model: _Model) -> dict[str, Any]:
        labels = _labels(model)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(model, labels),
            "spec": {
                "replicas": model.spec.replicas,
                # Immutable once created: only the label that never changes for this object.
                "selector": {"matchLabels": _selector(model)},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": self._pod_spec(model),
                },
            },
        }

    def _pod_spec(self, model: _Model) -> dict[str, Any]:
        return {
            "nodeSelector": dict(model.spec.nodeSelector),
            # A model server never calls the Kubernetes API: no token to leak.
            "automountServiceAccountToken": False,
            # The "restricted" Pod Security Standard
            # (https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted),
            # split between pod and container as the standard allows.
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [self._container(model)],
        }

    def _container(self, model: _Model) -> dict[str, Any]:
        env = [{"name": "MODEL_NAME", "value": model.spec.modelName}]
        if model.spec.frameworkType:
            env.append({"name": "FRAMEWORK_TYPE", "value": model.spec.frameworkType})
        return {
            "name": CONTAINER_NAME,
            "image": model.image,
            "ports": [{"name": PORT_NAME, "containerPort": self._port, "protocol": "TCP"}],
            "env": env,
            # Ready: the server can take inference requests (models loaded); live: the process
            # answers. Both are OIP v2, so any conforming server works unchanged.
            "readinessProbe": {"httpGet": {"path": READY_PATH, "port": PORT_NAME}},
            "livenessProbe": {"httpGet": {"path": LIVE_PATH, "port": PORT_NAME}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }

    def _service(self, model: _Model) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(model, _labels(model)),
            "spec": {
                "type": "ClusterIP",
                "selector": _selector(model),
                "ports": [{"name": PORT_NAME, "port": self._port, "targetPort": PORT_NAME,
                           "protocol": "TCP"}],
            },
        }


# -- helpers ---------------------------------------------------------------------------------

def _parse(model: dict) -> _Model:
    metadata = model.get("metadata") or {}
    name, namespace = metadata.get("name", ""), metadata.get("namespace", "default")
    where = f"{InferenceModel.KIND} {namespace}/{name}"
    if not name or not metadata.get("uid"):
        raise ValueError(f"{where}: metadata.name and metadata.uid are required "
                         "(pass the object as read from the API server)")
    try:
        spec = InferenceModelSpec.model_validate(model.get("spec") or {})
    except ValidationError as error:
        raise WorkloadError("InvalidSpec", f"{where}: {error}") from error
    if spec.image is None:
        raise ValueError(f"{where}: spec.image is not set; manifest models are served by Ray")
    return _Model(name, namespace, metadata["uid"], model.get("apiVersion", API_VERSION), spec)


def _labels(model: _Model) -> dict[str, str]:
    # Recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/)
    # plus ours, by which managed() finds the Deployments and users select a layer.
    return {
        "app.kubernetes.io/name": model.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": "model-server",
        MODEL_LABEL: model.name,
        LAYER_LABEL: model.spec.deployToLayer,
    }


def _selector(model: _Model) -> dict[str, str]:
    return {MODEL_LABEL: model.name}


def _metadata(model: _Model, labels: dict[str, str]) -> dict[str, Any]:
    owner = {
        "apiVersion": model.api_version,
        "kind": InferenceModel.KIND,
        "name": model.name,
        "uid": model.uid,
        "controller": True,
        # Foreground deletion of the InferenceModel waits for these objects.
        "blockOwnerDeletion": True,
    }
    return {"name": model.name, "namespace": model.namespace, "labels": labels,
            "ownerReferences": [owner]}


def _status(deployment: V1Deployment, model: _Model, url: str) -> WorkloadStatus:
    """Readiness as `kubectl rollout status` judges it: the controller has seen the current
    spec, every replica runs it, none of the old ones is left, and all are ready."""
    replicas, image = model.spec.replicas, model.image
    # Counts the controller has not written yet are absent, not 0.
    status = deployment.status or V1DeploymentStatus()
    ready = status.ready_replicas or 0
    if replicas == 0:
        return WorkloadStatus(url, 0, ready, False, f"scaled to 0 replicas (image {image})")
    generation = deployment.metadata.generation or 0
    updated = status.updated_replicas or 0
    current = ((status.observed_generation or 0) >= generation and updated >= replicas
               and (status.replicas or 0) <= updated)
    message = f"{ready}/{replicas} replicas ready (image {image})"
    if not current:
        message += f"; rollout of generation {generation} not complete"
    return WorkloadStatus(url, replicas, ready, current and ready >= replicas, message)


def _delete(kind: str, namespace: str, name: str, send: Callable[[], object]) -> None:
    try:
        send()
    except ApiException as error:
        if error.status != 404:
            raise _workload_error(error, f"{kind} {namespace}/{name}") from error


def _workload_error(error: ApiException, what: str) -> WorkloadError:
    """The server's Status (reason + message) when the body is one, else the HTTP status line."""
    reason, detail = "", ""
    try:
        body = json.loads(error.body or "")
        if isinstance(body, dict):
            reason, detail = body.get("reason") or "", body.get("message") or ""
    except ValueError:
        pass
    reason = reason or "".join((error.reason or "ApiError").title().split())
    detail = detail or f"HTTP {error.status} {error.reason}: {error.body or ''}".strip()
    retryable = error.status in _RETRYABLE_STATUS
    return WorkloadError(reason, f"{what}: {detail}", retryable=retryable)
