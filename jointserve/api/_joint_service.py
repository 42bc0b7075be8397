"""The JointInferenceService resource: an edge model + a cloud model + an HEM policy = one model.

Clients call `/v2/models/<metadata.name>/infer`. The edge model answers inside the gateway;
the hard example mining policy decides which inputs go on to the cloud model; the answer says
which tier gave it. Field names follow Sedna's JointInferenceService where they overlap
(`hardExampleMining.name`/`parameters`; status `inferenceNumber`, `hardExampleNumber`,
`uploadCloudRatio`), so Sedna users recognise them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from jointserve.routing import POLICIES, build_policy

from ._budget import Calibration, OffloadBudget, RealisedOffload
from ._common import API_VERSION, Autoscaling, Condition, DnsName, ObjectMeta, Strict
from ._evaluation import MAX_METRICS, Evaluation, ModelMetrics, Unit
from ._inference_model import MODEL_NAME_PATTERN, SHA256_PATTERN, URL_PATTERN
from ._selection import ModelSelector, RankBy, SelectableRef, Selection
from ._steps import PostStep, PreStep
from ._vocabulary import ConditionType

Transport = Literal["handle", "http"]
HTTP_URL_PATTERN = r"^https?://[^/\s]+(/[^\s]*)?$"


class EdgeModelRef(SelectableRef):
    """The edge model: an InferenceModel (deployToLayer edge or cloud) in the same namespace,
    by name or chosen by a selector (jointserve.api._selection).

    Its verified target version runs inside the gateway replica, so easy inputs cost no hop.
    """


class CloudModelRef(Strict):
    """The cloud model: an InferenceModel here, or a remote OIP server (another cluster).

    `name` alone: the InferenceModel's replicas, called at their own listeners (the value
    `handle` of `transport` keeps the name of the DeploymentHandle this once was).
    `selector` (+ `rankBy`): the InferenceModel chosen by what it is, called the same way.
    `name` + `transport: http`: over HTTP to that InferenceModel's status url.
    `url` + `modelName`: over HTTP to a remote OIP v2 server, e.g. across a WAN.
    """

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "[has(self.name), has(self.url), has(self.selector)].filter(x, x).size() == 1",
            "message": "set exactly one of cloudModel.name (an InferenceModel), cloudModel.selector "
                       "or cloudModel.url",
        },
        {
            "rule": "!has(self.rankBy) || has(self.selector)",
            "message": "cloudModel.rankBy ranks the models a selector matches; it needs selector",
        },
        {
            "rule": "!has(self.url) || has(self.modelName)",
            "message": "cloudModel.url needs cloudModel.modelName (the model's name at that url)",
        },
        {
            "rule": "!has(self.url) || !has(self.transport) || self.transport == 'http'",
            "message": "cloudModel.url is reached over http; transport handle needs cloudModel.name",
        },
    ]

    name: DnsName | None = None
    selector: ModelSelector | None = None
    rankBy: RankBy | None = None
    url: Annotated[str, Field(pattern=HTTP_URL_PATTERN, max_length=2048)] | None = None
    modelName: Annotated[str, Field(pattern=MODEL_NAME_PATTERN, max_length=63)] | None = None
    transport: Transport | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "CloudModelRef":
        if sum(v is not None for v in (self.name, self.selector, self.url)) != 1:
            raise ValueError("name: set exactly one of cloudModel.name (an InferenceModel), "
                             "cloudModel.selector or cloudModel.url")
        if self.rankBy is not None and self.selector is None:
            raise ValueError("rankBy: ranks the models a selector matches; it needs selector")
        if self.url is not None and self.modelName is None:
            raise ValueError("modelName: cloudModel.url needs cloudModel.modelName (the model's name at that url)")
        if self.url is not None and self.transport == "handle":
            raise ValueError("transport: cloudModel.url is reached over http; transport handle needs cloudModel.name")
        return self

    @property
    def effective_transport(self) -> Transport:
        return self.transport or ("http" if self.url else "handle")


class RouterArchive(Strict):
    """Where a LearnedRouter's archive is, and its sha256."""

    url: Annotated[str, Field(pattern=URL_PATTERN, max_length=2048)]
    sha256sum: Annotated[str, Field(pattern=SHA256_PATTERN)]


class RouterTraining(Strict):
    """LearnedRouter: the operator trains the router on a Dataset, as `jointserve
    train-router` does, again whenever the edge version or the Dataset changes."""

    dataset: Annotated[str, Field(min_length=1, max_length=253)]
    # Read the edge model's input beside its probabilities: true, false, or unset to let
    # cross-validation decide (an edge model of one input of at most 4096 values a row).
    inputs: bool | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0  # the held-out split and the folds


