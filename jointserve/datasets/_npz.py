"""Counting an npz dataset: arrays whose axis 0 is the sample axis.

`np.load(..., allow_pickle=False)` opens the archive, and only each array's .npy header is read
for its shape, so counting a 10 GB feature array reads a few hundred bytes of it; the labels
array is the only one loaded. The rules:

- samples = the length of axis 0 of the first array in the archive; every array must agree,
  so a 0-d array, or an archive with no arrays, is NpzMalformed.
- Object arrays are NpzMalformed whether or not they are loaded: they hold pickles.
- Classes come from `labels_array` when the archive has it (none otherwise). It must be 1-d;
  integer, bool and string labels are counted as their text, float labels only when every
  value is a whole number ("3.0" counts as "3"). It is loaded only up to MAX_LABELS_BYTES.
- An array header that declares more data than its member holds is NpzMalformed: numpy would
  allocate it all before noticing.

Facts: `arrays` ({name: shape as a list}, in archive order) and `labelsArray` (the array the
classes came from, or None).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format
from numpy.lib.npyio import NpzFile

from ._errors import DatasetFormatError
from ._stats import CountOptions, DatasetStats

Shapes = dict[str, tuple[int, ...]]
# The labels array is loaded whole: 256 MiB is 32 million int64 labels. Read at call time.
MAX_LABELS_BYTES = 256 * 1024 * 1024


def count_npz(path: Path, options: CountOptions) -> DatasetStats:
    """Count the samples of the npz file `path`."""
    file = path.name
    with path.open("rb") as f:
        _check_magic(f.read(6), file)
        f.seek(0)
        try:
            loaded = np.load(f, allow_pickle=False)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise _malformed(file, f"cannot load as npz: {exc}") from None
        with loaded as npz:
            shapes = _shapes(npz.zip, file)
            samples = _samples(shapes, file)
            label = options.labels_array if options.labels_array in shapes else None
            classes = _classes(npz, label, shapes[label], file) if label is not None else {}
    return DatasetStats(
        format="npz",
        samples=samples,
        classes=classes,
        facts={
            "arrays": {name: list(shape) for name, shape in shapes.items()},
            "labelsArray": label,
        },
    )


def _check_magic(head: bytes, file: str) -> None:
    # np.load takes anything else for a pickle, and says so: misleading for a csv file.
    if head.startswith(b"\x93NUMPY"):
        raise _malformed(file, "a single .npy array, not an .npz archive of arrays")
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise _malformed(file, "not an .npz archive (a zip of .npy arrays)")


def _shapes(archive: zipfile.ZipFile, file: str) -> Shapes:
    shapes: Shapes = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise _malformed(file, f"member {info.filename!r} is not an .npy array")
        shapes[info.filename.removesuffix(".npy")] = _shape(archive, info, file)
    return shapes


def _shape(archive: zipfile.ZipFile, info: zipfile.ZipInfo, file: str) -> tuple[int, ...]:
    """The shape in one member's .npy header, without reading its data."""
    name = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as member:
            version = npy_format.read_magic(member)
            # Versions 2.0 and 3.0 differ only in how field names are encoded.
            read_header = (
                npy_format.read_array_header_1_0
                if version == (1, 0)
                else npy_format.read_array_header_2_0
            )
            shape, _fortran_order, dtype = read_header(member)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise _malformed(file, f"array {name!r}: bad .npy header: {exc}") from None
    if dtype.hasobject:
        raise _malformed(file, f"array {name!r} holds Python objects (pickles are not allowed)")
    # numpy allocates what the header declares before reading a byte of data, so a header
    # must not claim more than its member holds (which MAX_LABELS_BYTES caps for labels).
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size:
        detail = f"its header declares {declared} bytes of data, the member holds {info.file_size}"
        raise _malformed(file, f"array {name!r}: {detail}")
    return tuple(shape)


def _samples(shapes: Shapes, file: str) -> int:
    if not shapes:
        raise _malformed(file, "the archive holds no arrays")
    for name, shape in shapes.items():
        if not shape:
            raise _malformed(file, f"array {name!r} is 0-dimensional: it has no sample axis")
    (first, first_shape), *others = shapes.items()
    for name, shape in others:
        if shape[0] != first_shape[0]:
            detail = f"{first!r} has {first_shape[0]}, {name!r} has {shape[0]}"
            raise _malformed(file, f"arrays disagree on axis 0 (samples): {detail}")
    return first_shape[0]


def _classes(npz: NpzFile, name: str, shape: tuple[int, ...], file: str) -> dict[str, int]:
    if len(shape) != 1:
        raise _malformed(file, f"labels array {name!r} has shape {shape}; expected 1-d")
    size = npz.zip.getinfo(name + ".npy").file_size
    if size > MAX_LABELS_BYTES:
        detail = f"{size} bytes; at most {MAX_LABELS_BYTES} are loaded"
        raise _malformed(file, f"labels array {name!r} is too large: {detail}")
    labels = npz[name]
    values, counts = np.unique(_label_values(labels, name, file), return_counts=True)
    return dict(sorted(zip((str(value) for value in values.tolist()), counts.tolist())))


def _label_values(labels: np.ndarray, name: str, file: str) -> np.ndarray:
    """`labels` as an array whose values print as the class names."""
    kind = labels.dtype.kind
    if kind in "biuU":
        return labels
    if kind == "S":
        try:
            return np.char.decode(labels, "utf-8")
        except UnicodeDecodeError:
            raise _malformed(file, f"labels array {name!r} is not UTF-8 text") from None
    if kind != "f":
        detail = f"dtype {labels.dtype}; expected integers, bools, strings or whole-number floats"
        raise _malformed(file, f"labels array {name!r} has {detail}")
    if not (np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))):
        raise _malformed(file, f"labels array {name!r} holds floats that are not whole numbers")
    return labels.astype(np.int64)


def _malformed(file: str, detail: str) -> DatasetFormatError:
    return DatasetFormatError("NpzMalformed", file, detail)
