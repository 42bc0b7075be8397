"""What a node needs before it trains: the script, the weights and its Dataset, fetched
through its own artifact store (sha256-verified, cached per node) and read as arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jointserve.evaluation import load_samples
from jointserve.store import ArtifactStore

from ._errors import FederatedError
from ._spec import DatasetSource, JobSpec


def script_file(store: ArtifactStore, job: JobSpec) -> Path:
    """The verified script (ArtifactError on a wrong sha256: nothing of it runs)."""
    return store.fetch_file(f"training.{job.job_id}", job.script_url, job.script_sha256).path


def weights_file(store: ArtifactStore, job: JobSpec) -> Path:
    return store.fetch_file(f"training.{job.job_id}", job.weights_url, job.weights_sha256).path


def dataset_arrays(store: ArtifactStore, source: DatasetSource,
                   classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 [N, D], y int64 [N] indexing `classes`) of a csv or npz Dataset."""
    path = store.fetch_file(source.store_name, source.url, source.sha256).path
    samples = load_samples(path, source.spec)
    if samples.features is None:
        raise FederatedError(f"dataset {source.store_name}: training needs feature rows "
                             f"(csv or npz), not {source.spec.format}")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({label for label in samples.labels if label not in index})
    if unknown:
        raise FederatedError(f"dataset {source.store_name}: labels {unknown[:5]} are not among "
                             f"the job's classes")
    X = np.asarray(samples.features, dtype=np.float32).reshape(len(samples.labels), -1)
    y = np.array([index[label] for label in samples.labels], dtype=np.int64)
    return X, y
