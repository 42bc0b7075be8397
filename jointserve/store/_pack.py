"""Making what the store takes: a reproducible tar.gz of files, written without a half-state.

The examples' build scripts pack their model archives and datasets with these, so the same
inputs give the same bytes (and the same sha256 in a manifest) on every machine; the
operator, once it packs versions of its own (a trained router, a federated round), will too.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path


def pack_tar_gz(files: dict[str, bytes]) -> bytes:
    """A byte-for-byte reproducible tar.gz of `files` (name -> bytes): sorted members, no
    times, owners or file name in the gzip header."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file and rename: a watching operator or file server never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
