"""The two kinds of Ray actor of a federated run.

    EdgeTrainer   one per worker, on an edge node its nodeSelector picks: holds its Dataset
                  (it never leaves the node) and the script; trains one round per call
    Aggregator    one per job, on a cloud node: averages the round's weights where they
                  are (Ray's object store hands it the arrays) and evaluates the result

Both are plain classes; _run.py makes them actors with the placement options. Methods
raise FederatedError (or the script's own exception) to fail a round with the reason.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from jointserve.store import ArtifactStore

from ._aggregate import fedavg
from ._data import dataset_arrays, script_file
from ._errors import FederatedError
from ._script import checked_update, load_script
from ._spec import JobSpec, Weights, WorkerSpec


class EdgeTrainer:
    """One worker: its data and the script, loaded once by `prepare`."""

    def __init__(self, job: JobSpec, worker: WorkerSpec) -> None:
        self._job = job
        self._worker = worker
        self._script: Any = None
        self._data: Any = None

    def prepare(self) -> dict[str, Any]:
        """Fetch and load; returns where this runs and how many samples it holds."""
        store = ArtifactStore(self._job.store_root)
        self._script = load_script(script_file(store, self._job))
        self._data = dataset_arrays(store, self._worker.dataset, self._job.classes)
        return {"node": socket.gethostname(), "samples": int(len(self._data[1]))}

    def train(self, round_index: int, weights: Weights) -> tuple[dict[str, Any], Weights]:
        """One round from the global `weights`: (report, new weights). Two return values,
        so the driver reads the small report while the weights stay in the object store."""
        if self._script is None:
            raise FederatedError("the worker was not prepared")
        X, y = self._data
        given = {name: array.copy() for name, array in weights.items()}  # scripts may not
        result = self._script.train_round(given, X, y, list(self._job.classes),
                                          self._job.config(round_index))
        new, samples, metrics = checked_update(result, weights)
        return {"samples": samples, "metrics": metrics}, new


class Aggregator:
    """The job's cloud side: FedAvg, and the evaluation Dataset if the job has one."""

    def __init__(self, job: JobSpec) -> None:
        self._job = job
        self._script: Any = None
        self._data: Any = None

    def prepare(self) -> str:
        store = ArtifactStore(self._job.store_root)
        self._script = load_script(script_file(store, self._job))
        if self._job.evaluation is not None:
            self._data = dataset_arrays(store, self._job.evaluation, self._job.classes)
        return socket.gethostname()

    def aggregate(self, samples: Sequence[int], *weights: Weights) -> Weights:
        """FedAvg of the reported weights (Ray resolves the refs passed as arguments)."""
        return fedavg(list(zip(weights, samples)))

    def evaluate(self, weights: Weights) -> dict[str, float]:
        """evalLoss and evalAccuracy of the aggregated model (empty without a Dataset)."""
        if self._data is None:
            return {}
        X, y = self._data
        result = self._script.evaluate(weights, X, y, list(self._job.classes))
        return {"evalLoss": float(result["loss"]), "evalAccuracy": float(result["accuracy"])}
