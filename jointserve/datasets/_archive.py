"""The files of a dataset that comes as a directory or as a tar, tar.gz or zip archive.

Archives are read where they are: member data is read into memory, one member at a time and
only when asked for, and nothing is ever extracted to disk, so a hostile archive has nowhere
to write to. Members are still checked, because their names end up in counts and messages and
a name the archive repeats would be counted twice: an absolute or '..' path, a link, a device
or fifo, a duplicate name, more than MAX_MEMBERS members or a member over MAX_MEMBER_BYTES is
UnsafeArchive. Tar archives are read as a stream (tarfile's "r|*"), so a tar.gz is decompressed
once, front to back.

A directory is trusted as the file system presents it (it is the user's own, or one the
artifact store unpacked safely): links are followed, each directory visited once.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from ._errors import DatasetFormatError, DatasetReason

# Caps for archives; read at call time, so tests can lower them.
MAX_MEMBERS = 1_000_000
MAX_MEMBER_BYTES = 64 * 1024 * 1024

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty zip
_DRIVE = re.compile(r"^[A-Za-z]:")
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


@dataclass(frozen=True)
class Entry:
    """One directory or regular file of the dataset."""

    path: str  # relative to the dataset's top, '/'-separated, normalised ("./a//b" is "a/b")
    is_dir: bool
    # The file's bytes. For a tar member only valid until the walk moves on: the stream has
    # passed it by then.
    read: Callable[[], bytes]


def walk(top: Path, reason: DatasetReason) -> Iterator[Entry]:
    """Every directory and regular file under `top`: a directory, or a tar, tar.gz or zip.

    `reason` is what a corrupt archive, or a directory's file over MAX_MEMBER_BYTES, raises.
    Raises DatasetFormatError: UnsafeArchive, UnsupportedFormat (not a directory or an
    archive), or `reason`.
    """
    if top.is_dir():
        return _walk_directory(top, reason)
    with top.open("rb") as f:
        head = f.read(4)
    if head in _ZIP_MAGIC:
        return _walk_zip(top, reason)
    return _walk_tar(top, reason)


def _no_data() -> bytes:
    return b""


# --- directory -------------------------------------------------------------------------------


def _walk_directory(top: Path, reason: DatasetReason) -> Iterator[Entry]:
    seen = {_identity(top)}
    # onerror: a directory that cannot be listed must fail the count, not shrink it.
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True, onerror=_raise):
        # Sorted, so the first error found is the same on every run; pruned, so a link back
        # up the tree is not walked for ever.
        dirnames[:] = sorted(name for name in dirnames if _first_visit(Path(dirpath, name), seen))
        base = Path(dirpath).relative_to(top).as_posix()
        prefix = "" if base == "." else base + "/"
        for name in dirnames:
            yield Entry(prefix + name, True, _no_data)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            yield Entry(prefix + name, False, partial(_read_file, path, prefix + name, reason))


def _raise(exc: OSError) -> None:
    raise exc


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _first_visit(path: Path, seen: set[tuple[int, int]]) -> bool:
    identity = _identity(path)
    if identity in seen:
        return False
    seen.add(identity)
    return True


def _read_file(path: Path, shown: str, reason: DatasetReason) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise DatasetFormatError(reason, shown, f"larger than {MAX_MEMBER_BYTES} bytes")
    return data


# --- member checks, shared by tar and zip ----------------------------------------------------


class _Members:
    """The members of one archive listed so far."""

    def __init__(self, archive: str) -> None:
        self.archive = archive
        self._count = 0
        self._seen: set[str] = set()

    def add(self, name: str, size: int) -> str:
        """`name` normalised, after checking it and the caps; raises UnsafeArchive."""
        self._count += 1
        if self._count > MAX_MEMBERS:
            raise self.unsafe(name, f"more than {MAX_MEMBERS} members")
        why = _unsafe_path_reason(name)
        if why is None and size > MAX_MEMBER_BYTES:
            why = f"{size} bytes; at most {MAX_MEMBER_BYTES} allowed per member"
        path = "/".join(part for part in name.split("/") if part not in ("", "."))
        if why is None and path in self._seen:
            why = "duplicate of an earlier member"
        if why is not None:
            raise self.unsafe(name, why)
        if path:  # "./", the archive's root, which `tar -C dir .` lists first
            self._seen.add(path)
        return path

    def unsafe(self, name: str, why: str) -> DatasetFormatError:
        detail = f"member {name[:80]!r}: {why}"
        return DatasetFormatError("UnsafeArchive", self.archive, detail)

    def read(self, member: IO[bytes], name: str) -> bytes:
        """All of `member`, refusing more than MAX_MEMBER_BYTES: a zip's sizes are only claims."""
        data = member.read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES:
            raise self.unsafe(name, f"unpacks to more than {MAX_MEMBER_BYTES} bytes")
        return data


