"""The artifact store: model archives fetched by URL, verified by sha256, unpacked per version.

The operator (and each replica, on its own node) calls `ArtifactStore.fetch(model, version,
url, sha256)` for the version a manifest names: URL -> temp file hashed while streaming ->
sha256 compared -> archive unpacked into a temp dir -> renamed to `<root>/<model>/<version>/`.
A version directory exists only complete and verified, with a marker file recording its sha256;
a second fetch of it is a cache hit that touches no network.

Layout of one model directory:

    <root>/<model>/<version>/                        unpacked archive + .jointserve-artifact.json
    <root>/<model>/.<version>.lock                   cross-process lock, left in place
    <root>/<model>/.download-<version>-<hex8>        archive being downloaded   } only while a
    <root>/<model>/.tmp-<version>-<hex8>/            archive being unpacked     } fetch runs, or
    <root>/<model>/.old-<version>-<hex8>/            replaced version, deleted  } after a crash

Files that are kept as they were downloaded, not unpacked (a Dataset's data), go through
`fetch_file(name, url, sha256)` into a tree of their own, keyed by sha256, with the same
lock and temp files (named after the sha256 instead of a version):

    <root>/.datasets/<name>/<sha256>/<file name>     the file + .jointserve-artifact.json

`.datasets` starts with a '.', which no model name may (`_component`), so no model can clash
with it whatever it is called. `follow_file(name, url, unless=...)` is fetch_file for a source
with no pinned sha256 (a Dataset with refreshSeconds): it downloads (unless the source answers
"not modified"), hashes, and keeps the file under the sha256 it turned out to have.

Every download has a size cap (`max_download_bytes`, or a `Limit` the caller names); more
bytes than that is DownloadTooLarge, refused on Content-Length or file size before reading.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from filelock import FileLock

from ._errors import ArtifactError, redact_url
from ._fetch import DownloadOptions, Limit, ProgressCallback, SourceVersion, download
from ._unpack import Limits, unpack

log = logging.getLogger(__name__)

MARKER_NAME = ".jointserve-artifact.json"
FILES_DIR = ".datasets"
DEFAULT_FILE_NAME = "data"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_FILE_NAME = 200  # bytes; the ASCII left after sanitising, well under NAME_MAX (255)


@dataclass(frozen=True)
class FetchResult:
    # fetch: <root>/<model>/<version>/ (the unpacked archive contents);
    # fetch_file: <root>/.datasets/<name>/<sha256>/<file name> (the file itself).
    path: Path
    cache_hit: bool
    bytes_downloaded: int  # size of the archive fetched; 0 on a cache hit
    sha256: str = ""  # follow_file: the sha256 the file turned out to have
    source: SourceVersion = SourceVersion()  # follow_file: its validators, for the next check


class ArtifactStore:
    """Versioned, verified model directories under `root`; safe to share between processes."""

    def __init__(
        self,
        root: Path,
        *,
        max_unpacked_bytes: int = 4 * 2**30,
        max_members: int = 100_000,
        max_download_bytes: int = 16 * 2**30,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        if max_unpacked_bytes <= 0 or max_members <= 0 or max_download_bytes <= 0:
            raise ValueError("max_unpacked_bytes, max_members and max_download_bytes must be "
                             "positive")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be positive, retries and backoff_s not negative")
        self.root = Path(root)
        self._limits = Limits(max_bytes=max_unpacked_bytes, max_members=max_members)
        self._download_limit = Limit(max_download_bytes, "the store's download cap")
        self._options = DownloadOptions(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)

    def path_for(self, model: str, version: str) -> Path:
        """Where `version` of `model` lives (whether or not it has been fetched)."""
        return self.root / _component("model", model) / _component("version", version)

    def is_cached(self, model: str, version: str, sha256: str) -> bool:
        """True if the version directory exists and was unpacked from an archive with `sha256`."""
        return _recorded_sha256(self.path_for(model, version)) == _normalize_sha256(sha256)

    def remove(self, model: str) -> None:
        """Delete every version of `model`: its resource is gone. Failures are logged."""
        model_dir = self.root / _component("model", model)
        if model_dir.exists():
            log.info("removing %s: no resource serves %s any more", model_dir, model)
            _remove(model_dir)

    def fetch(
        self,
        model: str,
        version: str,
        url: str,
        sha256: str,
        *,
        progress: ProgressCallback | None = None,
    ) -> FetchResult:
        """Make `<root>/<model>/<version>/` hold the archive at `url`, verified against `sha256`.

        Raises ArtifactError (see its `reason`) and leaves no temp files behind; a version
        already present with another sha256 stays in place until its replacement is complete.
        While another process fetches the same version this waits for it, then finds the cache.
        """
        final = self.path_for(model, version)
        expected = _normalize_sha256(sha256)
        # Fast path without the lock: a marker with this sha256 is only ever renamed in
        # together with its complete directory.
        if _recorded_sha256(final) == expected:
            return self._cache_hit(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(final.parent / f".{version}.lock"):
            if _recorded_sha256(final) == expected:  # another process fetched it meanwhile
                return self._cache_hit(final)
            _sweep_leftovers(final.parent, version)
            size = self._fetch_locked(final, url, expected, progress)
        return FetchResult(path=final, cache_hit=False, bytes_downloaded=size)

    def _cache_hit(self, final: Path) -> FetchResult:
        log.debug("artifact %s is cached", final)
        return FetchResult(path=final, cache_hit=True, bytes_downloaded=0)

    # -- files kept as downloaded ------------------------------------------------------------

    def file_path(self, name: str, url: str, sha256: str) -> Path:
        """Where `fetch_file(name, url, sha256)` puts the file (whether or not it is there)."""
        sha = _normalize_sha256(sha256)
        return self.root / FILES_DIR / _component("name", name) / sha / _file_name(url)

    def is_file_cached(self, name: str, url: str, sha256: str) -> bool:
        """True if `fetch_file` would be a cache hit."""
        path = self.file_path(name, url, sha256)
        return _recorded_file(path.parent) == (path.parent.name, path.name) and path.is_file()

    def remove_files(self, name: str) -> None:
        """Delete everything `fetch_file` kept for `name`. Failures are logged."""
        files_dir = self.root / FILES_DIR / _component("name", name)
        if files_dir.exists():
            log.info("removing %s: no resource uses %s any more", files_dir, name)
            _remove(files_dir)

    def fetch_file(
        self, name: str, url: str, sha256: str, *, progress: ProgressCallback | None = None,
        limit: Limit | None = None,
    ) -> FetchResult:
        """Make `<root>/.datasets/<name>/<sha256>/<file name>` the file at `url`, as downloaded.

        The file name is the last component of the URL's path, sanitised (letters, digits,
        '.', '_', '-'; not starting with '.'), or "data". The sha256 is checked before the file
        is kept; like `fetch`, this raises ArtifactError, leaves no temp files behind, waits
        for another process fetching the same file and then finds it cached.
        """
        final = self.file_path(name, url, sha256)
        sha_dir = final.parent
        if self.is_file_cached(name, url, sha256):
            return self._cache_hit(final)
        sha_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(sha_dir.parent / f".{sha_dir.name}.lock"):
            if self.is_file_cached(name, url, sha256):
                return self._cache_hit(final)
            _sweep_leftovers(sha_dir.parent, sha_dir.name)
            size = self._download_and_install(final.parent, url, sha_dir.name, progress,
                                              _keep_as(final.name), marked_file=final.name,
                                              limit=limit)
        return FetchResult(path=final, cache_hit=False, bytes_downloaded=size)

    def follow_file(
        self, name: str, url: str, *, unless: SourceVersion | None = None,
        progress: ProgressCallback | None = None, limit: Limit | None = None,
    ) -> FetchResult | None:
        """The file at `url` as it is now, kept as fetch_file keeps it under the sha256 it has;
        None when `unless` (an earlier result's `source`) says the source has not changed.
        Raises ArtifactError; no temp file survives."""
        names_dir = self.root / FILES_DIR / _component("name", name)
        names_dir.mkdir(parents=True, exist_ok=True)
        shown = redact_url(url)
        part = names_dir / f".download-follow-{secrets.token_hex(4)}"
        try:
            got = download(url, part, self._options, progress,
                           limit=limit or self._download_limit, unless=unless)
            if got is None:
                return None
            final = self.file_path(name, url, got.sha256)
            with FileLock(names_dir / f".{got.sha256}.lock"):
                cached = self.is_file_cached(name, url, got.sha256)
                if not cached:
                    _sweep_leftovers(names_dir, got.sha256)
                    self._install_download(part, final.parent, got.sha256, shown, got.size,
                                           _keep_as(final.name), marked_file=final.name)
        finally:
            part.unlink(missing_ok=True)
        return FetchResult(final, cache_hit=cached, bytes_downloaded=got.size,
                           sha256=got.sha256, source=got.source)

    def prune_files(self, name: str, keep: set[str]) -> None:
        """Delete the files kept for `name` under any sha256 but those in `keep`."""
        names_dir = self.root / FILES_DIR / _component("name", name)
        if names_dir.is_dir():
            for entry in names_dir.iterdir():
                if _SHA256.fullmatch(entry.name) and entry.name not in keep:
                    log.info("removing %s: a newer version of %s replaced it", entry, name)
                    _remove(entry)

    def _fetch_locked(
        self, final: Path, url: str, expected: str, progress: ProgressCallback | None
    ) -> int:
        def unpack_archive(part: Path, staging: Path, shown: str) -> str:
            return unpack(part, staging, shown, self._limits)

        return self._download_and_install(final, url, expected, progress, unpack_archive)

    def _download_and_install(
        self, target: Path, url: str, expected: str, progress: ProgressCallback | None,
        fill: Callable[[Path, Path, str], str], marked_file: str | None = None,
        limit: Limit | None = None,
    ) -> int:
        """Download `url` beside `target`, check its sha256 and install it (`_install_download`)
        as `target`. No temp file survives."""
        shown = redact_url(url)
        part = target.with_name(f".download-{target.name}-{secrets.token_hex(4)}")
        log.info("fetching %s for %s", shown, target)
        try:
            got = download(url, part, self._options, progress, limit=limit or self._download_limit)
            assert got is not None  # asked for without `unless`
            _check_sha256(got.sha256, expected, shown)
            self._install_download(part, target, expected, shown, got.size, fill, marked_file)
        finally:
            part.unlink(missing_ok=True)
        return got.size

    @staticmethod
    def _install_download(part: Path, target: Path, sha256: str, shown: str, size: int,
                          fill: Callable[[Path, Path, str], str],
                          marked_file: str | None = None) -> None:
        """Let `fill(download, staging, shown_url)` put the verified download into a staging
        directory (it returns what it installed, for the log), mark it and rename it into
        place as `target`."""
        staging = target.with_name(f".tmp-{target.name}-{secrets.token_hex(4)}")
        try:
            staging.mkdir()
            kind = fill(part, staging, shown)
            _write_marker(staging, sha256, shown, size, file=marked_file)
            _install(staging, target, staging.name[-8:])
        finally:
            _remove(staging)  # gone already if it was installed
        log.info("installed %s (%s, %d bytes) at %s", shown, kind, size, target)


def _keep_as(file_name: str) -> Callable[[Path, Path, str], str]:
    """A `fill` that keeps the download as it is, as `file_name`."""
    def keep_as_is(part: Path, staging: Path, _shown: str) -> str:
        os.rename(part, staging / file_name)
        return "file"
    return keep_as_is


def _component(arg: str, value: str) -> str:
    """`value` if it is usable as one directory name, else ValueError naming `arg`."""
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or any(c in value for c in "/\\\0")
    ):
        raise ValueError(
            f"{arg} must be a single path component (non-empty, no '/', not '..'): {value!r}"
        )
    if value.startswith("."):  # the store's own lock and temp files start with '.'
        raise ValueError(f"{arg} must not start with '.': {value!r}")
    return value


def _file_name(url: str) -> str:
    """The name `fetch_file` keeps the file at `url` under: the URL path's last component,
    with anything but letters, digits, '.', '_' and '-' made '_' and leading dots dropped (no
    hidden files, no '..', no clash with the marker); "data" when nothing is left."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    last = unquote(path).replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_FILE_CHARS.sub("_", last).lstrip(".")[:_MAX_FILE_NAME]
    return cleaned or DEFAULT_FILE_NAME


def _check_sha256(got: str, expected: str, shown: str) -> None:
    if got != expected:
        raise ArtifactError(
            "Sha256Mismatch", shown, f"sha256 mismatch for {shown}: expected {expected}, got {got}"
        )


def _normalize_sha256(sha256: str) -> str:
    normalized = sha256.lower() if isinstance(sha256, str) else ""
    if not _SHA256.fullmatch(normalized):
        raise ValueError(f"sha256 must be 64 hex digits: {sha256!r}")
    return normalized


def _recorded_sha256(version_dir: Path) -> str | None:
    try:
        return json.loads((version_dir / MARKER_NAME).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or not ours
        return None


def _recorded_file(sha_dir: Path) -> tuple[str, str] | None:
    """(sha256, file name) a fetch_file marker records, if there is one."""
    try:
        marker = json.loads((sha_dir / MARKER_NAME).read_text())
        return marker["sha256"], marker["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(
    version_dir: Path, sha256: str, url: str, size: int, file: str | None = None
) -> None:
    marker = {
        "sha256": sha256,
        "url": url,
        "size": size,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if file is not None:  # fetch_file: the one file the directory holds
        marker["file"] = file
    # Written last: the archive may have shipped a file of the same name.
    (version_dir / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


def _install(staging: Path, final: Path, token: str) -> None:
    """Rename `staging` to `final`; an existing `final` (another sha256) is swapped out first."""
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    old = final.with_name(f".old-{final.name}-{token}")
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(old, final)  # keep serving the previous version rather than none
        raise
    _remove(old)
    log.info("replaced %s (previous content had another sha256)", final)


def _sweep_leftovers(model_dir: Path, version: str) -> None:
    # Called under the version's lock, so whatever matches is from a fetch that crashed.
    pattern = re.compile(rf"\.(download|tmp|old)-{re.escape(version)}-[0-9a-f]{{8}}")
    for entry in model_dir.iterdir():
        if pattern.fullmatch(entry.name):
            log.warning("removing %s, left behind by an interrupted fetch", entry)
            _remove(entry)


def _remove(path: Path) -> None:
    """Delete a file or directory tree if present; failures are logged, not raised."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove %s", path, exc_info=True)
