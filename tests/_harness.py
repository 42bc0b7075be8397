"""An embedded-mode operator running in a thread against the session's Ray, for e2e tests.

Tests drive it the way a user would: write or remove YAML files in its directory, then poll
the status it writes and call the HTTP endpoint Serve exposes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from jointserve.operator import ServeBackend, ServeSettings, build_serve_config
from jointserve.operator.embedded import directory_operator
from jointserve.store import ArtifactStore
from tests._fileserver import FileServer

WAIT_S = 120.0
# Small, so the archive-bomb test needs only ~100 MB of zeros (the example models are kB).
MAX_MODEL_BYTES = 64 * 2**20
EDGE = "digits-edge"
CLOUD = "digits-cloud"
IM = "InferenceModel"
JIS = "JointInferenceService"


class OperatorHarness:
    """Resource directory + operator thread + HTTP client for one test (or module)."""

    def __init__(self, root: Path, backend: ServeBackend, archive_server: FileServer,
                 example: Path) -> None:
        self.resources = root / "resources"
        self.resources.mkdir(parents=True)
        self.state = root / "state"
        self.backend = backend
        self.archive_server = archive_server
        self.example = example
        port = backend.port
        self.base_url = f"http://127.0.0.1:{port}"
        self.settings = ServeSettings(store_root=str(self.state / "store"), port=port,
                                      listen_host="127.0.0.1")
        store = ArtifactStore(self.state / "store", max_unpacked_bytes=MAX_MODEL_BYTES)
        # The operator `jointserve serve` runs, over the session's Serve, polling faster.
        self.operator = directory_operator(self.resources, self.state, backend, self.settings,
                                           self.base_url, store=store, resync_s=0.5)
        self.statuses = self.operator.statuses
        self.reconciler = self.operator.reconciler
        self._stop = threading.Event()
        self._thread = self.operator.start(self._stop)
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0)

    # -- resources ---------------------------------------------------------------------

    def example_doc(self, name: str) -> dict[str, Any]:
        """The example's InferenceModel `name`, its archive URLs pointed at the test server."""
        doc = yaml.safe_load((self.example / f"{name}.yaml").read_text())
        for entry in doc["spec"]["manifest"]:
            entry["downloadURL"] = self.archive_server.url(entry["downloadURL"].rsplit("/", 1)[1])
        return doc

    def service_doc(self, **spec: Any) -> dict[str, Any]:
        """The example's JointInferenceService (`digits`), with `spec` keys replaced."""
        doc = yaml.safe_load((self.example / "digits.yaml").read_text())
        doc["spec"].update(spec)
        return doc

    def serve_service(self, name: str, **spec: Any) -> str:
        """Write the example's service as `name` (with `spec` keys replaced) and wait until
        it is Ready and answers; a deployment that failed fails the wait at once."""
        doc = self.service_doc(**spec)
        doc["metadata"]["name"] = name
        self.write(doc)

        def ready() -> bool:
            condition = self.condition(name, "Ready", JIS)
            assert condition.get("reason") != "DeployFailed", condition
            return (condition.get("status") == "True"
                    and self.http.get(f"/v2/models/{name}/ready").status_code == 200)

        self.wait_for(ready, f"service {name} ready")
        return name

    def remove(self, name: str) -> None:
        (self.resources / f"{name}.yaml").unlink(missing_ok=True)

    def write(self, doc: dict[str, Any], file_name: str | None = None) -> Path:
        path = self.resources / (file_name or f"{doc['metadata']['name']}.yaml")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.rename(path)  # one change event, never half a file
        return path

    # -- observation -------------------------------------------------------------------

    def status(self, name: str, kind: str = IM) -> dict[str, Any]:
        record = self.statuses.read((kind, "default", name)) or {}
        return record.get("status") or {}

    def condition(self, name: str, type_: str, kind: str = IM) -> dict[str, Any]:
        return next((c for c in self.status(name, kind).get("conditions", []) if c["type"] == type_), {})

    def wait_for(self, check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; "
                             f"statuses: {self.statuses.all()}; errors: {self.statuses.read_errors()}")

    def wait_serving(self, name: str, model_name: str, version: str) -> None:
        """Until status says Ready on `version` and the endpoint answers with it."""
        def serving() -> bool:
            if self.status(name).get("activeVersion") != version:
                return False
            if self.condition(name, "Ready").get("status") != "True":
                return False
            try:
                response = self.http.get(f"/v2/models/{model_name}/ready")
            except httpx.ConnectError:
                # The front door (HAProxy, Serve's server app) of a fresh Serve may start a
                # moment after the first model's replicas report RUNNING: not yet, ask again.
                return False
            return response.status_code == 200 and response.json()["version"] == version
        self.wait_for(serving, f"{name} serving {version}")

    def infer(self, model_name: str, body: bytes | dict) -> httpx.Response:
        if isinstance(body, dict):
            return self.http.post(f"/v2/models/{model_name}/infer", json=body)
        return self.http.post(f"/v2/models/{model_name}/infer", content=body,
                              headers={"content-type": "application/json"})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.http.close()
        # Leave Serve empty for the next test: the declarative apply deletes every app.
        self.backend.apply(build_serve_config([], self.settings))
