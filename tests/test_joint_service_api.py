"""The JointInferenceService resource: what validates, and the `path: rule` lines for what not.

Also the pure pieces around it that need no Ray: the gateway application in the Serve config,
and the cloud tier's batch stacking.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from jointserve.api import JointInferenceService, ResourceError, load_file, parse_resource
from jointserve.contract import BatchLimits, CloudTarget
from jointserve.operator import GatewayApp, ModelApp, ServeSettings, build_serve_config
from jointserve.runtime import run_batch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits" / "digits.yaml"


def _doc(**spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    for key, value in spec.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


def _problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc, "jis.yaml")
    return caught.value.problems


def test_the_example_service_parses() -> None:
    [service] = load_file(EXAMPLE)
    assert isinstance(service, JointInferenceService)
    assert service.spec.cloudModel.effective_transport == "handle"
    assert service.spec.hardExampleMining.parameters == {"threshold": 0.6}
    assert service.spec.cloud.deadlineMs == 500


def test_spec_round_trips_through_json_unchanged() -> None:
    # The operator hands the gateway its spec as JSON; it must validate again unchanged.
    from jointserve.api import JointInferenceServiceSpec

    spec = parse_resource(_doc(), "jis.yaml").spec
    again = JointInferenceServiceSpec.model_validate_json(spec.model_dump_json(exclude_none=True))
    assert again == spec


def test_sedna_style_parameter_list_is_accepted() -> None:
    doc = _doc(hardExampleMining={"name": "IBTFilter", "parameters": [
        {"key": "threshold_img", "value": "0.9"}, {"key": "threshold_box", "value": "0.8"}]})
    service = parse_resource(doc, "jis.yaml")
    assert service.spec.hardExampleMining.parameters == {"threshold_img": "0.9", "threshold_box": "0.8"}


@pytest.mark.parametrize("spec, expected", [
    ({"hardExampleMining": {"name": "Magic"}}, "spec.hardExampleMining.name: must be one of"),
    ({"hardExampleMining": {"name": "MaxProb", "parameters": {"threshold": 2}}},
     "spec.hardExampleMining.parameters.threshold: input should be less than or equal to 1"),
    ({"hardExampleMining": {"name": "MaxProb", "parameters": {"treshold": 0.5}}},
     "spec.hardExampleMining.parameters.treshold: unknown parameter for MaxProb"),
    ({"cloudModel": {}}, "spec.cloudModel.name: set exactly one of"),
    ({"cloudModel": {"name": "a", "url": "http://cloud:8000"}}, "spec.cloudModel.name: set exactly one of"),
    ({"cloudModel": {"url": "http://cloud:8000"}}, "spec.cloudModel.modelName: cloudModel.url needs"),
    ({"cloudModel": {"url": "http://cloud:8000", "modelName": "m", "transport": "handle"}},
     "spec.cloudModel.transport: cloudModel.url is reached over http"),
    ({"cloudModel": {"url": "ftp://cloud", "modelName": "m"}}, "spec.cloudModel.url"),
    ({"cloud": {"deadlineMs": 0}}, "spec.cloud.deadlineMs"),
    ({"cloud": {"breaker": {"failureThreshold": 0}}}, "spec.cloud.breaker.failureThreshold"),
    ({"edgeModel": None}, "spec.edgeModel"),
    ({"replicas": -1}, "spec.replicas"),
    ({"postprocess": [{"softmax": {"tensor": "x"}, "topK": {"tensor": "x"}}]},
     "exactly one of softmax, topK, nms must be set"),
])
def test_bad_service_names_the_field(spec: dict, expected: str) -> None:
    problems = _problems(_doc(**spec))
    assert any(expected in p for p in problems), problems


def test_batching_is_for_cloud_models_only() -> None:
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
           "metadata": {"name": "m"},
           "spec": {"modelName": "m", "deployToLayer": "edge", "batching": {"maxBatchSize": 8},
                    "manifest": [{"version": "v1", "downloadURL": "http://h/m.tar.gz",
                                  "sha256sum": "0" * 64}]}}
    assert any("batching: is for cloud-layer models" in p for p in _problems(doc))
    cloud = copy.deepcopy(doc)
    cloud["spec"]["deployToLayer"] = "cloud"
    assert parse_resource(cloud, "m.yaml").spec.batching.maxBatchSize == 8


# -- the gateway application ------------------------------------------------------------------

def test_gateway_app_routes_the_service_and_runs_on_edge_nodes() -> None:
    from ray.serve.schema import ServeDeploySchema

    edge = ModelApp("im.default.digits-edge", "digits-edge", "edge", "v1", "http://h/e.tar.gz", "a" * 64)
    cloud = ModelApp("im.default.digits-cloud", "digits-cloud", "cloud", "v1", "http://h/c.tar.gz",
                     "b" * 64, batching=BatchLimits(max_batch_size=16, batch_wait_timeout_s=0.002))
    service = parse_resource(_doc(nodeSelector={"zone": "a"}), "jis.yaml")
    gateway = GatewayApp("jis.default.digits", "digits", edge,
                         CloudTarget(transport="listener", model_name=cloud.model_name), service.spec,
                         node_selector={"zone": "a"})
    config = build_serve_config([edge, cloud], ServeSettings(store_root="/s"), [gateway])
    ServeDeploySchema.model_validate(config)
    apps = {a["name"]: a for a in config["applications"]}
    app = apps["jis.default.digits"]
    assert app["route_prefix"] == "/v2/models/digits"
    # version changes reconfigure, not restart
    assert app["args"] == {"service": "digits", "listen_host": ""}
    [deployment] = app["deployments"]
    assert deployment["user_config"]["edge"]["version"] == "v1"
    assert deployment["ray_actor_options"]["resources"] == {"jointserve_edge": 0.001}
    assert deployment["ray_actor_options"]["label_selector"] == {"zone": "a"}
    assert apps["jointserve"]["deployments"][0]["user_config"]["models"]["digits"] == "jis.default.digits"
    cloud_config = apps["im.default.digits-cloud"]["deployments"][0]["user_config"]
    assert cloud_config["batching"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.002}


# -- cloud batching ---------------------------------------------------------------------------

class _CountingModel:
    """A real computation (a fixed linear map) that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.weights = np.arange(12, dtype=np.float32).reshape(4, 3)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        x = feeds["x"]
        return {"y": x @ self.weights, "label": (x @ self.weights).argmax(axis=1)}


def test_run_batch_stacks_compatible_requests_and_splits_the_answers() -> None:
    model = _CountingModel()
    rng = np.random.default_rng(0)
    items = [{"x": rng.random((n, 4), dtype=np.float32)} for n in (1, 3, 2)]
    items.append({"x": rng.random((2, 5), dtype=np.float32)[:, :4].astype(np.float64)})  # other dtype
    results = run_batch(model, items)  # type: ignore[arg-type]
    assert model.calls == 2  # the three float32 requests share one call
    for feeds, out in zip(items, results):
        np.testing.assert_allclose(out["y"], feeds["x"] @ model.weights, rtol=1e-6)
        assert out["label"].shape == (len(feeds["x"]),)
