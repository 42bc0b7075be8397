"""Hard rows of concurrent requests go to the cloud as ONE call.

Batching inside the cloud replica (`@serve.batch` there) saves model time but not calls: each
hard request still pays its own HTTP round trip and its JSON both ways, far more than the
digits cloud model's 12.8 µs (docs/architecture.md, "Measured figures the code relies on").
Batching in the gateway before the call saves both, so when
the cloud InferenceModel has `spec.batching`, the gateway applies the same limits on its side.
Requests that cannot share a call (other inputs or row shapes) are sent on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
from ray import serve

from jointserve.runtime import batch_rows, split_outputs, stack_feeds, stackable_groups

from ._cloud import CloudAnswer, CloudCallError, CloudClient

Feeds = dict[str, np.ndarray]
# Batches in flight at once: with one (Serve's default), requests arriving during a cloud
# call wait for it to finish before their batch even starts, and throughput falls below
# unbatched calls (measured: 304 vs 467 req/s at c=32).
MAX_CONCURRENT_BATCHES = 4


class BatchingCloud:
    """A CloudClient that stacks concurrent calls of up to `max_batch_size` rows."""

    def __init__(self, inner: CloudClient, max_batch_size: int, batch_wait_s: float) -> None:
        self.inner = inner
        self.max_batch_size = max_batch_size
        # serve.batch on a closure: this client's own queue (one per gateway configuration).
        self._batched = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s,
                                    max_concurrent_batches=MAX_CONCURRENT_BATCHES,
                                    batch_size_fn=lambda items: sum(batch_rows(f) for f in items))(self._call_many)

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> CloudAnswer:
        feeds = dict(feeds)
        if batch_rows(feeds) >= self.max_batch_size:  # a full batch already; Serve refuses bigger items
            return await self.inner.infer(feeds)
        outcome = await self._batched(feeds)
        if isinstance(outcome, CloudCallError):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _call_many(self, items: list[Feeds]) -> list[CloudAnswer | CloudCallError]:
        """One call per stackable group, all groups at once; errors are per group, returned
        (not raised) so one group's failure is not every caller's."""
        results: list[CloudAnswer | CloudCallError | None] = [None] * len(items)

        async def run(indices: Sequence[int]) -> None:
            group = [items[i] for i in indices]
            try:
                answers = await self._call_group(group)
            except CloudCallError as exc:
                answers = [exc] * len(group)
            for index, answer in zip(indices, answers):
                results[index] = answer

        await asyncio.gather(*(run(indices) for indices in stackable_groups(items)))
        return [r for r in results if r is not None]

    async def _call_group(self, group: list[Feeds]) -> list[CloudAnswer]:
        if len(group) == 1:
            return [await self.inner.infer(group[0])]
        stacked, counts = stack_feeds(group)
        answer = await self.inner.infer(stacked)
        parts = split_outputs(answer.outputs, counts)
        if parts is None:  # an output without the batch axis: ask for each on its own
            return list(await asyncio.gather(*(self.inner.infer(f) for f in group)))
        return [CloudAnswer(answer.version, outputs) for outputs in parts]
