"""Counting datasets with jointserve.datasets: csv, txt, Pascal VOC and npz, and how each fails.

Every input is a real file written to tmp_path (VOC sets as real directories and real tar,
tar.gz and zip archives), and every test asserts exact counts chosen so that the obvious wrong
implementation gets them wrong: lines instead of records, blank lines as samples, objects
instead of images per class, nested <part>s as objects. Malformed inputs must fail with the
right `reason`, `file` and `line`, and a message that starts with that file and line.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jointserve.datasets import (
    SUPPORTED_FORMATS,
    CountOptions,
    DatasetFormatError,
    DatasetStats,
    count_dataset,
)
from jointserve.datasets import _archive, _npz
from tests._fakes import tar_info


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def refused(path: Path, format: str, options: CountOptions | None = None) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as info:
        count_dataset(path, format, options)
    return info.value


def assert_error(
    err: DatasetFormatError, reason: str, file: str, line: int | None, detail: str
) -> None:
    assert (err.reason, err.file, err.line) == (reason, file, line), str(err)
    where = file if line is None else f"{file} line {line}"
    assert str(err).startswith(f"{where}: "), str(err)
    assert detail in str(err)


# --- txt -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, samples, classes, images",
    [
        pytest.param(
            "a.jpg 0\n\nb.jpg 1\n   \n\nc.jpg 0\n\n",
            3, {"0": 2, "1": 1}, 3,
            id="blank-lines-and-trailing-newline-are-not-samples",
        ),
        pytest.param(
            "# path label\na.jpg cat\n  # indented comment\nb.jpg dog\n",
            2, {"cat": 1, "dog": 1}, 2,
            id="comment-lines-skipped",
        ),
        pytest.param(
            # With the BOM kept the first path would differ from the second: 2 images, not 1.
            b"\xef\xbb\xbfa.jpg cat\r\na.jpg dog\r\n\r\n",
            2, {"cat": 1, "dog": 1}, 1,
            id="bom-and-crlf",
        ),
        pytest.param(
            "my photos/a.jpg\tcat\nmy photos/b.jpg \t dog\t\nc.jpg\tcat\n",
            3, {"cat": 2, "dog": 1}, 3,
            id="tab-separated-paths-with-spaces",
        ),
        pytest.param(
            "a.jpg   1\na.jpg 1\n  b.jpg 2",
            3, {"1": 2, "2": 1}, 2,
            id="a-path-listed-twice-is-two-samples-one-image",
        ),
    ],
)
def test_txt_counts_labelled_lines(
    tmp_path: Path, content: str | bytes, samples: int, classes: dict[str, int], images: int
) -> None:
    stats = count_dataset(write(tmp_path, "train.txt", content), "txt")

    assert stats == DatasetStats("txt", samples, classes, {"images": images})


def test_txt_classes_are_sorted_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "a.jpg zebra\nb.jpg ant\nc.jpg mole\n")

    stats = count_dataset(path, "txt")


    assert list(stats.classes) == ["ant", "mole", "zebra"]


@pytest.mark.parametrize(
    "content, line, detail",
    [
        pytest.param(
            "a.jpg 0\n\nb.jpg\n", 3, "image 'b.jpg' has no label", id="path-without-label"
        ),
        pytest.param(
            b"# list\r\n\r\na.jpg 0\r\nb.jpg\r\n", 4, "has no label",
            id="line-numbers-count-comments-blanks-and-crlf",
        ),
        pytest.param(
            "my photos/a.jpg cat\n",
            1,
            "3 fields; expected 'path label' (a path with spaces needs a tab",
            id="space-in-path-without-tab",
        ),
        pytest.param(
            # Not the path "my" labelled "photos/b.jpg": the tab marks it as path-only.
            "a.jpg 0\nmy photos/b.jpg\t\n", 2, "image 'my photos/b.jpg' has no label",
            id="tab-line-without-label",
        ),
        pytest.param("a.jpg\tcat\tdog\n", 1, "3 tab-separated fields", id="too-many-tab-fields"),
        pytest.param(b"a.jpg 0\n\xff.jpg 1\n", 2, "not UTF-8 text: byte 0xff", id="not-utf8"),
    ],
)
def test_txt_malformed(tmp_path: Path, content: str | bytes, line: int, detail: str) -> None:
    err = refused(write(tmp_path, "train.txt", content), "txt")

    assert_error(err, "TxtMalformed", "train.txt", line, detail)


# --- csv -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, options, samples, classes, facts",
    [
        pytest.param(
            # 6 data lines, 3 records: the quoted field holds two line breaks.
            'id,text,label\n1,"line one\nline two\nline three",pos\n'
            '2,plain,neg\n3,"say ""hi""",pos\n',
            CountOptions(label_column="label"),
            3, {"neg": 1, "pos": 2}, {"columns": ["id", "text", "label"], "labelColumn": "label"},
            id="quoted-newlines-are-one-record",
        ),
        pytest.param(
            # The label column comes first: with the BOM kept it would be named "\ufefflabel".
            b'\xef\xbb\xbflabel,x\r\ncat,1\r\ndog,2\r\ncat,"3\r\n4"\r\n',
            CountOptions(label_column="label"),
            3, {"cat": 2, "dog": 1}, {"columns": ["label", "x"], "labelColumn": "label"},
            id="bom-and-crlf",
        ),
        pytest.param(
            "a,b\n1,2\n\n3,4\n\n\n",
            CountOptions(),
            2, {}, {"columns": ["a", "b"], "labelColumn": None},
            id="blank-lines-ignored-no-labels",
        ),
        pytest.param(
            "1,2,cat\n3,4,dog\n5,6,cat\n",
            CountOptions(header=False, label_column=2),
            3, {"cat": 2, "dog": 1}, {"columns": 3, "labelColumn": 2},
            id="no-header-label-by-index",
        ),
        pytest.param(
            "x,y\n1,b\n2,a\n3,b\n",
            CountOptions(label_column=1),
            3, {"a": 1, "b": 2}, {"columns": ["x", "y"], "labelColumn": 1},
            id="header-label-by-index",
        ),
        pytest.param(
            "x;y\n1,5;a\n",
            CountOptions(label_column="y", delimiter=";"),
            1, {"a": 1}, {"columns": ["x", "y"], "labelColumn": "y"},
            id="semicolon-delimiter",
        ),
        pytest.param(
            "a,b\n", CountOptions(), 0, {}, {"columns": ["a", "b"], "labelColumn": None},
            id="header-only",
        ),
        pytest.param(
            "", CountOptions(header=False), 0, {}, {"columns": 0, "labelColumn": None},
            id="empty-without-header",
        ),
    ],
)
def test_csv_counts_records(
    tmp_path: Path,
    content: str | bytes,
    options: CountOptions,
    samples: int,
    classes: dict[str, int],
    facts: dict[str, object],
) -> None:
    stats = count_dataset(write(tmp_path, "train.csv", content), "csv", options)

    assert stats == DatasetStats("csv", samples, classes, facts)
    assert list(stats.classes) == sorted(classes)


