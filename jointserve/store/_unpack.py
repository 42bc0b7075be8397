"""Unpacking a verified artifact archive into a directory, refusing anything unsafe.

Part of jointserve.store. ArtifactStore.fetch calls `unpack` only after the download's sha256
matched, into a fresh temp dir that it renames into place afterwards. A matching hash proves the
archive is the one the manifest names, not that it is harmless (a careless build, a compromised
bucket), so every member is checked before anything is written: no absolute paths, no '..', no
links leaving the directory, no device files, no control characters in names, no two members
unpacking to the same path, caps on path depth and name length, and caps on member count and
unpacked size.

The format is sniffed from the content (tar.gz, tar, zip), not taken from the URL's extension.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, NoReturn

from ._errors import ArtifactError

log = logging.getLogger(__name__)

if not hasattr(tarfile, "data_filter"):  # added in 3.11.4 (PEP 706)
    raise ImportError("jointserve.store needs Python >= 3.11.4 for tarfile extraction filters")

ArchiveKind = Literal["tar.gz", "tar", "zip"]

_CHUNK_SIZE = 256 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
# Formats we recognise only to name them in the error.
_OTHER_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"7z\xbc\xaf\x27\x1c": "7z",
}
# Conflicting members (a file where a directory was, and so on) surface as these.
_CONFLICT_ERRORS = (FileExistsError, IsADirectoryError, NotADirectoryError)
# Name caps. Past 64 levels os.makedirs recurses until RecursionError long before any real model
# needs it; 255 bytes per component is NAME_MAX and 4096 for the whole name PATH_MAX on Linux.
MAX_DEPTH = 64
MAX_COMPONENT_BYTES = 255
MAX_NAME_BYTES = 4096
# NUL and the other ASCII control characters: never in a sane file name, and a newline in one
# breaks every log line and listing that shows it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Member names in error messages are cut to this many characters (they end up in status
# conditions; a 6,000-character name helps nobody).
_SHOWN_NAME_CHARS = 80


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_members: int


def unpack(archive: Path, dest: Path, url: str, limits: Limits) -> ArchiveKind:
    """Extract `archive` into the existing empty directory `dest`; returns the format found.

    Raises ArtifactError (UnsupportedArchive, ArchiveCorrupt, UnsafeArchive, ArchiveTooLarge);
    `dest` may then hold a partial extraction, which the caller discards.
    """
    kind = sniff(archive, url)
    if kind == "zip":
        _unpack_zip(archive, dest, url, limits)
    else:
        _unpack_tar(archive, dest, url, limits, compressed=kind == "tar.gz")
    return kind


def sniff(archive: Path, url: str) -> ArchiveKind:
    with archive.open("rb") as f:
        head = f.read(512)
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a local file header, or an empty zip
        return "zip"
    if head[257:262] == b"ustar" or _is_v7_tar(archive):
        return "tar"
    found = next((name for magic, name in _OTHER_MAGIC.items() if head.startswith(magic)), None)
    what = f"{found} data" if found else f"unrecognised data (starts with {head[:8].hex()})"
    raise _unsupported(url, f"{what}; expected tar.gz, tar or zip")


def _is_v7_tar(archive: Path) -> bool:
    # Pre-POSIX tar has no magic; tarfile still verifies the header checksum, so random data
    # does not pass for a tar.
    try:
        with tarfile.open(archive, "r:") as tar:
            return tar.next() is not None
    except tarfile.TarError:
        return False


def unsafe_path_reason(name: str) -> str | None:
    """Why member path `name` could write outside the target directory, or None if it cannot."""
    if name.startswith(("/", "\\")):
        return "absolute path"
    if _DRIVE.match(name):
        return "absolute Windows path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' path component"
    return None


def name_problem(name: str) -> str | None:
    """Why member (or link target) `name` is refused as a file name, or None if it is fine.

    Complements unsafe_path_reason: these names stay inside the directory, but cannot be
    unpacked (too deep, too long) or are a trap for whoever reads them (control characters).
    """
    control = _CONTROL.search(name)
    if control:
        return f"control character {control.group()!r} in name"
    parts = _path_parts(name)
    if len(parts) > MAX_DEPTH:
        return f"nested {len(parts)} path components deep; at most {MAX_DEPTH} allowed"
    try:
        # Measured as the bytes the OS will see; tarfile decodes with surrogateescape.
        longest = max((len(os.fsencode(part)) for part in parts), default=0)
        total = len(os.fsencode(name))
    except UnicodeEncodeError:
        return "name cannot be encoded as a file name"
    if longest > MAX_COMPONENT_BYTES:
        return f"a path component is {longest} bytes; at most {MAX_COMPONENT_BYTES} allowed"
    if total > MAX_NAME_BYTES:
        return f"name is {total} bytes; at most {MAX_NAME_BYTES} allowed"
    return None


def _path_parts(name: str) -> list[str]:
    # How extraction treats the name: "./a//b/" and "a/b" are the same file.
    return [part for part in name.split("/") if part not in ("", ".")]


class _SeenPaths:
    """Normalised member paths listed so far: a second member at one path would silently
    replace the first, so the archive would not be what its author (or reviewer) saw."""

    def __init__(self, url: str) -> None:
        self._first: dict[str, str] = {}  # normalised path -> the member name that used it
        self._url = url

    def add(self, name: str) -> None:
        path = "/".join(_path_parts(name))
        if not path:  # "./", the archive root: tar lists it, nothing is unpacked for it
            return
        first = self._first.get(path)
        if first is not None:
            raise _unsafe(self._url, name, f"duplicate of earlier member {_shown(first)!r}")
        self._first[path] = name


def _unsupported(url: str, why: str) -> ArtifactError:
    return ArtifactError("UnsupportedArchive", url, f"unsupported archive {url}: {why}")


def _unsafe(url: str, member: str, why: str) -> ArtifactError:
    shown = _shown(member)
    return ArtifactError("UnsafeArchive", url, f"unsafe archive {url}: member {shown!r}: {why}")


def _shown(name: str) -> str:
    """`name`, cut short for a message."""
    if len(name) <= _SHOWN_NAME_CHARS:
        return name
    return name[: _SHOWN_NAME_CHARS - 3] + "..."


def _raise_if_name_too_long(exc: OSError, dest: Path, url: str) -> NoReturn:
    """Re-raise `exc`, as UnsafeArchive if the OS refused a path as too long.

    The name caps are checked up front, but PATH_MAX counts `dest` too, so a name just under
    MAX_NAME_BYTES can still be too long once joined to it.
    """
    if exc.errno != errno.ENAMETOOLONG or not isinstance(exc.filename, str):
        raise exc
    member = os.path.relpath(exc.filename, dest) if exc.filename.startswith(str(dest)) else "?"
    raise _unsafe(url, member, "path too long for the file system once unpacked") from None


def _too_large(url: str, why: str) -> ArtifactError:
    return ArtifactError("ArchiveTooLarge", url, f"archive {url} is too large: {why}")


def _corrupt(url: str, why: object) -> ArtifactError:
    return ArtifactError("ArchiveCorrupt", url, f"corrupt archive {url}: {why}")


# --- tar -------------------------------------------------------------------------------------


def _unpack_tar(archive: Path, dest: Path, url: str, limits: Limits, *, compressed: bool) -> None:
    try:
        with tarfile.open(archive, "r:gz" if compressed else "r:") as tar:
            members = _checked_tar_members(tar, url, limits)
            # Our checks give clear reasons; the data filter is the second line of defence
            # (it resolves links already on disk, which a per-member check cannot see).
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise _unsafe(url, exc.tarinfo.name, str(exc)) from None
    except _CONFLICT_ERRORS as exc:
        raise _corrupt(url, f"conflicting members: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _corrupt(url, exc) from None
    except OSError as exc:
        _raise_if_name_too_long(exc, dest, url)


def _checked_tar_members(tar: tarfile.TarFile, url: str, limits: Limits) -> list[tarfile.TarInfo]:
    """All members, each checked; stops reading as soon as a cap is exceeded."""
    members: list[tarfile.TarInfo] = []
    seen = _SeenPaths(url)
    total = 0
    for member in tar:  # headers are read lazily, so a million-member bomb is not listed
        if len(members) >= limits.max_members:
            raise _too_large(url, f"more than {limits.max_members} members")
        _check_tar_member(member, url)
        seen.add(member.name)
        total += member.size if member.isreg() else 0
        if total > limits.max_bytes:
            raise _too_large(url, f"members unpack to more than {limits.max_bytes} bytes")
        members.append(member)
    return members


def _check_tar_member(member: tarfile.TarInfo, url: str) -> None:
    why = unsafe_path_reason(member.name) or name_problem(member.name)
    if why is None and (member.issym() or member.islnk()):
        why = _link_target_problem(member.linkname)
    if why is None and (member.ischr() or member.isblk() or member.isfifo()):
        why = "device or fifo"
    if why is None and member.issym():
        why = _symlink_escape_reason(member.name, member.linkname)
    if why is None and member.islnk():
        reason = unsafe_path_reason(member.linkname)  # hard link targets are archive paths
        why = f"hard link to {member.linkname!r} ({reason})" if reason else None
    if why is not None:
        raise _unsafe(url, member.name, why)


def _link_target_problem(target: str) -> str | None:
    # The same name rules as for members: a NUL or a 5,000-byte target fails os.symlink with
    # an error that is not ours.
    why = name_problem(target)
    return f"link target {_shown(target)!r}: {why}" if why else None


def _symlink_escape_reason(name: str, target: str) -> str | None:
    # A relative target resolves against the link's own directory, e.g. sub/l -> ../m is fine.
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        return f"symlink to {target!r} leaves the directory"
    return None


# --- zip -------------------------------------------------------------------------------------


class _Budget:
    """Bytes still allowed to be written; declared sizes in a zip are only claims."""

    def __init__(self, max_bytes: int, url: str) -> None:
        self.left = max_bytes
        self._max = max_bytes
        self._url = url

    def spend(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise _too_large(self._url, f"unpacked data exceeds {self._max} bytes")


def _unpack_zip(archive: Path, dest: Path, url: str, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            check_zip_members(infos, url, limits)
            budget = _Budget(limits.max_bytes, url)
            for info in infos:
                _extract_zip_member(zf, info, dest, budget, url)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _corrupt(url, exc) from None
    except NotImplementedError as exc:  # e.g. a compression method Python lacks
        raise _unsupported(url, str(exc)) from None
    except OSError as exc:
        _raise_if_name_too_long(exc, dest, url)


def check_zip_members(infos: list[zipfile.ZipInfo], url: str, limits: Limits) -> None:
    """Reject unsafe entries and archives whose declared sizes exceed the caps."""
    if len(infos) > limits.max_members:
        raise _too_large(url, f"more than {limits.max_members} members")
    if sum(info.file_size for info in infos) > limits.max_bytes:
        raise _too_large(url, f"members unpack to more than {limits.max_bytes} bytes")
    seen = _SeenPaths(url)
    for info in infos:
        _check_zip_member(info, url)
        seen.add(info.filename)


def _check_zip_member(info: zipfile.ZipInfo, url: str) -> None:
    # zipfile cuts `filename` at a NUL; `orig_filename` is the name as the archive has it.
    why = unsafe_path_reason(info.filename) or name_problem(info.orig_filename)
    mode = info.external_attr >> 16  # Unix st_mode, when the archiver recorded one
    if why is None and stat.S_ISLNK(mode):
        why = "symlink entry"
    if why is None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
        why = "device or fifo"
    if why is not None:
        raise _unsafe(url, info.orig_filename, why)
    if info.flag_bits & 0x1:
        raise _unsupported(url, f"member {info.filename!r} is encrypted")


def _extract_zip_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: _Budget, url: str
) -> None:
    parts = [part for part in info.filename.split("/") if part not in ("", ".")]
    if not parts:
        return
    target = dest.joinpath(*parts)
    try:
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, target.open("wb") as out:
            _copy_capped(src, out, budget)
    except _CONFLICT_ERRORS as exc:
        why = f"member {info.filename!r} conflicts with another member: {exc}"
        raise _corrupt(url, why) from None


def _copy_capped(src: IO[bytes], out: IO[bytes], budget: _Budget) -> None:
    while chunk := src.read(_CHUNK_SIZE):
        budget.spend(len(chunk))  # before writing: a bomb never lands on disk past the cap
        out.write(chunk)
