"""Builds the digits example: three ONNX model archives and the InferenceModels that serve them.

Trains on scikit-learn's bundled 8x8 digits (no download): a deliberately weak edge v1, a
better edge v2 and a bigger, more accurate cloud v1. Each is exported with skl2onnx, packed
as a reproducible tar.gz (same library versions -> same sha256) and listed in
`digits-edge.yaml` / `digits-cloud.yaml` (`digits.yaml`, the JointInferenceService over
them, is written by hand and committed). `request.json` is a ready OIP v2 request of a hard
example (a "2" that edge v1 reads as a 3 and the cloud model gets right),
`request-easy.json` one the edge model answers confidently and correctly, and `samples.npz`
the test split, for tests and benchmarks. The test split is also written as three Datasets
(`digits-datasets.yaml`: csv rows, npz arrays, and 8x8 PNGs listed by a txt index), which
the InferenceModels and the JointInferenceServices evaluate on (`spec.evaluation`).
federated/build.py adds the federated job: the training split dealt to four edge workers
as Datasets, and the TrainingModel `digits-fl` (federated/digits-federated.yaml).

    python examples/digits/build.py [--out DIR] [--base-url URL] [--force]

`build()` and the helpers are importable, so tests can build into a temp dir.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from jointserve.api import kube_yaml
from jointserve.store import pack_tar_gz as tar_gz
from jointserve.store import write_atomic

# scikit-learn, skl2onnx and onnxruntime are imported inside the functions that use them:
# they take ~2 s to import, and the up-to-date check should answer in a blink.

HERE = Path(__file__).resolve().parent
FEDERATED = HERE / "federated" / "build.py"
FEDERATED_SOURCES = (FEDERATED, HERE / "federated" / "train_softmax.py")
DEFAULT_BASE_URL = "http://127.0.0.1:8808"
RANDOM_STATE = 0
EDGE_V1_SAMPLES = 300
N_FEATURES = 64
LABELS = [str(i) for i in range(10)]
# Pinned rather than "newest", so archives (and their sha256) do not change when skl2onnx
# learns a newer opset, and so they load in every onnxruntime pyproject allows (>= 1.20).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
LAYERS = {"digits-edge": "edge", "digits-cloud": "cloud"}  # model name -> deployToLayer
YAML_NAMES = tuple(f"{name}.yaml" for name in LAYERS)
DATASETS_YAML = "digits-datasets.yaml"
# The test split as Datasets (archives/): csv rows, npz arrays, and PNGs listed by a txt index.
DATASET_FILES = ("digits-test.csv", "digits-test.npz", "digits-test-images/index.txt")
# The PNGs hold the 0..16 digit pixels times 15 (0..240): value / 240 is X exactly.
PNG_SCALE = 15


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray  # float32 [N, 64], pixel / 16 in [0, 1]
    y_train: np.ndarray  # int64 [N]
    X_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Recipe:
    """How one model version is trained."""

    model_name: str
    version: str
    description: str
    train_samples: int | None  # None: the whole training split
    make: Callable[[], Any]


@dataclass(frozen=True)
class Artifact:
    """One built model version: its archive, where the manifest says it lives, how good it is."""

    model_name: str
    version: str
    archive: Path
    sha256: str
    url: str
    accuracy: float
    trained_on: int
    estimator: Any  # the fitted scikit-learn model, so tests can compare predictions


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000)


def _mlp() -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=500, random_state=RANDOM_STATE)


RECIPES = (
    Recipe("digits-edge", "v1",
           f"LogisticRegression on the first {EDGE_V1_SAMPLES} training samples",
           EDGE_V1_SAMPLES, _logistic),
    Recipe("digits-edge", "v2", "LogisticRegression on the full training split",
           None, _logistic),
    Recipe("digits-cloud", "v1", "MLPClassifier(256, 256) on the full training split",
           None, _mlp),
)


def archive_name(model_name: str, version: str) -> str:
    return f"{model_name}-{version}.tar.gz"


def federated() -> ModuleType:
    """federated/build.py (the federated job over the training split), loaded by path."""
    spec = importlib.util.spec_from_file_location("digits_federated_build", FEDERATED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output_paths(out: Path) -> list[Path]:
    """Every file build() writes under `out`."""
    archives = [out / "archives" / archive_name(r.model_name, r.version) for r in RECIPES]
    datasets = [out / "archives" / name for name in DATASET_FILES]
    job = federated()
    return [*archives, *datasets, *(out / name for name in (*YAML_NAMES, DATASETS_YAML)),
            out / "request.json", out / "request-easy.json", out / "samples.npz",
            *(out / "archives" / name for name in job.output_names()),
            out / "federated" / job.YAML_NAME]


def up_to_date(out: Path, base_url: str) -> bool:
    """All outputs exist, are newer than the scripts that write them, and the manifests use
    `base_url`."""
    script_mtime = max(p.stat().st_mtime_ns for p in (Path(__file__), *FEDERATED_SOURCES))
    paths = output_paths(out)
    if not all(p.is_file() and p.stat().st_mtime_ns > script_mtime for p in paths):
        return False
    prefix = f"downloadURL: {base_url.rstrip('/')}/"
    return (all(prefix in (out / name).read_text() for name in YAML_NAMES)
            and f"url: {base_url.rstrip('/')}/" in (out / DATASETS_YAML).read_text())


def load_split() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)  # pixels are 0..16; the models see [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y.astype(np.int64), test_size=0.25, random_state=RANDOM_STATE, stratify=y)
    return Split(X_train, y_train, X_test, y_test)


def to_onnx(estimator: Any) -> bytes:
    """skl2onnx export: input `input` float32 [N, 64]; outputs `label` and `probabilities`."""
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = skl_to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        # zipmap off: probabilities as a plain float tensor, which OIP v2 can carry.
        options={id(estimator): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    return onx.SerializeToString()


def onnx_labels(model: bytes, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["label"], {"input": X})[0]


def manifest_yaml(model_name: str, artifacts: list[Artifact]) -> str:
    # A safe dumper, not string formatting: it quotes every value YAML would read as another
    # type (a sha256 of digits only would become an integer the API server refuses).
    doc = {
        "apiVersion": "jointserve.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": model_name},
        "spec": {
            "modelName": model_name,
            "deployToLayer": LAYERS[model_name],
            "frameworkType": "onnx",
            "manifest": [{"version": a.version, "downloadURL": a.url, "sha256sum": a.sha256}
                         for a in artifacts],
            "targetVersion": artifacts[0].version,
            "replicas": 1,
            # Each target version's accuracy on the test split, in status.metrics.
            "evaluation": {"dataset": "digits-test"},
        },
    }
    header = ("# Generated by examples/digits/build.py; a rebuild (--force, or build.py changing)\n"
              "# overwrites it, so edits such as targetVersion last until then.\n")
    return header + kube_yaml([doc])


# -- the test split as Datasets -------------------------------------------------------------


def test_csv(split: Split) -> bytes:
    """px0..px63 (the models' inputs, pixel/16: multiples of 1/16, written exactly) + label."""
    lines = [",".join([f"px{i}" for i in range(N_FEATURES)] + ["label"])]
    lines += [",".join([repr(float(v)) for v in row] + [str(int(label))])
              for row, label in zip(split.X_test, split.y_test)]
    return ("\n".join(lines) + "\n").encode()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """The arrays as an .npz whose zip entries carry a fixed date, so its sha256 is
    reproducible (np.savez stamps the current time)."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system, info.external_attr = 3, 0o644 << 16  # the same on every OS
            archive.writestr(info, member.getvalue())
    return out.getvalue()


def test_npz(split: Split) -> bytes:
    return npz_bytes(X=split.X_test, y=split.y_test)


def test_pngs(split: Split) -> dict[str, bytes]:
    """One 8x8 grayscale PNG per test sample (pixel values 0..240) and the txt index."""
    from PIL import Image

    files: dict[str, bytes] = {}
    index = []
    for i, (row, label) in enumerate(zip(split.X_test, split.y_test)):
        pixels = np.rint(row.reshape(8, 8) * 16 * PNG_SCALE).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(out, format="PNG", compress_level=9)
        files[f"test-{i:04d}.png"] = out.getvalue()
        index.append(f"test-{i:04d}.png {int(label)}")
    files["index.txt"] = ("\n".join(index) + "\n").encode()
    return files


def datasets_yaml(base_url: str, sha256: dict[str, str]) -> str:
    base = base_url.rstrip("/")
    specs = {
        "digits-test": {"format": "csv", "file": "digits-test.csv",
                        "csv": {"header": True, "labelColumn": "label"}},
        "digits-test-npz": {"format": "npz", "file": "digits-test.npz", "npz": {"labelsArray": "y"}},
        "digits-test-images": {"format": "txt", "file": "digits-test-images/index.txt"},
    }
    docs = []
    for name, spec in specs.items():
        file = spec.pop("file")
        docs.append({"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
                     "metadata": {"name": name},
                     "spec": {"url": f"{base}/{file}", "sha256sum": sha256[file], **spec}})
    header = ("# Generated by examples/digits/build.py: the test split as Datasets, in three\n"
              "# formats (csv rows, npz arrays, PNGs listed by a txt index).\n")
    return header + kube_yaml(docs)


def write_datasets(split: Split, out: Path, base_url: str) -> None:
    files = {"digits-test.csv": test_csv(split), "digits-test.npz": test_npz(split)}
    files |= {f"digits-test-images/{name}": data for name, data in test_pngs(split).items()}
    for name, data in files.items():
        write_atomic(out / "archives" / name, data)
    sha256 = {name: hashlib.sha256(files[name]).hexdigest() for name in DATASET_FILES}
    write_atomic(out / DATASETS_YAML, datasets_yaml(base_url, sha256).encode())


def request_json(sample: np.ndarray) -> str:
    data = [float(v) for v in sample.astype(np.float32).ravel()]
    body = {"inputs": [{"name": "input", "shape": [1, N_FEATURES], "datatype": "FP32",
                        "data": data}]}
    return json.dumps(body) + "\n"


def easy_sample(edge: Any, split: Split) -> int:
    """Index of the first test sample edge v1 labels right with probability > 0.95."""
    probabilities = edge.predict_proba(split.X_test)
    confident = (probabilities.max(axis=1) > 0.95) & (probabilities.argmax(axis=1) == split.y_test)
    return int(np.flatnonzero(confident)[0])


def build_one(recipe: Recipe, split: Split, out: Path, base_url: str) -> Artifact:
    import sklearn

    n = recipe.train_samples or len(split.X_train)
    estimator = recipe.make().fit(split.X_train[:n], split.y_train[:n])
    model = to_onnx(estimator)
    # Accuracy of what is served (the ONNX model), checked against scikit-learn's own answer.
    labels = onnx_labels(model, split.X_test)
    agree = float(np.mean(labels == estimator.predict(split.X_test)))
    if agree < 0.99:
        raise RuntimeError(f"{recipe.model_name} {recipe.version}: ONNX export agrees with "
                           f"scikit-learn on only {agree:.1%} of the test split")
    accuracy = float(np.mean(labels == split.y_test))
    metadata = {
        "labels": LABELS,
        "accuracy": round(accuracy, 4),
        "trained_on": n,
        "framework": "onnx",
        "source": f"scikit-learn {sklearn.__version__} {recipe.description}, load_digits",
    }
    name = archive_name(recipe.model_name, recipe.version)
    archive = tar_gz({"model.onnx": model,
                      "metadata.json": (json.dumps(metadata) + "\n").encode()})
    write_atomic(out / "archives" / name, archive)
    print(f"  {recipe.model_name} {recipe.version}: {recipe.description}: "
          f"test accuracy {accuracy:.4f} ({len(archive) // 1024} KiB)")
    return Artifact(recipe.model_name, recipe.version, out / "archives" / name,
                    hashlib.sha256(archive).hexdigest(), f"{base_url.rstrip('/')}/{name}",
                    accuracy, n, estimator)


def build(out: Path, base_url: str = DEFAULT_BASE_URL) -> dict[str, Artifact]:
    """Train, export, pack and describe all versions; returns them by archive stem
    (`digits-edge-v1`, ...). The manifests are written last, so they never name an archive
    that is not there yet."""
    split = load_split()
    artifacts = {f"{r.model_name}-{r.version}": build_one(r, split, out, base_url)
                 for r in RECIPES}
    acc = {key: a.accuracy for key, a in artifacts.items()}
    if not acc["digits-edge-v1"] < acc["digits-edge-v2"] < acc["digits-cloud-v1"]:
        raise RuntimeError(f"expected edge v1 < edge v2 < cloud v1 in test accuracy, got {acc}")

    samples = io.BytesIO()
    np.savez_compressed(samples, X=split.X_test, y=split.y_test)
    write_atomic(out / "samples.npz", samples.getvalue())
    write_atomic(out / "request.json", request_json(split.X_test[0]).encode())
    easy = easy_sample(artifacts["digits-edge-v1"].estimator, split)
    write_atomic(out / "request-easy.json", request_json(split.X_test[easy]).encode())
    write_datasets(split, out, base_url)
    federated().write(out, base_url, split.X_train, split.y_train)
    for model_name in LAYERS:
        versions = [a for a in artifacts.values() if a.model_name == model_name]
        write_atomic(out / f"{model_name}.yaml", manifest_yaml(model_name, versions).encode())
    return artifacts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: %(default)s)")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help="where the archives will be served from (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    if not args.force and up_to_date(args.out, args.base_url):
        print(f"digits example in {args.out}: up to date")
        return 0
    start = time.monotonic()
    print(f"building the digits example into {args.out} ...")
    artifacts = build(args.out, args.base_url)
    for a in artifacts.values():
        print(f"  {a.archive.name}  sha256 {a.sha256}")
    print(f"done in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
