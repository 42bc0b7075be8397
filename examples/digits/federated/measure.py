"""What federated training buys on the digits example: FedAvg beside training alone and
training on all the data, over 10 seeds, with the job's own script and settings.

    python examples/digits/federated/measure.py [--seeds 10] [--workers 4]

Each seed draws its own Dirichlet(0.3) split of the training data over the workers and
seeds the script's shuffling. Three ways to train, each for the job's rounds x epochs:

    FedAvg       the job's algorithm (jointserve.federated.fedavg over the workers' results)
    local-only   each worker alone on its own split (the mean over workers, and its range)
    centralised  one model on the whole training split (what no edge fleet may do: the data
                 would have to leave the nodes)

All are scored on the test split. This runs the script in-process (no Ray): the same
functions a TrainingModel runs, without the actors; the end-to-end test
(tests/test_federated_digits.py) runs the job itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from jointserve.federated import fedavg

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


job = _load("digits_federated_build", HERE / "build.py")
script = _load("digits_train_softmax", job.SCRIPT)


def _config(round_index: int, seed: int) -> dict:
    return {**job.TRAINING, "round": round_index, "proximalMu": 0.0, "seed": seed}


def _alone(X: np.ndarray, y: np.ndarray, classes: list[str], seed: int) -> dict:
    weights = job.initial_weights(X.shape[1], len(classes))
    for r in range(job.ROUNDS):
        weights = script.train_round(weights, X, y, classes, _config(r, seed))["weights"]
    return weights


def _fedavg(parts: list[tuple[np.ndarray, np.ndarray]], classes: list[str], seed: int,
            test: tuple[np.ndarray, np.ndarray]) -> tuple[dict, list[float]]:
    weights = job.initial_weights(parts[0][0].shape[1], len(classes))
    curve = []
    for r in range(job.ROUNDS):
        results = [script.train_round(weights, X, y, classes, _config(r, seed)) for X, y in parts]
        weights = fedavg([(res["weights"], res["samples"]) for res in results])
        curve.append(script.evaluate(weights, *test, classes)["accuracy"])
    return weights, curve


def measure(seeds: int, workers: int) -> dict:
    build = job.digits_build()
    split = build.load_split()
    classes = list(build.LABELS)
    test = (split.X_test, split.y_test)
    fed, local, local_min, local_max, central, curves = [], [], [], [], [], []
    for seed in range(seeds):
        rows = job.dirichlet_split(split.y_train, workers, job.ALPHA,
                                   np.random.default_rng(seed))
        parts = [(split.X_train[r], split.y_train[r]) for r in rows]
        _, curve = _fedavg(parts, classes, seed, test)
        fed.append(curve[-1])
        curves.append(curve)
        alone = [script.evaluate(_alone(X, y, classes, seed), *test, classes)["accuracy"]
                 for X, y in parts]
        local.append(float(np.mean(alone)))
        local_min.append(min(alone))
        local_max.append(max(alone))
        everything = _alone(split.X_train, split.y_train, classes, seed)
        central.append(script.evaluate(everything, *test, classes)["accuracy"])
    return {"fedavg": fed, "local": local, "local_min": local_min, "local_max": local_max,
            "central": central, "curve": np.mean(curves, axis=0).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=job.WORKERS)
    args = parser.parse_args(argv)
    out = measure(args.seeds, args.workers)
    print(f"digits, {args.workers} workers, Dirichlet({job.ALPHA}), {job.ROUNDS} rounds x "
          f"{job.TRAINING['epochs']} epoch, {args.seeds} seeds: test accuracy")
    print("| training | mean ± sd | range |")
    print("|---|---|---|")
    for name, key in (("FedAvg", "fedavg"), ("local-only (mean over workers)", "local"),
                      ("centralised", "central")):
        values = np.array(out[key])
        print(f"| {name} | {values.mean():.3f} ± {values.std():.3f} | "
              f"{values.min():.3f}–{values.max():.3f} |")
    print(f"| local-only, single workers | | {min(out['local_min']):.3f}–"
          f"{max(out['local_max']):.3f} |")
    marks = [1, 2, 5, 10, 20, job.ROUNDS]
    print("FedAvg by round (mean over seeds): " + ", ".join(
        f"{r}: {out['curve'][r - 1]:.3f}" for r in marks if r <= job.ROUNDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
