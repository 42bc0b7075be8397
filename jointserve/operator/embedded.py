"""Embedded mode, assembled: what `jointserve serve` runs, and what tests and the export reuse.

    DirectorySource (YAML files)  ->  DirectoryOperator  ->  Reconciler  ->  Ray Serve
    StatusStore (<state-dir>/status/*.json) reports back; `jointserve get` reads it.

`directory_operator` is the one place the parts are put together, for any backend: a live
Serve (`start_embedded`, the test harness) or none at all (`jointserve export rayservice`,
which plans without applying).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jointserve.store import ArtifactStore, ProgressCallback

from ._directory import DirectorySource
from ._operator import DirectoryOperator
from ._ray import ServeBackend, connect_ray, start_local_ray
from ._reconcile import Backend, Reconciler
from ._serve_config import ServeSettings
from ._status_store import StatusStore
from ._published import DirectoryPublisher
from ._training import TrainingJobs

Progress = Callable[[str], ProgressCallback | None]


@dataclass(frozen=True)
class EmbeddedSettings:
    """What `jointserve serve` is asked for."""

    directory: Path  # the resources' YAML files
    state_dir: Path  # status files and the model store
    host: str = "127.0.0.1"
    port: int = 8000
    ray_address: str | None = None  # join this cluster instead of starting a local Ray
    version: str = ""  # jointserve's version, for the server metadata

    @property
    def public_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_settings(self) -> ServeSettings:
        # One machine: listeners bind the configured host too (never a wider address).
        return ServeSettings(store_root=str(self.state_dir.resolve() / "store"), host=self.host,
                             port=self.port, version=self.version, listen_host=self.host)


def directory_operator(directory: Path, state_dir: Path, backend: Backend,
                       settings: ServeSettings, public_url: str, *,
                       store: ArtifactStore | None = None,
                       progress: Progress = lambda _label: None,
                       resync_s: float = 1.0) -> DirectoryOperator:
    """The operator of embedded mode over `backend`; status goes to `state_dir`, archives to
    `store` (default: the store at settings.store_root)."""
    statuses = StatusStore(state_dir)
    store = store or ArtifactStore(Path(settings.store_root))
    # TrainingModels' round checkpoints under the state dir; published versions beside the
    # user's YAML (operator/_published.py).
    training = TrainingJobs(store, state_dir,
                            DirectoryPublisher(directory, state_dir / "published"))
    reconciler = Reconciler(backend, store, statuses, settings, public_url, progress=progress,
                            training=training)
    return DirectoryOperator(DirectorySource(directory), reconciler, statuses, resync_s=resync_s)


def start_embedded(settings: EmbeddedSettings,
                   progress: Progress = lambda _label: None) -> DirectoryOperator:
    """Start (or join) Ray and Serve, and return the operator for `settings.directory`; the
    caller runs it (`DirectoryOperator.run` or `.start`)."""
    if settings.ray_address:
        connect_ray(settings.ray_address)
    else:
        start_local_ray()
    backend = ServeBackend(settings.host, settings.port)
    return directory_operator(settings.directory, settings.state_dir.resolve(), backend,
                              settings.serve_settings(), settings.public_url, progress=progress)
