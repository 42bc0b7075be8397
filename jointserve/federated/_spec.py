"""What a federated run is given, and what it reports: plain dataclasses that cross into Ray
actors (no pydantic, no operator types), so the engine stands on its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class DatasetSource:
    """A Dataset file as the store keeps it: each node fetches (or finds) it by these."""

    store_name: str  # the store's directory of it (operator: `<namespace>.<name>`)
    url: str
    sha256: str
    spec: Any  # jointserve.api.DatasetSpec: format and options


@dataclass(frozen=True)
class WorkerSpec:
    """One edge participant: its name, its own data, the node labels it must run on."""

    name: str
    dataset: DatasetSource
    node_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSpec:
    """One federated job. `job_id` names its actors and its files in the store."""

    job_id: str
    script_url: str
    script_sha256: str
    weights_url: str
    weights_sha256: str
    workers: list[WorkerSpec]
    classes: list[str]  # the job's class names, in order: y indexes into them
    rounds: int
    min_participants: int
    round_timeout_s: float
    proximal_mu: float
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    evaluation: DatasetSource | None
    store_root: str  # the artifact store each node fetches into (its own disk)

    def config(self, round_index: int) -> dict[str, Any]:
        """The `config` a script's train_round gets (docs/training-script.md)."""
        return {"round": round_index, "epochs": self.epochs, "batchSize": self.batch_size,
                "learningRate": self.learning_rate, "proximalMu": self.proximal_mu,
                "seed": self.seed}


@dataclass(frozen=True)
class RoundRecord:
    """One closed round: who reported, on how many samples, and the metrics."""

    round: int  # 1-based
    participants: list[str]
    samples: int
    # loss, accuracy: sample-weighted over the participants, on their own data;
    # evalLoss, evalAccuracy: the aggregated model on the evaluation Dataset
    metrics: dict[str, float]
    dropped: dict[str, str] = field(default_factory=dict)  # worker -> why it did not report


@dataclass
class WorkerState:
    name: str
    node: str | None = None
    samples: int | None = None
    last_round: int | None = None  # the last round it reported in (1-based)
    error: str | None = None  # why its last round failed, None once it reports again


@dataclass
class RunState:
    """Where a run stands; `weights` is the global model after `round` rounds."""

    phase: str  # Pending, Running, Succeeded, Failed, Stopped
    round: int
    rounds: int
    workers: list[WorkerState]
    history: list[RoundRecord]
    error: str | None = None
    weights: Weights | None = None
