"""Run many requests' tensors as one model call: stack along the batch axis, run, split.

Shared by both places that batch: a cloud model replica (requests that arrive within its
batch wait) and the gateway (hard rows of concurrent requests stacked into one cloud call).

Requests can only share a call when they feed the same inputs with the same per-row shape
(a model's batch axis is axis 0); the others run on their own in the same pass, so one odd
request never fails its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._onnx import OnnxModel

Feeds = dict[str, np.ndarray]


def run_batch(model: OnnxModel, items: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """The outputs of `model` for each of `items`, in order, with as few calls as possible."""
    results: list[dict[str, np.ndarray] | None] = [None] * len(items)
    for indices in stackable_groups(items):
        group = [items[i] for i in indices]
        if len(group) == 1:
            results[indices[0]] = model.run(group[0])
            continue
        stacked, counts = stack_feeds(group)
        parts = split_outputs(model.run(stacked), counts)
        for position, index in enumerate(indices):
            results[index] = parts[position] if parts is not None else model.run(items[index])
    return [r for r in results if r is not None]


def stack_feeds(group: Sequence[Feeds]) -> tuple[Feeds, list[int]]:
    """One feed dict of the group's tensors along axis 0, and each item's row count."""
    stacked = {name: np.concatenate([feeds[name] for feeds in group]) for name in group[0]}
    return stacked, [batch_rows(feeds) for feeds in group]


def split_outputs(outputs: dict[str, np.ndarray], counts: Sequence[int]) -> list[dict[str, np.ndarray]] | None:
    """`outputs` of a stacked call cut back per item; None if an output has no batch axis
    (it cannot be split: the caller runs those items on their own)."""
    if any(value.ndim == 0 or len(value) != sum(counts) for value in outputs.values()):
        return None
    bounds = np.cumsum(counts)[:-1]
    parts = {name: np.split(value, bounds) for name, value in outputs.items()}
    return [{name: pieces[i] for name, pieces in parts.items()} for i in range(len(counts))]


def batch_rows(feeds: Feeds) -> int:
    """Batch rows of one request (its first batched input's axis 0; 1 if none is batched)."""
    return min((len(a) for a in feeds.values() if a.ndim), default=1)


def stackable_groups(items: Sequence[Feeds]) -> list[list[int]]:
    """Indices of items that can be stacked together, by input names, dtypes and row shapes."""
    groups: dict[tuple, list[int]] = {}
    for index, feeds in enumerate(items):
        if any(a.ndim == 0 for a in feeds.values()) or len({len(a) for a in feeds.values()}) > 1:
            key: tuple = ("alone", index)
        else:
            key = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())