def _unsafe_path_reason(name: str) -> str | None:
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' path component"
    return None


# --- tar -------------------------------------------------------------------------------------


class _StrictTarInfo(tarfile.TarInfo):
    """Headers as tarfile reads them, except that only the zero block ends an archive.

    Past the first member tarfile takes a missing, cut-short or invalid header for the end of
    the archive, so a truncated download or a damaged tar would count fewer samples without
    a word; here they are errors.
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(archive)
        # The zero block that ends every complete archive. EOFHeaderError is not in tarfile's
        # docs, but has been there since Python 3.2.
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(f"truncated or damaged: {exc}") from None


def _walk_tar(top: Path, reason: DatasetReason) -> Iterator[Entry]:
    try:
        tar = tarfile.open(top, "r|*", tarinfo=_StrictTarInfo)
    except _TAR_ERRORS:
        detail = "neither a directory nor a tar, tar.gz or zip archive"
        raise DatasetFormatError("UnsupportedFormat", top.name, detail) from None
    members = _Members(top.name)
    with tar:
        for member in _tar_members(tar, top.name, reason):
            path = members.add(member.name, member.size)
            if member.issym() or member.islnk():
                raise members.unsafe(member.name, f"link to {member.linkname[:80]!r}")
            if not (member.isreg() or member.isdir()):
                raise members.unsafe(member.name, "device or fifo")
            read = partial(_read_tar_member, tar, member, members, reason)
            yield Entry(path, member.isdir(), read if member.isreg() else _no_data)


def _tar_members(
    tar: tarfile.TarFile, archive: str, reason: DatasetReason
) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            member = tar.next()
        except _TAR_ERRORS as exc:
            raise DatasetFormatError(reason, archive, f"corrupt archive: {exc}") from None
        if member is None:
            return
        # tarfile keeps every header it has read, for random access a stream never makes;
        # a million of them would cost hundreds of MB.
        tar.members.clear()
        yield member


def _read_tar_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, members: _Members, reason: DatasetReason
) -> bytes:
    try:
        reader = tar.extractfile(member)
        return members.read(reader, member.name) if reader is not None else b""
    except _TAR_ERRORS as exc:
        detail = f"corrupt member {member.name!r}: {exc}"
        raise DatasetFormatError(reason, members.archive, detail) from None


# --- zip -------------------------------------------------------------------------------------


def _walk_zip(top: Path, reason: DatasetReason) -> Iterator[Entry]:
    try:
        archive = zipfile.ZipFile(top)
    except _ZIP_ERRORS as exc:
        raise DatasetFormatError(reason, top.name, f"corrupt archive: {exc}") from None
    members = _Members(top.name)
    with archive:
        infos = archive.infolist()  # zipfile has read the whole central directory already
        if len(infos) > MAX_MEMBERS:
            raise members.unsafe(infos[MAX_MEMBERS].filename, f"more than {MAX_MEMBERS} members")
        for info in infos:
            # zipfile cuts `filename` at a NUL; `orig_filename` is what the archive says.
            path = members.add(info.orig_filename, info.file_size)
            _check_zip_mode(info, members)
            read = partial(_read_zip_member, archive, info, members, reason)
            yield Entry(path, info.is_dir(), _no_data if info.is_dir() else read)


def _check_zip_mode(info: zipfile.ZipInfo, members: _Members) -> None:
    mode = info.external_attr >> 16  # Unix st_mode, when the archiver recorded one
    if stat.S_ISLNK(mode):
        raise members.unsafe(info.orig_filename, "symlink")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        raise members.unsafe(info.orig_filename, "device or fifo")


def _read_zip_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, members: _Members, reason: DatasetReason
) -> bytes:
    if info.flag_bits & 0x1:
        detail = f"member {info.filename!r} is encrypted"
        raise DatasetFormatError(reason, members.archive, detail)
    try:
        with archive.open(info) as member:
            return members.read(member, info.filename)
    except _ZIP_ERRORS as exc:
        detail = f"corrupt member {info.filename!r}: {exc}"
        raise DatasetFormatError(reason, members.archive, detail) from None
