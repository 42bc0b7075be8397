"""An offload budget for a JointInferenceService, and the calibration that meets it.

`hardExampleMining.budget: {cloudRatio: 0.2, dataset: NAME}` makes the operator score the
Dataset with the service's edge model and policy, and cut the policy's score where that
share of the samples lies above (`jointserve.routing.cutoff_for`; ties at the cut split at
random). The cut goes to the gateway in place of the policy's own threshold, and the status
says what it is expected to give on the Dataset: `status.calibration`.

The writer (the operator's evaluator), the gateway (which applies the cut) and every reader
use these classes.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ._common import DnsName, Strict
from ._evaluation import Unit


class OffloadBudget(Strict):
    """The share of inputs the cloud should see, the Dataset that calibrates it, and how
    the live share is held to it."""

    cloudRatio: Unit
    # A Dataset in the same namespace, drawn like the traffic (labels: for the expected
    # accuracy and PGR; without labels the ratio alone is calibrated).
    dataset: DnsName
    # The OffloadBudget condition turns False when the share of hard inputs over the last
    # windowSeconds (at least minSamples of them) is off cloudRatio by more than tolerance.
    tolerance: Unit = 0.05
    windowSeconds: Annotated[int, Field(ge=10, le=86400)] = 300
    minSamples: Annotated[int, Field(ge=1, le=10**9)] = 200
    # Nudge the cut in each gateway replica, a small step per input, to hold cloudRatio when
    # the traffic drifts from the Dataset (within adaptRange of the calibrated cut).
    adapt: bool = False
    adaptRange: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2


class RealisedOffload(Strict):
    """The share of inputs the gateways found hard over the budget's window."""

    cloudRatio: Unit
    samples: int = Field(ge=0)
    windowSeconds: int = Field(ge=0)  # the time the samples span (at most the window)


class Calibration(Strict):
    """The cut that meets the budget, and what it gave on the Dataset."""

    policy: str  # hardExampleMining.name scored
    # Hard when the policy's score is above threshold; of the inputs scoring exactly
    # threshold, a share atThreshold is hard (at random).
    threshold: float
    atThreshold: Unit
    budget: Unit  # the cloudRatio asked for
    cloudRatio: Unit  # expected on the Dataset: round(budget * samples) / samples
    dataset: str
    datasetSha256: str
    samples: int
    edgeVersion: str
    cloudVersion: str
    # A digest of what decides the cut besides versions and data (policy, its parameters,
    # output, steps, budget): a change calibrates again.
    settingsDigest: str
    calibratedAt: str  # RFC 3339
    # Expected on the Dataset with the cut (classification with labels; else unset).
    accuracy: Unit | None = None
    edgeAccuracy: Unit | None = None
    cloudAccuracy: Unit | None = None
    pgr: float | None = None
    distinctScores: int | None = Field(None, ge=0)  # few distinct scores: ties decide the ratio
    # LearnedRouter: the router whose scores were cut (another router's scores are on
    # another scale: its cut does not apply).
    routerSha256: str | None = None

    def key(self) -> tuple[str, str, str, str, str]:
        """What decides a calibration: the same versions on the same data give it again."""
        return (self.edgeVersion, self.cloudVersion, self.dataset, self.datasetSha256,
                self.settingsDigest)
