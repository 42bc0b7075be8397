"""Downloading an artifact into a local file while hashing it: http(s) with retries, file://,
or an RFC 2397 `data:` URL (base64) for artifacts small enough to travel in a config (the
operator's trained routers: a few KiB, so every node reads them from the Serve config).

Part of jointserve.store. ArtifactStore.fetch calls `download` to fill a temp file inside the
model's store directory and compares the returned sha256 before anything is unpacked. Hashing
happens as the bytes stream in, so a multi-gigabyte model is read once and never held in memory.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from ._errors import ArtifactError, ArtifactReason, redact_url

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called as bytes arrive with (bytes_so_far, total_or_None); a retry starts again from 0."""

CHUNK_SIZE = 256 * 1024


@dataclass(frozen=True)
class DownloadOptions:
    timeout_s: float
    retries: int
    backoff_s: float


@dataclass(frozen=True)
class SourceVersion:
    """What tells one version of a source from the next without reading it: the HTTP
    validators (ETag, Last-Modified), or for a file:// URL its mtime and size (as `etag`)."""

    etag: str | None = None
    last_modified: str | None = None

    def known(self) -> bool:
        return self.etag is not None or self.last_modified is not None


@dataclass(frozen=True)
class Downloaded:
    sha256: str  # lowercase hex
    size: int
    source: SourceVersion = SourceVersion()


@dataclass(frozen=True)
class Limit:
    """The size cap of one download, and the words that name it in the error."""

    max_bytes: int
    name: str = "the download size cap"


def download(
    url: str, dest: Path, options: DownloadOptions, progress: ProgressCallback | None = None,
    *, limit: Limit | None = None, unless: SourceVersion | None = None,
) -> Downloaded | None:
    """Write the content at `url` to `dest` (overwritten), returning its sha256 and size.

    With `unless` (what an earlier download returned as `source`): None, and nothing written,
    when the source still is that version (HTTP 304, or the same file mtime and size).
    Raises ArtifactError with reason DownloadFailed, HTTPError or DownloadTooLarge (more bytes
    than `limit`: refused on Content-Length or file size before reading, else stopped there).
    """
    shown = redact_url(url)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ArtifactError("DownloadFailed", shown, f"invalid URL {shown}: {exc}") from None
    if scheme in ("http", "https"):
        return _download_http(url, dest, options, progress, limit, unless)
    if scheme == "file":
        return _download_file(url, dest, progress, limit, unless)
    if scheme == "data":
        return _download_data(url, dest, progress, limit)
    raise ArtifactError(
        "DownloadFailed",
        shown,
        f"cannot download {shown}: unsupported URL scheme {scheme!r} (use http, https, file "
        "or data)",
    )


def data_url(content: bytes, media_type: str = "application/gzip") -> str:
    """`content` as a base64 `data:` URL, which `download` reads back byte for byte."""
    return f"data:{media_type};base64,{base64.b64encode(content).decode()}"


def _download_data(url: str, dest: Path, progress: ProgressCallback | None,
                   limit: Limit | None) -> Downloaded:
    shown = "a data: URL"
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ArtifactError("DownloadFailed", shown, "a data: URL must be base64 "
                            "(data:<type>;base64,<content>)")
    try:
        content = base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise ArtifactError("DownloadFailed", shown, f"a data: URL's content is not base64: "
                            f"{exc}") from None
    _check_size(len(content), limit, shown, "it has")
    with dest.open("wb") as out:
        sink = _Sink(out, len(content), progress, limit, shown)
        sink.write(content)
    return sink.result()


class _Sink:
    """Writes chunks to a file, hashing and counting them and reporting progress."""

    def __init__(self, out: BinaryIO, total: int | None, progress: ProgressCallback | None,
                 limit: Limit | None, shown: str, source: SourceVersion = SourceVersion()):
        self._out = out
        self._total = total
        self._progress = progress
        self._limit = limit
        self._shown = shown
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        _check_size(self.size, self._limit, self._shown, "more than")
        self._out.write(chunk)
        self._hash.update(chunk)
        if self._progress is not None:
            self._progress(self.size, self._total)

    def result(self) -> Downloaded:
        return Downloaded(self._hash.hexdigest(), self.size, self._source)


def _check_size(size: int | None, limit: Limit | None, shown: str, how: str) -> None:
    if size is not None and limit is not None and size > limit.max_bytes:
        raise ArtifactError("DownloadTooLarge", shown,
                            f"{shown} is too large: {how} {size} bytes, over {limit.name} "
                            f"of {limit.max_bytes} bytes")


