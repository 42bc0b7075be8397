"""The values of jointserve.datasets: what to count with (CountOptions), what was counted
(DatasetStats). Both are frozen; the format counters build a DatasetStats and nothing changes
it afterwards. The Dataset resource will copy a DatasetStats into its status as it is, so
`facts` holds only JSON values (str, int, list, dict, None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CountOptions:
    """How to read a dataset; each field matters to one format only.

    Args:
        header: csv: the first record names the columns and is not a sample.
        label_column: csv: the column holding each sample's class, by name (needs `header`)
            or by 0-based index; None when the samples have no labels.
        delimiter: csv: the field separator, one character.
        labels_array: npz: the array holding each sample's class, when the file has it.
    """

    header: bool = True
    label_column: str | int | None = None
    delimiter: str = ","
    labels_array: str | None = "y"

    def __post_init__(self) -> None:
        # These contradict themselves whatever the file holds, so they are the caller's
        # ValueError, not a DatasetFormatError about the data.
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(
                f"delimiter must be one character other than '\"' or a line break, "
                f"not {self.delimiter!r}"
            )
        column = self.label_column
        if isinstance(column, bool) or (isinstance(column, int) and column < 0):
            raise ValueError(f"label_column must be a name or an index >= 0, not {column!r}")
        if isinstance(column, str) and not self.header:
            raise ValueError(f"label_column {column!r} is a name but header is False: use an index")


@dataclass(frozen=True)
class DatasetStats:
    """What count_dataset found.

    `samples` is the number of samples; `classes` maps each class to its number of samples
    (for voc: of images showing it), sorted by name, empty when the format has no labels;
    `facts` holds the format's own findings (see count_dataset).
    """

    format: str
    samples: int
    classes: dict[str, int] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
