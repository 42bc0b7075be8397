"""The digits federated job's training script: softmax regression in numpy.

It follows jointserve's training-script contract (docs/training-script.md): jointserve
imports this one file on each edge worker and on the aggregator, and calls

    train_round(weights, X, y, classes, config)  one round of mini-batch SGD on local data
    evaluate(weights, X, y, classes)              loss and accuracy of weights on (X, y)
    export(weights, classes)                      model.onnx + metadata.json of weights

The model is p = softmax(X @ W + b), with weights {"W": float32 [D, C], "b": float32 [C]}.
Its loss is the mean cross-entropy; FedProx adds mu / 2 * ||w - w_global||^2. Only numpy
is needed to train; export builds the ONNX graph with the onnx package.
"""

from __future__ import annotations

import json

import numpy as np

OPSET = 17  # the opset the digits example's other archives use


def _probabilities(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    logits = X @ W + b
    logits -= logits.max(axis=1, keepdims=True)  # stable: exp never overflows
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def _loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


def train_round(weights, X, y, classes, config):
    """`config["epochs"]` passes of mini-batch SGD over this worker's (X, y), from `weights`.

    Shuffling comes from config["seed"] and the round, so a run is reproducible."""
    W = weights["W"].astype(np.float64)
    b = weights["b"].astype(np.float64)
    W0, b0 = W.copy(), b.copy()
    X = np.asarray(X, dtype=np.float64)
    onehot = np.eye(len(classes))[y]
    rng = np.random.default_rng([config["seed"], config["round"]])
    lr, mu, batch = config["learningRate"], config["proximalMu"], config["batchSize"]
    for _ in range(config["epochs"]):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            rows = order[start:start + batch]
            error = _probabilities(W, b, X[rows]) - onehot[rows]  # d loss / d logits
            grad_W = X[rows].T @ error / len(rows) + mu * (W - W0)
            grad_b = error.mean(axis=0) + mu * (b - b0)
            W -= lr * grad_W
            b -= lr * grad_b
    p = _probabilities(W, b, X)
    return {"weights": {"W": W.astype(np.float32), "b": b.astype(np.float32)},
            "samples": int(len(y)),
            "metrics": {"loss": _loss(p, y), "accuracy": float(np.mean(p.argmax(1) == y))}}


def evaluate(weights, X, y, classes):
    p = _probabilities(weights["W"].astype(np.float64), weights["b"].astype(np.float64),
                       np.asarray(X, dtype=np.float64))
    return {"loss": _loss(p, y), "accuracy": float(np.mean(p.argmax(1) == y))}


def export(weights, classes):
    """input float32 [N, D] -> probabilities float32 [N, C] (Softmax of MatMul + Add) and
    label int64 [N] (ArgMax), the outputs the digits example's other models have."""
    from onnx import TensorProto, helper, numpy_helper

    W = np.ascontiguousarray(weights["W"], dtype=np.float32)
    b = np.ascontiguousarray(weights["b"], dtype=np.float32)
    features, n_classes = W.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["scores"]),
         helper.make_node("Add", ["scores", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)],
        "softmax_regression",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="jointserve-digits-federated")
    model.ir_version = 8  # what onnxruntime >= 1.20 reads for opset 17
    metadata = {"labels": list(classes), "framework": "onnx",
                "source": "federated softmax regression (examples/digits/federated)"}
    return {"model.onnx": model.SerializeToString(),
            "metadata.json": (json.dumps(metadata) + "\n").encode()}
