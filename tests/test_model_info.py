"""Model metadata (spec.metadata): what a model is, in its OIP metadata, over metadata.json.

No Ray: a ModelReplica (what both tiers' deployments are) is driven through `reconfigure`
with the user_config the operator writes, and its endpoint answers GET /v2/models/<name>.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from jointserve.api import ModelInfo, ResourceError, parse_resource
from jointserve.contract import ArtifactRef, ModelReplicaConfig, user_config
from jointserve.protocol import ModelReplica, asgi_app, model_info

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"
DIGITS = [str(d) for d in range(10)]  # the example archive's metadata.json labels


def _artifact(example: Path, store: Path) -> ArtifactRef:
    archive = example / "archives" / "digits-edge-v1.tar.gz"
    return ArtifactRef(model_name="digits-edge", version="v1", url=archive.as_uri(),
                       sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
                       store_root=str(store))


def _metadata(replica: ModelReplica) -> dict:
    """GET /v2/models/digits-edge of the replica's endpoint, mounted as Ray Serve mounts it."""

    answer = TestClient(asgi_app(replica.endpoint.handle)).get("/v2/models/digits-edge")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_spec_metadata_wins_over_the_archive_and_fills_in_the_rest() -> None:
    archive = {"labels": ["a", "b"], "task": "classification", "accuracy": 0.9}
    assert model_info(archive, {"description": "small", "labels": None}) == {
        "task": "classification", "labels": ["a", "b"], "description": "small"}
    assert model_info(archive, {"labels": ["cat", "dog"]})["labels"] == ["cat", "dog"]
    assert model_info({}, None) == {}


def test_replica_serves_the_resource_description_and_follows_its_changes(
        example: Path, tmp_path: Path) -> None:
    replica = ModelReplica("digits-edge")
    artifact = _artifact(example, tmp_path / "store")
    described = ModelReplicaConfig(artifact=artifact, info=ModelInfo(
        task="classification", description="8x8 handwritten digits, logistic regression"))
    asyncio.run(replica.reconfigure(user_config(described)))
    meta = _metadata(replica)
    assert meta["parameters"] == {"task": "classification", "labels": DIGITS,
                                  "description": "8x8 handwritten digits, logistic regression"}
    loaded = replica.endpoint.loaded

    relabelled = ModelReplicaConfig(artifact=artifact, info=ModelInfo(labels=list("ABCDEFGHIJ")))
    asyncio.run(replica.reconfigure(user_config(relabelled)))
    assert replica.endpoint.loaded is not None and replica.endpoint.loaded.model is loaded.model
    assert _metadata(replica)["parameters"] == {"labels": list("ABCDEFGHIJ")}  # no reload


@pytest.mark.parametrize(("metadata", "message"), [
    pytest.param({"task": "poetry"}, "spec.metadata.task: must be one of", id="unknown-task"),
    pytest.param({"labels": "cat,dog"}, "spec.metadata.labels", id="labels-not-a-list"),
    pytest.param({"owner": "me"}, "spec.metadata.owner: unknown field", id="unknown-field"),
])
def test_bad_metadata_names_the_field(metadata: dict, message: str) -> None:
    doc = yaml.safe_load((EXAMPLE / "digits-edge.yaml").read_text())
    doc["spec"]["metadata"] = metadata
    with pytest.raises(ResourceError) as err:
        parse_resource(doc, "digits-edge.yaml")
    assert message in str(err.value)
