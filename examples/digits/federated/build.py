"""Builds the digits example's federated job: four edge workers with non-IID data.

The training split of the digits example is dealt to WORKERS edge workers by a
Dirichlet(ALPHA) draw per label (ALPHA = 0.3: most workers see few digits, some digits only
on one worker), each written as an npz Dataset. Beside them go the training script
(train_softmax.py, copied so the file server serves it), zero initial weights, and
`digits-federated.yaml`: the four Datasets and the TrainingModel `digits-fl`, which trains
with FedAvg, evaluates each round on the `digits-test-npz` Dataset and publishes the result
as a version `fl-...` of `digits-edge`, rolled out.

    python examples/digits/federated/build.py [--out DIR] [--base-url URL]

examples/digits/build.py calls `write()` as part of the example (`make example`), so this
is only run by hand to rebuild the job alone. `measure.py` compares it with training alone
and with training on all the data.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from jointserve.api import kube_yaml
from jointserve.store import write_atomic

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "train_softmax.py"
WORKERS = 4
ALPHA = 0.3
SPLIT_SEED = 0
MIN_SAMPLES = 20  # a draw that leaves a worker fewer rows is drawn again
JOB = "digits-fl"
YAML_NAME = "digits-federated.yaml"
SCRIPT_FILE = "digits-fl-train_softmax.py"
WEIGHTS_FILE = "digits-fl-initial-weights.npz"
# How the job trains: chosen with measure.py (30 rounds of one epoch reach ~95% on the test
# split; more rounds add little).
ROUNDS = 30
TRAINING = {"epochs": 1, "batchSize": 32, "learningRate": 1.0, "seed": 0}


def digits_build() -> ModuleType:
    """examples/digits/build.py (the split, the npz writer, YAML), loaded by path."""
    module = sys.modules.get("digits_build")
    if module is None:
        spec = importlib.util.spec_from_file_location("digits_build", HERE.parent / "build.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["digits_build"] = module  # its dataclasses look themselves up there
        spec.loader.exec_module(module)
    return module


def worker_file(index: int) -> str:
    return f"digits-fl-worker-{index}.npz"


def output_names() -> list[str]:
    """The files write() puts under <out>/archives/ (besides the YAML in HERE)."""
    return [SCRIPT_FILE, WEIGHTS_FILE, *(worker_file(i) for i in range(WORKERS))]


def dirichlet_split(y: np.ndarray, workers: int, alpha: float,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices per worker: each label's rows dealt in Dirichlet(alpha) proportions
    (redrawn until every worker has MIN_SAMPLES rows)."""
    while True:
        parts: list[list[int]] = [[] for _ in range(workers)]
        for label in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == label))
            cuts = (np.cumsum(rng.dirichlet([alpha] * workers))[:-1] * len(rows)).astype(int)
            for part, chunk in zip(parts, np.split(rows, cuts)):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= MIN_SAMPLES:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def initial_weights(features: int, classes: int) -> dict[str, np.ndarray]:
    return {"W": np.zeros((features, classes), np.float32), "b": np.zeros(classes, np.float32)}


def job_docs(base_url: str, sha256: dict[str, str]) -> list[dict]:
    base = base_url.rstrip("/")
    docs = [{"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
             "metadata": {"name": f"digits-fl-worker-{i}"},
             "spec": {"url": f"{base}/{worker_file(i)}", "sha256sum": sha256[worker_file(i)],
                      "format": "npz", "npz": {"labelsArray": "y"}}}
            for i in range(WORKERS)]
    docs.append({
        "apiVersion": "jointserve.io/v1alpha1", "kind": "TrainingModel",
        "metadata": {"name": JOB},
        "spec": {
            "trainingScript": {"url": f"{base}/{SCRIPT_FILE}", "sha256sum": sha256[SCRIPT_FILE]},
            "initialWeights": {"url": f"{base}/{WEIGHTS_FILE}",
                               "sha256sum": sha256[WEIGHTS_FILE]},
            "workers": [{"name": f"edge-{i}", "dataset": f"digits-fl-worker-{i}"}
                        for i in range(WORKERS)],
            # Every worker in every round: with 4 workers a round waits for all of them,
            # unless one fails or passes the timeout (then the round goes on without it).
            "aggregation": {"algorithm": "FedAvg", "rounds": ROUNDS,
                            "minParticipants": WORKERS, "roundTimeoutSeconds": 120},
            "training": dict(TRAINING),
            "evaluation": {"dataset": "digits-test-npz"},
            "publish": {"inferenceModel": "digits-edge", "versionPrefix": "fl",
                        "rollout": True},
        }})
    return docs


def write(out: Path, base_url: str, X_train: np.ndarray, y_train: np.ndarray) -> None:
    """The job's files under <out>/archives/ and its YAML as <out>/federated/YAML_NAME."""
    build = digits_build()
    parts = dirichlet_split(y_train, WORKERS, ALPHA, np.random.default_rng(SPLIT_SEED))
    files = {SCRIPT_FILE: SCRIPT.read_bytes(),
             WEIGHTS_FILE: build.npz_bytes(**initial_weights(X_train.shape[1], len(build.LABELS)))}
    for i, rows in enumerate(parts):
        files[worker_file(i)] = build.npz_bytes(X=X_train[rows], y=y_train[rows])
    for name, data in files.items():
        write_atomic(out / "archives" / name, data)
    sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    header = ("# Generated by examples/digits/federated/build.py: four edge workers' Datasets\n"
              "# (Dirichlet(0.3) splits of the training data) and the TrainingModel over them.\n"
              "# Copy it next to digits-edge.yaml while `make serve` runs to start the job.\n")
    text = header + kube_yaml(job_docs(base_url, sha256))
    write_atomic(out / "federated" / YAML_NAME, text.encode())
    counts = ", ".join(f"{len(rows)} rows / {len(np.unique(y_train[rows]))} digits"
                       for rows in parts)
    print(f"  federated job {JOB}: {WORKERS} workers ({counts})")


def main(argv: list[str] | None = None) -> int:
    build = digits_build()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent)
    parser.add_argument("--base-url", default=build.DEFAULT_BASE_URL)
    args = parser.parse_args(argv)
    split = build.load_split()
    write(args.out, args.base_url, split.X_train, split.y_train)
    return 0


if __name__ == "__main__":
    sys.exit(main())
