"""The digits example's test split as Datasets (examples/digits/build.py): the three files
count as the split, hold exactly the models' inputs, and build to the same bytes twice; the
generated YAML is valid and names their sha256s; each format evaluates to the same accuracy.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jointserve.api import Dataset, load_file
from jointserve.datasets import CountOptions, count_dataset
from jointserve.evaluation import DatasetRef, evaluate_service, load_samples
from jointserve.protocol import LoadedModel
from jointserve.store import ArtifactStore

FILES = ("digits-test.csv", "digits-test.npz", "digits-test-images/index.txt")


@pytest.fixture(scope="module")
def split(example: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(example / "samples.npz") as arrays:
        return arrays["X"], arrays["y"]


@pytest.fixture(scope="module")
def datasets(example: Path) -> dict[str, Dataset]:
    found = load_file(example / "digits-datasets.yaml")
    assert all(isinstance(d, Dataset) for d in found)
    return {d.metadata.name: d for d in found}  # type: ignore[misc]


def local(example: Path, dataset: Dataset) -> Path:
    return example / "archives" / dataset.spec.url.split("/", 3)[3]


def test_each_format_counts_the_split(example: Path, split: tuple, datasets: dict) -> None:
    _, y = split
    per_class = {str(c): int(n) for c, n in enumerate(np.bincount(y))}
    assert set(datasets) == {"digits-test", "digits-test-npz", "digits-test-images"}
    for dataset in datasets.values():
        spec = dataset.spec
        options = CountOptions(label_column=spec.csv.labelColumn if spec.csv else None,
                               labels_array=spec.npz.labelsArray if spec.npz else "y")
        stats = count_dataset(local(example, dataset), spec.format, options)
        assert (stats.samples, stats.classes) == (len(y), per_class), dataset.metadata.name


def test_the_files_hold_the_models_inputs_exactly(example: Path, split: tuple,
                                                  datasets: dict) -> None:
    X, y = split
    csv = load_samples(local(example, datasets["digits-test"]), datasets["digits-test"].spec)
    assert np.array_equal(csv.features, X) and csv.labels == [str(v) for v in y]
    index = local(example, datasets["digits-test-images"])
    first = index.parent / index.read_text().split()[0]
    pixels = np.asarray(Image.open(io.BytesIO(first.read_bytes())), dtype=np.float32)
    assert pixels.shape == (8, 8) and pixels.max() <= 240
    assert np.array_equal((pixels / 240).astype(np.float32).ravel(), X[0])


def test_the_yaml_names_the_files_sha256(example: Path, datasets: dict) -> None:
    for dataset in datasets.values():
        data = local(example, dataset).read_bytes()
        assert hashlib.sha256(data).hexdigest() == dataset.spec.sha256sum


def test_a_rebuild_writes_the_same_bytes(example: Path, tmp_path: Path) -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("digits_build_again", example / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules["digits_build_again"] = build
    spec.loader.exec_module(build)
    build.write_datasets(build.load_split(), tmp_path, "http://127.0.0.1:8808")
    for name in FILES:
        assert (tmp_path / "archives" / name).read_bytes() == \
            (example / "archives" / name).read_bytes(), name


def test_images_through_imagedecode_score_as_the_rows(example: Path, datasets: dict,
                                                      tmp_path: Path) -> None:
    """digits-images (PNG in, imageDecode + normalize) scores exactly as digits (rows in)."""
    store = ArtifactStore(tmp_path / "store")
    models = {}
    for model in (r for name in ("digits-edge", "digits-cloud")
                  for r in load_file(example / f"{name}.yaml")):
        entry = model.spec.target_file()
        url = (example / "archives" / entry.downloadURL.rsplit("/", 1)[1]).as_uri()
        path = store.fetch(model.spec.modelName, entry.version, url, entry.sha256sum).path
        models[model.metadata.name] = LoadedModel.load(model.spec.modelName, entry.version, path)
    (rows_service,) = load_file(example / "digits.yaml")
    (images_service,) = load_file(example / "digits-images.yaml")
    images_ds = datasets["digits-test-images"]
    index = local(example, images_ds)
    images = load_samples(index, images_ds.spec, index.parent.as_uri() + "/")
    rows = load_samples(local(example, datasets["digits-test"]), datasets["digits-test"].spec)
    by_rows = evaluate_service("digits", rows_service.spec, models["digits-edge"],
                               models["digits-cloud"], rows, DatasetRef("digits-test", "0" * 64))
    by_images = evaluate_service("digits-images", images_service.spec, models["digits-edge"],
                                 models["digits-cloud"], images, DatasetRef("img", "0" * 64))
    assert by_images.accuracy == by_rows.accuracy
    assert by_images.cloudRatio == by_rows.cloudRatio
