"""Counting a csv dataset: one sample per record, read by the csv module, not per line.

A quoted field may hold line breaks, so one record can span several lines; the line numbers
in errors are where the record starts. The rules:

- With `header`, the first record names the columns and is not a sample; an empty file is
  then CsvMalformed (no header). Every record must have as many fields as the header (or,
  without a header, as the first record).
- Blank lines (nothing between two line breaks) are skipped wherever they are, as
  csv.DictReader and pandas do; a line of spaces is a record like any other.
- Quoting is strict: a stray quote or a quoted field left open at the end of the file is
  CsvMalformed, rather than one field swallowing the rest of the file.
- The label column is found by name (in the header) or by index; a sample with an empty
  label is CsvMalformed, like a txt line without one. Labels are taken as written.
- UTF-8 only; a leading BOM and CRLF line endings are fine.

Facts: `columns` (the header's names, or the number of fields when there is no header) and
`labelColumn` (as given in the options, or None).
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from ._errors import DatasetFormatError
from ._lines import decoded_lines
from ._stats import CountOptions, DatasetStats

Record = tuple[int, list[str]]  # (the line the record starts on, its fields)


@dataclass(frozen=True)
class _Shape:
    """What every sample record must look like."""

    width: int  # number of fields
    source: str  # where `width` comes from, for messages: "the header", "the first record"
    label: int | None  # index of the label column
    label_name: str  # the label column as messages name it


def count_csv(path: Path, options: CountOptions) -> DatasetStats:
    """Count the records of the csv file `path`."""
    with path.open("rb") as f:
        opened = _open(f, path.name, options)
        if opened is None:
            return DatasetStats("csv", 0, {}, {"columns": 0, "labelColumn": options.label_column})
        shape, columns, records = opened
        classes = _count_records(records, shape, path.name)
    return DatasetStats(
        format="csv",
        samples=classes.total(),
        classes=dict(sorted(classes.items())) if shape.label is not None else {},
        facts={"columns": columns, "labelColumn": options.label_column},
    )


def _open(f: IO[bytes], file: str, options: CountOptions
          ) -> tuple[_Shape, list[str] | int, Iterator[Record]] | None:
    """The shape every sample record must have, the columns (the header's names, or the
    number of fields), and the sample records still to read; None for an empty file
    without a header (with one, an empty file is CsvMalformed)."""
    lines = decoded_lines(f, file, "CsvMalformed")
    records = _records(csv.reader(lines, delimiter=options.delimiter, strict=True), file)
    first = next(records, None)
    if first is None:
        if options.header:
            raise DatasetFormatError("CsvMalformed", file, "the file is empty: no header row")
        return None
    if options.header:
        return _header_shape(first, options.label_column, file), first[1], records
    shape = _first_record_shape(first, options.label_column, file)
    return shape, len(first[1]), itertools.chain([first], records)


@dataclass(frozen=True)
class CsvTable:
    """The samples of a csv file as read by the counting rules, for the evaluator.

    `columns` are the header's names (without a header: "0", "1", ...); `label` is the label
    column's index (None without one); `records` are the sample records, each with the line
    it starts on, all of the header's width.
    """

    columns: list[str]
    label: int | None
    records: list[Record]


def read_csv_table(path: Path, options: CountOptions) -> CsvTable:
    """Read every sample record of `path`, by exactly the rules `count_csv` counts them with."""
    with path.open("rb") as f:
        opened = _open(f, path.name, options)
        if opened is None:
            return CsvTable([], None, [])
        shape, columns, records = opened
        rows = list(records)
    _count_records(rows, shape, path.name)  # the same checks: width, empty labels
    names = columns if isinstance(columns, list) else [str(i) for i in range(columns)]
    return CsvTable(names, shape.label, rows)


class _Reader(Protocol):
    """What csv.reader returns (its class is private)."""

    line_num: int  # lines read from the source so far

    def __next__(self) -> list[str]: ...


def _records(reader: _Reader, file: str) -> Iterator[Record]:
    """The non-blank records of `reader`, each with the line it starts on."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _malformed(file, start, f"cannot parse the record: {exc}") from None
        if row:  # a blank line reads as []
            yield start, row


def _header_shape(header: Record, label: str | int | None, file: str) -> _Shape:
    line, names = header
    if label is None:
        return _Shape(len(names), "the header", None, "")
    if isinstance(label, int):
        index = _checked_index(label, len(names), "the header", file, line)
        return _Shape(len(names), "the header", index, repr(names[index]))
    matches = [index for index, name in enumerate(names) if name == label]
    if not matches:
        raise _malformed(file, line, f"label column {label!r} is not in the header {names}")
    if len(matches) > 1:
        detail = f"label column {label!r} is in the header {len(matches)} times"
        raise _malformed(file, line, detail)
    return _Shape(len(names), "the header", matches[0], repr(label))


def _first_record_shape(first: Record, label: str | int | None, file: str) -> _Shape:
    # CountOptions allows only an index (or None) without a header.
    line, fields = first
    index = None
    if isinstance(label, int):
        index = _checked_index(label, len(fields), "the first record", file, line)
    return _Shape(len(fields), "the first record", index, str(label))


def _checked_index(index: int, width: int, source: str, file: str, line: int) -> int:
    if index >= width:
        detail = f"label column {index} is out of range: {source} has {_fields(width)}"
        raise _malformed(file, line, detail)
    return index


def _count_records(records: Iterable[Record], shape: _Shape, file: str) -> Counter[str]:
    """Samples per label (all under "" when there is no label column)."""
    classes: Counter[str] = Counter()
    for line, fields in records:
        if len(fields) != shape.width:
            detail = f"{_fields(len(fields))}, {shape.source} has {shape.width}"
            raise _malformed(file, line, detail)
        label = "" if shape.label is None else fields[shape.label]
        if shape.label is not None and not label:
            raise _malformed(file, line, f"empty label in column {shape.label_name}")
        classes[label] += 1
    return classes


def _fields(count: int) -> str:
    return "1 field" if count == 1 else f"{count} fields"


def _malformed(file: str, line: int, detail: str) -> DatasetFormatError:
    return DatasetFormatError("CsvMalformed", file, detail, line)
