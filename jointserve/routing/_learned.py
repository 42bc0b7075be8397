"""The LearnedRouter's model: features of the edge's probabilities in, "the cloud would fix
this answer" out.

    router_features(probabilities [N, C])  ->  [N, C + 2]: the probabilities sorted from the
                                               largest, the top-2 margin, the entropy / log C
                    (..., inputs [N, ...])  ->  [N, C + 2 + D]: and the edge model's input,
                                               flattened (D values a row), when the router
                                               was trained on it
    RouterModel(router.onnx).score(row, input) -> P(edge wrong and cloud right), in [0, 1]

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


MAX_INPUT_FEATURES = 4096  # a router reads an edge input only up to this many values a row


def router_features(probabilities: np.ndarray, inputs: np.ndarray | None = None) -> np.ndarray:
    """float32 [N, C + 2] of float [N, C] class probabilities (C >= 2); with `inputs` (the
    edge model's input, N rows of any shape) [N, C + 2 + D], D the values of one input row."""
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
    columns = [ordered, margin[:, None], entropy[:, None]]
    if inputs is not None:
        columns.append(input_features(inputs, len(probs)))
    return np.concatenate(columns, axis=1).astype(np.float32)


def input_features(inputs: np.ndarray, rows: int) -> np.ndarray:
    """`inputs` as `rows` flat float rows ([D] alone is one row)."""
    flat = np.asarray(inputs, dtype=np.float32).reshape(rows, -1)
    if flat.shape[1] > MAX_INPUT_FEATURES:
        raise ValueError(f"a router reads at most {MAX_INPUT_FEATURES} input values a row; this "
                         f"edge input has {flat.shape[1]}")
    return flat


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
        self._row: np.ndarray | None = None  # score()'s feature row, reused call to call

    def score(self, edge_output: np.ndarray, model_input: np.ndarray | None = None) -> float:
        """P(the cloud fixes the edge's answer) for one probability vector (and the edge's
        input of that row, which a router trained on input features reads). The gateway's
        per-row path: the features go into one preallocated row, not through the batch
        path's column stacking (30 -> 21 µs a call, measured). One caller at a time (the
        gateway's event loop): the row is reused."""
        probs = np.asarray(edge_output, dtype=np.float64).ravel()
        classes = probs.size
        width = self.features
        if width is None or width < classes + 2 or probs.size < 2:
            return float(self.scores(probs[None], model_input))
        row = self._row if self._row is not None and self._row.shape[1] == width else None
        if row is None:
            row = self._row = np.empty((1, width), dtype=np.float32)
        if width > classes + 2:
            if model_input is None:
                return float(self.scores(probs[None], None))  # names what is missing
            flat = np.asarray(model_input, dtype=np.float32).ravel()
            if flat.size != width - classes - 2:
                return float(self.scores(probs[None], flat[None]))  # names the mismatch
            row[0, classes + 2:] = flat
        ordered = np.sort(probs)[::-1]
        row[0, :classes] = ordered
        row[0, classes] = ordered[0] - ordered[1]
        row[0, classes + 1] = -float(np.dot(probs, np.log(np.clip(probs, 1e-12, 1.0)))) \
            / math.log(classes)
        return float(self._session.run([ROUTER_OUTPUT], {ROUTER_INPUT: row})[0][0, 1])

    def scores(self, probabilities: np.ndarray, inputs: np.ndarray | None = None) -> np.ndarray:
        """Scores of many rows in one call (training and benchmarks)."""
        classes = np.shape(probabilities)[-1] + 2
        wanted = self.features
        if wanted is not None and wanted != classes:
            if wanted < classes:
                raise ValueError(f"the router was trained on {wanted - 2} classes; this edge "
                                 f"output has {classes - 2}")
            if inputs is None:
                raise ValueError(f"the router reads the edge model's input ({wanted - classes} "
                                 "values a row) and was given none: it needs an edge model "
                                 "with one input")
        features = router_features(probabilities, inputs if wanted != classes else None)
        if wanted is not None and features.shape[1] != wanted:
            raise ValueError(f"the router was trained on {wanted - classes} input values a row; "
                             f"this edge input has {features.shape[1] - classes}")
        return self._session.run([ROUTER_OUTPUT], {ROUTER_INPUT: features})[0][:, 1]
