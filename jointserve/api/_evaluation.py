"""Evaluation of a model over a Dataset, and the metrics it writes into the status.

`spec.evaluation: {dataset: NAME}` on an InferenceModel or a JointInferenceService makes the
operator run the target version over that Dataset (off the hot path: in the operator, not in
a serving replica) through the same runtime and pre/post-processing steps as serving, and
write what it measured into `status.metrics`, one entry per (version, dataset sha256). Users
read them with `jointserve get im` / `kubectl get im` (ACCURACY, F1), and model selectors
rank candidate models by them.

The writer (the operator's evaluator) and every reader (status, CLI, selectors) use these
classes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from ._common import DnsName, Strict

# One status holds at most this many metrics entries (newest first): a model whose target
# moves through many versions must not grow its status without bound (etcd: 1.5 MiB).
MAX_METRICS = 8
# The confusion matrix of a status: beyond this many classes it is left out (the
# per-class recall stays): 1000 classes would be a million numbers.
MAX_CONFUSION_CLASSES = 50

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class Evaluation(Strict):
    """Which Dataset to evaluate on, and where the predictions are."""

    # A Dataset in the same namespace; its labels are compared with the predicted class names.
    dataset: DnsName
    # The output holding the predictions (after postprocess, for a service): class ids
    # [N] (integer) or scores [N, C] (argmax). Default: the first integer output of rank 1,
    # else the last output.
    output: Annotated[str, Field(min_length=1, max_length=253)] | None = None


class ConfusionMatrix(Strict):
    """counts[i][j]: samples whose true class is labels[i], predicted labels[j]."""

    labels: list[str]
    counts: list[list[int]]


class ModelMetrics(Strict):
    """What one evaluation of one version over one Dataset measured."""

    version: str
    dataset: str
    datasetSha256: str
    # RFC 3339, when the evaluation finished.
    evaluatedAt: str
    samples: int
    # A digest of the settings that decide the result besides the versions (the output read,
    # the labels; for a service also its policy and steps): a change evaluates again.
    settingsDigest: str = ""
    # Classification (macro averages over the classes seen in labels or predictions).
    accuracy: Unit | None = None
    macroPrecision: Unit | None = None
    macroRecall: Unit | None = None
    macroF1: Unit | None = None
    perClassRecall: dict[str, float] = Field(default_factory=dict)
    confusion: ConfusionMatrix | None = None
    # Detection: mean average precision at IoU 0.5 (Pascal VOC rule).
    mAP50: Unit | None = None
    # A JointInferenceService, at the served policy and threshold: the share of samples sent
    # to the cloud, each tier's accuracy alone, and the performance gap recovered
    # (joint - edge) / (cloud - edge).
    cloudRatio: Unit | None = None
    edgeAccuracy: Unit | None = None
    cloudAccuracy: Unit | None = None
    # A detection service: each tier's mAP@0.5 alone (PGR is then in mAP terms).
    edgeMAP50: Unit | None = None
    cloudMAP50: Unit | None = None
    pgr: float | None = None
    # The versions a service evaluation ran (edge and cloud).
    edgeVersion: str | None = None
    cloudVersion: str | None = None

    def key(self) -> tuple[str, str, str, str]:
        """What decides an evaluation: the same version on the same data gives these again."""
        return (self.version, self.dataset, self.datasetSha256, self.settingsDigest)


def metric_value(metrics: ModelMetrics, name: str) -> float | None:
    """A metric by the name selectors use (accuracy, macroF1, mAP50, pgr, ...)."""
    value: Any = getattr(metrics, name, None)
    return float(value) if isinstance(value, (int, float)) else None


def with_metrics(history: list[ModelMetrics], latest: ModelMetrics) -> list[ModelMetrics]:
    """`history` with `latest` first, replacing an entry of the same key, at most MAX_METRICS."""
    rest = [m for m in history if m.key() != latest.key()]
    return [latest, *rest][:MAX_METRICS]
