"""TrainingModel: federated learning of an InferenceModel's next version.

    spec.trainingScript + spec.initialWeights (URL + sha256, verified before anything runs)
    spec.workers: one per edge Dataset; each trains on its own data only, on its node
    spec.aggregation: FedAvg (sample-weighted; FedProx adds a proximal term), rounds,
        minParticipants, roundTimeoutSeconds: a round closes without a late or failed worker
    spec.evaluation: the Dataset the aggregated model is judged on, per round
    spec.publish: the InferenceModel that gets the result as a new manifest version (and,
        with rollout, serves it)

The training script's contract is docs/training-script.md.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ._common import API_VERSION, Condition, DnsName, ObjectMeta, Strict
from ._evaluation import Unit
from ._inference_model import MODEL_NAME_PATTERN, SHA256_PATTERN, URL_PATTERN
from ._vocabulary import ConditionType

MAX_WORKERS = 64
MAX_ROUNDS = 1000


class VerifiedFile(Strict):
    """A file fetched by URL whose bytes must have this sha256."""

    url: Annotated[str, Field(pattern=URL_PATTERN, max_length=2048)]
    sha256sum: Annotated[str, Field(pattern=SHA256_PATTERN)]


class TrainingWorker(Strict):
    """One edge participant: it trains only on `dataset`, on a node `nodeSelector` picks."""

    name: DnsName
    dataset: Annotated[str, Field(min_length=1, max_length=253)]
    nodeSelector: dict[str, str] = Field(default_factory=dict)


class Aggregation(Strict):
    """How the cloud combines the workers' weights, and when a round closes."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.algorithm == 'FedProx' || !has(self.proximalMu) || self.proximalMu == 0.0",
         "message": "proximalMu is for algorithm FedProx"},
    ]

    algorithm: Literal["FedAvg", "FedProx"] = "FedAvg"
    # FedProx: mu / 2 * ||w - w_global||^2 added to each worker's loss (default 0.01).
    proximalMu: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    rounds: Annotated[int, Field(ge=1, le=MAX_ROUNDS)] = 10
    # A round closes once this many workers reported (or at the timeout, with those that did).
    minParticipants: Annotated[int, Field(ge=1, le=MAX_WORKERS)] = 1
    roundTimeoutSeconds: Annotated[int, Field(ge=1, le=86_400)] = 300

    @model_validator(mode="after")
    def _mu_for_fedprox(self) -> "Aggregation":
        if self.algorithm != "FedProx" and self.proximalMu:
            raise ValueError("proximalMu is for algorithm FedProx")
        return self

    def mu(self) -> float:
        """The proximal term's weight the workers get (0 for FedAvg)."""
        if self.algorithm != "FedProx":
            return 0.0
        return 0.01 if self.proximalMu is None else self.proximalMu


class LocalTraining(Strict):
    """What each worker runs per round (handed to the script's train_round as config)."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batchSize: Annotated[int, Field(ge=1, le=1 << 20)] = 32
    learningRate: Annotated[float, Field(gt=0.0, le=100.0)] = 0.1
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class TrainingEvaluation(Strict):
    dataset: Annotated[str, Field(min_length=1, max_length=253)]


class Publish(Strict):
    """Where the result goes: a new version `<versionPrefix>-<8 hex of the job's digest>` of
    an InferenceModel (the same spec publishes the same version name, a changed one another)."""

    inferenceModel: DnsName
    versionPrefix: Annotated[str, Field(pattern=MODEL_NAME_PATTERN, max_length=40)] = "fl"
    rollout: bool = False  # also make it the model's targetVersion


_MIN_PARTICIPANTS = "aggregation.minParticipants must not exceed the number of workers"


class TrainingModelSpec(Strict):
    """Desired state: the script, the starting weights, the workers, the rounds."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "!has(self.aggregation) || !has(self.aggregation.minParticipants) "
                 "|| self.aggregation.minParticipants <= size(self.workers)",
         "message": _MIN_PARTICIPANTS},
        {"rule": "self.workers.all(w, self.workers.exists_one(v, v.name == w.name))",
         "message": "worker names must be unique"},
    ]

    trainingScript: VerifiedFile  # one Python file: docs/training-script.md
    initialWeights: VerifiedFile  # an .npz of the script's weight arrays
    workers: Annotated[list[TrainingWorker], Field(min_length=1, max_length=MAX_WORKERS)]
    aggregation: Aggregation = Field(default_factory=Aggregation)
    training: LocalTraining = Field(default_factory=LocalTraining)
    evaluation: TrainingEvaluation | None = None
    publish: Publish | None = None

    @model_validator(mode="after")
    def _workers_fit(self) -> "TrainingModelSpec":
        names = [w.name for w in self.workers]
        if len(set(names)) != len(names):
            raise ValueError("worker names must be unique")
        if self.aggregation.minParticipants > len(self.workers):
            raise ValueError(f"{_MIN_PARTICIPANTS} ({self.aggregation.minParticipants} > "
                             f"{len(self.workers)})")
        return self


