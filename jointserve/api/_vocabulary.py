"""The words every layer uses about resources: their keys, condition types and reasons.

They sit on the lowest floor that needs them (as kopf keeps its `_cogs/structs/`): the
operator's sources, reconciler and status writers, the CLI and the tests all import them
from here, so a condition type or reason is spelled once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._parse import Resource

ResourceKey = tuple[str, str, str]
"""(kind, namespace, name): one resource, in a directory or in a cluster."""


def resource_key(resource: Resource) -> ResourceKey:
    return (resource.kind, resource.metadata.namespace, resource.metadata.name)


class ConditionType(StrEnum):
    """Condition types in a resource's status (Kubernetes metav1.Condition `type`)."""

    READY = "Ready"
    ARTIFACT_VERIFIED = "ArtifactVerified"
    PROGRESSING = "Progressing"
    CLOUD_MODEL_READY = "CloudModelReady"  # JointInferenceService
    EVALUATED = "Evaluated"  # spec.evaluation
    CALIBRATED = "Calibrated"  # hardExampleMining.budget
    OFFLOAD_BUDGET = "OffloadBudget"  # the live share of hard inputs against the budget
    ROUTER_READY = "RouterReady"  # LearnedRouter: its archive verified and loadable


class Reason(StrEnum):
    """Reasons the operator itself gives. Artifact failures carry the store's own reasons
    (jointserve.store.ArtifactError.reason: Sha256Mismatch, HTTPError, UnsafeArchive, ...),
    datasets that cannot be counted the counter's (jointserve.datasets.DatasetFormatError
    .reason: CsvMalformed, NpzMalformed, DatasetUnreadable, ...)."""

    # Ready / Progressing
    SERVING = "Serving"
    DEPLOYING = "Deploying"
    COMPLETE = "Complete"
    DEPLOY_FAILED = "DeployFailed"
    UNHEALTHY = "Unhealthy"
    SCALED_TO_ZERO = "ScaledToZero"
    MODEL_NAME_CONFLICT = "ModelNameConflict"
    TARGET_VERSION_REJECTED = "TargetVersionRejected"
    REPLICAS_NOT_READY = "ReplicasNotReady"  # image models' Deployment
    WORKLOAD_FAILED = "WorkloadFailed"
    # ArtifactVerified
    VERIFIED = "Verified"
    MODEL_INVALID = "ModelInvalid"
    IMAGE_REFERENCE = "ImageReference"
    IMAGE_NOT_SUPPORTED = "ImageNotSupported"
    # JointInferenceService Ready / CloudModelReady
    EDGE_MODEL_NOT_FOUND = "EdgeModelNotFound"
    EDGE_MODEL_NOT_READY = "EdgeModelNotReady"
    EDGE_MODEL_DELETING = "EdgeModelDeleting"
    CLOUD_DEPLOYED = "Deployed"
    CLOUD_REMOTE = "Remote"
    CLOUD_MODEL_NOT_FOUND = "CloudModelNotFound"
    CLOUD_MODEL_NOT_READY = "CloudModelNotReady"
    CLOUD_MODEL_DELETING = "CloudModelDeleting"
    NO_MODEL_SELECTED = "NoModelSelected"  # a selector chose no model (yet)
    # Dataset Ready
    COUNTED = "Counted"
    COUNT_FAILED = "CountFailed"  # the counter itself failed (a bug); see the operator's log
    # Evaluated
    EVALUATED = "Evaluated"
    EVALUATING = "Evaluating"
    CALIBRATED = "Calibrated"
    CALIBRATING = "Calibrating"
    WITHIN_BUDGET = "WithinBudget"
    OVER_BUDGET = "OverBudget"
    UNDER_BUDGET = "UnderBudget"
    NOT_ENOUGH_TRAFFIC = "NotEnoughTraffic"
    ROUTER_VERIFIED = "RouterVerified"
    TRAINING = "Training"  # TrainingModel: rounds running
    TRAINING_FAILED = "TrainingFailed"
    TRAINED = "Trained"
    PUBLISHED = "Published"
    TRAINING_ROUTER = "TrainingRouter"  # hardExampleMining.train: the operator trains one
    ROUTER_TRAINED = "RouterTrained"
    ROUTER_NOT_SET = "RouterNotSet"  # LearnedRouter without a router: scores as Margin
    ROUTER_INVALID = "RouterInvalid"
    DATASET_NOT_FOUND = "DatasetNotFound"
    DATASET_NOT_READY = "DatasetNotReady"
    INPUTS_REJECTED = "InputsRejected"  # the model does not take the dataset's samples
    EVALUATION_FAILED = "EvaluationFailed"  # the evaluator itself failed; see the log
    NOT_EVALUABLE = "NotEvaluable"  # nothing verified to evaluate (image model, no version)