def test_csv_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    rows = "".join(f"{n},b,c,d,e\n" for n in range(5))
    path = write(tmp_path, "train.csv", "a,b,c,d,e\n" + rows + "1,2,3,4\n")

    assert str(refused(path, "csv")) == "train.csv line 7: 4 fields, the header has 5"


@pytest.mark.parametrize(
    "content, options, line, detail",
    [
        pytest.param(
            'a,b,c\n1,"x\ny",3\n4,5\n', CountOptions(), 4, "2 fields, the header has 3",
            id="line-after-multiline-record",
        ),
        pytest.param(
            'a,b\n1,2\n"x\ny\nz",2,3\n', CountOptions(), 3, "3 fields, the header has 2",
            id="line-where-the-record-starts",
        ),
        pytest.param(
            "a,b\n\n\n1\n", CountOptions(), 4, "1 field, the header has 2",
            id="blank-lines-still-count-as-lines",
        ),
        pytest.param(
            "1,2,3\n4,5\n", CountOptions(header=False), 2, "2 fields, the first record has 3",
            id="no-header-width-from-first-record",
        ),
        pytest.param(
            "a,b\n1,2\n", CountOptions(label_column="label"), 1,
            "label column 'label' is not in the header ['a', 'b']",
            id="unknown-label-column",
        ),
        pytest.param(
            "y,y\n1,2\n",
            CountOptions(label_column="y"),
            1,
            "label column 'y' is in the header 2 times",
            id="ambiguous-label-column",
        ),
        pytest.param(
            "a,b\n1,2\n", CountOptions(label_column=2), 1,
            "label column 2 is out of range: the header has 2 fields",
            id="label-index-out-of-range",
        ),
        pytest.param(
            "1,2\n", CountOptions(header=False, label_column=5), 1,
            "label column 5 is out of range: the first record has 2 fields",
            id="label-index-out-of-range-no-header",
        ),
        pytest.param(
            "x,y\n1,a\n2,\n", CountOptions(label_column="y"), 3, "empty label in column 'y'",
            id="empty-label",
        ),
        pytest.param(
            'a,b\n1,2\n3,"open\n4,5\n', CountOptions(), 3,
            "cannot parse the record: unexpected end of data",
            id="unterminated-quote",
        ),
        pytest.param(
            'a,b\n1,"x"y\n', CountOptions(), 2, "cannot parse the record", id="stray-quote",
        ),
        pytest.param(
            b"a,b\n1,\xe9\n", CountOptions(), 2, "not UTF-8 text: byte 0xe9", id="not-utf8"
        ),
        pytest.param("", CountOptions(), None, "the file is empty: no header row", id="empty-file"),
    ],
)
def test_csv_malformed(
    tmp_path: Path, content: str | bytes, options: CountOptions, line: int | None, detail: str
) -> None:
    err = refused(write(tmp_path, "train.csv", content), "csv", options)

    assert_error(err, "CsvMalformed", "train.csv", line, detail)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"header": False, "label_column": "y"}, id="name-without-header"),
        pytest.param({"label_column": -1}, id="negative-index"),
        pytest.param({"label_column": True}, id="bool-index"),
        pytest.param({"delimiter": ";;"}, id="long-delimiter"),
        pytest.param({"delimiter": '"'}, id="quote-delimiter"),
    ],
)
def test_count_options_refuse_contradictions(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CountOptions(**kwargs)  # type: ignore[arg-type]


# --- voc: inputs -----------------------------------------------------------------------------

Box = tuple[float, float, float, float]
Entry = tuple[str, bytes | None]  # (path, file data, or None for a directory)


def annotation(objects: list[tuple[str, Box]], width: int = 100, height: int = 80) -> bytes:
    parts = "".join(
        "  <object>\n"
        f"    <name>{name}</name>\n"
        f"    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>\n"
        # A <part> (VOC's person layout) has a name and a box of its own: not an object.
        "    <part><name>head</name>\n"
        "      <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>\n"
        "  </object>\n"
        for name, (x0, y0, x1, y1) in objects
    )
    return (
        "<annotation>\n  <filename>x.jpg</filename>\n"
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n"
        f"{parts}</annotation>\n"
    ).encode()


# One image with two dogs and a cat, one with a cat whose box leaves the image, one with
# nothing; two of the three images present; files a VOC reader must ignore.
VOC_SET: list[Entry] = [
    ("Annotations", None),
    ("Annotations/0001.xml", annotation([("dog", (10, 10, 50, 50)), ("dog", (20, 20, 60, 60)),
                                         ("cat", (5, 5, 30, 30))])),
    ("Annotations/0002.xml", annotation([("cat", (60, 10, 120, 50))])),
    ("Annotations/0003.XML", annotation([])),
    ("Annotations/README.txt", b"not an annotation"),
    ("Annotations/._0001.xml", b"\x00\x05\x16\x07 AppleDouble junk"),
    ("__MACOSX/Annotations/._0002.xml", b"\x00\x05\x16\x07 AppleDouble junk"),
    ("JPEGImages", None),
    ("JPEGImages/0001.jpg", b"\xff\xd8 not really a jpeg"),
    ("JPEGImages/0002.jpg", b"\xff\xd8 not really a jpeg"),
    ("JPEGImages/.DS_Store", b"Bud1"),
    ("ImageSets/Main/train.txt", b"0001\n0002\n0003\n"),
]
VOC_STATS = DatasetStats(
    format="voc",
    samples=3,
    classes={"cat": 2, "dog": 1},  # images showing the class, not objects
    facts={
        "images": 3,
        "objects": 4,
        "objectsPerClass": {"cat": 2, "dog": 2},
        "boxesOutOfBounds": 1,
        "imagesPresent": 2,
    },
)


def build_dir(tmp_path: Path, entries: list[Entry]) -> Path:
    top = tmp_path / "voc"
    for name, data in entries:
        if data is None:
            (top / name).mkdir(parents=True, exist_ok=True)
        else:
            (top / name).parent.mkdir(parents=True, exist_ok=True)
            (top / name).write_bytes(data)
    return top


def tar_bytes(entries: list[Entry], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in entries:
            tar.addfile(tar_info(name, data), io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zip_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name + "/" if data is None else name, data or b"")
    return buf.getvalue()


def build_tar(tmp_path: Path, entries: list[Entry]) -> Path:
    return write(tmp_path, "voc.tar", tar_bytes(entries))


def build_tar_gz(tmp_path: Path, entries: list[Entry]) -> Path:
    return write(tmp_path, "voc.tar.gz", tar_bytes(entries, "w:gz"))


def build_zip(tmp_path: Path, entries: list[Entry]) -> Path:
    return write(tmp_path, "voc.zip", zip_bytes(entries))


Builder = Callable[[Path, list[Entry]], Path]
BUILDERS = [
    pytest.param(build_dir, id="directory"),
    pytest.param(build_tar, id="tar"),
    pytest.param(build_tar_gz, id="tar.gz"),
    pytest.param(build_zip, id="zip"),
]


def wrapped(entries: list[Entry], prefix: str) -> list[Entry]:
    """`entries` moved under the directory `prefix`, except macOS's resource forks."""
    return [
        (name if name.startswith("__MACOSX") else prefix + name, data) for name, data in entries
    ]


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


# --- voc: counting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap", [pytest.param("", id="at-top"), pytest.param("VOCdevkit/VOC2007/", id="wrapped")]
)
@pytest.mark.parametrize("build", BUILDERS)
def test_voc_counts_images_objects_and_boxes(tmp_path: Path, build: Builder, wrap: str) -> None:
    path = build(tmp_path, wrapped(VOC_SET, wrap))
    before = files_under(tmp_path)

    stats = count_dataset(path, "voc")

    assert stats == VOC_STATS
    assert files_under(tmp_path) == before  # archives are read in memory, never extracted


def test_voc_directory_links_are_followed_once(tmp_path: Path) -> None:
    top = build_dir(tmp_path, VOC_SET)
    (top / "loop").symlink_to(top, target_is_directory=True)  # would be walked for ever

    assert count_dataset(top, "voc") == VOC_STATS


def test_voc_without_jpegimages_has_no_images_present(tmp_path: Path) -> None:
    path = build_zip(tmp_path, [("Annotations/a.xml", annotation([("cat", (1, 1, 5, 5))]))])

    stats = count_dataset(path, "voc")

    assert (stats.samples, stats.classes, stats.facts["imagesPresent"]) == (1, {"cat": 1}, 0)


def test_voc_empty_annotations_directory_is_zero_samples(tmp_path: Path) -> None:
    stats = count_dataset(build_tar(tmp_path, [("Annotations/", None)]), "voc")

    assert (stats.samples, stats.classes, stats.facts["objects"]) == (0, {}, 0)


@pytest.mark.parametrize(
    "box, out_of_bounds",
    [
        pytest.param((1, 1, 100, 80), 0, id="edges-inside"),  # 1-based: xmax == width is inside
        pytest.param((10.5, 0, 99.5, 79.25), 0, id="fractional-inside"),
        pytest.param((-1, 1, 10, 10), 1, id="xmin-negative"),
        pytest.param((1, -0.5, 10, 10), 1, id="ymin-negative"),
        pytest.param((1, 1, 101, 10), 1, id="xmax-past-width"),
        pytest.param((1, 1, 10, 81), 1, id="ymax-past-height"),
        pytest.param((5, 1, 5, 10), 1, id="xmin-equals-xmax"),
        pytest.param((1, 10, 10, 5), 1, id="ymin-above-ymax"),
    ],
)
def test_voc_box_out_of_bounds(tmp_path: Path, box: Box, out_of_bounds: int) -> None:
    xml = annotation([("cat", box), ("cat", (1, 1, 2, 2))], width=100, height=80)

    stats = count_dataset(build_dir(tmp_path, [("Annotations/a.xml", xml)]), "voc")

    assert stats.facts["boxesOutOfBounds"] == out_of_bounds
    assert stats.facts["objects"] == 2


# --- voc: malformed annotations --------------------------------------------------------------

SIZE = "<size><width>100</width><height>80</height></size>"
BOX = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<annotation><filename>&lol3;</filename></annotation>
"""


@pytest.mark.parametrize(
    "xml, line, detail",
    [
        pytest.param(
            b"<annotation>\n  <size>\n</annotation>\n", 3, "not well-formed XML: mismatched tag",
            id="parse-error",
        ),
        pytest.param(b"", 1, "not well-formed XML: no element found", id="empty-file"),
        pytest.param(
            f"<annotation>\n<object><name>cat</name>{BOX}</object>\n</annotation>".encode(), 1,
            "<annotation> has no <size>", id="missing-size",
        ),
        pytest.param(
            b"<annotation>\n<size>\n<width>wide</width><height>80</height></size>\n</annotation>",
            3,
            "<size><width> is 'wide', not a number", id="width-not-a-number",
        ),
        pytest.param(
            b"<annotation>\n<size><width>100</width></size>\n</annotation>", 2,
            "<size> has no <height>", id="missing-height",
        ),
        pytest.param(
            f"<annotation>{SIZE}\n<object><name>cat</name>\n<bndbox><xmin>1</xmin><ymin>1</ymin>"
            "\n<xmax>12px</xmax><ymax>9</ymax></bndbox></object>\n</annotation>".encode(), 4,
            "<bndbox><xmax> is '12px', not a number", id="bndbox-not-a-number",
        ),
        pytest.param(
            f"<annotation>{SIZE}\n<object><name>cat</name>\n<bndbox><xmin>nan</xmin><ymin>1</ymin>"
            "<xmax>9</xmax><ymax>9</ymax></bndbox></object>\n</annotation>".encode(), 3,
            "<bndbox><xmin> is 'nan', not a number", id="bndbox-nan",
        ),
        pytest.param(
            f"<annotation>{SIZE}\n\n<object><name>cat</name></object>\n</annotation>".encode(), 3,
            "<object> has no <bndbox>", id="missing-bndbox",
        ),
        pytest.param(
            f"<annotation>{SIZE}\n<object><name> </name>{BOX}</object>\n</annotation>".encode(), 2,
            "an <object> has no <name>", id="empty-name",
        ),
        pytest.param(
            f"<?xml version='1.0'?>\n<labels>{SIZE}</labels>".encode(), 2,
            "the root element is <labels>, not <annotation>", id="wrong-root",
        ),
        pytest.param(
            BILLION_LAUGHS, 2, "XML entity declarations are not allowed", id="billion-laughs",
        ),
        pytest.param(
            f'<!DOCTYPE a SYSTEM "file:///etc/passwd">\n<annotation>{SIZE}</annotation>'.encode(),
            1,
            "XML entity declarations are not allowed", id="external-dtd",
        ),
        pytest.param(
            # Not ASCII-compatible: a byte scan for "<!DOCTYPE" would miss it, the parser does not.
            '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE a [<!ENTITY x "y">]>\n'
            f"<annotation>{SIZE}</annotation>".encode("utf-16"), 2,
            "XML entity declarations are not allowed", id="doctype-in-utf16",
        ),
    ],
)
def test_voc_malformed_annotation(tmp_path: Path, xml: bytes, line: int, detail: str) -> None:
    good = annotation([("cat", (1, 1, 5, 5))])
    path = build_dir(tmp_path, [("Annotations/0001.xml", good), ("Annotations/0002.xml", xml)])

    err = refused(path, "voc")

    assert_error(err, "VocMalformed", "Annotations/0002.xml", line, detail)


@pytest.mark.parametrize("build", BUILDERS)
def test_voc_malformed_annotation_is_named_by_its_path_inside_the_dataset(
    tmp_path: Path, build: Builder
) -> None:
    entries: list[Entry] = [
        ("VOC2007/Annotations/0001.xml", b"<annotation>\n<oops>\n</annotation>")
    ]

    err = refused(build(tmp_path, entries), "voc")

    assert_error(err, "VocMalformed", "VOC2007/Annotations/0001.xml", 3, "mismatched tag")


# --- voc: layouts and archives that are refused ----------------------------------------------

XML = annotation([("cat", (1, 1, 5, 5))])


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize(
    "entries, detail",
    [
        pytest.param(
            [("JPEGImages/a.jpg", b"x"), ("annotations/a.xml", XML)], "no Annotations/ directory",
            id="no-annotations",
        ),
        pytest.param(
            [("VOC2012/Annotations/a.xml", XML), ("VOC2007/Annotations/a.xml", XML)],
            "several Annotations/ directories: VOC2007/Annotations, VOC2012/Annotations",
            id="two-annotations-directories",
        ),
    ],
)
def test_voc_layout_errors(
    tmp_path: Path, build: Builder, entries: list[Entry], detail: str
) -> None:
    path = build(tmp_path, entries)

    assert_error(refused(path, "voc"), "VocMalformed", path.name, None, detail)


def _tar_link(name: str, target: str, kind: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tar_info("Annotations/a.xml", XML), io.BytesIO(XML))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)
    return buf.getvalue()


def _zip_symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("Annotations/b.xml")
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _tar_fifo() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Annotations/pipe")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, data, detail",
    [
        pytest.param(
            "voc.tar", tar_bytes([("/etc/Annotations/a.xml", XML)]), "absolute path",
            id="tar-absolute",
        ),
        pytest.param(
            "voc.zip", zip_bytes([("/Annotations/a.xml", XML)]), "absolute path",
            id="zip-absolute",
        ),
        pytest.param(
            "voc.zip", zip_bytes([("C:/Annotations/a.xml", XML)]), "absolute path",
            id="zip-drive",
        ),
        pytest.param(
            "voc.tar", tar_bytes([("x/../Annotations/a.xml", XML)]), "'..' path component",
            id="tar-dotdot",
        ),
        pytest.param(
            "voc.zip", zip_bytes([("..\\Annotations\\a.xml", XML)]), "'..' path component",
            id="zip-dotdot",
        ),
        pytest.param(
            "voc.tar", _tar_link("Annotations/b.xml", "/etc/passwd", tarfile.SYMTYPE),
            "link to '/etc/passwd'", id="tar-symlink",
        ),
        pytest.param(
            "voc.tar", _tar_link("Annotations/b.xml", "Annotations/a.xml", tarfile.LNKTYPE),
            "link to 'Annotations/a.xml'", id="tar-hardlink",
        ),
        pytest.param("voc.zip", _zip_symlink(), "symlink", id="zip-symlink"),
        pytest.param("voc.tar", _tar_fifo(), "device or fifo", id="tar-fifo"),
        pytest.param(
            # Counted twice, the image would be two samples.
            "voc.tar.gz",
            tar_bytes([("Annotations/a.xml", XML), ("./Annotations//a.xml", XML)], "w:gz"),
            "duplicate of an earlier member", id="tar-duplicate",
        ),
    ],
)
def test_voc_unsafe_archive(tmp_path: Path, name: str, data: bytes, detail: str) -> None:
    path = write(tmp_path, name, data)
    before = files_under(tmp_path)

    err = refused(path, "voc")

    assert_error(err, "UnsafeArchive", name, None, detail)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("build", BUILDERS[1:])
def test_voc_archive_member_caps(
    tmp_path: Path, build: Builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real caps (1,000,000 members, 64 MiB each) lowered so that the test stays small.
    monkeypatch.setattr(_archive, "MAX_MEMBERS", 3)
    monkeypatch.setattr(_archive, "MAX_MEMBER_BYTES", 1000)
    three = [(f"Annotations/{n}.xml", XML) for n in range(3)]
    assert count_dataset(build(tmp_path, three), "voc").samples == 3

    (tmp_path / "more").mkdir()
    more = build(tmp_path / "more", three + [("JPEGImages/a.jpg", b"x")])
    err = refused(more, "voc")
    assert_error(err, "UnsafeArchive", more.name, None, "more than 3 members")

    (tmp_path / "big").mkdir()
    big = build(tmp_path / "big", [("Annotations/a.xml", XML), ("JPEGImages/a.jpg", b"x" * 1001)])
    err = refused(big, "voc")
    detail = "member 'JPEGImages/a.jpg': 1001 bytes; at most 1000 allowed"
    assert_error(err, "UnsafeArchive", big.name, None, detail)


def test_voc_directory_file_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_archive, "MAX_MEMBER_BYTES", 100)
    path = build_dir(tmp_path, [("Annotations/a.xml", XML + b" " * 100)])

    err = refused(path, "voc")

    assert_error(err, "VocMalformed", "Annotations/a.xml", None, "larger than 100 bytes")


IMAGE = np.random.default_rng(0).bytes(5000)  # incompressible, so a cut gzip loses some


def _cut_at_member(entries: list[Entry], keep: int) -> bytes:
    """A tar cut right after its first `keep` members: at a header boundary, no end marker."""
    data = tar_bytes(entries)
    offset = 0
    for _, content in entries[:keep]:
        offset += 512 + -(-len(content or b"") // 512) * 512
    return data[:offset]


def _zip_encrypted() -> bytes:
    """A zip whose annotation has the 'encrypted' flag set (zipfile cannot write one)."""
    data = bytearray(zip_bytes([("Annotations/a.xml", XML)]))
    data[6] |= 0x1  # the local file header's flags
    data[data.index(b"PK\x01\x02") + 8] |= 0x1  # the central directory entry's flags
    return bytes(data)


@pytest.mark.parametrize(
    "name, data, detail",
    [
        pytest.param("voc.zip", b"PK\x03\x04" + bytes(40), "corrupt archive", id="zip-garbage"),
        pytest.param(
            "voc.zip", _zip_encrypted(), "member 'Annotations/a.xml' is encrypted", id="encrypted"
        ),
        pytest.param(
            "voc.tar",
            _cut_at_member([(f"Annotations/{n}.xml", XML) for n in range(3)], keep=2),
            "corrupt archive: truncated or damaged",
            id="tar-cut-between-members",  # tarfile alone would see 2 samples and stop
        ),
        pytest.param(
            "voc.tar",
            tar_bytes([("Annotations/a.xml", XML)])[:700],
            "corrupt member 'Annotations/a.xml'",
            id="tar-cut-inside-member",
        ),
        pytest.param(
            "voc.tar.gz",
            tar_bytes([("Annotations/a.xml", XML), ("JPEGImages/a.jpg", IMAGE)], "w:gz")[:-200],
            "corrupt", id="tar-gz-truncated",
        ),
    ],
)
def test_voc_corrupt_or_encrypted_archive(
    tmp_path: Path, name: str, data: bytes, detail: str
) -> None:
    err = refused(write(tmp_path, name, data), "voc")

    assert_error(err, "VocMalformed", name, None, detail)


def test_voc_path_that_is_not_an_archive(tmp_path: Path) -> None:
    path = write(tmp_path, "voc.rar", b"Rar!\x1a\x07\x00" + b"\x00" * 100)

    err = refused(path, "voc")

    detail = "neither a directory nor a tar, tar.gz or zip archive"
    assert_error(err, "UnsupportedFormat", "voc.rar", None, detail)


# --- npz -------------------------------------------------------------------------------------


def npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_npz_counts_axis_0_and_labels(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.zeros((5, 8, 8)), y=np.array([3, 1, 3, 10, 3]), w=np.ones(5))

    stats = count_dataset(path, "npz")

    assert stats == DatasetStats(
        format="npz",
        samples=5,
        classes={"1": 1, "10": 1, "3": 3},  # sorted by name
        facts={"arrays": {"x": [5, 8, 8], "y": [5], "w": [5]}, "labelsArray": "y"},
    )
    assert list(stats.classes) == ["1", "10", "3"]


@pytest.mark.parametrize(
    "labels, options, classes, used",
    [
        pytest.param(["cat", "dog", "cat"], CountOptions(), {"cat": 2, "dog": 1}, "y", id="str"),
        pytest.param([b"cat", b"dog", b"cat"], CountOptions(), {"cat": 2, "dog": 1}, "y", id="S"),
        pytest.param([1.0, 2.0, 1.0], CountOptions(), {"1": 2, "2": 1}, "y", id="whole-floats"),
        pytest.param([True, False, True], CountOptions(), {"False": 1, "True": 2}, "y", id="bool"),
        pytest.param([0, 1, 1], CountOptions(labels_array=None), {}, None, id="no-labels-array"),
        pytest.param([0, 1, 1], CountOptions(labels_array="z"), {}, None, id="labels-array-absent"),
    ],
)
def test_npz_classes(
    tmp_path: Path, labels: list[object], options: CountOptions, classes: dict[str, int], used: str
) -> None:
    stats = count_dataset(npz(tmp_path, x=np.zeros((3, 2)), y=np.array(labels)), "npz", options)

    assert (stats.samples, stats.classes, stats.facts["labelsArray"]) == (3, classes, used)


def test_npz_positional_arrays_first_one_counts(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, np.zeros((4, 3)), np.zeros(4, dtype=np.int8))

    stats = count_dataset(path, "npz")

    assert (stats.samples, stats.classes) == (4, {})
    assert stats.facts["arrays"] == {"arr_0": [4, 3], "arr_1": [4]}


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


def _npz_with_lying_header() -> bytes:
    """An array whose header claims a billion float64s; 8 bytes of data follow."""
    npy = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(bytes(8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npy.getvalue())
    return buf.getvalue()


def _npz_with_text_member() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", _npy_bytes())
        zf.writestr("README.txt", "hello")
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, detail",
    [
        pytest.param(
            _npz_bytes(x=np.zeros((5, 2)), y=np.zeros(4)),
            "arrays disagree on axis 0 (samples): 'x' has 5, 'y' has 4",
            id="axis-0-disagrees",
        ),
        pytest.param(
            _npz_bytes(x=np.zeros((5, 2)), meta=np.array(7)),
            "array 'meta' is 0-dimensional",
            id="scalar-array",
        ),
        pytest.param(_npz_bytes(), "the archive holds no arrays", id="no-arrays"),
        pytest.param(
            _npz_bytes(x=np.array([{"a": 1}, None], dtype=object)),
            "array 'x' holds Python objects",
            id="object-array",
        ),
        pytest.param(
            _npz_bytes(x=np.zeros(2), y=np.zeros((2, 3))),
            "labels array 'y' has shape (2, 3); expected 1-d",
            id="2d-labels",
        ),
        pytest.param(
            _npz_bytes(x=np.zeros(2), y=np.array([0.5, 1.0])),
            "labels array 'y' holds floats that are not whole numbers",
            id="fractional-labels",
        ),
        pytest.param(
            _npz_bytes(x=np.zeros(2), y=np.array([1 + 2j, 3j])),
            "labels array 'y' has dtype complex128",
            id="complex-labels",
        ),
        pytest.param(
            _npz_with_lying_header(),
            "array 'x': its header declares 8000000000 bytes of data, the member holds",
            id="header-claims-more-than-the-member-holds",
        ),
        pytest.param(_npy_bytes(), "a single .npy array, not an .npz archive", id="npy-not-npz"),
        pytest.param(
            _npz_with_text_member(), "member 'README.txt' is not an .npy array", id="non-npy-member"
        ),
        pytest.param(b"x,y\n1,2\n", "not an .npz archive (a zip of .npy arrays)", id="csv-text"),
        pytest.param(b"PK\x03\x04" + b"\x00" * 30, "cannot load as npz", id="corrupt-zip"),
    ],
)
def test_npz_malformed(tmp_path: Path, data: bytes, detail: str) -> None:
    err = refused(write(tmp_path, "data.npz", data), "npz")

    assert_error(err, "NpzMalformed", "data.npz", None, detail)


def test_npz_labels_array_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_npz, "MAX_LABELS_BYTES", 1000)
    fits = npz(tmp_path, x=np.zeros((100, 2)), y=np.zeros(100, dtype=np.int8))
    assert count_dataset(fits, "npz").classes == {"0": 100}

    (tmp_path / "big").mkdir()
    big = npz(tmp_path / "big", x=np.zeros((200, 2)), y=np.zeros(200, dtype=np.int64))
    err = refused(big, "npz")

    assert_error(err, "NpzMalformed", "data.npz", None, "labels array 'y' is too large")


# --- every format ----------------------------------------------------------------------------


def test_unknown_format_lists_the_supported_ones(tmp_path: Path) -> None:
    err = refused(write(tmp_path, "data.parquet", b"PAR1"), "parquet")

    assert_error(
        err, "UnsupportedFormat", "data.parquet", None,
        "unsupported dataset format 'parquet'; supported: csv, txt, voc, npz",
    )
    assert SUPPORTED_FORMATS == ("csv", "txt", "voc", "npz")


@pytest.mark.parametrize("format", SUPPORTED_FORMATS)
def test_missing_dataset_is_unreadable(tmp_path: Path, format: str) -> None:
    err = refused(tmp_path / "missing", format)

    detail = "cannot read: No such file or directory"
    assert_error(err, "DatasetUnreadable", "missing", None, detail)


def test_error_survives_pickling(tmp_path: Path) -> None:
    err = refused(write(tmp_path, "train.txt", "a.jpg 0\nb.jpg\n"), "txt")

    copy = pickle.loads(pickle.dumps(err))

    assert (copy.reason, copy.file, copy.line) == (err.reason, err.file, err.line) == (
        "TxtMalformed", "train.txt", 2
    )
    assert str(copy) == str(err)


def test_unknown_error_reason_is_a_bug() -> None:
    with pytest.raises(ValueError):
        DatasetFormatError("Oops", "f", "detail")  # type: ignore[arg-type]
