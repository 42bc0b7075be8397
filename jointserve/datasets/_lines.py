"""UTF-8 text, one line at a time, for the line-based formats (csv, txt).

Each line is decoded on its own, so a byte that is not UTF-8 is reported with the line it is
on (a text-mode file decodes in 8 KiB chunks and cannot say). Splitting the bytes at b"\\n" first
is safe: in UTF-8 that byte never occurs inside a multi-byte character.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ._errors import DatasetFormatError, DatasetReason

_BOM = b"\xef\xbb\xbf"


def decoded_lines(f: BinaryIO, file: str, reason: DatasetReason) -> Iterator[str]:
    """The lines of `f`, line endings kept (as `open(newline="")` gives them), BOM dropped."""
    for number, raw in enumerate(f, start=1):
        if number == 1:
            raw = raw.removeprefix(_BOM)  # Excel and Notepad write one
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}"
            raise DatasetFormatError(reason, file, detail, number) from None
