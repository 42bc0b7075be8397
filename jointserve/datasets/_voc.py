"""Counting a Pascal VOC object detection dataset: Annotations/*.xml, one file per image.

The dataset is a directory or a tar, tar.gz or zip archive (see _archive: nothing is extracted)
holding an `Annotations/` directory of XML files, and optionally `JPEGImages/` next to it.
`Annotations/` may sit at the top or under wrapping directories (`VOCdevkit/VOC2007/`), but
there must be exactly one. Names starting with "." and anything under `__MACOSX/` (the
resource forks macOS adds to archives) are ignored; `.xml` is matched in any case.

Each annotation is one sample. Its `<object>` children are its objects (the `<part>`s inside
an object are not objects), named by `<name>`; `classes` counts the images showing each class
(an image with two dogs counts once for "dog"), `objectsPerClass` the objects. A box is out
of bounds when xmin < 0, ymin < 0, xmax > width or ymax > height, or when it is empty (xmin >=
xmax or ymin >= ymax); VOC's pixel coordinates are 1-based, so xmax == width is inside.

VocMalformed: XML that is not well-formed, a root other than `<annotation>`, a missing `<size>`
width or height, an `<object>` without a `<name>` or a `<bndbox>`, a size or box value that
is not a finite number, and any DOCTYPE: the parser refuses it the moment it starts, before
an entity can be declared, let alone expanded (billion laughs, external entities). That is
defusedxml's approach; it holds for every encoding, which a scan of the raw bytes would not.

Facts: `images` (annotation files), `objects`, `objectsPerClass`, `boxesOutOfBounds` and
`imagesPresent` (files in the `JPEGImages/` next to `Annotations/`; 0 without one).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

from ._archive import Entry, walk
from ._errors import DatasetFormatError
from ._stats import CountOptions, DatasetStats

Lines = dict[ET.Element, int]  # the line each element starts on
Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax


@dataclass(frozen=True)
class Annotation:
    """What one annotation file says."""

    objects: tuple[str, ...]  # the class of each object
    boxes_out_of_bounds: int
    boxes: tuple[Box, ...] = ()  # each object's box, as written
    difficult: tuple[bool, ...] = ()  # each object's <difficult>1</difficult>
    filename: str = ""  # <filename>: the image in JPEGImages/


@dataclass(frozen=True)
class VocObject:
    name: str
    box: Box
    difficult: bool


@dataclass(frozen=True)
class VocImage:
    """One sample of a VOC dataset, for evaluation: its annotation and its image."""

    annotation: str  # the annotation file, relative to the dataset
    filename: str
    image: bytes | None  # JPEGImages/<filename>, None when the dataset does not hold it
    objects: tuple[VocObject, ...]


def read_voc(path: Path) -> list[VocImage]:
    """Every annotation of the VOC directory or archive `path` with its image, by the rules
    `count_voc` counts them with, sorted by annotation file."""
    roots: dict[str, _Root] = {}
    annotations: dict[str, list[tuple[str, Annotation]]] = {}
    images: dict[str, dict[str, bytes]] = {}
    for entry in walk(path, "VocMalformed"):
        parts = entry.path.split("/")
        if parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts) or entry.is_dir:
            _take(entry, roots)
            continue
        folder, top = (parts[-2] if len(parts) >= 2 else ""), "/".join(parts[:-2])
        if folder == "Annotations" and parts[-1].lower().endswith(".xml"):
            roots.setdefault(top, _Root()).has_annotations = True
            annotations.setdefault(top, []).append((entry.path, parse_annotation(entry.read(), entry.path)))
        elif folder == "JPEGImages":
            images.setdefault(top, {})[parts[-1]] = entry.read()
    chosen = _the_root(roots, path.name)  # exactly one Annotations/, as counting requires
    root = next(p for p, r in roots.items() if r is chosen)
    held = images.get(root, {})
    return [VocImage(file, a.filename, held.get(a.filename),
                     tuple(VocObject(n, b, d) for n, b, d in zip(a.objects, a.boxes, a.difficult)))
            for file, a in sorted(annotations.get(root, []))]


@dataclass
class _Root:
    """Counts for the directory holding one Annotations/ (and maybe JPEGImages/)."""

    has_annotations: bool = False
    images_present: int = 0
    annotations: int = 0
    objects: Counter[str] = field(default_factory=Counter)
    images_per_class: Counter[str] = field(default_factory=Counter)
    boxes_out_of_bounds: int = 0

    def add(self, annotation: Annotation) -> None:
        self.annotations += 1
        self.objects.update(annotation.objects)
        self.images_per_class.update(set(annotation.objects))
        self.boxes_out_of_bounds += annotation.boxes_out_of_bounds


def count_voc(path: Path, options: CountOptions) -> DatasetStats:
    """Count the annotations of the VOC directory or archive `path`; no options apply."""
    roots: dict[str, _Root] = {}
    for entry in walk(path, "VocMalformed"):
        _take(entry, roots)
    root = _the_root(roots, path.name)
    return DatasetStats(
        format="voc",
        samples=root.annotations,
        classes=_sorted(root.images_per_class),
        facts=_facts(root),
    )


def _take(entry: Entry, roots: dict[str, _Root]) -> None:
    """Count `entry` into the root it belongs to, if it is part of a VOC layout."""
    parts = entry.path.split("/")
    if parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts):
        return
    if entry.is_dir:
        if parts[-1] == "Annotations":
            roots.setdefault("/".join(parts[:-1]), _Root()).has_annotations = True
        return
    folder = parts[-2] if len(parts) >= 2 else ""
    if folder == "Annotations" and parts[-1].lower().endswith(".xml"):
        root = roots.setdefault("/".join(parts[:-2]), _Root())
        root.has_annotations = True
        root.add(parse_annotation(entry.read(), entry.path))
    elif folder == "JPEGImages":
        roots.setdefault("/".join(parts[:-2]), _Root()).images_present += 1


def _the_root(roots: dict[str, _Root], name: str) -> _Root:
    found = sorted(path for path, root in roots.items() if root.has_annotations)
    if not found:
        raise DatasetFormatError("VocMalformed", name, "no Annotations/ directory")
    if len(found) > 1:
        shown = ", ".join(f"{path}/Annotations" if path else "Annotations" for path in found)
        raise DatasetFormatError("VocMalformed", name, f"several Annotations/ directories: {shown}")
    return roots[found[0]]


def _facts(root: _Root) -> dict[str, Any]:
    return {
        "images": root.annotations,
        "objects": root.objects.total(),
        "objectsPerClass": _sorted(root.objects),
        "boxesOutOfBounds": root.boxes_out_of_bounds,
        "imagesPresent": root.images_present,
    }


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


# --- one annotation file ---------------------------------------------------------------------


def parse_annotation(data: bytes, file: str) -> Annotation:
    """The objects of one VOC annotation; raises VocMalformed naming `file`."""
    root, lines = _parse_xml(data, file)
    if root.tag != "annotation":
        raise _malformed(file, lines[root], f"the root element is <{root.tag}>, not <annotation>")
    size = _child(root, "size", file, lines)
    width, height = (_number(size, tag, file, lines) for tag in ("width", "height"))
    names: list[str] = []
    boxes: list[Box] = []
    difficult: list[bool] = []
    out_of_bounds = 0
    for obj in root.findall("object"):  # children only: <part>s are not objects
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise _malformed(file, lines[obj], "an <object> has no <name>")
        box = _box(_child(obj, "bndbox", file, lines), file, lines)
        names.append(name)
        boxes.append(box)
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
        if _is_out_of_bounds(box, width, height):
            out_of_bounds += 1
    filename = (root.findtext("filename") or "").strip()
    return Annotation(tuple(names), out_of_bounds, tuple(boxes), tuple(difficult), filename)


def _parse_xml(data: bytes, file: str) -> tuple[ET.Element, Lines]:
    """The element tree of `data`, and each element's line, refusing any DOCTYPE."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    lines: Lines = {}

    def start(tag: str, attributes: dict[str, str]) -> None:
        lines[builder.start(tag, attributes)] = parser.CurrentLineNumber

    def refuse(*_: object) -> None:
        detail = "XML entity declarations are not allowed, nor a DOCTYPE that could hold them"
        raise _malformed(file, parser.CurrentLineNumber, detail)

    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse  # only inside a DOCTYPE, which is refused first
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        detail = f"not well-formed XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})"
        raise _malformed(file, exc.lineno, detail) from None
    return builder.close(), lines


def _child(parent: ET.Element, tag: str, file: str, lines: Lines) -> ET.Element:
    child = parent.find(tag)
    if child is None:
        raise _malformed(file, lines[parent], f"<{parent.tag}> has no <{tag}>")
    return child


def _number(parent: ET.Element, tag: str, file: str, lines: Lines) -> float:
    element = _child(parent, tag, file, lines)
    text = (element.text or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _malformed(file, lines[element], f"<{parent.tag}><{tag}> is {text!r}, not a number")
    return value


def _box(bndbox: ET.Element, file: str, lines: Lines) -> Box:
    xmin, ymin, xmax, ymax = (
        _number(bndbox, tag, file, lines) for tag in ("xmin", "ymin", "xmax", "ymax")
    )
    return xmin, ymin, xmax, ymax


def _is_out_of_bounds(box: Box, width: float, height: float) -> bool:
    xmin, ymin, xmax, ymax = box
    outside = xmin < 0 or ymin < 0 or xmax > width or ymax > height
    return outside or xmin >= xmax or ymin >= ymax


def _malformed(file: str, line: int, detail: str) -> DatasetFormatError:
    return DatasetFormatError("VocMalformed", file, detail, line)
