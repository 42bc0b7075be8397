"""An offload budget: the score cut that sends a wanted share of inputs to the cloud.

A policy's own threshold is a guess at a share: `MaxProb` at 0.6 may send 5% of one data
set's inputs to the cloud and 60% of another's. With a budget, the operator scores a Dataset
with the policy (`score`: higher = harder) and cuts where the wanted share lies above:

    cutoff_for(scores, 0.2)  ->  Cutoff(threshold=t, at_threshold=q)
    hard  <=>  score > t,  or  score == t  with probability q

Ties matter: an edge model whose probabilities take few distinct values gives many inputs
the same score, and a plain `score > t` would then send far more or far fewer than wanted.
Sending exactly the right share of the tied inputs (at random) meets the budget in
expectation on the Dataset, and on new data drawn like it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._policies import HemDecision, HemPolicy


@dataclass(frozen=True)
class Cutoff:
    """Hard above `threshold`; of the inputs scoring exactly `threshold`, a share
    `at_threshold` (0..1) is hard."""

    threshold: float
    at_threshold: float = 0.0

    def hard_share(self, scores: np.ndarray) -> np.ndarray:
        """Per score, the probability that an input scoring it is sent to the cloud."""
        return np.where(scores > self.threshold, 1.0,
                        np.where(scores == self.threshold, self.at_threshold, 0.0))


def cutoff_for(scores: Sequence[float] | np.ndarray, ratio: float) -> Cutoff:
    """The cut that sends round(ratio * n) of the n `scores` to the cloud (in expectation:
    the tied scores at the threshold are split at random). ValueError without scores or with
    a ratio outside [0, 1]."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("an offload budget needs at least one finite score")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"cloudRatio must be within [0, 1] (got {ratio})")
    wanted = int(math.floor(ratio * values.size + 0.5))
    ordered = np.sort(values)[::-1]  # hardest first
    if wanted == 0:
        return Cutoff(float(ordered[0]), 0.0)  # nothing above the top score; none of its ties
    threshold = float(ordered[wanted - 1])
    above = int(np.count_nonzero(values > threshold))
    tied = int(np.count_nonzero(values == threshold))
    return Cutoff(threshold, (wanted - above) / tied)


@dataclass(frozen=True)
class Adapt:
    """Hold the share of hard inputs at `target` online: after each decision the threshold
    moves by step * (hard - target) (up after a hard one, down after an easy one: a running
    quantile), never past [low, high]."""

    target: float
    low: float
    high: float
    step: float

    @classmethod
    def around(cls, cutoff: Cutoff, target: float, spread: float) -> "Adapt":
        """Within `spread` of the calibrated threshold, in steps of spread / 200."""
        return cls(target, cutoff.threshold - spread, cutoff.threshold + spread, spread / 200)


class Budgeted:
    """`inner`'s score, cut by `cutoff` instead of `inner`'s own threshold. `seed` fixes the
    draws for ties (an evaluation is then repeatable); None: a fresh generator. `adapt`:
    the threshold follows the traffic to hold the share (`threshold` is where it is now)."""

    def __init__(self, inner: HemPolicy, cutoff: Cutoff, seed: int | None = None,
                 adapt: Adapt | None = None) -> None:
        self.inner = inner
        self.cutoff = cutoff
        self.threshold = cutoff.threshold
        self._adapt = adapt
        self._rng = random.Random(seed)

    def __call__(self, edge_output: np.ndarray,
                 model_input: np.ndarray | None = None) -> HemDecision:
        score = self.inner(edge_output, model_input).score
        threshold, at = self.threshold, self.cutoff.at_threshold
        hard = score > threshold or (score == threshold and at > 0.0 and self._rng.random() < at)
        if self._adapt is not None:
            adapt = self._adapt
            moved = threshold + adapt.step * ((1.0 if hard else 0.0) - adapt.target)
            self.threshold = min(adapt.high, max(adapt.low, moved))
        return HemDecision(hard=hard, score=score)


class ScoreOnly:
    """`inner`'s score, never hard: scoring a Dataset without calling the cloud."""

    def __init__(self, inner: HemPolicy) -> None:
        self.inner = inner

    def __call__(self, edge_output: np.ndarray,
                 model_input: np.ndarray | None = None) -> HemDecision:
        return HemDecision(hard=False, score=self.inner(edge_output, model_input).score)
