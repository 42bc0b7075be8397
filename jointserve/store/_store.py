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
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

from ._errors import ArtifactError, redact_url
from ._fetch import DownloadOptions, ProgressCallback, download
from ._unpack import Limits, unpack

log = logging.getLogger(__name__)

MARKER_NAME = ".jointserve-artifact.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FetchResult:
    path: Path  # <root>/<model>/<version>/ (the unpacked archive contents)
    cache_hit: bool
    bytes_downloaded: int  # size of the archive fetched; 0 on a cache hit


class ArtifactStore:
    """Versioned, verified model directories under `root`; safe to share between processes."""

    def __init__(
        self,
        root: Path,
        *,
        max_unpacked_bytes: int = 4 * 2**30,
        max_members: int = 100_000,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        if max_unpacked_bytes <= 0 or max_members <= 0:
            raise ValueError("max_unpacked_bytes and max_members must be positive")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be positive, retries and backoff_s not negative")
        self.root = Path(root)
        self._limits = Limits(max_bytes=max_unpacked_bytes, max_members=max_members)
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

    def _fetch_locked(
        self, final: Path, url: str, expected: str, progress: ProgressCallback | None
    ) -> int:
        shown = redact_url(url)
        version, token = final.name, secrets.token_hex(4)
        part = final.with_name(f".download-{version}-{token}")
        staging = final.with_name(f".tmp-{version}-{token}")
        log.info("fetching %s for %s", shown, final)
        try:
            got = download(url, part, self._options, progress)
            if got.sha256 != expected:
                raise ArtifactError(
                    "Sha256Mismatch",
                    shown,
                    f"sha256 mismatch for {shown}: expected {expected}, got {got.sha256}",
                )
            staging.mkdir()
            kind = unpack(part, staging, shown, self._limits)
            _write_marker(staging, expected, shown, got.size)
            _install(staging, final, token)
        finally:
            part.unlink(missing_ok=True)
            _remove(staging)  # gone already if it was installed
        log.info("installed %s (%s, %d bytes) at %s", shown, kind, got.size, final)
        return got.size


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


def _write_marker(version_dir: Path, sha256: str, url: str, size: int) -> None:
    marker = {
        "sha256": sha256,
        "url": url,
        "size": size,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
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