def _download_file(url: str, dest: Path, progress: ProgressCallback | None,
                   limit: Limit | None, unless: SourceVersion | None) -> Downloaded | None:
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ArtifactError(
            "DownloadFailed", shown, f"cannot read {shown}: file:// URLs must name a local path"
        )
    path = Path(url2pathname(parts.path))
    try:
        src = path.open("rb")
    except OSError as exc:
        raise ArtifactError(
            "DownloadFailed", shown, f"cannot read {shown}: {exc.strerror or exc}"
        ) from None
    with src:
        stat = os.fstat(src.fileno())
        source = SourceVersion(etag=f"file:{stat.st_mtime_ns}-{stat.st_size}")
        if unless is not None and unless == source:
            return None
        _check_size(stat.st_size, limit, shown, "it has")
        with dest.open("wb") as out:
            sink = _Sink(out, stat.st_size, progress, limit, shown, source)
            while chunk := src.read(CHUNK_SIZE):
                sink.write(chunk)
    return sink.result()


class _Transient(Exception):
    """A failed attempt worth retrying: connect error, timeout, 5xx, truncated body."""

    def __init__(self, reason: ArtifactReason, message: str) -> None:
        super().__init__(message)
        self.reason: ArtifactReason = reason
        self.message = message


def _download_http(
    url: str, dest: Path, options: DownloadOptions, progress: ProgressCallback | None,
    limit: Limit | None, unless: SourceVersion | None,
) -> Downloaded | None:
    shown = redact_url(url)
    attempts = options.retries + 1
    # identity: no transfer compression, so Content-Length counts the very bytes we hash
    # (truncation check, progress total) and no CPU goes into re-inflating a tar.gz.
    headers = {"Accept-Encoding": "identity", **_conditional_headers(unless)}
    client = httpx.Client(timeout=options.timeout_s, follow_redirects=True, headers=headers)
    attempt = 0
    with client:
        while True:
            attempt += 1
            try:
                return _attempt(client, url, dest, progress, limit)
            except _Transient as exc:
                if attempt >= attempts:
                    message = f"{exc.message} (gave up after {attempts} attempts)"
                    raise ArtifactError(exc.reason, shown, message) from exc.__cause__
                delay = options.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "%s (attempt %d of %d); retrying in %.2fs",
                    exc.message, attempt, attempts, delay,
                )
            time.sleep(delay)


def _conditional_headers(unless: SourceVersion | None) -> dict[str, str]:
    if unless is None:
        return {}
    headers = {}
    if unless.etag is not None and not unless.etag.startswith("file:"):
        headers["If-None-Match"] = unless.etag
    if unless.last_modified is not None:
        headers["If-Modified-Since"] = unless.last_modified
    return headers


def _attempt(
    client: httpx.Client, url: str, dest: Path, progress: ProgressCallback | None,
    limit: Limit | None,
) -> Downloaded | None:
    shown = redact_url(url)
    try:
        with client.stream("GET", url) as response:
            if response.status_code == 304:  # only ever asked for with validators
                return None
            _check_status(response, shown)
            expected = _content_length(response)
            _check_size(expected, limit, shown, "its Content-Length says")
            # Progress counts decoded bytes, so a length of encoded bytes is no total for it.
            total = None if response.headers.get("content-encoding") else expected
            source = SourceVersion(response.headers.get("etag"),
                                   response.headers.get("last-modified"))
            with dest.open("wb") as out:
                sink = _Sink(out, total, progress, limit, shown, source)
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    sink.write(chunk)
            # httpx raises on a body shorter than Content-Length; checked again here so a
            # truncated download can never reach the hash comparison looking complete.
            if expected is not None and response.num_bytes_downloaded != expected:
                raise _Transient(
                    "DownloadFailed",
                    f"download of {shown} was truncated: "
                    f"got {response.num_bytes_downloaded} of {expected} bytes",
                )
            return sink.result()
    except httpx.TransportError as exc:  # connect errors, timeouts, connection closed mid-body
        raise _Transient("DownloadFailed", f"download of {shown} failed: {_describe(exc)}") from exc
    except (httpx.RequestError, httpx.InvalidURL) as exc:  # redirect loops, bad URLs: permanent
        raise ArtifactError(
            "DownloadFailed", shown, f"download of {shown} failed: {_describe(exc)}"
        ) from exc


def _check_status(response: httpx.Response, shown: str) -> None:
    if response.status_code < 400:
        return
    message = f"HTTP {response.status_code} {response.reason_phrase} for {shown}"
    if response.status_code >= 500:
        raise _Transient("HTTPError", message)
    raise ArtifactError("HTTPError", shown, message)  # 4xx: asking again will not help


def _content_length(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
