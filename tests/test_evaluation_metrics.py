"""The evaluation metrics of jointserve.evaluation._metrics, against independent answers.

Classification is checked against scikit-learn on seeded random cases chosen to hit the
zero_division corners (classes only predicted, only true, a single class, a given label order)
and on a small case computed by hand. Detection is checked on hand-computed cases, each built
so that the obvious wrong rule gets a different number (a duplicate counted as TP, a difficult
box counted as a miss, IoU > instead of >=, matching any overlapping box instead of the best),
and against a loop-by-loop reference written below from the VOC devkit's description.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from jointserve.evaluation._metrics import (
    ClassificationMetrics,
    DetectedBox,
    DetectionMetrics,
    GroundTruthBox,
    classification_metrics,
    natural_key,
    voc_map,
)

# --- classification -------------------------------------------------------------------------


def assert_matches_sklearn(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> ClassificationMetrics:
    got = classification_metrics(truth, predicted, labels)
    seen = set(truth) | set(predicted)
    order = list(labels) if labels is not None else sorted(seen, key=natural_key)
    assert got.labels == order
    assert got.samples == len(truth)
    p, r, f, _ = precision_recall_fscore_support(
        truth, predicted, labels=order, average="macro", zero_division=0
    )
    _, per_r, _, _ = precision_recall_fscore_support(
        truth, predicted, labels=order, average=None, zero_division=0
    )
    assert got.accuracy == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)
    assert got.macro_precision == pytest.approx(p, abs=1e-12)
    assert got.macro_recall == pytest.approx(r, abs=1e-12)
    assert got.macro_f1 == pytest.approx(f, abs=1e-12)
    assert list(got.per_class_recall) == order
    assert list(got.per_class_recall.values()) == pytest.approx(per_r.tolist(), abs=1e-12)
    assert got.confusion == confusion_matrix(truth, predicted, labels=order).tolist()
    return got


def names(codes: np.ndarray) -> list[str]:
    return [f"c{code}" for code in codes.tolist()]


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    k = int(rng.integers(2, 9))
    truth = rng.integers(0, k, n)
    # Mostly right, so that precision and recall are far from both 0 and 1.
    predicted = np.where(rng.random(n) < 0.6, truth, rng.integers(0, k, n))
    assert_matches_sklearn(names(truth), names(predicted))


def test_classes_only_predicted_and_only_true() -> None:
    rng = np.random.default_rng(7)
    truth = names(rng.integers(0, 4, 300))  # c0..c3 true
    predicted = names(rng.integers(2, 7, 300))  # c2..c6 predicted: c0, c1 never, c4..c6 only
    got = assert_matches_sklearn(truth, predicted)
    assert got.labels == [f"c{i}" for i in range(7)]
    assert got.per_class_recall["c5"] == 0.0  # never true
    assert got.per_class_recall["c0"] == 0.0  # true but never predicted


def test_single_class() -> None:
    got = assert_matches_sklearn(["a"] * 5, ["a"] * 5)
    assert (got.accuracy, got.macro_f1, got.confusion) == (1.0, 1.0, [[5]])


def test_given_label_order_with_an_extra_class() -> None:
    rng = np.random.default_rng(11)
    truth = names(rng.integers(0, 3, 200))
    predicted = names(rng.integers(0, 3, 200))
    # An unseen class counts in the macro averages (P = R = F1 = 0), as in scikit-learn.
    got = assert_matches_sklearn(truth, predicted, labels=["c2", "zz", "c0", "c1"])
    assert got.labels == ["c2", "zz", "c0", "c1"]
    assert got.per_class_recall["zz"] == 0.0


def test_hand_computed_case() -> None:
    truth = ["cat", "cat", "cat", "dog", "dog", "bird"]
    predicted = ["cat", "cat", "dog", "dog", "cat", "dog"]
    got = classification_metrics(truth, predicted)
    assert got.labels == ["bird", "cat", "dog"]
    assert got.confusion == [[0, 0, 1], [0, 2, 1], [0, 1, 1]]
    assert got.accuracy == pytest.approx(3 / 6)
    # bird: P 0 (never predicted), R 0; cat: P 2/3, R 2/3; dog: P 1/3, R 1/2.
    assert got.macro_precision == pytest.approx((0 + 2 / 3 + 1 / 3) / 3)
    assert got.macro_recall == pytest.approx((0 + 2 / 3 + 1 / 2) / 3)
    dog_f1 = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert got.macro_f1 == pytest.approx((0 + 2 / 3 + dog_f1) / 3)
    assert got.per_class_recall == pytest.approx({"bird": 0.0, "cat": 2 / 3, "dog": 0.5})


def test_natural_label_order() -> None:
    seen = ["10", "2", "b", "-1", "1.5", "A", "01", "1", "x2"]
    got = classification_metrics(seen, seen)
    assert got.labels == ["-1", "01", "1", "1.5", "2", "10", "A", "b", "x2"]
    assert got.accuracy == 1.0


def test_hundred_thousand_samples_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    truth = names(rng.integers(0, 10, 100_000))
    predicted = names(rng.integers(0, 10, 100_000))
    assert_matches_sklearn(truth, predicted)


@pytest.mark.parametrize(
    ("truth", "predicted", "labels", "message"),
    [
        ([], [], None, "no samples"),
        (["a", "b"], ["a"], None, "truth has 2 samples but predicted has 1"),
        (["a", "b"], ["a", "c"], ["a"], "labels lacks 'b', 'c'"),
        (["a"], ["a"], ["a", "b", "a"], "'a' more than once"),
    ],
)
def test_bad_input_is_a_value_error(
    truth: list[str], predicted: list[str], labels: list[str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(truth, predicted, labels)


def test_non_string_class_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be strings"):
        classification_metrics([1, 2], ["1", "2"])  # type: ignore[list-item]


# --- detection ------------------------------------------------------------------------------


def gt(
    label: str, x0: float, y0: float, x1: float, y1: float, difficult: bool = False
) -> GroundTruthBox:
    return GroundTruthBox(label, x0, y0, x1, y1, difficult)


def det(label: str, score: float, x0: float, y0: float, x1: float, y1: float) -> DetectedBox:
    return DetectedBox(label, score, x0, y0, x1, y1)


def test_perfect_detections() -> None:
    truth = [[gt("car", 0, 0, 10, 10), gt("dog", 20, 20, 30, 40)], [gt("car", 5, 5, 15, 15)]]
    found = [[det("car", 0.9, 0, 0, 10, 10), det("dog", 0.8, 20, 20, 30, 40)],
             [det("car", 0.7, 5, 5, 15, 15)]]
    got = voc_map(truth, found)
    assert got == DetectionMetrics(
        images=2, map50=1.0, per_class_ap={"car": 1.0, "dog": 1.0},
        per_class_recall={"car": 1.0, "dog": 1.0}, detections=3, ground_truth=3,
    )


def test_false_positive_ranked_above_a_true_positive() -> None:
    truth = [[gt("a", 0, 0, 10, 10)], [gt("a", 0, 0, 10, 10)]]
    # Ranks: TP (0.9), FP (0.8), TP (0.7): recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # AP = 1/2 * 1 + 1/2 * 2/3 (the FP's 1/2 is lifted to 2/3 from the right).
    found = [[det("a", 0.9, 0, 0, 10, 10), det("a", 0.8, 50, 50, 60, 60)],
             [det("a", 0.7, 0, 0, 10, 10)]]
    got = voc_map(truth, found)
    assert got.per_class_ap["a"] == pytest.approx(1 / 2 + 1 / 3)
    assert got.per_class_recall["a"] == 1.0
    # With the FP ranked last it costs nothing.
    found[0][1] = det("a", 0.1, 50, 50, 60, 60)
    assert voc_map(truth, found).map50 == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive() -> None:
    truth = [[gt("a", 0, 0, 10, 10)], [gt("a", 0, 0, 10, 10)]]
    found = [[det("a", 0.9, 0, 0, 10, 10), det("a", 0.8, 0, 0, 10, 10)],
             [det("a", 0.7, 0, 0, 10, 10)]]
    got = voc_map(truth, found)
    assert got.map50 == pytest.approx(1 / 2 + 1 / 3)  # as if the duplicate were elsewhere
    assert got.detections == 3


def test_difficult_ground_truth_is_ignored() -> None:
    truth = [[gt("a", 0, 0, 10, 10, difficult=True), gt("a", 50, 50, 60, 60)]]
    # The top detection finds the difficult box: neither TP (AP stays 1) nor FP (AP not 1/2).
    found = [[det("a", 0.9, 0, 0, 10, 10), det("a", 0.8, 50, 50, 60, 60)]]
    got = voc_map(truth, found)
    assert (got.map50, got.ground_truth, got.per_class_recall) == (1.0, 1, {"a": 1.0})
    # Left undetected, the difficult box is not a miss either.
    assert voc_map(truth, [[found[0][1]]]).per_class_recall == {"a": 1.0}


def test_class_with_only_difficult_ground_truth_is_not_in_the_mean() -> None:
    truth = [[gt("a", 0, 0, 10, 10), gt("b", 20, 20, 30, 30, difficult=True)]]
    found = [[det("a", 0.9, 0, 0, 10, 10)]]
    got = voc_map(truth, found)
    assert (got.map50, got.per_class_ap, got.ground_truth) == (1.0, {"a": 1.0}, 1)


@pytest.mark.parametrize(
    ("ymax", "threshold", "ap"),
    [
        (5.0, 0.5, 1.0),  # IoU exactly 0.5: a match (>=)
        (4.999, 0.5, 0.0),  # just below
        (7.0, 0.7, 1.0),
        (6.999, 0.7, 0.0),
    ],
)
def test_iou_at_the_threshold(ymax: float, threshold: float, ap: float) -> None:
    # Inside a 10 x 10 box, a 10 x ymax box has IoU ymax / 10.
    got = voc_map([[gt("a", 0, 0, 10, 10)]], [[det("a", 0.9, 0, 0, 10, ymax)]], threshold)
    assert got.map50 == ap


def test_two_classes_are_averaged() -> None:
    truth = [[gt("cat", 0, 0, 10, 10), gt("dog", 20, 20, 30, 30)]]
    found = [[det("dog", 0.9, 60, 60, 70, 70), det("dog", 0.8, 20, 20, 30, 30),
              det("cat", 0.7, 0, 0, 10, 10)]]
    got = voc_map(truth, found)
    assert got.per_class_ap == {"cat": 1.0, "dog": 0.5}
    assert got.map50 == 0.75


def test_class_without_ground_truth_counts_only_as_detections() -> None:
    truth = [[gt("cat", 0, 0, 10, 10)], [gt("dog", 0, 0, 10, 10)]]
    found = [[det("cat", 0.9, 0, 0, 10, 10), det("bird", 0.99, 0, 0, 10, 10)], []]
    got = voc_map(truth, found)
    assert got.per_class_ap == {"cat": 1.0, "dog": 0.0}  # dog: ground truth, no detections
    assert got.per_class_recall == {"cat": 1.0, "dog": 0.0}
    assert (got.map50, got.detections, got.ground_truth, got.images) == (0.5, 2, 2, 2)


def test_no_ground_truth_at_all() -> None:
    got = voc_map([[], []], [[det("a", 0.5, 0, 0, 1, 1)], []])
    assert got == DetectionMetrics(2, 0.0, {}, {}, detections=1, ground_truth=0)
    assert voc_map([], []).map50 == 0.0


def test_detection_matches_the_box_it_overlaps_most() -> None:
    # Two overlapping ground-truth boxes; both detections overlap `near` most (IoU 1 and 0.8)
    # and `far` at >= 0.5 too. The second is a duplicate of `near`, not a match for `far`.
    near, far = gt("a", 0, 0, 10, 10), gt("a", 0, 0, 10, 8)
    found = [[det("a", 0.9, 0, 0, 10, 10), det("a", 0.8, 0, 0, 10, 10)]]
    got = voc_map([[far, near]], found)
    assert got.per_class_recall == {"a": 0.5}
    assert got.per_class_ap == {"a": 0.5}
    # Each detection is one box exactly and the other at IoU 0.6: best overlap finds both,
    # whereas "the first box over the threshold" would give `far` to both.
    found = [[det("a", 0.9, 0, 0, 10, 8), det("a", 0.8, 0, 0, 10, 10)]]
    far, near = gt("a", 0, 0, 10, 10), gt("a", 0, 0, 10, 8)
    assert voc_map([[far, near]], found).per_class_ap == {"a": 1.0}


def test_equal_scores_rank_by_image_then_input_order() -> None:
    truth = [[gt("a", 0, 0, 10, 10)], [gt("a", 0, 0, 10, 10)]]
    # All at 0.5: image 0's FP, image 0's TP, image 1's TP -> precision 0, 1/2, 2/3.
    found = [[det("a", 0.5, 50, 50, 60, 60), det("a", 0.5, 0, 0, 10, 10)],
             [det("a", 0.5, 0, 0, 10, 10)]]
    assert voc_map(truth, found).map50 == pytest.approx(2 / 3)
    found.reverse()
    truth.reverse()  # now image 0 has only a TP: precision 1, 1/2, 2/3
    assert voc_map(truth, found).map50 == pytest.approx(1 / 2 + 1 / 3)


def test_bad_detection_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="truth has 1 images but detections has 2"):
        voc_map([[]], [[], []])
    with pytest.raises(ValueError, match=r"image 1: ground-truth box .*xmin=5.*degenerate"):
        voc_map([[], [gt("a", 5, 0, 4, 10)]], [[], []])
    with pytest.raises(ValueError, match=r"image 0: detected box .*degenerate"):
        voc_map([[]], [[det("a", 0.5, 0, 3, 1, 2)]])
    with pytest.raises(ValueError, match="NaN score"):
        voc_map([[]], [[det("a", float("nan"), 0, 0, 1, 1)]])
    with pytest.raises(ValueError, match="iou_threshold"):
        voc_map([[]], [[]], iou_threshold=0.0)


def reference_voc_map(
    truth: Sequence[Sequence[GroundTruthBox]],
    detections: Sequence[Sequence[DetectedBox]],
    threshold: float,
) -> dict[str, float]:
    """Per-class AP the devkit's way: one detection, one ground-truth box at a time."""

    def iou(d: DetectedBox, g: GroundTruthBox) -> float:
        w = max(0.0, min(d.xmax, g.xmax) - max(d.xmin, g.xmin))
        h = max(0.0, min(d.ymax, g.ymax) - max(d.ymin, g.ymin))
        area_d = (d.xmax - d.xmin) * (d.ymax - d.ymin)
        area_g = (g.xmax - g.xmin) * (g.ymax - g.ymin)
        union = area_d + area_g - w * h
        return w * h / union if union > 0 else 0.0

    aps = {}
    for label in sorted({g.label for boxes in truth for g in boxes}):
        npos = sum(1 for boxes in truth for g in boxes if g.label == label and not g.difficult)
        if npos == 0:
            continue
        ranked = [
            (d, image) for image, found in enumerate(detections) for d in found if d.label == label
        ]
        ranked.sort(key=lambda pair: -pair[0].score)  # stable: image, then input order
        matched: set[tuple[int, int]] = set()
        tp: list[float] = []
        fp: list[float] = []
        for d, image in ranked:
            gts = [(j, g) for j, g in enumerate(truth[image]) if g.label == label]
            best, best_iou = -1, -1.0
            for j, g in gts:
                if iou(d, g) > best_iou:
                    best, best_iou = j, iou(d, g)
            if gts and best_iou >= threshold:
                if truth[image][best].difficult:
                    tp.append(0.0)
                    fp.append(0.0)
                elif (image, best) not in matched:
                    matched.add((image, best))
                    tp.append(1.0)
                    fp.append(0.0)
                else:
                    tp.append(0.0)
                    fp.append(1.0)
            else:
                tp.append(0.0)
                fp.append(1.0)
        ctp = np.cumsum(tp)
        cfp = np.cumsum(fp)
        rec = ctp / npos
        prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        # voc_ap(use_07_metric=False), as in the devkit.
        mrec = [0.0, *rec.tolist(), 1.0]
        mpre = [0.0, *prec.tolist(), 0.0]
        for i in range(len(mpre) - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        aps[label] = sum(
            (mrec[i + 1] - mrec[i]) * mpre[i + 1]
            for i in range(len(mrec) - 1)
            if mrec[i + 1] != mrec[i]
        )
    return aps


def random_case(
    rng: np.random.Generator, images: int
) -> tuple[list[list[GroundTruthBox]], list[list[DetectedBox]]]:
    labels = ["a", "b", "c"]
    truth: list[list[GroundTruthBox]] = []
    found: list[list[DetectedBox]] = []
    for _ in range(images):
        boxes = []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, 80, 2)
            w, h = rng.uniform(4, 30, 2)
            boxes.append(gt(str(rng.choice(labels)), x, y, x + w, y + h, bool(rng.random() < 0.15)))
        dets = []
        for g in boxes:
            # Zero to two jittered copies of each box (duplicates, near misses), sometimes
            # with the wrong label.
            for _ in range(int(rng.integers(0, 3))):
                jx0, jy0, jx1, jy1 = rng.normal(0, 3, 4)
                x0, y0 = g.xmin + jx0, g.ymin + jy0
                label = g.label if rng.random() < 0.85 else str(rng.choice(labels))
                dets.append(det(label, 0, x0, y0, max(x0, g.xmax + jx1), max(y0, g.ymax + jy1)))
        for _ in range(int(rng.integers(0, 3))):  # background false positives
            x, y = rng.uniform(0, 80, 2)
            dets.append(det(str(rng.choice(labels)), 0, x, y, x + 10, y + 10))
        order = rng.permutation(len(dets))
        # Scores on a coarse grid, so that ties (and their ordering rule) are exercised.
        scores = rng.integers(0, 10, len(dets)) / 10
        found.append([
            det(d.label, float(s), d.xmin, d.ymin, d.xmax, d.ymax)
            for d, s in zip((dets[i] for i in order.tolist()), scores.tolist())
        ])
        truth.append(boxes)
    return truth, found


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.5, 0.75])
def test_random_cases_match_the_devkit_reference(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    truth, found = random_case(rng, images=int(rng.integers(1, 40)))
    got = voc_map(truth, found, threshold)
    expected = reference_voc_map(truth, found, threshold)
    assert list(got.per_class_ap) == list(expected)
    assert got.per_class_ap == pytest.approx(expected, abs=1e-12)
    mean = float(np.mean(list(expected.values()))) if expected else 0.0
    assert got.map50 == pytest.approx(mean, abs=1e-12)
    assert got.detections == sum(map(len, found))
    assert got.ground_truth == sum(not g.difficult for boxes in truth for g in boxes)
