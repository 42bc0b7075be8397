"""Adversarial member names in artifact archives: too deep, too long, duplicated, control
characters. Each must be refused by ArtifactStore.fetch as UnsafeArchive, naming the member,
before anything is unpacked: no version directory, no temp leftovers, nothing outside the store.

The same rules hold for tar, tar.gz and zip, so most cases are built in all three formats from
one format-neutral list of (name, data) entries, where data None means a directory entry.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jointserve.store import ArtifactError, ArtifactStore
from jointserve.store._unpack import MAX_COMPONENT_BYTES, MAX_DEPTH, MAX_NAME_BYTES
from tests._fakes import tar_info

MODEL = b"not really onnx\n" * 64
MODEL_NAME, VERSION = "m", "v1"

Entry = tuple[str, bytes | None]  # (member name, file data, or None for a directory)
Builder = Callable[[list[Entry]], bytes]


# --- archive builders ------------------------------------------------------------------------


def _tar(entries: list[Entry], mode: str) -> bytes:
    buf = io.BytesIO()
    # PAX (the default) carries long and non-ASCII names in extended headers, as GNU tar does.
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            tar.addfile(tar_info(name, data), io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_bytes(entries: list[Entry]) -> bytes:
    return _tar(entries, "w")


def tar_gz_bytes(entries: list[Entry]) -> bytes:
    return _tar(entries, "w:gz")


def zip_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns, then writes, duplicates
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                if data is None:
                    zf.writestr(name.rstrip("/") + "/", b"")  # a trailing '/' marks a directory
                else:
                    zf.writestr(name, data)
    return buf.getvalue()


FORMATS = [
    pytest.param(tar_bytes, id="tar"),
    pytest.param(tar_gz_bytes, id="tar.gz"),
    pytest.param(zip_bytes, id="zip"),
]


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_archive(tmp_path: Path, data: bytes) -> tuple[str, str]:
    """Put `data` in tmp_path; returns (file:// url, sha256)."""
    path = tmp_path / "archive.bin"  # no telling extension: the format is sniffed
    path.write_bytes(data)
    return "file://" + str(path), sha(data)


def tree(root: Path, *, skip: Path) -> set[str]:
    """Every path under `root` outside `skip`, relative to `root`."""
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path != skip and skip not in path.parents
    }


def refused(store: ArtifactStore, tmp_path: Path, data: bytes) -> ArtifactError:
    """Fetch `data`, which must be refused as UnsafeArchive leaving no trace; returns the error."""
    url, digest = write_archive(tmp_path, data)
    outside_before = tree(tmp_path, skip=store.root)

    with pytest.raises(ArtifactError) as info:
        store.fetch(MODEL_NAME, VERSION, url, digest)

    err = info.value
    assert err.reason == "UnsafeArchive", str(err)
    assert url in str(err)
    assert len(str(err)) < 400 + len(url)  # long names are cut short, not repeated whole
    version_dir = store.path_for(MODEL_NAME, VERSION)
    assert not version_dir.exists()
    # Only the lock remains: no half-unpacked .tmp-* or .download-* left behind.
    assert {p.name for p in version_dir.parent.iterdir()} <= {f".{VERSION}.lock"}
    assert tree(tmp_path, skip=store.root) == outside_before
    return err


# --- names refused in every format -----------------------------------------------------------

DEEP = "a/" * 3000 + "model.onnx"
LONG_COMPONENT = "d/" + "x" * (MAX_COMPONENT_BYTES + 1)
LONG_NAME = "/".join(["n" * 250] * 17)  # 17 * 250 + 16 = 4266 bytes; each part and depth fine
WIDE_COMPONENT = "é" * 128  # 128 characters but 256 bytes in UTF-8: the OS counts bytes


@pytest.mark.parametrize("build", FORMATS)
@pytest.mark.parametrize(
    "entries, expected",
    [
        pytest.param([(DEEP, MODEL)], "3001 path components deep; at most 64", id="3000-deep"),
        pytest.param(
            [("a/" * MAX_DEPTH + "model.onnx", MODEL)], "65 path components deep", id="depth-65"
        ),
        pytest.param([(LONG_COMPONENT, MODEL)], "256 bytes; at most 255", id="long-component"),
        pytest.param([(WIDE_COMPONENT, MODEL)], "256 bytes; at most 255", id="wide-component"),
        pytest.param([(LONG_NAME, MODEL)], "4266 bytes; at most 4096", id="long-name"),
        pytest.param(
            [("a/model.onnx", MODEL), ("./a/model.onnx", b"evil")],
            "duplicate of earlier member 'a/model.onnx'",
            id="duplicate-dot-slash",
        ),
        pytest.param(
            [("a/b", MODEL), ("a//b", b"evil")],
            "duplicate of earlier member 'a/b'",
            id="duplicate-double-slash",
        ),
        pytest.param(
            [("model.onnx", MODEL), ("model.onnx", b"evil")],
            "duplicate of earlier member 'model.onnx'",
            id="duplicate-same-name",
        ),
        pytest.param(
            [("a", None), ("./a", None)], "duplicate of earlier member 'a", id="duplicate-dir"
        ),
        pytest.param([("model\n.onnx", MODEL)], r"control character '\n'", id="newline"),
        pytest.param([("evil\r/model.onnx", MODEL)], r"control character '\r'", id="cr-in-dir"),
        pytest.param([("\x1b[31mred", MODEL)], r"control character '\x1b'", id="ansi-escape"),
        pytest.param([("del\x7f", MODEL)], r"control character '\x7f'", id="del"),
    ],
)
def test_bad_member_name_is_refused(
    store: ArtifactStore, tmp_path: Path, build: Builder, entries: list[Entry], expected: str
) -> None:
    err = refused(store, tmp_path, build([("ok.txt", b"fine"), *entries]))

    assert expected in str(err)
    # The member at fault is named (the duplicate, i.e. the later one), cut short if long.
    bad_name = entries[-1][0]
    assert repr(bad_name[:20]).rstrip("'") in str(err)


