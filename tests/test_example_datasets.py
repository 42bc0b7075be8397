"""The digits example's test split as Datasets (examples/digits/build.py): the three files
count as the split, hold exactly the models' inputs, and build to the same bytes twice; the
generated YAML is valid and names their sha256s; each format evaluates to the same accuracy.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
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
    assert len(y) == 450 and len(per_class) == 10
    npz = datasets["digits-test-npz"].spec
    facts = count_dataset(local(example, datasets["digits-test-npz"]), "npz",
                          CountOptions(labels_array=npz.npz.labelsArray)).facts
    assert facts == {"arrays": {"X": [450, 64], "y": [450]}, "labelsArray": "y"}


def test_the_csv_text_is_x_and_y(example: Path, split: tuple, datasets: dict) -> None:
    X, y = split
    data = local(example, datasets["digits-test"]).read_bytes()
    assert b"\r" not in data and data.endswith(b"\n")
    header, *rows = data.decode().splitlines()
    assert header.split(",") == [f"px{i}" for i in range(64)] + ["label"]
    cells = [row.split(",") for row in rows]
    assert np.array_equal(np.array([c[:-1] for c in cells], dtype=np.float32), X)
    assert [int(c[-1]) for c in cells] == y.tolist() and all(c[-1].isdigit() for c in cells)


def png_chunks(data: bytes) -> list[str]:
    chunks, at = [], 8
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        chunks.append(data[at + 4:at + 8].decode())
        at += 12 + length
    return chunks


def test_every_png_is_x_times_240(example: Path, split: tuple, datasets: dict) -> None:
    """pixel value / 240 is X exactly, every image (as is `value * (1/240)` in float64; a
    float32 multiply by float32(1/240) is within one ulp only)."""
    X, y = split
    index = local(example, datasets["digits-test-images"])
    lines = index.read_text().splitlines()
    assert lines == [f"test-{i:04d}.png {label}" for i, label in enumerate(y.tolist())]
    for i, line in enumerate(lines):
        data = (index.parent / line.split()[0]).read_bytes()
        assert png_chunks(data) == ["IHDR", "IDAT", "IEND"], line  # no metadata
        with Image.open(io.BytesIO(data)) as image:
            assert (image.mode, image.size) == ("L", (8, 8)), line
            pixels = np.asarray(image)
        assert pixels.dtype == np.uint8 and pixels.max() <= 240, line
        assert np.array_equal(pixels.ravel() * (1 / 240), X[i]), line
        assert np.array_equal((pixels.ravel() / np.float32(240)).astype(np.float32), X[i]), line


def test_the_npz_is_x_and_y(example: Path, split: tuple, datasets: dict) -> None:
    X, y = split
    with np.load(local(example, datasets["digits-test-npz"]), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["X", "y"]
        assert npz["X"].dtype == np.float32 and np.array_equal(npz["X"], X)
        assert npz["y"].dtype == np.int64 and np.array_equal(npz["y"], y)


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
        assert dataset.spec.url.startswith("http://127.0.0.1:8808/")
    assert datasets["digits-test"].spec.csv.labelColumn == "label"
    assert datasets["digits-test-npz"].spec.npz.labelsArray == "y"


class _Yaml11Loader(yaml.SafeLoader):
    """Reads y/n as booleans, as kubectl (YAML 1.1) does."""


_Yaml11Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"),
                                    list("yYnN"))


def test_kubectl_reads_the_yaml_as_written(example: Path) -> None:
    """A bare `labelsArray: y` is the boolean true to kubectl: the API server refused it."""
    text = (example / "digits-datasets.yaml").read_text()
    assert list(yaml.load_all(text, Loader=_Yaml11Loader)) == list(yaml.safe_load_all(text))
    assert (example / "k8s" / "digits-datasets.yaml").read_text() == text


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

    def sha256s(root: Path) -> dict[str, str]:
        images = sorted((root / "archives" / "digits-test-images").iterdir())
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images}

    assert sha256s(tmp_path) == sha256s(example) and len(sha256s(tmp_path)) == 451
    assert (tmp_path / "digits-datasets.yaml").read_text() == \
        (example / "digits-datasets.yaml").read_text()


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