_ROUTER_OR_TRAIN = "set router (an archive) or train (the operator trains one), not both"


class HardExampleMining(Strict):
    """Which policy decides that an input is hard; names and parameters as in Sedna."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "!(has(self.router) && has(self.train))", "message": _ROUTER_OR_TRAIN},
        {"rule": "(!has(self.router) && !has(self.train)) || self.name == 'LearnedRouter'",
         "message": "router and train are for name LearnedRouter"},
    ]

    name: Annotated[str, Field(json_schema_extra={"enum": sorted(POLICIES)})]
    parameters: dict[str, Any] = Field(default_factory=dict)
    # The edge output the policy judges, after postprocess (probabilities, detections...);
    # default: the edge model's last output.
    output: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    # Send this share of inputs to the cloud, the policy's score cut where a Dataset says
    # (status.calibration); the policy's own threshold applies until it is calibrated.
    budget: OffloadBudget | None = None
    # LearnedRouter: the router archive `jointserve train-router` wrote (router.onnx +
    # router.json), verified by sha256 like a model version.
    router: RouterArchive | None = None
    # LearnedRouter: or let the operator train the router on a Dataset (status.router).
    train: RouterTraining | None = None

    @model_validator(mode="after")
    def _policy_builds(self) -> "HardExampleMining":
        if self.router is not None and self.train is not None:
            raise ValueError(_ROUTER_OR_TRAIN)
        for field in ("router", "train"):
            if getattr(self, field) is not None and self.name != "LearnedRouter":
                raise ValueError(f"{field}: is for name LearnedRouter (name is {self.name})")
        try:
            build_policy(self.name, self.parameters)
        except ValueError as exc:
            # build_policy names fields from hardExampleMining down; the error path has that.
            raise ValueError(str(exc).replace("hardExampleMining.", "")) from None
        return self


class Breaker(Strict):
    """Circuit breaker on the cloud calls: while open, hard inputs get the edge answer at once."""

    failureThreshold: Annotated[int, Field(ge=1, le=1000)] = 5
    cooldownMs: Annotated[int, Field(ge=0, le=3_600_000)] = 5000


class CloudCall(Strict):
    """How the gateway calls the cloud model; every failure falls back to the edge answer."""

    deadlineMs: Annotated[int, Field(ge=1, le=600_000)] = 1000
    maxInFlight: Annotated[int, Field(ge=1, le=100_000)] = 64
    breaker: Breaker = Field(default_factory=Breaker)


class SaveHardExamples(Strict):
    """Keep hard examples (input, edge and cloud outputs) on disk for retraining, bounded."""

    directory: Annotated[str, Field(min_length=1, max_length=4096)]
    maxCount: Annotated[int, Field(ge=1)] = 10_000
    maxBytes: Annotated[int, Field(ge=1)] = 1 << 30


class JointInferenceServiceSpec(Strict):
    """Desired state: the two models, the routing policy and the cloud call's limits."""

    edgeModel: EdgeModelRef
    cloudModel: CloudModelRef
    hardExampleMining: HardExampleMining
    cloud: CloudCall = Field(default_factory=CloudCall)
    # Shared by both tiers: preprocess runs once in the gateway, postprocess on either answer.
    preprocess: list[PreStep] = Field(default_factory=list, max_length=16)
    postprocess: list[PostStep] = Field(default_factory=list, max_length=16)
    saveHardExamples: SaveHardExamples | None = None
    # Gateway replicas; they run on edge nodes (the edge model is in them).
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    # Gateway replicas that follow the load; replicas then only says 0 (none) or not.
    autoscaling: Autoscaling | None = None
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    # Evaluate the joint model (edge, policy, cloud) over a Dataset: status.metrics.
    evaluation: Evaluation | None = None

    @field_validator("hardExampleMining", mode="before")
    @classmethod
    def _sedna_parameter_list(cls, value: Any) -> Any:
        # Sedna writes parameters as [{key, value}] pairs of strings; accept that form too.
        if isinstance(value, dict) and isinstance(value.get("parameters"), list):
            pairs = value["parameters"]
            if all(isinstance(p, dict) and set(p) == {"key", "value"} for p in pairs):
                value = {**value, "parameters": {p["key"]: p["value"] for p in pairs}}
        return value


class ServiceCounters(Strict):
    """Sedna-compatible counters of one service, in samples: each gateway replica counts its
    own, the operator sums them into the status. The one list of their names."""

    inferenceNumber: int = 0
    hardExampleNumber: int = 0
    cloudAnswerNumber: int = 0
    fallbackNumber: int = 0


