"""When the reconciler tries a fetch again: one rule for model versions and datasets.

An outcome is remembered by what decides it (URL, sha256, ...). A failure worth retrying on
its own (the server may come back) is tried again after a backoff that doubles per attempt;
any other failure, and every success, stands until the spec changes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol, TypeVar

# Failures worth retrying on their own; the others need a new spec (another URL or sha256)
# before another try makes sense.
TRANSIENT_REASONS = {"DownloadFailed", "HTTPError"}
RETRY_MIN_S = 5.0
RETRY_MAX_S = 300.0


class Outcome(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def retry_at(self) -> float | None: ...  # monotonic time of the next attempt; None = never
    @property
    def attempts(self) -> int: ...


O = TypeVar("O", bound=Outcome)


def settled(known: Outcome | None) -> bool:
    """True if `known` stands: a success, a permanent failure, or a retry not yet due."""
    return known is not None and (known.ok or known.retry_at is None
                                  or time.monotonic() < known.retry_at)


def with_backoff(result: O, known: O | None) -> O:
    """`result` with its next attempt scheduled, if it is a failure worth retrying.

    `result` must be a dataclass (both outcome types are)."""
    if result.ok or result.reason not in TRANSIENT_REASONS:
        return result
    attempts = known.attempts + 1 if known else 1
    delay = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (attempts - 1))
    return replace(result, retry_at=time.monotonic() + delay, attempts=attempts)  # type: ignore[type-var]
