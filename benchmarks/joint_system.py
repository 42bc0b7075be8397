"""jointserve as a system under test: `jointserve serve` in its own process, on free ports.

It starts with the digits example's stack alone (what the load sweeps measure); scenarios add
the compute-heavy cloud model of benchmarks.heavy_model (twice: batched and not) and the
JointInferenceServices they need to the one resource directory, as a user would edit it (a
version switch is a file edit):

    digits               MaxProb 0.6 over digits-edge + digits-cloud (the example's service)
    --- add_batching_services() ---
    cloud-batched        CloudOnly over digits-cloud-batched (batching 16 rows / 2 ms)
    cloud-unbatched      CloudOnly over digits-cloud (no batching)
    heavy-batched        CloudOnly over cloud-heavy-batched (batching 16 rows / 2 ms)
    heavy-unbatched      CloudOnly over cloud-heavy-unbatched (no batching)
    <added later>        services whose cloud is reached over HTTP through a WAN emulator

`--file-server` serves one directory, so the example's archives and the heavy one are copied
into the system's own workdir and served from there.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks import heavy_model
from benchmarks.procs import settled_tree
from benchmarks.systems import ServiceProcess, free_port

EXAMPLE_PORT_URL = "http://127.0.0.1:8808/"
# For all of start()'s services together: with the heavy pair, a dozen deployments come up
# one after another on 2 cores.
START_TIMEOUT_S = 300.0
# Longer than the gaps between the steps of a hand-over (a pass, Serve's status, a pass).
SETTLE_QUIET_S = 15.0
BATCHING = {"maxBatchSize": 16, "batchWaitTimeoutMs": 2}  # spec.batching of the *-batched models
BATCHING_SERVICES = ["cloud-batched", "cloud-unbatched", "heavy-batched", "heavy-unbatched"]


class JointServe:
    """`jointserve serve` over a private copy of the digits example's resources."""

    name = "jointserve"

    def __init__(self, example: Path, env: Mapping[str, str] | None = None,
                 heavy_cache: Path | None = None, example_only: bool = False) -> None:
        self.example = example
        # The example as shipped, the stack `make serve` runs (memory figures): no v1b.
        self.example_only = example_only
        # Kept between runs (the workdir is not), so the heavy archive is built once.
        self.heavy_cache = heavy_cache or heavy_model.default_cache_dir()
        self.heavy: heavy_model.HeavyArchive | None = None  # set by start()
        self.workdir = Path(tempfile.mkdtemp(prefix="jointserve-bench-"))
        self.resources = self.workdir / "resources"
        self.archives = self.workdir / "archives"
        self.port = free_port()
        self.file_port = free_port()
        self._process = ServiceProcess(
            "jointserve", ["serve", str(self.resources), "--port", str(self.port),
                           "--state-dir", str(self.workdir / "state"),
                           "--file-server", str(self.archives),
                           "--file-server-port", str(self.file_port)],
            self.workdir / "serve.log", env=dict(env or {}))

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.heavy = self._stage_archives()
        self._write_resources()
        self._process.start()
        self.wait_ready(["digits"])
        self.wait_settled()

    def stop(self) -> None:
        self._process.stop(grace_s=60)  # SIGTERM: the CLI shuts Serve and Ray down itself
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> JointServe:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def infer_url(self, model: str = "digits") -> str:
        return f"{self.base_url}/v2/models/{model}/infer"

    def wait_ready(self, models: list[str], timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            for model in models:
                while not _answers(client, f"/v2/models/{model}/ready"):
                    if not self._process.running():
                        raise RuntimeError(f"jointserve serve exited:\n{self.log_tail()}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{model} not ready after {timeout:.0f}s:\n{self.log_tail()}")
                    time.sleep(0.5)

    def wait_settled(self) -> None:
        """Until no process of the stack started or ended for SETTLE_QUIET_S: a route that
        a gateway takes over (a service or an edge model it hosts) loses its own replica a
        few seconds after it is ready, and a measurement must not share the cores with that."""
        assert self.pid is not None, "start() first"
        settled_tree(self.pid, quiet_s=SETTLE_QUIET_S)

    def log_tail(self) -> str:
        return self._process.log_tail()

    # -- resources (the runner edits them like a user would) ---------------------------------

    def write(self, doc: dict[str, Any]) -> None:
        path = self.resources / f"{doc['metadata']['name']}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.rename(path)  # one change event, never half a file

    def model_doc(self, name: str) -> dict[str, Any]:
        """The example's InferenceModel `name` on this system's file server. The cloud model
        also lists its v1 archive as version v1b: a version switch of the cloud model (a
        real load and swap) without a second archive."""
        text = (self.example / f"{name}.yaml").read_text()
        doc = yaml.safe_load(text.replace(EXAMPLE_PORT_URL, f"http://127.0.0.1:{self.file_port}/"))
        if name == "digits-cloud" and not self.example_only:  # the stack `make serve` runs: as is
            manifest = doc["spec"]["manifest"]
            manifest.append({**manifest[0], "version": "v1b"})
        return doc

    def remove(self, name: str) -> None:
        (self.resources / f"{name}.yaml").unlink(missing_ok=True)

    def service_doc(self, name: str, policy: str, parameters: dict[str, Any] | None = None,
                    cloud: dict[str, Any] | None = None, **cloud_settings: Any) -> dict[str, Any]:
        doc = yaml.safe_load((self.example / "digits.yaml").read_text())
        doc["metadata"]["name"] = name
        doc["spec"]["hardExampleMining"] = {"name": policy, "parameters": parameters or {},
                                            "output": "probabilities"}
        if cloud is not None:
            doc["spec"]["cloudModel"] = cloud
        doc["spec"]["cloud"].update(cloud_settings)
        return doc

    def archive_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.file_port}/{name}"

    def _stage_archives(self) -> heavy_model.HeavyArchive:
        """The example's archives and the heavy one (built if not cached), in the served dir."""
        self.archives.mkdir(parents=True)
        for archive in (self.example / "archives").glob("*.tar.gz"):
            shutil.copyfile(archive, self.archives / archive.name)
        heavy = heavy_model.build(self.heavy_cache)
        shutil.copyfile(heavy.path, self.archives / heavy.path.name)
        return heavy

    def heavy_model_doc(self, name: str, heavy: heavy_model.HeavyArchive,
                        batching: dict[str, Any] | None) -> dict[str, Any]:
        """An InferenceModel over the heavy archive: the digits cloud model's resource (same
        layer, replicas, framework) with the model swapped, so only the model differs."""
        doc = self.model_doc("digits-cloud")
        spec = doc["spec"]
        doc["metadata"]["name"] = spec["modelName"] = name
        spec["manifest"] = [{"version": heavy_model.VERSION,
                             "downloadURL": self.archive_url(heavy.path.name),
                             "sha256sum": heavy.sha256}]
        spec["targetVersion"] = heavy_model.VERSION
        if batching is not None:
            spec["batching"] = dict(batching)
        return doc

    @property
    def pid(self) -> int | None:
        """The `jointserve serve` process (Ray's local processes run below it)."""
        return self._process.pid

    def _write_resources(self) -> None:
        """The example's stack only: what the load sweeps measure, with nothing else idling
        beside it (every idle replica takes ~1.5% of a core). Scenarios add their own."""
        self.resources.mkdir(parents=True)
        self.write(self.model_doc("digits-edge"))
        self.write(self.model_doc("digits-cloud"))
        self.write(yaml.safe_load((self.example / "digits.yaml").read_text()))

    def add_batching_services(self) -> None:
        """The cloud models with and without batching (digits and heavy) and a CloudOnly
        service over each; returns once all are ready and handed over to their gateway."""
        assert self.heavy is not None, "start() stages the heavy archive"
        batched = self.model_doc("digits-cloud")
        batched["metadata"]["name"] = batched["spec"]["modelName"] = "digits-cloud-batched"
        batched["spec"]["batching"] = dict(BATCHING)
        self.write(batched)
        self.write(self.heavy_model_doc("cloud-heavy-batched", self.heavy, BATCHING))
        self.write(self.heavy_model_doc("cloud-heavy-unbatched", self.heavy, None))
        self.write(self.service_doc("cloud-batched", "CloudOnly", cloud={"name": "digits-cloud-batched"}))
        self.write(self.service_doc("cloud-unbatched", "CloudOnly", cloud={"name": "digits-cloud"}))
        self.write(self.service_doc("heavy-batched", "CloudOnly", cloud={"name": "cloud-heavy-batched"}))
        self.write(self.service_doc("heavy-unbatched", "CloudOnly", cloud={"name": "cloud-heavy-unbatched"}))
        self.wait_ready(BATCHING_SERVICES)
        self.wait_settled()


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False
