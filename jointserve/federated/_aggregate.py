"""FedAvg: the sample-weighted mean of the participants' weights (FedProx aggregates the
same way; its proximal term lives in the workers' loss)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._spec import Weights


def fedavg(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """w = sum_k n_k w_k / sum_k n_k, per array, summed in float64 and given back in each
    array's own dtype (checked_update made every update's keys, shapes and dtypes agree)."""
    if not updates:
        raise ValueError("fedavg needs at least one update")
    total = float(sum(samples for _, samples in updates))
    first = updates[0][0]
    out = {}
    for name, array in first.items():
        acc = np.zeros(array.shape, dtype=np.float64)
        for weights, samples in updates:
            acc += weights[name].astype(np.float64) * (samples / total)
        out[name] = acc.astype(array.dtype)
    return out


def weighted_mean(values: Sequence[tuple[float, int]]) -> float | None:
    """The sample-weighted mean of per-worker metrics (None if none reported one)."""
    total = sum(n for _, n in values)
    return sum(v * n for v, n in values) / total if total else None
