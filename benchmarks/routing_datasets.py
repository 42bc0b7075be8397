"""Routing quality on data sets the policies and the router were not tuned on.

benchmarks.routing measures digits, the example's own data. Here the same measurement (the
product's policies, its LearnedRouter training and its budget calibration, all through
benchmarks.routing) runs on:

    iris               150 flowers, 3 classes; edge: a logistic regression on sepal length
                       alone, from 30 training rows; cloud: an MLP on all four measurements
    synthetic-5class   make_classification, 5 classes, 20 features (8 informative), 3% label
                       noise; edge: a logistic regression on 400 training rows; cloud: an MLP
    synthetic-ties     make_classification, 3 classes, 10 features, 8% label noise; edge: a
                       5-nearest-neighbour vote on 400 rows, whose probabilities are multiples
                       of 0.2: few distinct scores, so the budget rests on its tie rule

Each seed draws a fresh stratified 60/20/20 split; cuts and routers come from validation,
figures from test, as in benchmarks.routing.

    python -m benchmarks.routing_datasets [--seeds 10] [--out DIR]   (DIR: a JSON and, per
                                                                      data set, its two plots)
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.routing import (
    LEARNED,
    ORACLE,
    POLICIES,
    SPLIT,
    RouterRows,
    SeedRun,
    plot_routing,
    policy_scores,
    summarise,
)


@dataclass(frozen=True)
class Recipe:
    """A data set and the two models trained on it."""

    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    edge: Callable[[int], Any]  # seed -> an unfitted edge estimator
    cloud: Callable[[int], Any]
    edge_rows: int | None  # the edge model sees only this many training rows (None: all)
    about: str


class _Columns:
    """An estimator that sees only the first `k` features (a weaker edge model)."""

    def __init__(self, model: Any, k: int) -> None:
        self.model, self.k = model, k

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_Columns":
        self.model.fit(X[:, :self.k], y)
        self.classes_ = self.model.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(X[:, :self.k])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X[:, :self.k])


def _iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data.astype(np.float32), data.target


def _synthetic(**kwargs: Any) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def load() -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import make_classification

        X, y = make_classification(n_samples=4000, random_state=0, **kwargs)
        return X.astype(np.float32), y
    return load


def _logistic(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000)


def _mlp(hidden: tuple[int, ...]) -> Callable[[int], Any]:
    def make(seed: int) -> Any:
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=hidden, max_iter=800, random_state=seed)
    return make


def _knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=5)


RECIPES: dict[str, Recipe] = {
    "iris": Recipe(_iris, lambda seed: _Columns(_logistic(seed), 1), _mlp((64,)), 30,
                   "edge: logistic regression on sepal length alone, 30 rows; "
                   "cloud: MLP(64) on all 4 measurements"),
    "synthetic-5class": Recipe(
        _synthetic(n_features=20, n_informative=8, n_redundant=4, n_classes=5, flip_y=0.03),
        _logistic, _mlp((128, 128)), 400,
        "edge: logistic regression on 400 rows; cloud: MLP(128, 128) on all training rows"),
    "synthetic-ties": Recipe(
        _synthetic(n_features=10, n_informative=5, n_redundant=2, n_classes=3, flip_y=0.08,
                   class_sep=0.8),
        _knn, _mlp((64, 64)), 400,
        "edge: 5-nearest-neighbour vote on 400 rows (probabilities in steps of 0.2); "
        "cloud: MLP(64, 64) on all training rows"),
}


@functools.cache
def evaluate_seed(name: str, seed: int) -> SeedRun:
    """Split, train and score data set `name` for one seed (cached, as benchmarks.routing)."""
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    recipe = RECIPES[name]
    X, y = recipe.load()
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y, train_size=SPLIT["train"], random_state=seed, stratify=y)
    val_share = SPLIT["validation"] / (SPLIT["validation"] + SPLIT["test"])
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, train_size=val_share, random_state=seed, stratify=y_rest)
    rows = recipe.edge_rows or len(y_train)
    with threadpool_limits(1):  # see benchmarks.routing: one BLAS thread on 2 cores
        edge = recipe.edge(seed).fit(X_train[:rows], y_train[:rows])
        cloud = recipe.cloud(seed).fit(X_train, y_train)
        p_val, p_test = edge.predict_proba(X_val), edge.predict_proba(X_test)
        cloud_val, cloud_test = cloud.predict(X_val), cloud.predict(X_test)
        # Training rows the edge never saw are extra router training rows, as in
        # benchmarks.routing; a recipe whose edge saw every row has none.
        p_unseen = edge.predict_proba(X_train[rows:]) if rows < len(y_train) else p_val[:0]
        cloud_unseen = cloud.predict(X_train[rows:]) if rows < len(y_train) else y_val[:0]
    labels = edge.classes_
    fixes_val = (labels[p_val.argmax(axis=1)] != y_val) & (cloud_val == y_val)
    fixes_unseen = ((labels[p_unseen.argmax(axis=1)] != y_train[rows:])
                    & (cloud_unseen == y_train[rows:]))
    router_rows = RouterRows(X_val, X_test, p_unseen, X_train[rows:], fixes_unseen)
    return SeedRun(
        seed=seed,
        edge_correct=labels[p_test.argmax(axis=1)] == y_test,
        cloud_correct=cloud_test == y_test,
        scores={policy: policy_scores(policy, seed, p_val, p_test, fixes_val, router_rows)
                for policy in POLICIES},
        n_train=len(y_train), n_validation=len(y_val), edge=edge, cloud=cloud, X_test=X_test)


def routing_datasets(seeds: int = 10, names: Sequence[str] = tuple(RECIPES),
                     offloads: Sequence[float] = (0.1, 0.2, 0.3)) -> dict[str, Any]:
    """Per data set, benchmarks.routing's summary over seeds 0..seeds-1 (timing of the
    scikit-learn models included, as there), with the recipe and the distinct edge scores."""
    out: dict[str, Any] = {}
    for name in names:
        runs = [evaluate_seed(name, seed) for seed in range(seeds)]
        result = summarise(runs, offloads)
        result["recipe"] = RECIPES[name].about
        result["distinct_maxprob_scores"] = int(np.unique(runs[0].scores["MaxProb"][1]).size)
        out[name] = result
    return out


def _cell(stats: dict[str, float], digits: int = 2) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def datasets_markdown(results: dict[str, Any]) -> str:
    """One table: per data set and policy, PGR at each offload, APGR and the realised share
    at the 20% budget."""
    lines = ["| data set | edge / cloud accuracy | policy | PGR @10% | PGR @20% | PGR @30% | "
             "APGR | realised offload @20% |", "|" + "---|" * 8]
    for name, result in results.items():
        accuracy = f"{result['a_edge']['mean']:.3f} / {result['a_cloud']['mean']:.3f}"
        for policy, series in [*result["policies"].items(), (ORACLE, result[ORACLE])]:
            at = series["at"]
            lines.append(f"| {name} | {accuracy} | {policy} | "
                         + " | ".join(_cell(at[k]["pgr"]) for k in ("0.1", "0.2", "0.3"))
                         + f" | {_cell(series['pgr_auc'])} | {_cell(at['0.2']['offload'], 3)} |")
    notes = [f"- {name}: {result['recipe']} ({result['distinct_maxprob_scores']} distinct "
             "MaxProb scores on a test split)" for name, result in results.items()]
    return "\n".join(lines + [""] + notes) + "\n"


def learned_beats_static(results: dict[str, Any]) -> dict[str, bool]:
    """Per data set: does the LearnedRouter's APGR beat the best static policy's?"""
    static = [p for p in POLICIES if p not in (LEARNED, "RandomFilter")]
    return {name: result["policies"][LEARNED]["pgr_auc"]["mean"]
            > max(result["policies"][p]["pgr_auc"]["mean"] for p in static)
            for name, result in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="write routing_datasets.json here")
    args = parser.parse_args(argv)
    start = time.monotonic()
    results = routing_datasets(seeds=args.seeds)
    print(datasets_markdown(results))
    print("LearnedRouter APGR above the best static policy's: "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in learned_beats_static(results).items()))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "routing_datasets.json").write_text(json.dumps(results, indent=1))
        for name, result in results.items():
            for path in plot_routing(result, args.out, name):
                print(f"wrote {path}")
    print(f"{args.seeds} seeds in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
