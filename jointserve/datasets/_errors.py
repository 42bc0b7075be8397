"""The one error type of jointserve.datasets: why a dataset cannot be counted, and where.

The Dataset resource (issue 14) will turn a DatasetFormatError into a status condition:
`reason` becomes the condition's reason and `str(err)` its message. So every message starts
with the file at fault, and the line when there is one, e.g.
`train.csv line 7: 4 fields, the header has 5`, and says what is wrong in words a user can act on.
"""

from __future__ import annotations

from typing import Literal, get_args

DatasetReason = Literal[
    "CsvMalformed",
    "TxtMalformed",
    "TxtPathEscapes",
    "VocMalformed",
    "NpzMalformed",
    "UnsupportedFormat",
    "UnsafeArchive",
    "DatasetUnreadable",
]
_REASONS = frozenset(get_args(DatasetReason))


class DatasetFormatError(Exception):
    """A dataset that cannot be counted.

    `reason` is a Kubernetes-style CamelCase reason: CsvMalformed, TxtMalformed, VocMalformed,
    NpzMalformed (the content breaks the format's rules, including text that is not UTF-8 and a
    corrupt archive), TxtPathEscapes (an image path of a txt list that would leave the
    images' base), UnsupportedFormat (an unknown format name, or a VOC path that is neither
    a directory nor a tar, tar.gz or zip archive), UnsafeArchive (an archive member with an
    absolute or '..' path, a link, a device, a duplicate name, or past the member caps) and
    DatasetUnreadable (the file is missing or cannot be read).

    `file` names the file at fault relative to the dataset: the file's own name for csv, txt
    and npz (and for archive-wide problems), the path inside the directory or archive for a VOC
    annotation. `line` is the 1-based line, or None when there is no line to point at.
    """

    def __init__(self, reason: DatasetReason, file: str, detail: str, line: int | None = None):
        if reason not in _REASONS:
            raise ValueError(f"unknown DatasetFormatError reason {reason!r}")
        where = file if line is None else f"{file} line {line}"
        self.message = f"{where}: {detail}"
        super().__init__(self.message)
        self.reason: str = reason
        self.file = file
        self.line = line
        self.detail = detail

    def __reduce__(self) -> tuple[type[DatasetFormatError], tuple[str, str, str, int | None]]:
        # Counting may run in a Ray worker whose exceptions are pickled back; the default
        # reduce would call __init__ with the message alone and fail.
        return (type(self), (self.reason, self.file, self.detail, self.line))
