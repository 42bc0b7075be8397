"""The InferenceModel resource: one model, its versions, and where it runs.

The spec follows the KubeEdge model CRD design this project grew from (see docs/architecture.md):
a model is either a container `image` or a `manifest` of versioned archives, each with a
download URL and a sha256, of which `targetVersion` is the one to serve.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ._common import API_VERSION, Autoscaling, Condition, ObjectMeta, Strict
from ._evaluation import MAX_METRICS, Evaluation, ModelMetrics
from ._vocabulary import ConditionType

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
# Model names end up in URL paths (/v2/models/<modelName>/infer) and in store paths.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
VERSION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
URL_PATTERN = r"^(https?|file)://.+$"

Layer = Literal["edge", "cloud"]


class ModelFile(Strict):
    """One version of the model: an archive (tar.gz, tar or zip) holding the model files."""

    version: Annotated[str, Field(pattern=VERSION_PATTERN, max_length=63)]
    downloadURL: Annotated[str, Field(pattern=URL_PATTERN, max_length=2048)]
    sha256sum: Annotated[str, Field(pattern=SHA256_PATTERN)]

    @model_validator(mode="after")
    def _lowercase_sha(self) -> "ModelFile":
        # Compare hashes in one canonical form; users paste both cases.
        self.sha256sum = self.sha256sum.lower()
        return self


class Batching(Strict):
    """Dynamic batching of concurrent requests inside each replica (Ray Serve @serve.batch).

    Requests that arrive within `batchWaitTimeoutMs` of each other run as one model call of up
    to `maxBatchSize` rows: hard examples sent on by JointInferenceService gateways arrive
    concurrently, and one call on a batch costs a fraction of that many single calls.
    """

    maxBatchSize: Annotated[int, Field(ge=1, le=1024)] = 16
    batchWaitTimeoutMs: Annotated[float, Field(ge=0, le=10_000)] = 2.0


Task = Literal["classification", "detection", "segmentation", "regression", "other"]


class ModelInfo(Strict):
    """What the model is, for users who query it and for model selection: shown in its OIP
    metadata (GET /v2/models/<name>). A field set here wins over the archive's metadata.json;
    one left out comes from there."""

    task: Task | None = None
    # Class names, indexed by class id (topK postprocessing names its answers with them).
    labels: list[Annotated[str, Field(max_length=253)]] | None = Field(None, max_length=100_000)
    description: Annotated[str, Field(max_length=4096)] | None = None


class InferenceModelSpec(Strict):
    """Desired state of an InferenceModel.

    Two ways of deployment, as in the seed design: a container `image`, or a `manifest` of
    model archives of which `targetVersion` is served. The two exclude each other.
    """

    # Cross-field rules, enforced here in Python and by the API server as CEL in the CRD.
    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!(has(self.image) && has(self.manifest) && size(self.manifest) > 0)",
            "message": "image excludes manifest: set one of spec.image or spec.manifest",
        },
        {
            "rule": "has(self.image) || (has(self.manifest) && size(self.manifest) > 0)",
            "message": "one of spec.image or spec.manifest is required",
        },
        {
            "rule": "!has(self.targetVersion) || (has(self.manifest) && "
            "self.manifest.exists(f, f.version == self.targetVersion))",
            "message": "targetVersion must name a manifest entry",
        },
        {
            "rule": "!has(self.manifest) || size(self.manifest) <= 1 || has(self.targetVersion)",
            "message": "targetVersion is required when the manifest has more than one version",
        },
        {
            "rule": "!has(self.batching) || self.deployToLayer == 'cloud'",
            "message": "batching is for cloud-layer models (edge models answer in the gateway)",
        },
        {
            "rule": "!has(self.autoscaling) || !has(self.image)",
            "message": "autoscaling is for manifest models; an image model's Deployment scales "
            "with a HorizontalPodAutoscaler",
        },
    ]

    modelName: Annotated[str, Field(pattern=MODEL_NAME_PATTERN, max_length=63)]
    deployToLayer: Layer
    frameworkType: str | None = None
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    # Bounded, like every string the CEL rules touch, so the API server can cost the rules.
    manifest: list[ModelFile] = Field(default_factory=list, max_length=64)
    targetVersion: Annotated[str, Field(pattern=VERSION_PATTERN, max_length=63)] | None = None
    replicas: Annotated[int, Field(ge=0)] = 1
    batching: Batching | None = None
    # Replicas that follow the load; replicas then only says 0 (none) or not.
    autoscaling: Autoscaling | None = None
    metadata: ModelInfo | None = None
    # Evaluate the target version over a Dataset; the results go into status.metrics.
    evaluation: Evaluation | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_seed_spelling(cls, data: Any) -> Any:
        # The seed design's Go struct tags the field `fraemworkType`; documents written
        # against it must keep working, but the user should learn the right spelling.
        if isinstance(data, dict) and "fraemworkType" in data:
            data = dict(data)
            value = data.pop("fraemworkType")
            if "frameworkType" not in data:
                data["frameworkType"] = value
            warnings.warn(
                "spec.fraemworkType is the seed design's misspelling; use spec.frameworkType",
                FutureWarning,
                stacklevel=2,
            )
        return data

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "InferenceModelSpec":
        versions = [f.version for f in self.manifest]
        if self.image and self.manifest:
            raise ValueError("image: excludes manifest (set one of spec.image or spec.manifest)")
        if not self.image and not self.manifest:
            raise ValueError("manifest: one of spec.image or spec.manifest is required")
        duplicates = sorted({v for v in versions if versions.count(v) > 1})
        if duplicates:
            raise ValueError(f"manifest: versions must be unique, repeated: {', '.join(duplicates)}")
        if self.targetVersion is not None and self.targetVersion not in versions:
            have = ", ".join(versions) or "none"
            raise ValueError(
                f"targetVersion: must name a manifest entry "
                f"(got {self.targetVersion!r}, manifest has: {have})"
            )
        if self.autoscaling is not None and self.image:
            raise ValueError("autoscaling: is for manifest models; an image model's Deployment "
                             "scales with a HorizontalPodAutoscaler")
        if self.batching is not None and self.deployToLayer != "cloud":
            raise ValueError(
                "batching: is for cloud-layer models (edge models answer in the gateway)")
        if self.targetVersion is None and len(self.manifest) > 1:
            raise ValueError(
                "targetVersion: is required when the manifest has more than one version"
            )
        return self

    def target_file(self) -> ModelFile | None:
        """The manifest entry to serve: targetVersion, or the only entry."""
        if not self.manifest:
            return None
        wanted = self.targetVersion or self.manifest[0].version
        return next(f for f in self.manifest if f.version == wanted)

    def file_for(self, version: str) -> ModelFile | None:
        """The manifest entry of `version`, if listed."""
        return next((f for f in self.manifest if f.version == version), None)


class InferenceModelStatus(Strict):
    """Observed state, written by the operator."""

    url: str | None = None
    activeVersion: str | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    # Evaluations of spec.evaluation, newest first: one per (version, dataset sha256).
    metrics: list[ModelMetrics] = Field(default_factory=list, max_length=MAX_METRICS)


# The Ready condition in a printer column's JSONPath.
_READY = f'.status.conditions[?(@.type=="{ConditionType.READY}")]'
_EVALUATED = f'.status.conditions[?(@.type=="{ConditionType.EVALUATED}")]'


class InferenceModel(Strict):
    """A model served over Open Inference Protocol v2 on the edge or cloud layer."""

    KIND: ClassVar[str] = "InferenceModel"
    PLURAL: ClassVar[str] = "inferencemodels"
    SHORT_NAMES: ClassVar[list[str]] = ["im"]
    # `kubectl get im` columns: the CRD's additionalPrinterColumns. Listing any replaces the
    # default NAME/AGE pair, hence AGE here.
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "MODEL", "type": "string", "jsonPath": ".spec.modelName"},
        {"name": "LAYER", "type": "string", "jsonPath": ".spec.deployToLayer"},
        {"name": "TARGET", "type": "string", "jsonPath": ".spec.targetVersion"},
        {"name": "VERSION", "type": "string", "jsonPath": ".status.activeVersion"},
        {"name": "READY", "type": "string", "jsonPath": _READY + ".status"},
        # Why a model is not Ready (or not on its target) without `kubectl describe`.
        {"name": "REASON", "type": "string", "jsonPath": _READY + ".reason"},
        # The newest evaluation (of the target version once it is evaluated).
        {"name": "ACCURACY", "type": "number", "jsonPath": ".status.metrics[0].accuracy"},
        {"name": "F1", "type": "number", "jsonPath": ".status.metrics[0].macroF1"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "MESSAGE", "type": "string", "priority": 1, "jsonPath": _READY + ".message"},
        {"name": "EVALUATION", "type": "string", "priority": 1, "jsonPath": _EVALUATED + ".message"},
    ]

    apiVersion: Literal["jointserve.io/v1alpha1"] = API_VERSION
    kind: Literal["InferenceModel"] = "InferenceModel"
    metadata: ObjectMeta
    spec: InferenceModelSpec
    status: InferenceModelStatus | None = None
