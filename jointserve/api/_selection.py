"""Model selection: a JointInferenceService's edge or cloud model chosen by what models are.

Instead of `edgeModel: {name: digits-edge}`, a service may say which models qualify and how
to rank them:

    edgeModel:
      selector: {task: classification, layer: edge, matchLabels: {app: digits}}
      rankBy: {dataset: digits-test, maximize: accuracy, minimum: {accuracy: 0.95}}

Candidates are the InferenceModels of the namespace whose verified version matches the
selector (metadata labels, layer, and the model's metadata: task, label set, input
signature). With `rankBy`, each candidate is evaluated over the Dataset (its metrics go into
its own status.metrics), those under a `minimum` drop out, and the best by `maximize` wins
(ties: by name). Without `rankBy` the first candidate by name wins. The service's status says
which model was chosen and why; a better model appearing later is switched to like any other
edge version change.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from ._common import DnsName, Strict
from ._inference_model import Layer, Task

# The metrics a selection can rank by or bound: ModelMetrics fields.
MetricName = Literal["accuracy", "macroPrecision", "macroRecall", "macroF1", "mAP50"]


class TensorSignature(Strict):
    """One input a candidate must take: name (any if left out), datatype and shape (-1:
    any size), as its OIP metadata lists them."""

    name: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    datatype: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    shape: list[int] | None = Field(None, max_length=16)


class ModelSelector(Strict):
    """Which InferenceModels qualify; every field given must match."""

    # metadata.labels of the InferenceModel, as a Kubernetes label selector's matchLabels.
    matchLabels: dict[str, str] = Field(default_factory=dict)
    layer: Layer | None = None
    # From the model's metadata (spec.metadata over the archive's metadata.json).
    task: Task | None = None
    labels: list[Annotated[str, Field(max_length=253)]] | None = Field(None, max_length=100_000)
    inputs: list[TensorSignature] | None = Field(None, max_length=64)


Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class Minimum(Strict):
    """Floors on the metrics (ModelMetrics' names): a candidate under any is left out."""

    accuracy: Unit | None = None
    macroPrecision: Unit | None = None
    macroRecall: Unit | None = None
    macroF1: Unit | None = None
    mAP50: Unit | None = None

    def floors(self) -> dict[str, float]:
        return self.model_dump(exclude_none=True)


class RankBy(Strict):
    """How to rank the candidates: by a metric on a Dataset."""

    dataset: DnsName
    maximize: MetricName = "accuracy"
    minimum: Minimum = Field(default_factory=Minimum)


class ModelChoice(Strict):
    """What a selection chose for one tier, and why (status.selection)."""

    model: str | None = None  # the InferenceModel's name; None: nothing qualifies yet
    version: str | None = None
    reason: str = ""


class Selection(Strict):
    """status.selection of a service: the choice for each tier that has a selector."""

    edge: ModelChoice | None = None
    cloud: ModelChoice | None = None


class SelectableRef(Strict):
    """An InferenceModel by name, or chosen by a selector (and ranked by rankBy)."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "has(self.name) != has(self.selector)",
         "message": "set exactly one of name or selector"},
        {"rule": "!has(self.rankBy) || has(self.selector)",
         "message": "rankBy ranks the models a selector matches; it needs selector"},
    ]

    name: DnsName | None = None
    selector: ModelSelector | None = None
    rankBy: RankBy | None = None

    @model_validator(mode="after")
    def _name_or_selector(self) -> "SelectableRef":
        if (self.name is None) == (self.selector is None):
            raise ValueError("name: set exactly one of name or selector")
        if self.rankBy is not None and self.selector is None:
            raise ValueError("rankBy: ranks the models a selector matches; it needs selector")
        return self
