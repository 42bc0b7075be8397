"""routing's offload budget: the cut that sends a wanted share of scores to the cloud, ties
included, and the policy wrapper the gateway applies it with. Pure numpy, seeded draws."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jointserve.api import Calibration, HardExampleMining
from jointserve.gateway._service import _policy
from jointserve.routing import (
    Adapt,
    Budgeted,
    Cutoff,
    HemDecision,
    ScoreOnly,
    build_policy,
    cutoff_for,
)


def realised(cutoff: Cutoff, scores: np.ndarray, seed: int = 0) -> float:
    """The share of `scores` a Budgeted policy with `cutoff` sends to the cloud."""
    policy = Budgeted(_Score(), cutoff, seed=seed)
    return float(np.mean([policy(np.array([s])).hard for s in scores]))


class _Score:
    """A policy whose score is its input's one value."""

    def __call__(self, edge_output: np.ndarray, model_input: np.ndarray | None = None) -> HemDecision:
        return HemDecision(hard=False, score=float(edge_output[0]))


def test_distinct_scores_are_cut_at_the_kth_hardest() -> None:
    scores = np.random.default_rng(1).random(1000)
    cut = cutoff_for(scores, 0.2)
    assert cut.at_threshold == 1.0  # the 200th hardest is the threshold, and it is in
    assert np.count_nonzero(scores > cut.threshold) == 199
    assert float(cut.hard_share(scores).mean()) == 0.2
    assert realised(cut, scores) == 0.2


def test_tied_scores_are_split_to_meet_the_share() -> None:
    # A weak edge model: its scores take three values; 0.5 is half the data.
    scores = np.array([0.9] * 100 + [0.5] * 500 + [0.1] * 400)
    cut = cutoff_for(scores, 0.3)
    assert (cut.threshold, cut.at_threshold) == (0.5, pytest.approx(200 / 500))
    assert float(cut.hard_share(scores).mean()) == pytest.approx(0.3)
    # A plain `score > t` or `>= t` would send 10% or 60%.
    assert np.mean(scores > cut.threshold) == 0.1 and np.mean(scores >= cut.threshold) == 0.6


def test_a_cut_calibrated_on_one_split_holds_on_another() -> None:
    """Few distinct scores, calibrated on 2,000 draws, applied to 20,000 others."""
    rng = np.random.default_rng(7)
    values, weights = np.array([0.05, 0.2, 0.4, 0.7]), np.array([0.55, 0.25, 0.15, 0.05])
    calibration, test = (rng.choice(values, size=n, p=weights) for n in (2000, 20000))
    for budget in (0.1, 0.2, 0.3):
        cut = cutoff_for(calibration, budget)
        assert abs(realised(cut, test, seed=3) - budget) < 0.02, budget


@pytest.mark.parametrize(("ratio", "hard"), [(0.0, 0), (1.0, 5), (0.5, 3), (0.49, 2)])
def test_the_ends_and_rounding(ratio: float, hard: int) -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    cut = cutoff_for(scores, ratio)
    assert int(cut.hard_share(scores).sum()) == hard


@pytest.mark.parametrize(("scores", "ratio", "message"), [
    ([], 0.2, "at least one finite score"),
    ([0.1, float("nan")], 0.2, "at least one finite score"),
    ([0.1], 1.5, "cloudRatio must be within [0, 1] (got 1.5)"),
])
def test_bad_input_is_named(scores: list, ratio: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cutoff_for(scores, ratio)


def test_score_only_never_sends_and_keeps_the_score() -> None:
    inner = build_policy("MaxProb", {"threshold": 0.99})
    decision = ScoreOnly(inner)(np.array([0.7, 0.2, 0.1], np.float32))
    assert decision.hard is False
    assert decision.score == pytest.approx(inner(np.array([0.7, 0.2, 0.1], np.float32)).score)


def test_the_gateway_applies_a_calibration_instead_of_the_threshold() -> None:
    hem = HardExampleMining(name="MaxProb", parameters={"threshold": 0.5},
                            budget={"cloudRatio": 0.2, "dataset": "d"})
    probs = np.array([0.6, 0.3, 0.1], np.float32)  # score 0.4
    assert _policy(hem, None)(probs).hard is False  # 0.6 >= threshold 0.5: easy
    calibration = Calibration(policy="MaxProb", threshold=0.3, atThreshold=0.0, budget=0.2,
                              cloudRatio=0.2, dataset="d", datasetSha256="0" * 64, samples=10,
                              edgeVersion="v1", cloudVersion="v1", settingsDigest="x",
                              calibratedAt="2026-12-02T00:00:00Z")
    assert _policy(hem, calibration)(probs).hard is True  # score 0.4 > cut 0.3


# -- holding the share online (adapt) -----------------------------------------------------------


def test_adapt_holds_the_share_when_the_traffic_drifts() -> None:
    rng = np.random.default_rng(11)
    cut = cutoff_for(rng.random(2000), 0.2)  # calibrated on uniform scores: cut near 0.8
    drifted = np.clip(rng.random(30000) + 0.1, 0, 1)  # live inputs are harder than the Dataset
    fixed = Budgeted(_Score(), cut, seed=1)
    adapting = Budgeted(_Score(), cut, seed=1, adapt=Adapt.around(cut, 0.2, 0.2))
    sent = {name: [p(np.array([s])).hard for s in drifted]
            for name, p in (("fixed", fixed), ("adapt", adapting))}
    assert np.mean(sent["fixed"]) > 0.27  # the calibrated cut alone overshoots
    assert abs(np.mean(sent["adapt"][10000:]) - 0.2) < 0.02
    assert cut.threshold < adapting.threshold <= cut.threshold + 0.2


def test_adapt_never_leaves_its_range() -> None:
    cut = Cutoff(0.5)
    adapting = Budgeted(_Score(), cut, adapt=Adapt.around(cut, 0.2, 0.05))
    for _ in range(5000):  # every input scores 0.9: all hard, however far the cut moves
        adapting(np.array([0.9]))
    assert adapting.threshold == pytest.approx(0.55)
