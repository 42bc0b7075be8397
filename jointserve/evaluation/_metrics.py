"""The metrics of an evaluation: classification (accuracy, macro P/R/F1, confusion matrix) and
object detection (Pascal VOC mAP at an IoU threshold).

An evaluation compares a model's outputs with a Dataset's labels, and its numbers must be the
ones people compare against elsewhere: classification follows scikit-learn's
`precision_recall_fscore_support(average="macro", zero_division=0)` over every label, detection
the VOC2010+ devkit's matching rule and all-point interpolated AP (`voc_ap(use_07_metric=False)`).
Only numpy and the standard library are used, so this runs inside a serving replica without
scikit-learn; the tests check both against scikit-learn and a loop-by-loop devkit reference.

Class names are strings throughout. Errors in the inputs (empty, mismatched lengths, unknown
labels, degenerate boxes) are the caller's ValueError: they are bugs in whoever built the
inputs, not facts about the model.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import numpy as np

# Numeric class names ("2", "10", "-1", "0.5") sort by value; ASCII digits only, so that the
# value is what Decimal reads and not whatever some script's digits happen to mean.
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class ClassificationMetrics:
    """What classification_metrics found.

    Macro averages are over all of `labels`, including classes never predicted (precision 0)
    or never true (recall 0). `confusion[i][j]` counts the samples of true class `labels[i]`
    predicted as `labels[j]`; `per_class_recall` is in `labels` order.
    """

    samples: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class_recall: dict[str, float]
    labels: list[str]
    confusion: list[list[int]]


@dataclass(frozen=True)
class GroundTruthBox:
    """A labelled object; `difficult` ones (VOC's flag) neither count as misses nor as FPs."""

    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False


@dataclass(frozen=True)
class DetectedBox:
    """A model's detection, ranked by `score` (higher is more confident)."""

    label: str
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class DetectionMetrics:
    """What voc_map found.

    `per_class_ap` and `per_class_recall` cover the classes with at least one non-difficult
    ground-truth box, sorted by name, and `map50` is their mean (0.0 when there are none);
    recall is with every detection kept. `detections` counts all detections, also those of
    classes without ground truth; `ground_truth` counts the non-difficult boxes.
    """

    images: int
    map50: float
    per_class_ap: dict[str, float]
    per_class_recall: dict[str, float]
    detections: int
    ground_truth: int


Box = GroundTruthBox | DetectedBox
B = TypeVar("B", GroundTruthBox, DetectedBox)


def natural_key(name: str) -> tuple[int, Decimal, str]:
    """Sort key putting numeric names first, by value ("2" < "10"), then the rest by string.

    Equal values ("1", "1.0", "01") are ordered by string, so the order is total.
    """
    if _NUMBER.fullmatch(name):
        return (0, Decimal(name), name)
    return (1, Decimal(0), name)


def classification_metrics(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> ClassificationMetrics:
    """Accuracy, macro precision/recall/F1, per-class recall and the confusion matrix.

    Args:
        truth: each sample's true class.
        predicted: each sample's predicted class, in the same order.
        labels: the classes and the confusion matrix's axis order; it must hold every class in
            `truth` and `predicted` and may hold more (they count in the macro averages).
            Default: the classes seen, in natural_key order.

    Raises:
        ValueError: no samples, `truth` and `predicted` of different lengths, a class missing
            from `labels`, or a label given twice.
        TypeError: a class name that is not a string.
    """
    if len(truth) != len(predicted):
        raise ValueError(
            f"truth has {len(truth)} samples but predicted has {len(predicted)}: "
            "they must be the same samples in the same order"
        )
    if len(truth) == 0:
        raise ValueError("no samples: metrics of an empty evaluation are undefined")
    names = _checked_labels(set(truth) | set(predicted), labels)
    confusion = _confusion(truth, predicted, names)

    hits = np.diag(confusion).astype(np.float64)
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    precision = _ratio(hits, predicted_counts)
    recall = _ratio(hits, true_counts)
    # 2TP / (true + predicted) is 2PR / (P + R) without the 0/0 when TP == 0, and the form
    # scikit-learn computes, so the two agree to the last bit rather than to rounding.
    f1 = _ratio(2 * hits, true_counts + predicted_counts)
    return ClassificationMetrics(
        samples=len(truth),
        accuracy=float(hits.sum() / len(truth)),
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        per_class_recall={name: float(r) for name, r in zip(names, recall)},
        labels=names,
        confusion=confusion.tolist(),
    )


def _checked_labels(seen: set[str], labels: Sequence[str] | None) -> list[str]:
    """The label order: `labels` after checking it covers `seen`, else `seen` sorted."""
    strays = sorted((repr(name) for name in seen if not isinstance(name, str)))
    if strays:
        raise TypeError(f"class names must be strings, not {', '.join(strays)}")
    if labels is None:
        return sorted(seen, key=natural_key)
    names = list(labels)
    twice = sorted((name for name, n in Counter(names).items() if n > 1), key=natural_key)
    if twice:
        raise ValueError(f"labels lists {_listed(twice)} more than once")
    missing = sorted(seen.difference(names), key=natural_key)
    if missing:
        raise ValueError(f"labels lacks {_listed(missing)}, found in truth or predicted")
    return names


def _confusion(truth: Sequence[str], predicted: Sequence[str], names: list[str]) -> np.ndarray:
    """The k x k confusion matrix, by one bincount over the (true, predicted) pair codes."""
    code = {name: i for i, name in enumerate(names)}
    count = len(truth)
    true_codes = np.fromiter(map(code.__getitem__, truth), dtype=np.int64, count=count)
    predicted_codes = np.fromiter(map(code.__getitem__, predicted), dtype=np.int64, count=count)
    k = len(names)
    pairs = np.bincount(true_codes * k + predicted_codes, minlength=k * k)
    return pairs.reshape(k, k)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _listed(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def voc_map(
    truth: Sequence[Sequence[GroundTruthBox]],
    detections: Sequence[Sequence[DetectedBox]],
    iou_threshold: float = 0.5,
) -> DetectionMetrics:
    """Pascal VOC mean average precision (VOC2010+ rule, all-point interpolation).

    Per class, the detections of all images are ranked by score, highest first; equal scores
    keep image order, then input order, so the result is deterministic. Each detection is
    compared with the ground-truth box of its class and image that it overlaps most (the
    first such box on a tie). With IoU >= `iou_threshold` it is ignored if that box is
    difficult, a true positive if the box is not matched yet (the box becomes matched), else a
    false positive (a duplicate); below the threshold it is a false positive. AP is the area
    under the precision/recall curve after making precision non-increasing from the right, as
    in the devkit's `voc_ap(use_07_metric=False)`. A class with ground truth and no detections
    has AP 0.

    Coordinates are continuous: IoU is the intersection over the union of the rectangles, with
    no "+1" pixel convention (the devkit's 1-based pixel boxes add 1 to widths and heights,
    which moves IoU slightly for small boxes). Zero-area boxes are allowed and overlap nothing.
    The devkit matches on IoU > 0.5; here it is >=, so a box at exactly the threshold counts.

    Args:
        truth: per image, its ground-truth boxes.
        detections: per image, the same images in the same order, its detections.
        iou_threshold: the IoU a detection needs to match, in (0, 1].

    Raises:
        ValueError: a different number of images, a threshold outside (0, 1], a box with
            xmax < xmin or ymax < ymin (or a NaN coordinate), or a NaN score.
    """
    if len(truth) != len(detections):
        raise ValueError(
            f"truth has {len(truth)} images but detections has {len(detections)}: "
            "they must be the same images in the same order"
        )
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], not {iou_threshold!r}")
    for image, boxes in enumerate(truth):
        _check_boxes(image, boxes, "ground-truth")
    for image, found in enumerate(detections):
        _check_boxes(image, found, "detected")
        for box in found:
            if math.isnan(box.score):
                raise ValueError(f"image {image}: detected box {box!r} has a NaN score")

    truth_by_class = _by_class(truth)
    found_by_class = _by_class(detections)
    aps: dict[str, float] = {}
    recalls: dict[str, float] = {}
    positives = 0
    for label in sorted(truth_by_class):
        per_image = truth_by_class[label]
        npos = sum(not box.difficult for boxes in per_image.values() for box in boxes)
        if npos == 0:  # only difficult boxes: nothing to find, so no AP (as in the devkit)
            continue
        positives += npos
        outcomes = _outcomes(per_image, found_by_class.get(label, {}), iou_threshold)
        aps[label], recalls[label] = _average_precision(outcomes, npos)
    return DetectionMetrics(
        images=len(truth),
        map50=float(np.mean(list(aps.values()))) if aps else 0.0,
        per_class_ap=aps,
        per_class_recall=recalls,
        detections=sum(len(found) for found in detections),
        ground_truth=positives,
    )


def _check_boxes(image: int, boxes: Sequence[Box], kind: str) -> None:
    for box in boxes:
        # Written as "not <=" so that NaN coordinates fail too.
        if not (box.xmin <= box.xmax and box.ymin <= box.ymax):
            raise ValueError(
                f"image {image}: {kind} box {box!r} is degenerate "
                "(needs xmin <= xmax and ymin <= ymax)"
            )


def _by_class(images: Sequence[Sequence[B]]) -> dict[str, dict[int, list[B]]]:
    """label -> image index -> that image's boxes of the label, in input order."""
    grouped: dict[str, dict[int, list[B]]] = {}
    for image, boxes in enumerate(images):
        for box in boxes:
            grouped.setdefault(box.label, {}).setdefault(image, []).append(box)
    return grouped


def _outcomes(
    truth: dict[int, list[GroundTruthBox]],
    found: dict[int, list[DetectedBox]],
    iou_threshold: float,
) -> np.ndarray:
    """One class's detections, in rank order: 1 true positive, 0 false positive, dropped if
    ignored (matched a difficult box)."""
    # Which box each detection overlaps most depends on nothing but the two images' boxes, so
    # it is one IoU matrix per image; only the "already matched" state needs rank order.
    images: list[int] = []
    scores: list[float] = []
    best: list[int] = []  # index into the image's ground truth, -1 if below the threshold
    for image in sorted(found):
        boxes = found[image]
        gts = truth.get(image, [])
        images.extend([image] * len(boxes))
        scores.extend(box.score for box in boxes)
        if not gts:
            best.extend([-1] * len(boxes))
            continue
        iou = _iou(_corners(boxes), _corners(gts))
        nearest = iou.argmax(axis=1)  # the first of equal overlaps, like the devkit's argmax
        hit = iou[np.arange(len(boxes)), nearest] >= iou_threshold
        best.extend(np.where(hit, nearest, -1).tolist())

    # A stable sort on -score keeps the (image, input) order the lists were built in.
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    matched: set[tuple[int, int]] = set()
    outcomes: list[int] = []
    for i in order.tolist():
        image, gt = images[i], best[i]
        if gt < 0:
            outcomes.append(0)
        elif truth[image][gt].difficult:
            continue
        elif (image, gt) in matched:
            outcomes.append(0)
        else:
            matched.add((image, gt))
            outcomes.append(1)
    return np.asarray(outcomes, dtype=np.int64)


def _corners(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([(b.xmin, b.ymin, b.xmax, b.ymax) for b in boxes], dtype=np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (m x 4) with every box of `b` (n x 4): an m x n matrix."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    # Two zero-area boxes have union 0; they overlap nothing rather than dividing by zero.
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _average_precision(outcomes: np.ndarray, positives: int) -> tuple[float, float]:
    """(AP, final recall) of ranked outcomes against `positives` boxes to find."""
    if len(outcomes) == 0:
        return 0.0, 0.0
    tp = np.cumsum(outcomes)
    recall = tp / positives
    precision = tp / np.arange(1, len(outcomes) + 1)
    # The devkit's voc_ap: sentinels at both ends, precision made non-increasing from the
    # right, then precision times the width of every step in recall.
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    ap = float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    return ap, float(recall[-1])
