"""Kubernetes mode, assembled: what `jointserve operator` runs.

    KubeSource (list + watch)  ->  KubeOperator (finalizers, clean-up)  ->  Reconciler
                                                                          -> Ray Serve (manifest models)
                                                                          -> ImageWorkloads (spec.image)
    KubeStatus (status subresource) and KubeEvents (core/v1 Events) report back;
    LeaderElector (a Lease) lets one of several operator replicas do all this.

Imported only by that command, so embedded mode never loads the Kubernetes client.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.config import ConfigException

from jointserve.store import ArtifactStore, ProgressCallback

from ._kube_leader import LeaderElector
from ._kube_operator import FINALIZER, KubeOperator
from ._kube_published import KubePublisher, PublishedArchiveServer
from ._kube_source import KubeSource, kube_client
from ._kube_status import KubeEvents, KubeStatus
from ._kube_workloads import ImageWorkloads
from ._ray import ServeBackend, connect_ray, start_local_ray
from ._reconcile import Reconciler
from ._serve_config import ServeSettings
from ._training import TrainingJobs

DEFAULT_ARCHIVE_PORT = 8809

__all__ = ["DEFAULT_ARCHIVE_PORT", "FINALIZER", "ConfigException", "KubeOperator", "KubeSettings",
           "KubeSource", "LeaderElector", "LeaseSettings", "PublishedArchiveServer",
           "build_operator", "default_identity", "kube_client", "run_operator", "start_serve"]


@dataclass(frozen=True)
class KubeSettings:
    store_dir: Path  # the operator's model store (archives are verified here first)
    host: str  # Serve's HTTP host and port
    port: int
    public_url: str  # status.url of Ray-served models
    version: str  # jointserve's version, for the replicas' runtime environment
    # Where nodes fetch published TrainingModel results (PublishedArchiveServer, reached
    # through the operator's Service); empty: http://<host>:DEFAULT_ARCHIVE_PORT.
    archive_url: str = ""


def default_identity() -> str:
    """This replica's name in the Lease: the pod's name in a cluster, plus a random suffix so
    a restarted process never mistakes its predecessor's Lease for its own."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def start_serve(settings: KubeSettings, ray_address: str | None = None,
                ) -> ServeBackend:
    """Join the Ray cluster at `ray_address` (or start a local one) and start Serve on it."""
    if ray_address:
        connect_ray(ray_address)
    else:
        start_local_ray()
    return ServeBackend(settings.host, settings.port)


def build_operator(api_client: client.ApiClient, source: KubeSource, backend: ServeBackend,
                   settings: KubeSettings, identity: str, *, image_port: int = 8080,
                   progress: Callable[[str], ProgressCallback | None] = lambda _label: None,
                   ) -> KubeOperator:
    """The operator for one leadership term: built afresh each time this replica leads, so
    it starts from the statuses in the cluster (another leader may have written them)."""
    store = ArtifactStore(settings.store_dir)
    serve_settings = ServeSettings(store_root=str(settings.store_dir), host=settings.host,
                                   port=settings.port, version=settings.version)
    events = KubeEvents(api_client, source, identity)
    workloads = ImageWorkloads(api_client, port=image_port)
    # TrainingModels: round checkpoints in the state dir (beside the store), results into
    # the cluster (a ConfigMap and a patch of the InferenceModel's manifest).
    archive_url = settings.archive_url or f"http://{settings.host}:{DEFAULT_ARCHIVE_PORT}"
    training = TrainingJobs(store, settings.store_dir.parent,
                            KubePublisher(api_client, archive_url))
    reconciler = Reconciler(backend, store, KubeStatus(api_client, source), serve_settings,
                            settings.public_url, progress, events=events, images=workloads,
                            wanted=source.wants_model, training=training)
    return KubeOperator(source, reconciler, client.CustomObjectsApi(api_client), backend,
                        store, events, workloads)


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    duration_s: float = 15.0  # how long a Lease outlives a leader that stopped renewing it


def run_operator(api_client: client.ApiClient, settings: KubeSettings, lease: LeaseSettings,
                 stop: threading.Event, *, namespace: str | None = None,
                 ray_address: str | None = None,
                 image_port: int = 8080, on_signals: Callable[[], None] = lambda: None,
                 progress: Callable[[str], ProgressCallback | None] = lambda _label: None,
                 say: Callable[[str], None] = print) -> None:
    """Watch the cluster and, while this replica holds the Lease, reconcile; until `stop`.

    Losing the Lease (the API server unreachable past the renew deadline, or another replica
    took over) pauses reconciling; the watches keep the cache current meanwhile, and the next
    term starts from the cluster's statuses. So it campaigns again rather than returning.
    `on_signals` re-installs the caller's signal handlers after Ray installed its own.
    """
    source = KubeSource(api_client, namespace)
    source.start(stop)
    # Renew well before the Lease would expire, and retry often enough to meet that deadline.
    elector = LeaderElector(api_client, lease.namespace, lease.name, lease.identity,
                            lease_duration_s=lease.duration_s,
                            renew_deadline_s=lease.duration_s * 2 / 3,
                            retry_period_s=lease.duration_s / 7.5)
    say(f"operator {lease.identity}: waiting for the Lease {lease.namespace}/{lease.name}")
    backend: ServeBackend | None = None

    def lead(lost: threading.Event) -> None:
        nonlocal backend
        if not source.wait_synced(stop):
            return
        # Ray and Serve once, on first leading: a standby replica leaves them alone.
        if backend is None:
            backend = start_serve(settings, ray_address)
            on_signals()  # ray.init installs a SIGTERM handler of its own
        operator = build_operator(api_client, source, backend, settings, lease.identity,
                                  image_port=image_port, progress=progress)
        say(f"operator {lease.identity}: leading; Ray Serve at http://{settings.host}:{settings.port}")
        operator.run(stop, lost)

    while elector.run(lead, stop) and not stop.is_set():
        say(f"operator {lease.identity}: lost the Lease; waiting to lead again")