def test_3000_deep_message_is_readable(store: ArtifactStore, tmp_path: Path) -> None:
    err = refused(store, tmp_path, tar_bytes([(DEEP, MODEL)]))

    assert "member 'a/a/a/" in str(err) and "...'" in str(err)
    assert "3001 path components deep; at most 64 allowed" in str(err)


# --- format-specific spellings of a bad name -------------------------------------------------


def _tar_with_pax_path(path: str, mode: str) -> bytes:
    # A NUL cannot go in a ustar header (it ends the name there), but a pax "path" record
    # carries any bytes, and tarfile hands the name on with the NUL in it.
    info = tarfile.TarInfo("placeholder")
    info.size, info.pax_headers = len(MODEL), {"path": path}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(MODEL))
    return buf.getvalue()


def _zip_with_nul_name() -> bytes:
    # zipfile refuses to write a NUL, so write a placeholder and patch the name in both the
    # local header and the central directory (names are not covered by the CRC).
    return zip_bytes([("aXb.onnx", MODEL)]).replace(b"aXb.onnx", b"a\x00b.onnx")


def _tar_symlink(target: str) -> bytes:
    info = tarfile.TarInfo("link")
    info.type, info.linkname = tarfile.SYMTYPE, target
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, expected",
    [
        pytest.param(_tar_with_pax_path("a\x00b", "w"), r"'a\x00b'", id="tar-pax-nul"),
        pytest.param(_tar_with_pax_path("a\x00b", "w:gz"), r"'a\x00b'", id="tar.gz-pax-nul"),
        pytest.param(_tar_with_pax_path("a\nb", "w"), r"'a\nb'", id="tar-pax-newline"),
        pytest.param(_zip_with_nul_name(), r"'a\x00b.onnx'", id="zip-nul"),
        pytest.param(_tar_symlink("x\ny"), r"link target 'x\ny'", id="symlink-target-newline"),
        pytest.param(_tar_symlink("b/" * 100 + "c"), "link target 'b/b/", id="symlink-target-deep"),
    ],
)
def test_bad_name_in_format_specific_place_is_refused(
    store: ArtifactStore, tmp_path: Path, data: bytes, expected: str
) -> None:
    err = refused(store, tmp_path, data)

    assert expected in str(err)


@pytest.mark.parametrize("build", FORMATS)
def test_name_at_the_cap_too_long_under_the_store_is_refused(
    store: ArtifactStore, tmp_path: Path, build: Builder
) -> None:
    # 16 components of 255 bytes pass every cap, but PATH_MAX counts the store's own path too;
    # the OS then refuses, and that must still come out as UnsafeArchive, not a bare OSError.
    name = "/".join(["b" * MAX_COMPONENT_BYTES] * 16)
    assert len(name) <= MAX_NAME_BYTES

    err = refused(store, tmp_path, build([(name, MODEL)]))

    assert "too long" in str(err) and "member 'bbb" in str(err)


# --- positive control ------------------------------------------------------------------------


@pytest.mark.parametrize("build", FORMATS)
def test_directory_entries_and_names_at_the_caps_unpack(
    store: ArtifactStore, tmp_path: Path, build: Builder
) -> None:
    # Directory entries followed by files under them are not duplicates; "./" (the archive
    # root, which `tar -C dir .` lists) unpacks to nothing.
    at_depth_cap = "/".join(["z"] * MAX_DEPTH)
    widest = "w" * MAX_COMPONENT_BYTES
    entries: list[Entry] = [
        (".", None),
        ("pkg", None),
        ("pkg/sub/", None),
        ("pkg/sub/model.onnx", MODEL),
        ("./pkg/config.json", b"{}"),
        (at_depth_cap, b"deep"),
        (f"wide/{widest}", b"wide"),
        ("caf\u00e9.txt", b"accent"),
    ]
    url, digest = write_archive(tmp_path, build(entries))

    result = store.fetch(MODEL_NAME, VERSION, url, digest)

    assert (result.path / "pkg" / "sub" / "model.onnx").read_bytes() == MODEL
    assert (result.path / "pkg" / "config.json").read_bytes() == b"{}"
    assert (result.path / at_depth_cap).read_bytes() == b"deep"
    assert (result.path / "wide" / widest).read_bytes() == b"wide"
    assert (result.path / "caf\u00e9.txt").read_bytes() == b"accent"