class RouterStatus(Strict):
    """A router the operator trained (hardExampleMining.train): the archive, what it was
    trained on, and how it did on the Dataset's held-out rows."""

    url: str  # a data: URL of the archive (router.onnx + router.json: a few KiB)
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    dataset: str
    datasetSha256: str
    samples: int = Field(ge=0)
    edgeVersion: str
    cloudVersion: str
    # A digest of what decides the router besides versions and data (train settings, the
    # policy's output, the steps): a change trains again.
    settingsDigest: str
    trainedAt: str  # RFC 3339
    features: int = Field(ge=1)
    inputFeatures: int = Field(ge=0)  # 0: the probabilities' features alone
    heldOutAuc: Unit | None = None
    heldOutPgr: float | None = None  # at 20% sent by the router's score
    heldOutMarginPgr: float | None = None  # the same share sent by Margin's score

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.edgeVersion, self.cloudVersion, self.dataset, self.datasetSha256,
                self.settingsDigest)


class JointInferenceServiceStatus(ServiceCounters):
    """Observed state, written by the operator; counters summed over the gateway replicas."""

    url: str | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    edgeVersion: str | None = None
    cloudVersion: str | None = None
    uploadCloudRatio: float = 0.0  # hardExampleNumber / inferenceNumber, as Sedna reports it
    # Evaluations of spec.evaluation, newest first: one per (edge version, dataset sha256).
    metrics: list[ModelMetrics] = Field(default_factory=list, max_length=MAX_METRICS)
    # The models chosen for the tiers that have a selector, and why.
    selection: Selection | None = None
    # hardExampleMining.budget: the cut the gateway applies, and what it gave on the Dataset;
    # and the share of live inputs found hard over the budget's window.
    calibration: Calibration | None = None
    offload: RealisedOffload | None = None
    # LearnedRouter: the sha256 of the router archive the gateways score with (the last one
    # that verified), if any.
    routerSha256: str | None = None
    # hardExampleMining.train: the router the operator trained, and how it did.
    router: RouterStatus | None = None


# The Ready condition in a printer column's JSONPath.
_READY = f'.status.conditions[?(@.type=="{ConditionType.READY}")]'


class JointInferenceService(Strict):
    """One logical model over an edge and a cloud InferenceModel, routed by HEM."""

    KIND: ClassVar[str] = "JointInferenceService"
    PLURAL: ClassVar[str] = "jointinferenceservices"
    SHORT_NAMES: ClassVar[list[str]] = ["jis"]
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "EDGE", "type": "string", "jsonPath": ".spec.edgeModel.name"},
        {"name": "CLOUD", "type": "string", "jsonPath": ".spec.cloudModel.name"},
        {"name": "HEM", "type": "string", "jsonPath": ".spec.hardExampleMining.name"},
        {"name": "READY", "type": "string", "jsonPath": _READY + ".status"},
        {"name": "REASON", "type": "string", "jsonPath": _READY + ".reason"},
        {"name": "INFERENCES", "type": "integer", "jsonPath": ".status.inferenceNumber"},
        {"name": "HARD", "type": "integer", "jsonPath": ".status.hardExampleNumber"},
        {"name": "ACCURACY", "type": "number", "jsonPath": ".status.metrics[0].accuracy"},
        {"name": "CLOUD%", "type": "number", "priority": 1,
         "jsonPath": ".status.metrics[0].cloudRatio"},
        {"name": "PGR", "type": "number", "priority": 1, "jsonPath": ".status.metrics[0].pgr"},
        {"name": "BUDGET", "type": "number", "priority": 1,
         "jsonPath": ".spec.hardExampleMining.budget.cloudRatio"},
        {"name": "CUT", "type": "number", "priority": 1,
         "jsonPath": ".status.calibration.threshold"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "MESSAGE", "type": "string", "priority": 1, "jsonPath": _READY + ".message"},
        # The models chosen by selectors (empty for tiers named in the spec).
        {"name": "EDGE-CHOSEN", "type": "string", "priority": 1,
         "jsonPath": ".status.selection.edge.model"},
        {"name": "CLOUD-CHOSEN", "type": "string", "priority": 1,
         "jsonPath": ".status.selection.cloud.model"},
    ]

    apiVersion: Literal["jointserve.io/v1alpha1"] = API_VERSION
    kind: Literal["JointInferenceService"] = "JointInferenceService"
    metadata: ObjectMeta
    spec: JointInferenceServiceSpec
    status: JointInferenceServiceStatus | None = None
