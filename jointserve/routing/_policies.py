"""Hard example mining (HEM): does the edge model's answer need the cloud model?

Each policy looks at one edge output and returns a `HemDecision` (hard or not, and a score
where higher means harder). Policies are chosen by name with parameters from the
JointInferenceService resource; unknown names and bad parameters are errors naming the field.

Sedna-compatible policies keep Sedna's names, parameters and rules
(sedna/algorithms/hard_example_mining/hard_example_mining.py) so its users can move over:
`ThresholdFilter`, `CrossEntropyFilter`, `IBTFilter` (detections: rows of
[x1, y1, x2, y2, score, label]) and `RandomFilter`. `MaxProb`, `Margin` and `Entropy` are the
usual uncertainty rules for classifiers' probability vectors; `EdgeOnly` and `CloudOnly` pin
every input to one tier. `LearnedRouter` scores with a small classifier trained on a Dataset
to predict "the cloud would fix this answer" (routing._learned).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


@dataclass(frozen=True)
class HemDecision:
    hard: bool
    score: float  # higher = harder; comparable within one policy only


class HemPolicy(Protocol):
    """One edge output in (a probability vector, or detection rows), one decision out.
    `model_input`: the edge model's input for that row (after the preprocess steps), for a
    policy that reads it (a LearnedRouter trained on input features); the others ignore it."""

    def __call__(self, edge_output: np.ndarray,
                 model_input: np.ndarray | None = None) -> HemDecision: ...


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    NAME: ClassVar[str]

    def __call__(self, edge_output: np.ndarray,
                 model_input: np.ndarray | None = None) -> HemDecision:
        return self.judge(edge_output)

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        raise NotImplementedError


class ThresholdFilter(_Params):
    """Sedna: hard when no detection scores at least `threshold` (or there is none)."""

    NAME: ClassVar[str] = "ThresholdFilter"
    threshold: Fraction = 0.5

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        scores = _detection_scores(edge_output)
        best = float(scores.max()) if scores.size else 0.0
        return HemDecision(hard=best < self.threshold, score=1.0 - best)


class CrossEntropyFilter(_Params):
    """Sedna: confidence = 1 - H(p)/log(K); hard when it is below `threshold_cross_entropy`."""

    NAME: ClassVar[str] = "CrossEntropyFilter"
    threshold_cross_entropy: Fraction = 0.5

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        probs = _probabilities(edge_output)
        if probs.size == 0:
            return HemDecision(hard=True, score=1.0)
        confidence = 1.0 - _normalised_entropy(probs)
        return HemDecision(hard=confidence < self.threshold_cross_entropy, score=1.0 - confidence)


class IBTFilter(_Params):
    """Sedna image-box-threshold: hard when the share of boxes scoring at most `threshold_box`
    is at least 1 - `threshold_img` (or there is no box)."""

    NAME: ClassVar[str] = "IBTFilter"
    threshold_img: Fraction = 0.5
    threshold_box: Fraction = 0.5

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        scores = _detection_scores(edge_output)
        if scores.size == 0:
            return HemDecision(hard=True, score=1.0)
        low_share = float(np.mean(scores <= self.threshold_box))
        return HemDecision(hard=low_share >= 1.0 - self.threshold_img, score=low_share)


class RandomFilter(_Params):
    """Sedna: a random `random_ratio` of inputs are hard (a baseline for the others)."""

    NAME: ClassVar[str] = "RandomFilter"
    random_ratio: Fraction = 0.3
    seed: int | None = None
    _rng: random.Random = PrivateAttr()

    def model_post_init(self, _context: Any) -> None:
        self._rng = random.Random(self.seed)

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        draw = self._rng.random()
        return HemDecision(hard=draw < self.random_ratio, score=1.0 - draw)


class MaxProb(_Params):
    """Hard when the top class probability is below `threshold`."""

    NAME: ClassVar[str] = "MaxProb"
    threshold: Fraction = 0.9

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        # The array's own max, as it is: a float64 copy first cost more than the model call,
        # and np.max's dispatch wrapper alone ~1.5 µs a request.
        top = float(edge_output.max()) if edge_output.size else 0.0
        return HemDecision(hard=top < self.threshold, score=1.0 - top)


class Margin(_Params):
    """Hard when top-1 minus top-2 probability is below `threshold`."""

    NAME: ClassVar[str] = "Margin"
    threshold: Fraction = 0.5

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        probs = np.sort(_probabilities(edge_output))[::-1]
        margin = float(probs[0] - probs[1]) if probs.size > 1 else float(probs.sum())
        return HemDecision(hard=margin < self.threshold, score=1.0 - margin)


class Entropy(_Params):
    """Hard when the entropy, normalised to [0, 1] by log(K), is above `threshold`."""

    NAME: ClassVar[str] = "Entropy"
    threshold: Fraction = 0.3

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        entropy = _normalised_entropy(_probabilities(edge_output))
        return HemDecision(hard=entropy > self.threshold, score=entropy)


class EdgeOnly(_Params):
    """Never hard: the edge model answers everything."""

    NAME: ClassVar[str] = "EdgeOnly"

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        return HemDecision(hard=False, score=0.0)


class CloudOnly(_Params):
    """Always hard: every input goes on to the cloud model."""

    NAME: ClassVar[str] = "CloudOnly"

    def judge(self, edge_output: np.ndarray) -> HemDecision:
        return HemDecision(hard=True, score=1.0)


class LearnedRouter(_Params):
    """Hard when a small trained classifier (`jointserve train-router`) gives a probability
    above `threshold` that the cloud would fix the edge's answer; its score is that
    probability. Until a router is loaded (`load`), it scores as `Margin` does."""

    NAME: ClassVar[str] = "LearnedRouter"
    threshold: Fraction = 0.5
    _router: Any = PrivateAttr(None)
    _untrained: Margin = PrivateAttr(default_factory=Margin)

    def load(self, router: Any) -> "LearnedRouter":
        """Judge with `router` (routing._learned.RouterModel) from now on."""
        self._router = router
        return self

    @property
    def loaded(self) -> bool:
        return self._router is not None

    def __call__(self, edge_output: np.ndarray,
                 model_input: np.ndarray | None = None) -> HemDecision:
        if self._router is None:
            return self._untrained(edge_output)
        score = self._router.score(edge_output, model_input)
        return HemDecision(hard=score > self.threshold, score=score)


POLICIES: dict[str, type[_Params]] = {
    cls.NAME: cls
    for cls in (ThresholdFilter, CrossEntropyFilter, IBTFilter, RandomFilter, MaxProb, Margin,
                Entropy, EdgeOnly, CloudOnly, LearnedRouter)
}


def build_policy(name: str, parameters: dict[str, Any] | None = None,
                 router: Any = None) -> HemPolicy:
    """The policy `name` with `parameters` (a LearnedRouter with `router` loaded, if given);
    ValueError naming the field and rule otherwise."""
    cls = POLICIES.get(name)
    if cls is None:
        raise ValueError(f"hardExampleMining.name: must be one of {sorted(POLICIES)} (got {name!r})")
    try:
        policy = cls.model_validate(parameters or {})
        if router is not None and isinstance(policy, LearnedRouter):
            policy.load(router)
        return policy  # type: ignore[return-value]
    except ValidationError as exc:
        problems = [
            f"hardExampleMining.parameters.{'.'.join(map(str, e['loc']))}: "
            + ("unknown parameter for " + name if e["type"] == "extra_forbidden" else e["msg"].lower())
            for e in exc.errors()
        ]
        raise ValueError("; ".join(problems)) from None


def _probabilities(edge_output: np.ndarray) -> np.ndarray:
    return np.asarray(edge_output, dtype=np.float64).ravel()


def _normalised_entropy(probs: np.ndarray) -> float:
    if probs.size < 2:
        return 0.0
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum() / math.log(probs.size))


def _detection_scores(edge_output: np.ndarray) -> np.ndarray:
    rows = np.asarray(edge_output, dtype=np.float64)
    if rows.size == 0:
        return np.empty(0)
    return rows.reshape(-1, rows.shape[-1])[:, 4]
