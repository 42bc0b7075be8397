"""jointserve as a system under test: `jointserve serve` in its own process, on free ports.

It serves the digits example's two InferenceModels plus the JointInferenceServices the
scenarios need, all from one resource directory the runner may edit while it runs (a
version switch is a file edit, as for a user):

    digits               MaxProb 0.6 over digits-edge + digits-cloud (the example's service)
    cloud-batched        CloudOnly over digits-cloud-batched (batching 16 rows / 2 ms)
    cloud-unbatched      CloudOnly over digits-cloud (no batching)
    <added later>        services whose cloud is reached over HTTP through a WAN emulator
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.systems import ServiceProcess, free_port

EXAMPLE_PORT_URL = "http://127.0.0.1:8808/"
START_TIMEOUT_S = 240.0


class JointServe:
    """`jointserve serve` over a private copy of the digits example's resources."""

    name = "jointserve"

    def __init__(self, example: Path, env: Mapping[str, str] | None = None) -> None:
        self.example = example
        self.workdir = Path(tempfile.mkdtemp(prefix="jointserve-bench-"))
        self.resources = self.workdir / "resources"
        self.port = free_port()
        self.file_port = free_port()
        self._process = ServiceProcess(
            "jointserve", ["serve", str(self.resources), "--port", str(self.port),
                           "--state-dir", str(self.workdir / "state"),
                           "--file-server", str(example / "archives"),
                           "--file-server-port", str(self.file_port)],
            self.workdir / "serve.log", env=dict(env or {}))

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._write_resources()
        self._process.start()
        self.wait_ready(["digits", "cloud-batched", "cloud-unbatched"])

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

    def log_tail(self) -> str:
        return self._process.log_tail()

    # -- resources (the runner edits them like a user would) ---------------------------------

    def write(self, doc: dict[str, Any]) -> None:
        path = self.resources / f"{doc['metadata']['name']}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.rename(path)  # one change event, never half a file

    def model_doc(self, name: str) -> dict[str, Any]:
        text = (self.example / f"{name}.yaml").read_text()
        return yaml.safe_load(text.replace(EXAMPLE_PORT_URL, f"http://127.0.0.1:{self.file_port}/"))

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

    def _write_resources(self) -> None:
        self.resources.mkdir(parents=True)
        self.write(self.model_doc("digits-edge"))
        cloud = self.model_doc("digits-cloud")
        self.write(cloud)
        batched = copy.deepcopy(cloud)
        batched["metadata"]["name"] = batched["spec"]["modelName"] = "digits-cloud-batched"
        batched["spec"]["batching"] = {"maxBatchSize": 16, "batchWaitTimeoutMs": 2}
        self.write(batched)
        self.write(yaml.safe_load((self.example / "digits.yaml").read_text()))
        self.write(self.service_doc("cloud-batched", "CloudOnly", cloud={"name": "digits-cloud-batched"}))
        self.write(self.service_doc("cloud-unbatched", "CloudOnly", cloud={"name": "digits-cloud"}))


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False
