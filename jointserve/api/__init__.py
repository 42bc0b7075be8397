"""Resource schemas: InferenceModel, JointInferenceService and Dataset, and the
vocabulary every layer uses about them (resource keys, condition types and reasons).

Pydantic models are the one source of truth: YAML files are validated with them, and the
CRDs in deploy/crds/ are generated from them (`jointserve crds`).
"""

from ._budget import Calibration, OffloadBudget, RealisedOffload
from ._common import (
    API_GROUP,
    API_VERSION,
    Autoscaling,
    Condition,
    ObjectMeta,
    get_condition,
    now_rfc3339,
    set_condition,
)
from ._crd import crd_for, kube_yaml, render_crds, write_crds
from ._dataset import (
    DATASET_FORMATS,
    CsvOptions,
    Dataset,
    DatasetFormat,
    DatasetSpec,
    DatasetStatus,
    NpzOptions,
    TxtOptions,
)
from ._errors import ResourceError, describe_errors
from ._evaluation import (
    MAX_CONFUSION_CLASSES,
    MAX_METRICS,
    ConfusionMatrix,
    Evaluation,
    ModelMetrics,
    metric_value,
    with_metrics,
)
from ._inference_model import (
    InferenceModel,
    InferenceModelSpec,
    InferenceModelStatus,
    Layer,
    ModelFile,
    ModelInfo,
)
from ._joint_service import (
    CloudModelRef,
    HardExampleMining,
    JointInferenceService,
    JointInferenceServiceSpec,
    JointInferenceServiceStatus,
    RouterStatus,
    RouterTraining,
    ServiceCounters,
)
from ._parse import KINDS, Resource, load_file, parse_resource
from ._selection import (
    MetricName,
    ModelChoice,
    ModelSelector,
    RankBy,
    Selection,
    TensorSignature,
)
from ._steps import ImageDecode, Nms, Normalize, PostStep, PreStep, Softmax, TopK
from ._vocabulary import ConditionType, Reason, ResourceKey, resource_key

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "Autoscaling",
    "Calibration",
    "DATASET_FORMATS",
    "KINDS",
    "CloudModelRef",
    "ConfusionMatrix",
    "Evaluation",
    "MAX_CONFUSION_CLASSES",
    "MAX_METRICS",
    "ModelMetrics",
    "metric_value",
    "with_metrics",
    "Condition",
    "ConditionType",
    "CsvOptions",
    "Dataset",
    "DatasetFormat",
    "DatasetSpec",
    "DatasetStatus",
    "ImageDecode",
    "InferenceModel",
    "InferenceModelSpec",
    "InferenceModelStatus",
    "HardExampleMining",
    "JointInferenceService",
    "JointInferenceServiceSpec",
    "JointInferenceServiceStatus",
    "RouterStatus",
    "RouterTraining",
    "Layer",
    "ModelFile",
    "ModelInfo",
    "MetricName",
    "ModelChoice",
    "ModelSelector",
    "OffloadBudget",
    "RealisedOffload",
    "Nms",
    "RankBy",
    "Selection",
    "TensorSignature",
    "NpzOptions",
    "Normalize",
    "ObjectMeta",
    "PostStep",
    "PreStep",
    "Reason",
    "Resource",
    "ResourceError",
    "ResourceKey",
    "ServiceCounters",
    "Softmax",
    "TopK",
    "TxtOptions",
    "crd_for",
    "describe_errors",
    "get_condition",
    "kube_yaml",
    "load_file",
    "now_rfc3339",
    "parse_resource",
    "render_crds",
    "resource_key",
    "set_condition",
    "write_crds",
]
