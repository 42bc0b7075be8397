"""count_dataset: the one entry point of jointserve.datasets, dispatching on the format name.

Each format has a counter module (_csv, _txt, _voc, _npz) that reads the dataset once and
returns a DatasetStats; this module picks it and maps a failure to read the files at all to
DatasetUnreadable, so callers have one error type to handle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ._csv import count_csv
from ._errors import DatasetFormatError
from ._npz import count_npz
from ._stats import CountOptions, DatasetStats
from ._txt import count_txt
from ._voc import count_voc

FormatCounter = Callable[[Path, CountOptions], DatasetStats]
_COUNTERS: dict[str, FormatCounter] = {
    "csv": count_csv,
    "txt": count_txt,
    "voc": count_voc,
    "npz": count_npz,
}
SUPPORTED_FORMATS: tuple[str, ...] = tuple(_COUNTERS)


def count_dataset(path: Path, format: str, options: CountOptions | None = None) -> DatasetStats:
    """Count the samples (and classes, where the format has labels) of the dataset at `path`.

    Args:
        path: a csv, txt or npz file; for voc a directory or a tar, tar.gz or zip archive.
        format: one of SUPPORTED_FORMATS, exactly as spelled there.
        options: how to read it (see CountOptions); the defaults when None.

    Returns:
        The counts, and the format's facts: csv `columns`, `labelColumn`; txt `images`; voc
        `images`, `objects`, `objectsPerClass`, `boxesOutOfBounds`, `imagesPresent`; npz
        `arrays`, `labelsArray`.

    Raises:
        DatasetFormatError: with the reason and the file (and line) at fault.
    """
    path = Path(path)
    counter = _COUNTERS.get(format)
    if counter is None:
        detail = f"unsupported dataset format {format!r}; supported: {', '.join(SUPPORTED_FORMATS)}"
        raise DatasetFormatError("UnsupportedFormat", path.name, detail)
    try:
        return counter(path, options or CountOptions())
    except OSError as exc:
        detail = f"cannot read: {exc.strerror or exc}"
        raise DatasetFormatError("DatasetUnreadable", _shown(exc, path), detail) from exc


def _shown(exc: OSError, path: Path) -> str:
    """The file `exc` is about, relative to the dataset, as errors name files."""
    if not isinstance(exc.filename, (str, os.PathLike)):
        return path.name
    failed = Path(exc.filename)
    if failed == path or path not in failed.parents:
        return failed.name
    return failed.relative_to(path).as_posix()
