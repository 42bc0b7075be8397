"""The generated Serve config is valid for Ray's own schema and places replicas by layer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ray.serve.schema import ServeDeploySchema

from jointserve.api import JointInferenceServiceSpec
from jointserve.contract import BatchLimits, CloudTarget, GatewayConfig
from jointserve.operator import GatewayApp, ModelApp, ServeSettings, build_serve_config
from jointserve.operator._serve_config import Hosting, hosted_routes, hand_over

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


# -- an edge model hosted by the gateway that runs it ----------------------------------------

def _gateway(app_name: str, edge: ModelApp, **fields) -> GatewayApp:
    spec = JointInferenceServiceSpec.model_validate(
        {"edgeModel": {"name": edge.model_name}, "cloudModel": {"name": "digits-cloud"},
         "hardExampleMining": {"name": "CrossEntropyFilter"}})
    return GatewayApp(app_name, app_name.rsplit(".", 1)[1], edge, CloudTarget(transport="none"),
                      spec, **fields)


HOSTABLE = ModelApp("im.default.digits-edge", "digits-edge", "edge", "v1",
                    "http://127.0.0.1:8808/digits-edge-v1.tar.gz", "a" * 64)


def test_a_gateway_hosts_its_edge_model_placed_and_scaled_alike() -> None:
    gateway = _gateway("jis.default.digits", HOSTABLE)
    config = build_serve_config([HOSTABLE, CLOUD_APP], SETTINGS, [gateway])
    ServeDeploySchema.model_validate(config)
    apps = {a["name"]: a for a in config["applications"]}
    assert set(apps) == {"jointserve", CLOUD_APP.app_name, gateway.app_name}
    assert apps[gateway.app_name]["deployments"][0]["user_config"]["edge_route"] is True
    served = apps["jointserve"]["deployments"][0]["user_config"]["models"]
    assert served["digits-edge"] == gateway.app_name  # its readiness is the gateway's


@pytest.mark.parametrize("gateway_fields, model_fields", [
    pytest.param({"replicas": 2}, {}, id="replicas"),
    pytest.param({"node_selector": {"zone": "a"}}, {}, id="node-selector"),
    pytest.param({}, {"batching": BatchLimits(max_batch_size=8)}, id="batching"),
])
def test_an_edge_model_placed_or_scaled_otherwise_keeps_its_own_replicas(
        gateway_fields: dict, model_fields: dict) -> None:
    model = replace(HOSTABLE, **model_fields)
    gateway = _gateway("jis.default.digits", model, **gateway_fields)
    config = build_serve_config([model], SETTINGS, [gateway])
    apps = {a["name"]: a for a in config["applications"]}
    assert model.app_name in apps
    assert apps[gateway.app_name]["deployments"][0]["user_config"]["edge_route"] is False


def test_a_gateway_running_another_version_does_not_host() -> None:
    gateway = _gateway("jis.default.digits", replace(HOSTABLE, version="v0"))
    assert hosted_routes([HOSTABLE], [gateway]) == {}


MODELS = {"im.e"}


def test_hosting_is_handed_over_before_the_models_own_application_goes() -> None:
    wanted = {"im.e": "jis.g"}
    gateways = {"jis.g"}
    # the gateway not up yet: the model keeps its own application, no one else answers
    step = hand_over(wanted, Hosting(), up=set(), gateways=gateways, owners=MODELS)
    assert step == Hosting()
    # up: it answers the model's route too, beside the model's own replicas
    step = hand_over(wanted, step, up={"jis.g", "im.e"}, gateways=gateways, owners=MODELS)
    assert step == Hosting({"im.e": "jis.g"}, frozenset())
    # that config applied and the gateway up after it: the model's own application goes
    up_after = {"jis.g", "im.e"}
    step = hand_over(wanted, step, up=up_after, gateways=gateways, owners=MODELS)
    assert step == Hosting({"im.e": "jis.g"}, frozenset({"im.e"}))
    # a later change to the gateway (an edge version switch) keeps it hosting
    assert hand_over(wanted, step, up=set(), gateways=gateways, owners=MODELS) == step


def test_an_unhosted_model_gets_its_own_application_up_before_the_gateway_stops() -> None:
    hosted = Hosting({"im.e": "jis.g"}, frozenset({"im.e"}))
    # the model's scale now differs from the gateway's: its own application comes back
    step = hand_over({}, hosted, up={"jis.g"}, gateways={"jis.g"}, owners=MODELS)
    assert step == Hosting({"im.e": "jis.g"}, frozenset())
    # ... and the gateway stops answering for it once that application is up
    assert hand_over({}, step, up={"jis.g", "im.e"}, gateways={"jis.g"}, owners=MODELS) == Hosting()


def test_a_deleted_hosting_gateway_answers_until_the_models_own_application_is_up() -> None:
    hosted = Hosting({"im.e": "jis.g"}, frozenset({"im.e"}))
    # the service deleted: the caller still offers its gateway, the model's own app comes back
    step = hand_over({}, hosted, up={"jis.g"}, gateways={"jis.g"}, owners=MODELS)
    assert step == Hosting({"im.e": "jis.g"}, frozenset())
    assert hand_over({}, step, up={"im.e"}, gateways={"jis.g"}, owners=MODELS) == Hosting()
    # the model deleted too: nothing to answer for
    assert hand_over({}, hosted, up=set(), gateways={"jis.g"}, owners=set()) == Hosting()


# -- services sharing one gateway application --------------------------------------------------

def test_services_on_one_edge_version_placed_alike_share_one_gateway_application() -> None:
    first, second = _gateway("jis.default.digits", HOSTABLE), _gateway("jis.default.images", HOSTABLE)
    apart = _gateway("jis.default.two", HOSTABLE, replicas=2)
    config = build_serve_config([HOSTABLE, CLOUD_APP], SETTINGS, [second, apart, first])
    ServeDeploySchema.model_validate(config)
    apps = {a["name"]: a for a in config["applications"]}
    assert set(apps) == {"jointserve", CLOUD_APP.app_name, first.app_name, apart.app_name}
    host = GatewayConfig.model_validate(apps[first.app_name]["deployments"][0]["user_config"])
    assert [(s.service, s.stats_key) for s in host.services] == [
        ("digits", first.app_name), ("images", second.app_name)]  # counters stay per service
    assert host.edge_route
    served = apps["jointserve"]["deployments"][0]["user_config"]["models"]
    assert served == {"digits": first.app_name, "images": first.app_name,
                      "digits-edge": first.app_name, "two": apart.app_name,
                      "digits-cloud": CLOUD_APP.app_name}


def test_a_service_on_another_edge_version_keeps_its_own_gateway() -> None:
    first = _gateway("jis.default.digits", HOSTABLE)
    other = _gateway("jis.default.images", replace(HOSTABLE, version="v0"))
    assert hosted_routes([HOSTABLE], [first, other]) == {HOSTABLE.app_name: first.app_name}


def test_the_host_of_a_group_stays_when_a_service_that_sorts_first_joins() -> None:
    host, guest = _gateway("jis.default.b", HOSTABLE), _gateway("jis.default.c", HOSTABLE)
    hosting = hosted_routes([HOSTABLE], [host, guest])
    assert hosting == {guest.app_name: host.app_name, HOSTABLE.app_name: host.app_name}
    newcomer = _gateway("jis.default.a", HOSTABLE)
    assert hosted_routes([HOSTABLE], [newcomer, host, guest], hosting) == {
        newcomer.app_name: host.app_name, **hosting}
    # the host gone: the first of the group by name hosts
    assert hosted_routes([HOSTABLE], [newcomer, guest], hosting) == {
        guest.app_name: newcomer.app_name, HOSTABLE.app_name: newcomer.app_name}


def test_a_route_moving_to_another_host_goes_back_to_its_own_application_first() -> None:
    applied = Hosting({"jis.s": "jis.a"}, frozenset({"jis.s"}))
    wanted = {"jis.s": "jis.b"}
    owners = {"jis.s", "jis.b"}
    # the old host answers (as applied) while the service's own application comes up
    step = hand_over(wanted, applied, up={"jis.a", "jis.b"}, gateways={"jis.a", "jis.b"},
                     owners=owners)
    assert step == Hosting({"jis.s": "jis.a"}, frozenset())
    # its own application up: the new host takes the route, the old one lets it go
    step = hand_over(wanted, step, up={"jis.a", "jis.b", "jis.s"}, gateways={"jis.a", "jis.b"},
                     owners=owners)
    assert step == Hosting({"jis.s": "jis.b"}, frozenset())


def test_a_guest_leaving_its_group_is_answered_by_the_host_as_it_was_applied() -> None:
    host, guest = _gateway("jis.default.digits", HOSTABLE), _gateway("jis.default.images", HOSTABLE)
    moved = replace(guest, replicas=2)  # no longer alike: its own application comes back
    hosting = Hosting({guest.app_name: host.app_name}, frozenset())
    config = build_serve_config([HOSTABLE], SETTINGS, [host, moved], hosting,
                                applied={guest.app_name: guest})
    apps = {a["name"]: a for a in config["applications"]}
    assert apps[moved.app_name]["deployments"][0]["num_replicas"] == 2
    assert apps[host.app_name]["deployments"][0]["user_config"]["services"][1]["service"] == "images"
