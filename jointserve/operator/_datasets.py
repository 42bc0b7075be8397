"""Datasets in the reconcile pass: fetch, verify, count, and the status that reports it.

    Dataset spec -> ArtifactStore.fetch_file (sha256 checked before the file is kept)
                 -> jointserve.datasets.count_dataset -> DatasetStatus

A Dataset adds no Serve application. Outcomes are remembered by what decides them (the store
name, url, sha256, format and options), as model verifications are, with the same retry rule
(`_retry`): a download that failed for a reason worth retrying is tried again after a backoff;
a sha256 mismatch or a file that breaks its format stands until the spec changes.

A Dataset with `refreshSeconds` instead of a sha256sum follows its source: every refreshSeconds
the store asks it whether it changed (`ArtifactStore.follow_file`: ETag / Last-Modified, or a
file's mtime and size) and a new sha256 is counted; whatever the last check found also
stands only until the next one is due.

The rule users rely on: the statistics in the status (numberOfSamples, numberOfClasses,
classes, facts, sha256) are those of the last version that verified and counted. A version
that fails changes the conditions only, never half the numbers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    now_rfc3339,
    set_condition,
)
from jointserve.datasets import CountOptions, DatasetFormatError, DatasetStats, count_dataset
from jointserve.store import (
    ArtifactError,
    ArtifactStore,
    FetchResult,
    Limit,
    ProgressCallback,
    SourceVersion,
    redact_url,
)

from ._retry import settled, with_backoff

log = logging.getLogger(__name__)

# A status must stay well under what the API server stores in one object (etcd: 1.5 MiB): a
# label column of floats would otherwise put one class per sample into it.
MAX_STATUS_CLASSES = 1000
MAX_FACTS_BYTES = 32 * 1024

# (resource, type "Normal" | "Warning", reason, message), as the Reconciler's EventSink.
EventSink = Callable[[ResourceKey, str, str, str], None]
MemoKey = tuple[str, str, str | None, str, CountOptions]


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
    sha256: str = ""  # of the file counted (or found to break its format)
    # refreshSeconds: the source's validators for the next check, and when it was checked
    # (monotonic, and RFC 3339 for the status).
    source: SourceVersion | None = None
    checked_at: float | None = None
    last_checked: str | None = None


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
        if spec.refreshSeconds is not None:
            result = self._follow(key, spec, known)
        elif known is not None and settled(known):
            return known
        else:
            assert spec.sha256sum is not None  # the schema asks for one of the two
            if self._events and not self.store.is_file_cached(name, spec.url, spec.sha256sum):
                self._events(key, "Normal", "Fetching", f"fetching {redact_url(spec.url)}")
            result = with_backoff(self._fetch_and_count(key, spec), known)
        self._known[memo_key] = result
        return result

    def _follow(self, key: ResourceKey, spec: DatasetSpec,
                known: DatasetOutcome | None) -> DatasetOutcome:
        """refreshSeconds: `known` until the next check is due (or a failed one's retry), else
        the source asked whether it changed, and a changed one counted."""
        assert spec.refreshSeconds is not None
        now = time.monotonic()
        if known is not None and known.checked_at is not None \
                and now < known.checked_at + spec.refreshSeconds \
                and (known.retry_at is None or now < known.retry_at):
            return known
        label = f"dataset {key[1]}/{key[2]}"
        unless = known.source if known is not None and known.ok else None
        try:
            fetched = self.store.follow_file(store_name(key), spec.url, unless=unless,
                                             progress=self._progress(label),
                                             limit=_limit(spec))
        except ArtifactError as exc:
            log.error("%s: %s", label, exc)
            failed = DatasetOutcome(False, exc.reason, str(exc))
            return _checked(with_backoff(failed, known), None)
        if fetched is None or (known is not None and known.ok and fetched.sha256 == known.sha256):
            assert known is not None  # `unless` came from it
            return _checked(known, fetched.source if fetched else known.source)
        result = self._count_file(key, spec, fetched)
        if result.ok:
            self._refreshed(key, known, result)
        return _checked(result, fetched.source)

    def _refreshed(self, key: ResourceKey, known: DatasetOutcome | None,
                   result: DatasetOutcome) -> None:
        """A followed source counted anew: say so, and drop the copies no status names now
        (the one before stays: an evaluation may be reading it)."""
        keep = {result.sha256} | ({known.sha256} if known is not None and known.ok else set())
        self.store.prune_files(store_name(key), keep)
        if known is not None and known.ok and self._events:
            self._events(key, "Normal", "SourceChanged",
                         f"source changed: sha256 {result.sha256[:12]} (was "
                         f"{known.sha256[:12]}): {result.message}")

    def _fetch_and_count(self, key: ResourceKey, spec: DatasetSpec) -> DatasetOutcome:
        label = f"dataset {key[1]}/{key[2]}"
        assert spec.sha256sum is not None
        try:
            fetched = self.store.fetch_file(store_name(key), spec.url, spec.sha256sum,
                                            progress=self._progress(label), limit=_limit(spec))
        except ArtifactError as exc:
            log.error("%s: %s", label, exc)
            return DatasetOutcome(False, exc.reason, str(exc))
        return self._count_file(key, spec, replace(fetched, sha256=spec.sha256sum))

    def _count_file(self, key: ResourceKey, spec: DatasetSpec,
                    fetched: FetchResult) -> DatasetOutcome:
        label = f"dataset {key[1]}/{key[2]}"
        sha = fetched.sha256
        try:
            stats = count_dataset(fetched.path, spec.format, count_options(spec))
        except DatasetFormatError as exc:
            log.error("%s: %s", label, exc)
            return DatasetOutcome(False, exc.reason, str(exc), True, fetched.path.name,
                                  sha256=sha)
        except Exception as exc:  # noqa: BLE001 - a counter's bug must not stop every pass
            log.exception("%s: counting failed", label)
            return DatasetOutcome(False, Reason.COUNT_FAILED,
                                  f"{fetched.path.name}: counting failed: {exc}", True,
                                  fetched.path.name, sha256=sha)
        message = f"{stats.samples} samples, {len(stats.classes)} classes"
        if len(stats.classes) > MAX_STATUS_CLASSES:
            message += f" (status.classes lists the {MAX_STATUS_CLASSES} largest)"
        return DatasetOutcome(True, Reason.COUNTED, message, True, fetched.path.name, stats,
                              sha256=sha)


def _limit(spec: DatasetSpec) -> Limit | None:
    return Limit(spec.maxBytes, "spec.maxBytes") if spec.maxBytes is not None else None


def _checked(outcome: DatasetOutcome, source: SourceVersion | None) -> DatasetOutcome:
    """`outcome` as the result of a check of a followed source made now."""
    return replace(outcome, source=source, checked_at=time.monotonic(),
                   last_checked=now_rfc3339())


def dataset_status(dataset: Dataset, outcome: DatasetOutcome,
                   saved: DatasetStatus) -> DatasetStatus:
    """The status to write: the outcome's conditions, and its statistics if it counted, else
    the saved (last good) ones."""
    generation = dataset.metadata.generation
    conditions = list(saved.conditions)
    if outcome.verified and dataset.spec.refreshSeconds is not None:
        verified = ("True", Reason.VERIFIED, f"{outcome.file}: sha256 {outcome.sha256}, as "
                    f"found (no sha256sum: re-checked every {dataset.spec.refreshSeconds} s)")
    elif outcome.verified:
        verified = ("True", Reason.VERIFIED, f"{outcome.file}: sha256 matches")
    else:
        verified = ("False", outcome.reason, outcome.message)
    conditions = set_condition(conditions, ConditionType.ARTIFACT_VERIFIED, *verified,
                               observed_generation=generation)
    conditions = set_condition(conditions, ConditionType.READY, "True" if outcome.ok else "False",
                               outcome.reason, outcome.message, generation)
    if outcome.stats is not None:
        numbers = _numbers(outcome.stats, outcome.sha256)
    else:
        numbers = {field: getattr(saved, field) for field in _NUMBERS}
    return DatasetStatus(**numbers, observedGeneration=generation, conditions=conditions,
                         lastChecked=outcome.last_checked)


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