Phase = Literal["Pending", "Running", "Succeeded", "Failed"]


class WorkerStatus(Strict):
    name: str
    node: str | None = None  # where its actor ran
    samples: int | None = Field(None, ge=0)
    lastRound: int | None = None  # the last round it reported in (1-based)
    error: str | None = None  # why it failed its last round, if it did


class RoundMetrics(Strict):
    round: int = Field(ge=1)
    participants: list[str] = Field(default_factory=list)
    samples: int = Field(0, ge=0)
    loss: float | None = None  # sample-weighted over the participants, on their own data
    accuracy: Unit | None = None
    evalLoss: float | None = None  # the aggregated model on spec.evaluation's Dataset
    evalAccuracy: Unit | None = None
    dropped: dict[str, str] = Field(default_factory=dict)  # worker -> why it did not report


class TrainingModelStatus(Strict):
    """Observed state, written by the operator."""

    phase: Phase = "Pending"
    jobDigest: str | None = None  # the spec this status is of (a changed spec is a new job)
    startedAt: str | None = None  # RFC 3339: when the operator first started the job
    round: int = 0  # rounds completed
    rounds: int | None = None
    workers: list[WorkerStatus] = Field(default_factory=list)
    history: list[RoundMetrics] = Field(default_factory=list, max_length=MAX_ROUNDS)
    # The last round at a glance (`kubectl get tm` columns): "reported/workers", and its
    # evaluation accuracy (the workers' own accuracy when there is no evaluation Dataset).
    participants: str | None = None
    accuracy: Unit | None = None
    # The version added to publish.inferenceModel, and its archive's sha256.
    publishedVersion: str | None = None
    publishedSha256: str | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


_READY = f'.status.conditions[?(@.type=="{ConditionType.READY}")]'


class TrainingModel(Strict):
    """A federated training job whose result is an InferenceModel version."""

    KIND: ClassVar[str] = "TrainingModel"
    PLURAL: ClassVar[str] = "trainingmodels"
    SHORT_NAMES: ClassVar[list[str]] = ["tm"]
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "ROUND", "type": "integer", "jsonPath": ".status.round"},
        {"name": "ROUNDS", "type": "integer", "jsonPath": ".spec.aggregation.rounds"},
        {"name": "PARTICIPANTS", "type": "string", "jsonPath": ".status.participants"},
        {"name": "ACCURACY", "type": "number", "jsonPath": ".status.accuracy"},
        {"name": "PHASE", "type": "string", "jsonPath": ".status.phase"},
        {"name": "PUBLISHED", "type": "string", "jsonPath": ".status.publishedVersion"},
        {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "MESSAGE", "type": "string", "priority": 1, "jsonPath": _READY + ".message"},
    ]

    apiVersion: Literal["jointserve.io/v1alpha1"] = API_VERSION
    kind: Literal["TrainingModel"] = "TrainingModel"
    metadata: ObjectMeta
    spec: TrainingModelSpec
    status: TrainingModelStatus | None = None
