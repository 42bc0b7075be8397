"""Model selectors in the reconcile pass: which InferenceModel a service's tier gets.

    service tier with a selector -> candidates (verified models of the namespace that match)
        -> no rankBy: the first by name
        -> rankBy: each candidate's metrics on the Dataset (status.metrics, measured by the
           model's evaluations, which a selection asks for: `Choice.wanted`) -> minimum -> best

A selection reads the statuses of the previous pass (metrics, the dataset's sha256), so a
candidate's evaluation finishing shows up in the choice one pass later. While no candidate
has been measured yet, a choice made before (the service's saved status) is kept when that
model still qualifies: an operator restart does not take a serving service down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from jointserve.api import (
    InferenceModel,
    ModelChoice,
    ModelMetrics,
    ModelSelector,
    RankBy,
    ResourceKey,
    TensorSignature,
    metric_value,
)

Inputs = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class Candidate:
    """A verified InferenceModel as a selector sees it."""

    key: ResourceKey
    model: InferenceModel
    version: str
    info: Mapping[str, object]  # spec.metadata over the archive's metadata.json
    inputs: Inputs


@dataclass(frozen=True)
class Choice:
    """The outcome of one tier's selection: the chosen model (None: none yet) and the
    evaluations it needs, as {model key: dataset names}."""

    choice: ModelChoice
    wanted: dict[ResourceKey, set[str]] = field(default_factory=dict)


def matches(selector: ModelSelector, candidate: Candidate) -> bool:
    """Every field the selector gives matches the candidate."""
    model = candidate.model
    if any(model.metadata.labels.get(k) != v for k, v in selector.matchLabels.items()):
        return False
    if selector.layer is not None and model.spec.deployToLayer != selector.layer:
        return False
    if selector.task is not None and candidate.info.get("task") != selector.task:
        return False
    if selector.labels is not None and list(candidate.info.get("labels") or []) != selector.labels:
        return False
    return all(any(_takes(want, have) for have in candidate.inputs) for want in selector.inputs or [])


def _takes(want: TensorSignature, have: tuple[str, str, tuple[int, ...]]) -> bool:
    name, datatype, shape = have
    if want.name is not None and want.name != name:
        return False
    if want.datatype is not None and want.datatype != datatype:
        return False
    if want.shape is None:
        return True
    return len(want.shape) == len(shape) and all(
        w < 0 or h < 0 or w == h for w, h in zip(want.shape, shape))


def choose(selector: ModelSelector, rank_by: RankBy | None, candidates: list[Candidate],
           metrics_of: Callable[[ResourceKey], list[ModelMetrics]],
           dataset_sha256: str | None, previous: ModelChoice | None) -> Choice:
    """The candidate `selector` and `rank_by` pick, and why."""
    found = sorted((c for c in candidates if matches(selector, c)), key=lambda c: c.key)
    if not found:
        return Choice(ModelChoice(reason=f"no InferenceModel with a verified version matches "
                                         f"the selector {_shown(selector)}"))
    if rank_by is None:
        first = found[0]
        return Choice(ModelChoice(model=first.key[2], version=first.version,
                                  reason=f"first of {len(found)} matching model(s) by name"))
    if dataset_sha256 is None:
        return _waiting(previous, found, f"rankBy.dataset {rank_by.dataset} is not counted yet")
    return _ranked(rank_by, found, metrics_of, dataset_sha256, previous)


def _ranked(rank_by: RankBy, found: list[Candidate],
            metrics_of: Callable[[ResourceKey], list[ModelMetrics]], sha256: str,
            previous: ModelChoice | None) -> Choice:
    scored: list[tuple[float, Candidate]] = []
    pending: list[Candidate] = []
    below: list[str] = []
    for candidate in found:
        measured = _measured(metrics_of(candidate.key), candidate.version, rank_by.dataset, sha256)
        value = metric_value(measured, rank_by.maximize) if measured else None
        if measured is None:
            pending.append(candidate)
        elif value is None or _under(measured, rank_by):
            below.append(candidate.key[2])
        else:
            scored.append((value, candidate))
    wanted = {c.key: {rank_by.dataset} for c in pending}
    if not scored:
        why = (f"evaluating {len(pending)} candidate(s) on {rank_by.dataset}" if pending else
               f"no candidate reaches the minimum {rank_by.minimum.floors()} on {rank_by.dataset} "
               f"({', '.join(below)})")
        return Choice(_waiting(previous, found, why).choice, wanted)
    scored.sort(key=lambda item: (-item[0], item[1].key))
    value, best = scored[0]
    others = ", ".join(f"{c.key[2]} {v:.4f}" for v, c in scored[1:])
    reason = (f"{rank_by.maximize} {value:.4f} on {rank_by.dataset}: best of {len(scored)}"
              + (f" ({others})" if others else "")
              + (f"; {len(pending)} still evaluating" if pending else "")
              + (f"; below the minimum: {', '.join(below)}" if below else ""))
    return Choice(ModelChoice(model=best.key[2], version=best.version, reason=reason), wanted)


def _measured(metrics: list[ModelMetrics], version: str, dataset: str,
              sha256: str) -> ModelMetrics | None:
    return next((m for m in metrics if m.version == version and m.dataset == dataset
                 and m.datasetSha256 == sha256), None)


def _under(metrics: ModelMetrics, rank_by: RankBy) -> bool:
    for name, floor in rank_by.minimum.floors().items():
        value = metric_value(metrics, name)
        if value is None or value < floor:
            return True
    return False


def _waiting(previous: ModelChoice | None, found: list[Candidate], why: str) -> Choice:
    """No choice can be made now: keep the previous one while its model still qualifies."""
    kept = next((c for c in found if previous is not None and c.key[2] == previous.model), None)
    if kept is not None:
        return Choice(ModelChoice(model=kept.key[2], version=kept.version,
                                  reason=f"{why}; keeping {kept.key[2]} until then"))
    return Choice(ModelChoice(reason=why))


def _shown(selector: ModelSelector) -> str:
    return str(selector.model_dump(exclude_none=True, exclude_defaults=True) or "{}")
