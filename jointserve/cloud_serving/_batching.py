"""Run many requests' tensors as one model call: stack along the batch axis, run, split.

Requests can only share a call when they feed the same inputs with the same per-row shape
(a model's batch axis is axis 0); the others run on their own in the same pass, so one odd
request never fails its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jointserve.runtime import OnnxModel

Feeds = dict[str, np.ndarray]


def run_batch(model: OnnxModel, items: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """The outputs of `model` for each of `items`, in order, with as few calls as possible."""
    results: list[dict[str, np.ndarray] | None] = [None] * len(items)
    for indices in _groups(items):
        group = [items[i] for i in indices]
        if len(group) == 1:
            results[indices[0]] = model.run(group[0])
            continue
        stacked = {name: np.concatenate([feeds[name] for feeds in group]) for name in group[0]}
        outputs = model.run(stacked)
        counts = [rows(feeds) for feeds in group]
        if any(value.ndim == 0 or len(value) != sum(counts) for value in outputs.values()):
            # An output without the batch axis cannot be split back per request.
            for index in indices:
                results[index] = model.run(items[index])
            continue
        bounds = np.cumsum(counts)[:-1]
        split = {name: np.split(value, bounds) for name, value in outputs.items()}
        for position, index in enumerate(indices):
            results[index] = {name: parts[position] for name, parts in split.items()}
    return [r for r in results if r is not None]


def rows(feeds: Feeds) -> int:
    """Batch rows of one request (its first batched input's axis 0; 1 if none is batched)."""
    return min((len(a) for a in feeds.values() if a.ndim), default=1)


def _groups(items: Sequence[Feeds]) -> list[list[int]]:
    """Indices of items that can be stacked together, by input names, dtypes and row shapes."""
    groups: dict[tuple, list[int]] = {}
    for index, feeds in enumerate(items):
        if any(a.ndim == 0 for a in feeds.values()) or len({len(a) for a in feeds.values()}) > 1:
            key: tuple = ("alone", index)
        else:
            key = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())
