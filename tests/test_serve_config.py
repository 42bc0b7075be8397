"""The generated Serve config is valid for Ray's own schema and places replicas by layer."""

from __future__ import annotations

import pytest
from ray.serve.schema import ServeDeploySchema

from jointserve.operator import ModelApp, ServeSettings, build_serve_config

SETTINGS = ServeSettings(store_root="/var/lib/jointserve/store", port=8000)
EDGE_APP = ModelApp("im.default.digits-edge", "digits-edge", "edge", "v1",
                    "http://127.0.0.1:8808/digits-edge-v1.tar.gz", "a" * 64, replicas=2,
                    node_selector={"kubernetes.io/hostname": "camera-7"})
CLOUD_APP = ModelApp("im.default.digits-cloud", "digits-cloud", "cloud", "v1",
                     "http://127.0.0.1:8808/digits-cloud-v1.tar.gz", "b" * 64)


def _app(config: dict, name: str) -> dict:
    return next(a for a in config["applications"] if a["name"] == name)


def test_config_validates_with_rays_schema() -> None:
    config = build_serve_config([EDGE_APP, CLOUD_APP], SETTINGS)
    schema = ServeDeploySchema.model_validate(config)
    assert {a.name for a in schema.applications} == {"jointserve", EDGE_APP.app_name,
                                                     CLOUD_APP.app_name}


@pytest.mark.parametrize(
    ("app", "resource", "import_path"),
    [
        pytest.param(EDGE_APP, "jointserve_edge", "jointserve.edge_serving:build_app", id="edge"),
        pytest.param(CLOUD_APP, "jointserve_cloud", "jointserve.cloud_serving:build_app", id="cloud"),
    ],
)
def test_layer_becomes_a_ray_resource(app: ModelApp, resource: str, import_path: str) -> None:
    config = _app(build_serve_config([EDGE_APP, CLOUD_APP], SETTINGS), app.app_name)
    assert config["import_path"] == import_path
    assert config["route_prefix"] == f"/v2/models/{app.model_name}"
    options = config["deployments"][0]["ray_actor_options"]
    assert set(options["resources"]) == {resource}


def test_node_selector_becomes_label_selector_and_replicas_carry_over() -> None:
    deployment = _app(build_serve_config([EDGE_APP], SETTINGS), EDGE_APP.app_name)["deployments"][0]
    assert deployment["ray_actor_options"]["label_selector"] == {"kubernetes.io/hostname": "camera-7"}
    assert deployment["num_replicas"] == 2


def test_version_lives_in_user_config_not_in_args() -> None:
    # A version switch must reconfigure replicas in place; a change to args would rebuild them.
    v1 = _app(build_serve_config([EDGE_APP], SETTINGS), EDGE_APP.app_name)
    v2_model = ModelApp(**{**EDGE_APP.__dict__, "version": "v2", "sha256": "c" * 64})
    v2 = _app(build_serve_config([v2_model], SETTINGS), EDGE_APP.app_name)
    assert v1["args"] == v2["args"] and v1["import_path"] == v2["import_path"]
    assert v1["deployments"][0]["user_config"]["artifact"]["version"] == "v1"
    assert v2["deployments"][0]["user_config"]["artifact"]["version"] == "v2"


def test_server_app_lists_served_models() -> None:
    server = _app(build_serve_config([EDGE_APP, CLOUD_APP], SETTINGS), "jointserve")
    assert server["route_prefix"] == "/v2"
    assert server["deployments"][0]["user_config"]["models"] == {
        "digits-edge": EDGE_APP.app_name, "digits-cloud": CLOUD_APP.app_name}


def test_no_serve_proxy_and_the_front_door_on_its_node() -> None:
    config = build_serve_config([EDGE_APP], SETTINGS)
    assert config["proxy_location"] == "Disabled"
    server = _app(config, "jointserve")
    assert server["import_path"] == "jointserve.ingress:build_app"
    assert server["args"] == {"version": "", "host": "127.0.0.1", "port": 8000, "listen_host": ""}
    [deployment] = server["deployments"]
    assert deployment["ray_actor_options"]["resources"] == {"jointserve_front_door": 0.001}
    assert _app(config, EDGE_APP.app_name)["args"] == {"model_name": "digits-edge", "listen_host": ""}


def test_autoscaling_replaces_the_fixed_replica_count() -> None:
    from jointserve.api import Autoscaling

    scaled = ModelApp(**{**EDGE_APP.__dict__,
                         "autoscaling": Autoscaling(minReplicas=2, maxReplicas=6, targetInFlight=4)})
    config = build_serve_config([scaled, CLOUD_APP], SETTINGS)
    ServeDeploySchema.model_validate(config)  # Ray's own schema takes it
    [deployment] = _app(config, EDGE_APP.app_name)["deployments"]
    assert "num_replicas" not in deployment
    # Scaled on what the listeners have in flight: Serve's own count sees none of it.
    assert deployment["autoscaling_config"] == {
        "min_replicas": 2, "initial_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 4.0,
        "policy": {"policy_function": "jointserve.listener:in_flight_autoscaling_policy"}}
    [fixed] = _app(config, CLOUD_APP.app_name)["deployments"]
    assert fixed["num_replicas"] == 1 and "autoscaling_config" not in fixed
