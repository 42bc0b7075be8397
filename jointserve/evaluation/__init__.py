"""Model evaluation over Datasets: metrics, sample loading and the evaluation runner (issue 14).

    load_samples(path, dataset spec)        a Dataset's inputs and true labels (csv, npz, txt)
    evaluate_model(model, samples, ...)     one InferenceModel version -> ModelMetrics
    evaluate_service(name, spec, ...)       a JointInferenceService's hot path (JointModel),
                                            edge and cloud alone -> ModelMetrics with PGR
    calibrate_service(name, spec, ...)      the cut of the policy's score that meets
                                            hardExampleMining.budget -> Calibration
    train_router(name, spec, ...)           a LearnedRouter fitted on a Dataset -> archive
    classification_metrics / voc_map        the numbers themselves (pure numpy)

The operator runs these in a worker thread for spec.evaluation (jointserve.operator), and
`jointserve evaluate` runs them once from the command line. Nothing here serves traffic.
"""

from ._calibration import calibrate_service, calibration_digest, cutoff_of
from ._errors import EvaluationError
from ._metrics import (
    ClassificationMetrics,
    DetectedBox,
    DetectionMetrics,
    GroundTruthBox,
    classification_metrics,
    voc_map,
)
from ._run import (
    CHUNK,
    DatasetRef,
    LocalCloud,
    evaluate_model,
    evaluate_service,
    detected_boxes,
    model_digest,
    predicted_labels,
    service_digest,
    service_version,
)
from ._router import TrainedRouter, fit_router, router_digest, train_router
from ._samples import MAX_IMAGE_BYTES, Samples, load_samples, read_url

__all__ = [
    "CHUNK",
    "MAX_IMAGE_BYTES",
    "ClassificationMetrics",
    "DatasetRef",
    "DetectedBox",
    "DetectionMetrics",
    "EvaluationError",
    "GroundTruthBox",
    "LocalCloud",
    "Samples",
    "TrainedRouter",
    "calibrate_service",
    "calibration_digest",
    "classification_metrics",
    "cutoff_of",
    "evaluate_model",
    "evaluate_service",
    "fit_router",
    "load_samples",
    "model_digest",
    "detected_boxes",
    "predicted_labels",
    "read_url",
    "router_digest",
    "service_digest",
    "service_version",
    "train_router",
    "voc_map",
]
