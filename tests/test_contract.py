"""The operator -> replica contract: what the operator writes, the replica reads back unchanged.

No Ray: the user_config dicts are what Serve would carry (and KubeRay's serveConfigV2 holds),
so a JSON round trip stands in for the trip through the controller.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from jointserve.api import JointInferenceService, load_file, parse_resource
from jointserve.contract import (
    GATEWAY_DEPLOYMENT,
    MODEL_DEPLOYMENT,
    SERVER_APP,
    SERVER_DEPLOYMENT,
    ArtifactRef,
    BatchLimits,
    CloudTarget,
    GatewayConfig,
    JointServiceConfig,
    ModelReplicaConfig,
    ServerConfig,
    user_config,
)
from jointserve.operator import GatewayApp, ModelApp, ServeSettings, build_serve_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"
SETTINGS = ServeSettings(store_root="/var/lib/jointserve/store")
EDGE = ModelApp("im.default.digits-edge", "digits-edge", "edge", "v2", "http://h/e2.tar.gz", "a" * 64)
CLOUD = ModelApp("im.default.digits-cloud", "digits-cloud", "cloud", "v1", "http://h/c.tar.gz",
                 "b" * 64, batching=BatchLimits(max_batch_size=16, batch_wait_timeout_s=0.002))


def _service(**spec: object) -> JointInferenceService:
    (service,) = load_file(EXAMPLE / "digits.yaml")
    doc = {"apiVersion": service.apiVersion, "kind": service.kind,
           "metadata": {"name": "digits"},
           "spec": {**service.spec.model_dump(mode="json", exclude_none=True), **spec}}
    resource = parse_resource(doc, "digits.yaml")
    assert isinstance(resource, JointInferenceService)
    return resource


def _through_serve(config: dict) -> dict:
    """What a replica receives: Serve stores user_config as JSON."""
    return json.loads(json.dumps(config))


def _deployment(config: dict, app: str, deployment: str) -> dict:
    [found] = [d for a in config["applications"] if a["name"] == app
               for d in a["deployments"] if d["name"] == deployment]
    return found


SERVICES = [
    pytest.param({}, id="example"),
    # Sedna's list form of parameters is normalised once, by the writer; the reader gets a map.
    pytest.param({"hardExampleMining": {"name": "Margin",
                                        "parameters": [{"key": "threshold", "value": 0.3}]}},
                 id="sedna-parameter-list"),
    pytest.param({"saveHardExamples": {"directory": "/var/lib/hard", "maxCount": 10},
                  "cloud": {"deadlineMs": 250, "maxInFlight": 8,
                            "breaker": {"failureThreshold": 2, "cooldownMs": 100}}},
                 id="hard-examples-and-cloud-limits"),
    pytest.param({"preprocess": [{"normalize": {"tensor": "input", "scale": 0.0625}}],
                  "postprocess": [{"softmax": {"tensor": "probabilities"}}]}, id="steps"),
]


@pytest.mark.parametrize("spec", SERVICES)
@pytest.mark.parametrize("cloud", [
    pytest.param(CloudTarget(transport="listener", model_name=CLOUD.model_name,
                             batching=CLOUD.batching), id="listener"),
    pytest.param(CloudTarget(transport="http", infer_url="https://cloud:8000/v2/models/big/infer"),
                 id="http"),
    pytest.param(CloudTarget(transport="none", why="cloudModel 'x' is not deployed"), id="none"),
])
def test_gateway_reads_back_what_the_operator_wrote(spec: dict, cloud: CloudTarget) -> None:
    service = _service(**spec)
    gateway = GatewayApp("jis.default.digits", "digits", EDGE, cloud, service.spec)
    config = build_serve_config([EDGE, CLOUD], SETTINGS, [gateway])
    read = GatewayConfig.model_validate(
        _through_serve(_deployment(config, "jis.default.digits", GATEWAY_DEPLOYMENT)["user_config"]))
    assert read == GatewayConfig(
        edge=EDGE.artifact(SETTINGS.store_root), edge_route=True,
        services=(JointServiceConfig(service="digits", stats_key="jis.default.digits",
                                     cloud=cloud, spec=service.spec),))
    assert read.edge.version == "v2" and read.edge.store_root == SETTINGS.store_root


def test_model_replica_reads_back_version_and_batching() -> None:
    config = build_serve_config([EDGE, CLOUD], SETTINGS)
    for app in (EDGE, CLOUD):
        raw = _deployment(config, app.app_name, MODEL_DEPLOYMENT)["user_config"]
        read = ModelReplicaConfig.model_validate(_through_serve(raw))
        assert read.artifact == ArtifactRef(model_name=app.model_name, version=app.version,
                                            url=app.url, sha256=app.sha256,
                                            store_root=SETTINGS.store_root)
        assert read.batching == app.batching
    # The same limits on both sides of a handle call: the name is the one Ray Serve uses.
    cloud = _deployment(config, CLOUD.app_name, MODEL_DEPLOYMENT)["user_config"]
    assert cloud["batching"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.002}


def test_server_reads_back_the_served_models() -> None:
    gateway = GatewayApp("jis.default.digits", "digits", EDGE,
                         CloudTarget(transport="none"), _service().spec)
    config = build_serve_config([EDGE, CLOUD], SETTINGS, [gateway])
    raw = _deployment(config, SERVER_APP, SERVER_DEPLOYMENT)["user_config"]
    assert ServerConfig.model_validate(_through_serve(raw)).models == {
        "digits": "jis.default.digits", "digits-cloud": "im.default.digits-cloud",
        "digits-edge": "jis.default.digits"}  # the gateway hosts its edge model


@pytest.mark.parametrize(("model", "raw", "field"), [
    # A field one side spells and the other does not know is a version skew: refused, named.
    pytest.param(ModelReplicaConfig, {"artifact": user_config(EDGE.artifact("/s")),
                                      "batch_wait_s": 0.1}, "batch_wait_s", id="unknown-field"),
    pytest.param(ModelReplicaConfig, {"artifact": user_config(EDGE.artifact("/s")),
                                      "batching": {"max_batch_size": 0}}, "max_batch_size",
                 id="batch-size-below-1"),
    pytest.param(CloudTarget, {"transport": "carrier-pigeon"}, "transport", id="unknown-transport"),
    pytest.param(GatewayConfig, {"edge": user_config(EDGE.artifact("/s")), "services": []},
                 "services", id="gateway-without-service"),
])
def test_reader_refuses_what_the_writer_never_writes(model: type, raw: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        model.model_validate(raw)


def test_a_gateway_config_names_each_service_once() -> None:
    entry = JointServiceConfig(service="digits", stats_key="jis.default.digits",
                               cloud=CloudTarget(transport="none"), spec=_service().spec)
    with pytest.raises(ValidationError, match="each service once"):
        GatewayConfig(edge=EDGE.artifact("/s"), services=(entry, entry))
