"""Counting an image classification list (txt): one `path label` line per sample.

This is Sedna's list format. Unlike Sedna, blank lines are not samples. The rules:

- A line is split at whitespace into exactly two fields, the image path and its label, so such
  a path cannot contain spaces. A line that contains a tab is split at tabs instead (runs of
  tabs count as one, spaces around fields are dropped), so `my photos/a.jpg<TAB>cat` is a path
  with a space; its label may then contain spaces too.
- A line with a path but no label, or with more than two fields, is TxtMalformed.
- Blank lines (nothing but whitespace) and comment lines (`#` first, after any leading
  whitespace) are skipped, so a path cannot start with `#`.
- UTF-8 only; a leading BOM and CRLF line endings are fine.

- A path is relative to the images' base (the Dataset's txt.baseURL, or the index's own
  directory) and must stay under it: an absolute path, a `..` segment, a backslash, a URL
  scheme or host, a percent-escape or a control character is TxtPathEscapes, naming the line.

Facts: `images`, the number of distinct image paths (a path listed twice is two samples).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._errors import DatasetFormatError
from ._lines import decoded_lines
from ._stats import CountOptions, DatasetStats

_TABS = re.compile(r"\t+")


@dataclass(frozen=True)
class TxtSample:
    """One sample of an image list: the image's path (relative to the base), its label and
    the line it is on."""

    path: str
    label: str
    line: int


def read_txt_list(path: Path) -> list[TxtSample]:
    """Every sample of the txt list `path`, by exactly the rules `count_txt` counts them with."""
    return list(_samples(path))


def _samples(path: Path) -> Iterator[TxtSample]:
    with path.open("rb") as f:
        for number, line in enumerate(decoded_lines(f, path.name, "TxtMalformed"), start=1):
            entry = _parse_line(line, path.name, number)
            if entry is not None:
                _check_relative(entry[0], path.name, number)
                yield TxtSample(entry[0], entry[1], number)


# Anything a URL would read as leaving the base, or as something other than a file path.
_ESCAPES = re.compile(r"^/|(^|/)\.\.(/|$)|\\|^[A-Za-z][A-Za-z0-9+.-]*:|%|[\x00-\x1f\x7f]")


def _check_relative(image: str, file: str, number: int | None) -> None:
    if _ESCAPES.search(image):
        raise DatasetFormatError("TxtPathEscapes", file, f"image path {image!r} is not a plain "
                                 "relative path under the images' base (no leading '/', '..', "
                                 "'\\', scheme, '%' escape or control character)", number)


def image_url(base_url: str, image: str) -> str:
    """The URL of `image` (a path of the index) under `base_url`; DatasetFormatError
    (TxtPathEscapes) if it would leave the base."""
    _check_relative(image, image, None)
    base = base_url if base_url.endswith("/") else base_url + "/"
    return base + image


def count_txt(path: Path, options: CountOptions) -> DatasetStats:
    """Count the samples of the txt list `path`; `options` has nothing for txt."""
    classes: Counter[str] = Counter()
    images: set[str] = set()
    for sample in _samples(path):
        images.add(sample.path)
        classes[sample.label] += 1
    return DatasetStats(
        format="txt",
        samples=classes.total(),
        classes=dict(sorted(classes.items())),
        facts={"images": len(images)},
    )


def _parse_line(line: str, file: str, number: int) -> tuple[str, str] | None:
    """(path, label) of one line, or None for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    # The tab test looks at the line before stripping: "a b.jpg<TAB>" is a path with a space
    # and no label, not the path "a" labelled "b.jpg".
    tabbed = "\t" in line
    fields = [field.strip() for field in _TABS.split(text)] if tabbed else text.split()
    if len(fields) == 1:
        raise _malformed(file, number, f"image {fields[0]!r} has no label")
    if len(fields) > 2:
        raise _malformed(file, number, _too_many(len(fields), tabbed))
    return fields[0], fields[1]


def _too_many(count: int, tabbed: bool) -> str:
    if tabbed:
        return f"{count} tab-separated fields; expected path<TAB>label"
    return (
        f"{count} fields; expected 'path label' "
        "(a path with spaces needs a tab between it and the label)"
    )


def _malformed(file: str, number: int, detail: str) -> DatasetFormatError:
    return DatasetFormatError("TxtMalformed", file, detail, number)
