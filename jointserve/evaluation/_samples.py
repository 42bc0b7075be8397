"""A Dataset's samples as an evaluation feeds them: inputs and true labels, by format.

    csv   every column but the label column, as numbers: one float32 row per record
    npz   the `featuresArray` (axis 0 = samples) and the `labelsArray`
    txt   the images the index lists, as encoded bytes (a service's imageDecode step reads
          them, as it reads a client's), fetched relative to the index (or txt.baseURL)

The rules are the counters' (jointserve.datasets): a sample the Dataset counted is a sample
evaluated, and a file the counter refuses is refused here with the same error. What only
evaluation needs (a csv field that is not a number, an image that cannot be fetched) is an
EvaluationError naming the file and line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import numpy as np

from jointserve.api import CsvOptions, DatasetSpec, NpzOptions
from jointserve.datasets import CountOptions, image_url, read_csv_table, read_txt_list, read_voc

from ._errors import EvaluationError
from ._metrics import GroundTruthBox

# An image of an image-list dataset: far above any real one, so a hostile server cannot
# make the operator hold gigabytes.
MAX_IMAGE_BYTES = 32 * 1024 * 1024
IMAGE_TIMEOUT_S = 30.0

ImageReader = Callable[[str], bytes]


@dataclass(frozen=True)
class Samples:
    """One dataset's samples: `labels[i]` is the true class of sample i, whose input is
    `features[i]` (csv, npz) or `images[i]` (txt)."""

    labels: list[str]  # classification; empty for detection
    features: np.ndarray | None = None
    images: np.ndarray | None = None  # object array of bytes
    boxes: list[list[GroundTruthBox]] | None = None  # detection (voc): per image

    def __len__(self) -> int:
        inputs = self.images if self.images is not None else self.features
        return len(inputs) if inputs is not None else len(self.labels)


def load_samples(path: Path, spec: DatasetSpec, images_base: str = "",
                 read_image: ImageReader | None = None) -> Samples:
    """The samples of the dataset file `path`, described by `spec`.

    Args:
        path: the verified local copy of spec.url.
        spec: the Dataset's spec (format and options).
        images_base: txt: the URL the index's image paths are relative to (default:
            spec.images_base()).
        read_image: txt: URL -> bytes (default: `read_url`).
    """
    if spec.format == "csv":
        return _csv_samples(path, spec.csv or CsvOptions())
    if spec.format == "npz":
        return _npz_samples(path, spec.npz or NpzOptions())
    if spec.format == "txt":
        return _txt_samples(path, images_base or spec.images_base(), read_image or read_url)
    if spec.format == "voc":
        return _voc_samples(path)
    raise EvaluationError("InputsRejected", f"{path.name}: evaluating a {spec.format} dataset "
                          "is not supported; use csv, npz, txt or voc")


def _csv_samples(path: Path, options: CsvOptions) -> Samples:
    table = read_csv_table(path, CountOptions(header=options.header,
                                              label_column=options.labelColumn,
                                              delimiter=options.delimiter))
    if table.label is None:
        raise EvaluationError("InputsRejected", f"{path.name}: has no label column "
                              "(csv.labelColumn), so there is nothing to compare predictions with")
    inputs = [i for i in range(len(table.columns)) if i != table.label]
    features = np.empty((len(table.records), len(inputs)), dtype=np.float32)
    for row, (line, fields) in enumerate(table.records):
        try:
            features[row] = [float(fields[i]) for i in inputs]
        except ValueError:
            bad = next(i for i in inputs if not _is_number(fields[i]))
            raise EvaluationError("InputsRejected", f"{path.name} line {line}: column "
                                  f"{table.columns[bad]!r} is not a number "
                                  f"({fields[bad][:40]!r})") from None
    labels = [fields[table.label] for _, fields in table.records]
    return Samples(labels, features=features)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _npz_samples(path: Path, options: NpzOptions) -> Samples:
    features_name = options.featuresArray
    with np.load(path, allow_pickle=False) as arrays:
        missing = [n for n in (features_name, options.labelsArray) if n not in arrays.files]
        if missing:
            raise EvaluationError("InputsRejected", f"{path.name}: no array {missing[0]!r} "
                                  f"(the file has {sorted(arrays.files)})")
        features, labels = arrays[features_name], arrays[options.labelsArray]
    if features.ndim == 0 or labels.ndim != 1 or len(features) != len(labels):
        raise EvaluationError("InputsRejected", f"{path.name}: {features_name!r} "
                              f"{list(features.shape)} and {options.labelsArray!r} "
                              f"{list(labels.shape)} must have one row per sample")
    return Samples([_label(v) for v in labels.tolist()], features=features)


def _label(value: object) -> str:
    # The counter names classes the same way (an integer 3 is the class "3").
    return value.decode() if isinstance(value, bytes) else str(value)


def _txt_samples(path: Path, base: str, read_image: ImageReader) -> Samples:
    entries = read_txt_list(path)
    images = np.empty(len(entries), dtype=object)
    for i, entry in enumerate(entries):
        try:
            images[i] = read_image(image_url(base, entry.path))
        except EvaluationError as exc:
            raise EvaluationError(exc.reason, f"{path.name} line {entry.line}: {exc.detail}") from None
    return Samples([entry.label for entry in entries], images=images)


def _voc_samples(path: Path) -> Samples:
    """Each annotation's image and its boxes; every image must be in the dataset."""
    found = read_voc(path)
    images = np.empty(len(found), dtype=object)
    boxes = []
    for i, sample in enumerate(found):
        if sample.image is None:
            raise EvaluationError("InputsRejected", f"{sample.annotation}: its image "
                                  f"{sample.filename!r} is not in JPEGImages/; evaluating a "
                                  "detector needs the images")
        images[i] = sample.image
        boxes.append([GroundTruthBox(o.name, *o.box, difficult=o.difficult) for o in sample.objects])
    return Samples([], images=images, boxes=boxes)


def read_url(url: str) -> bytes:
    """The bytes at an http(s) or file:// URL, at most MAX_IMAGE_BYTES; EvaluationError
    (DatasetUnreadable) naming the URL when they cannot be read."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "file":
            with open(url2pathname(parts.path), "rb") as f:
                data = f.read(MAX_IMAGE_BYTES + 1)
        else:
            data = _read_http(url)
    except (OSError, httpx.HTTPError) as exc:
        raise EvaluationError("DatasetUnreadable", f"cannot read {url}: {exc}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise EvaluationError("DatasetUnreadable", f"{url}: larger than {MAX_IMAGE_BYTES} bytes")
    return data


_client: httpx.Client | None = None


def _read_http(url: str) -> bytes:
    global _client
    if _client is None:  # one pooled client: an index of thousands of images, one connection
        _client = httpx.Client(timeout=IMAGE_TIMEOUT_S, follow_redirects=True)
    with _client.stream("GET", url) as response:
        if response.status_code != 200:
            raise EvaluationError("DatasetUnreadable", f"GET {url}: HTTP {response.status_code}")
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > MAX_IMAGE_BYTES:
                break
    return bytes(data)
