"""The LearnedRouter's model: features of the edge's probabilities in, "the cloud would fix
this answer" out.

    router_features(probabilities [N, C])  ->  [N, C + 2]: the probabilities sorted from the
                                               largest, the top-2 margin, the entropy / log C
    RouterModel(router.onnx).score(row)     ->  P(edge wrong and cloud right), in [0, 1]

The model is trained on a Dataset (jointserve.evaluation.train_router: scikit-learn, exported
to ONNX) and shipped as an archive (router.onnx + router.json) verified by sha256 like any
model version. In the gateway one row costs the features (numpy) and one onnxruntime call of
a logistic regression: tens of microseconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

ROUTER_FILE = "router.onnx"
ROUTER_INFO = "router.json"
ROUTER_INPUT = "features"
ROUTER_OUTPUT = "probabilities"  # [N, 2]: column 1 is P(the cloud fixes it)


def router_features(probabilities: np.ndarray) -> np.ndarray:
    """float32 [N, C + 2] of float [N, C] class probabilities (C >= 2)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[None, :]
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"a router reads class probabilities [N, C] with C >= 2, not "
                         f"{list(probs.shape)}")
    ordered = -np.sort(-probs, axis=1)
    margin = ordered[:, 0] - ordered[:, 1]
    clipped = np.clip(probs, 1e-12, 1.0)
    entropy = -(probs * np.log(clipped)).sum(axis=1) / math.log(probs.shape[1])
    return np.column_stack([ordered, margin, entropy]).astype(np.float32)


class RouterModel:
    """A trained router, loaded for scoring one edge output at a time."""

    def __init__(self, path: Path | bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One row at a time on the gateway's event loop: threads would only cost handoffs.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model = path if isinstance(path, bytes) else str(path)
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        shape = self._session.get_inputs()[0].shape
        self.features = int(shape[1]) if isinstance(shape[1], int) else None

    def score(self, edge_output: np.ndarray) -> float:
        """P(the cloud fixes the edge's answer) for one probability vector."""
        features = router_features(edge_output)
        if self.features is not None and features.shape[1] != self.features:
            raise ValueError(f"the router was trained on {self.features - 2} classes; this "
                             f"edge output has {features.shape[1] - 2}")
        return float(self._session.run([ROUTER_OUTPUT], {ROUTER_INPUT: features})[0][0, 1])

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """Scores of many rows in one call (training and benchmarks)."""
        return self._session.run([ROUTER_OUTPUT], {ROUTER_INPUT: router_features(probabilities)})[0][:, 1]
