"""Datasets in the reconcile pass: fetch, verify, count, and the status that reports it.

    Dataset spec -> ArtifactStore.fetch_file (sha256 checked before the file is kept)
                 -> jointserve.datasets.count_dataset -> DatasetStatus

A Dataset adds no Serve application. Outcomes are remembered by what decides them (the store
name, url, sha256, format and options), as model verifications are, with the same retry rule
(`_retry`): a download that failed for a reason worth retrying is tried again after a backoff;
a sha256 mismatch or a file that breaks its format stands until the spec changes.

The rule users rely on: the statistics in the status (numberOfSamples, numberOfClasses,
classes, facts, sha256) are those of the last version that verified and counted. A version
that fails changes the conditions only, never half the numbers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jointserve.api import (
    ConditionType,
    CsvOptions,
    Dataset,
    DatasetSpec,
    DatasetStatus,
    NpzOptions,
    Reason,
    ResourceKey,
    set_condition,
)
from jointserve.datasets import CountOptions, DatasetFormatError, DatasetStats, count_dataset
from jointserve.store import ArtifactError, ArtifactStore, ProgressCallback, redact_url

from ._retry import settled, with_backoff

log = logging.getLogger(__name__)

# A status must stay well under what the API server stores in one object (etcd: 1.5 MiB): a
# label column of floats would otherwise put one class per sample into it.
MAX_STATUS_CLASSES = 1000
MAX_FACTS_BYTES = 32 * 1024

# (resource, type "Normal" | "Warning", reason, message), as the Reconciler's EventSink.
EventSink = Callable[[ResourceKey, str, str, str], None]
MemoKey = tuple[str, str, str, str, CountOptions]


@dataclass(frozen=True)
class DatasetOutcome:
    """What fetching and counting one version of a dataset found."""

    ok: bool  # verified and counted
    reason: str  # Ready's reason: Counted, or the store's or the counter's reason
    message: str
    verified: bool = False  # the file matched its sha256 (ArtifactVerified)
    file: str = ""  # its name in the store, once verified
    stats: DatasetStats | None = None
    retry_at: float | None = None  # monotonic time of the next attempt; None = never
    attempts: int = 1


def store_name(key: ResourceKey) -> str:
    """The dataset's directory in the store: `<namespace>.<name>`, so datasets of one name in
    two namespaces never share (or delete) each other's files; namespaces hold no dots."""
    _, namespace, name = key
    return f"{namespace}.{name}"


def count_options(spec: DatasetSpec) -> CountOptions:
    """The counter's options of `spec` (the schema has checked what CountOptions checks);
    options left out have the schema's defaults."""
    csv, npz = spec.csv or CsvOptions(), spec.npz or NpzOptions()
    return CountOptions(header=csv.header, label_column=csv.labelColumn,
                        delimiter=csv.delimiter, labels_array=npz.labelsArray)


class DatasetCounter:
    """Fetches and counts datasets for the Reconciler, remembering each outcome."""

    def __init__(self, store: ArtifactStore,
                 progress: Callable[[str], ProgressCallback | None] = lambda _label: None,
                 events: EventSink | None = None) -> None:
        self.store = store
        self._progress = progress
        self._events = events
        self._known: dict[MemoKey, DatasetOutcome] = {}

    def count(self, key: ResourceKey, dataset: Dataset) -> DatasetOutcome:
        """The outcome for the dataset's spec: remembered, or fetched and counted now."""
        spec, name = dataset.spec, store_name(key)
        memo_key = (name, spec.url, spec.sha256sum, spec.format, count_options(spec))
        known = self._known.get(memo_key)
        if known is not None and settled(known):
            return known
        if self._events and not self.store.is_file_cached(name, spec.url, spec.sha256sum):
            self._events(key, "Normal", "Fetching", f"fetching {redact_url(spec.url)}")
        result = with_backoff(self._fetch_and_count(key, spec), known)
        self._known[memo_key] = result
        return result

    def _fetch_and_count(self, key: ResourceKey, spec: DatasetSpec) -> DatasetOutcome:
        label = f"dataset {key[1]}/{key[2]}"
        try:
            fetched = self.store.fetch_file(store_name(key), spec.url, spec.sha256sum,
                                            progress=self._progress(label))
        except ArtifactError as exc:
            log.error("%s: %s", label, exc)
            return DatasetOutcome(False, exc.reason, str(exc))
        try:
            stats = count_dataset(fetched.path, spec.format, count_options(spec))
        except DatasetFormatError as exc:
            log.error("%s: %s", label, exc)
            return DatasetOutcome(False, exc.reason, str(exc), True, fetched.path.name)
        except Exception as exc:  # noqa: BLE001 - a counter's bug must not stop every pass
            log.exception("%s: counting failed", label)
            return DatasetOutcome(False, Reason.COUNT_FAILED,
                                  f"{fetched.path.name}: counting failed: {exc}", True,
                                  fetched.path.name)
        message = f"{stats.samples} samples, {len(stats.classes)} classes"
        if len(stats.classes) > MAX_STATUS_CLASSES:
            message += f" (status.classes lists the {MAX_STATUS_CLASSES} largest)"
        return DatasetOutcome(True, Reason.COUNTED, message, True, fetched.path.name, stats)


def dataset_status(dataset: Dataset, outcome: DatasetOutcome,
                   saved: DatasetStatus) -> DatasetStatus:
    """The status to write: the outcome's conditions, and its statistics if it counted, else
    the saved (last good) ones."""
    generation = dataset.metadata.generation
    conditions = list(saved.conditions)
    if outcome.verified:
        verified = ("True", Reason.VERIFIED, f"{outcome.file}: sha256 matches")
    else:
        verified = ("False", outcome.reason, outcome.message)
    conditions = set_condition(conditions, ConditionType.ARTIFACT_VERIFIED, *verified,
                               observed_generation=generation)
    conditions = set_condition(conditions, ConditionType.READY, "True" if outcome.ok else "False",
                               outcome.reason, outcome.message, generation)
    if outcome.stats is not None:
        numbers = _numbers(outcome.stats, dataset.spec.sha256sum)
    else:
        numbers = {field: getattr(saved, field) for field in _NUMBERS}
    return DatasetStatus(**numbers, observedGeneration=generation, conditions=conditions)


_NUMBERS = ("numberOfSamples", "numberOfClasses", "classes", "facts", "sha256")


def _numbers(stats: DatasetStats, sha256: str) -> dict[str, Any]:
    return {"numberOfSamples": stats.samples, "numberOfClasses": len(stats.classes),
            "classes": _bounded_classes(stats.classes), "facts": _bounded_facts(stats.facts),
            "sha256": sha256}


def _bounded_classes(classes: dict[str, int]) -> dict[str, int]:
    if len(classes) <= MAX_STATUS_CLASSES:
        return dict(classes)
    largest = sorted(classes.items(), key=lambda item: (-item[1], item[0]))[:MAX_STATUS_CLASSES]
    return dict(sorted(largest))


def _bounded_facts(facts: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(facts))
    if size <= MAX_FACTS_BYTES:
        return dict(facts)
    return {"omitted": f"the facts take {size} bytes as JSON, more than the "
                       f"{MAX_FACTS_BYTES} a status holds"}
