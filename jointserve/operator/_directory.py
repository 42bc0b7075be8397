"""Directory source: the resources of embedded mode, read from a folder of YAML files.

A file that stops parsing keeps its last good resources serving (a typo must not take a model
down) and its error is reported until fixed; a file that is removed takes its resources with
it. Changes are noticed through watchfiles (inotify), with a periodic resync as a safety net.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from jointserve.api import (
    InferenceModel,
    Resource,
    ResourceError,
    ResourceKey,
    load_file,
    resource_key,
)

from ._published import merge_published

log = logging.getLogger(__name__)

YAML_SUFFIXES = {".yaml", ".yml"}


def is_resource_file(path: Path) -> bool:
    """YAML files, except hidden ones (editors' swap and backup files)."""
    return path.suffix in YAML_SUFFIXES and not path.name.startswith(".")


@dataclass
class Snapshot:
    """Resources to serve, and the files that could not be used (file -> error)."""

    resources: dict[ResourceKey, Resource] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class DirectorySource:
    """Reads and watches one directory of resource YAML files (not recursive)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._last_good: dict[Path, list[Resource]] = {}

    def scan(self) -> Snapshot:
        """Parse every YAML file now; see the module docstring for how errors are handled."""
        snapshot = Snapshot()
        files = sorted(p for p in self.directory.iterdir() if is_resource_file(p))
        for stale in set(self._last_good) - set(files):
            del self._last_good[stale]
        for path in files:
            try:
                self._last_good[path] = load_file(path)
            except ResourceError as exc:
                snapshot.errors[str(path)] = str(exc)
                kept = self._last_good.get(path)
                if kept:
                    log.error("%s (still serving its last good version)", exc)
                else:
                    log.error("%s", exc)
            for resource in self._last_good.get(path, []):
                key = resource_key(resource)
                if key in snapshot.resources:
                    snapshot.errors[str(path)] = (
                        f"{path}: {key[0]} {key[2]} is also defined in an earlier file; ignored"
                    )
                    continue
                if isinstance(resource, InferenceModel):
                    # Versions the operator published for it (a TrainingModel's), beside it.
                    resource = merge_published(resource, self.directory)
                snapshot.resources[key] = resource
        return snapshot

    def changes(self, stop: threading.Event, resync_s: float) -> Iterator[None]:
        """Yield once per batch of file changes, and at least every `resync_s` seconds."""
        for _ in watchfiles.watch(
            self.directory,
            stop_event=stop,
            yield_on_timeout=True,
            rust_timeout=int(resync_s * 1000),
            watch_filter=lambda _change, path: is_resource_file(Path(path)),
            debounce=200,
            raise_interrupt=False,
        ):
            yield None
