"""Where embedded mode keeps resource status: one JSON file per resource in a state directory.

In Kubernetes mode the status subresource plays this part; here `jointserve get` and
`jointserve status` read these files, so they work from any shell while the operator runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from jointserve.api import ResourceKey


class StatusRecords(Protocol):
    """Where the reconciler keeps {"resource": ..., "status": ...} records: files here, the
    status subresource in Kubernetes mode (jointserve.operator._kube_status)."""

    def read(self, key: ResourceKey) -> dict[str, Any] | None: ...

    def write(self, key: ResourceKey, record: dict[str, Any]) -> None: ...

    def delete(self, key: ResourceKey) -> None: ...

    def keys(self) -> list[ResourceKey]: ...


class StatusStore:
    """Status documents and the operator's file errors, written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "status"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._errors_file = state_dir / "source-errors.json"

    def _path(self, key: ResourceKey) -> Path:
        kind, namespace, name = key
        return self.dir / f"{kind}.{namespace}.{name}.json"

    def read(self, key: ResourceKey) -> dict[str, Any] | None:
        """The last written record for `key`: {"resource": ..., "status": ...}."""
        try:
            return json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write(self, key: ResourceKey, record: dict[str, Any]) -> None:
        _write_json(self._path(key), record)

    def delete(self, key: ResourceKey) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self) -> list[ResourceKey]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            kind, namespace, name = path.stem.split(".", 2)
            out.append((kind, namespace, name))
        return out

    def all(self) -> list[dict[str, Any]]:
        return [r for r in (self.read(k) for k in self.keys()) if r is not None]

    def write_errors(self, errors: dict[str, str]) -> None:
        _write_json(self._errors_file, errors)

    def read_errors(self) -> dict[str, str]:
        try:
            return json.loads(self._errors_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}


def _write_json(path: Path, data: Any) -> None:
    # Readers (the CLI) must never see half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
