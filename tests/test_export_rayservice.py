"""`jointserve export rayservice`: a KubeRay RayService whose serveConfigV2 is the operator's config.

Real archives over real loopback HTTP, verified by the real artifact store; the pod templates
are checked by a real kube-apiserver (server-side dry run).
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from jointserve.api import load_file
from jointserve.cli import main
from jointserve.contract import CloudTarget
from jointserve.operator import GatewayApp, ModelApp, ServeSettings, build_serve_config
from jointserve.operator._ingress import SERVE_ENV
from jointserve.operator.rayservice import DEFAULT_STORE_ROOT, LAYER_CAPACITY
from tests._fileserver import FileServer

EDGE, CLOUD, SERVICE = "digits-edge", "digits-cloud", "digits"
# No application of digits-edge's own: the digits gateway hosts it (hosted_routes).
APPS = {"jointserve", "im.default.digits-cloud", "jis.default.digits"}


def _model_doc(example: Path, server: FileServer, name: str) -> dict[str, Any]:
    """The example's InferenceModel, archive URLs pointed at the test server (as the harness)."""
    doc = yaml.safe_load((example / f"{name}.yaml").read_text())
    for entry in doc["spec"]["manifest"]:
        entry["downloadURL"] = server.url(entry["downloadURL"].rsplit("/", 1)[1])
    return doc


@pytest.fixture
def resources(tmp_path: Path, example: Path, archive_server: FileServer) -> Path:
    directory = tmp_path / "resources"
    directory.mkdir()
    for name in (EDGE, CLOUD):
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(_model_doc(example, archive_server, name)))
    shutil.copy(example / f"{SERVICE}.yaml", directory / f"{SERVICE}.yaml")
    return directory


def _export(directory: Path, state: Path, capsys: pytest.CaptureFixture,
            *extra: str) -> tuple[int, str, str]:
    code = main(["export", "rayservice", str(directory), "--state-dir", str(state), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _model_app(directory: Path, name: str) -> ModelApp:
    """What the operator serves for an example model: its target (v1) version, verified."""
    (model,) = load_file(directory / f"{name}.yaml")
    target = model.spec.target_file()
    assert target is not None
    return ModelApp(f"im.default.{name}", model.spec.modelName, model.spec.deployToLayer,
                    target.version, target.downloadURL, target.sha256sum)


def _expected_config(directory: Path) -> dict[str, Any]:
    settings = ServeSettings(store_root=DEFAULT_STORE_ROOT, host="0.0.0.0", port=8000,
                             version=package_version("jointserve"))
    edge, cloud = _model_app(directory, EDGE), _model_app(directory, CLOUD)
    (service,) = load_file(directory / f"{SERVICE}.yaml")
    # The cloud model is deployed beside the gateway: reached at its replicas' listeners.
    gateway = GatewayApp(f"jis.default.{SERVICE}", SERVICE, edge,
                         CloudTarget(transport="listener", model_name=cloud.model_name), service.spec)
    return build_serve_config([edge, cloud], settings, [gateway])


def _parse_resources_param(value: str) -> dict[str, int]:
    """KubeRay's `resources` rayStartParam: JSON with escaped quotes, inside quotes."""
    assert value.startswith('"') and value.endswith('"'), value
    return json.loads(value[1:-1].replace('\\"', '"'))


def test_export_of_the_example_is_the_operators_config(
        resources: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _export(resources, tmp_path / "state", capsys)
    assert code == 0, err
    assert out.startswith("# ") and "jointserve installed" in out  # the note for the user
    manifest = yaml.safe_load(out)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert manifest["metadata"] == {"name": "jointserve", "namespace": "default"}

    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert config == _expected_config(resources)
    # The test server is on 127.0.0.1: fine here, unreachable from a Ray pod; said, not fatal.
    assert "InferenceModel default/digits-edge: http://127.0.0.1:" in err
    assert "is on loopback" in err
    schema = ServeDeploySchema.model_validate(config)
    assert {app.name for app in schema.applications} == APPS


def test_cluster_carries_the_layer_resources_and_serve_switches(
        resources: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _export(resources, tmp_path / "state", capsys, "--name", "digits",
                             "--namespace", "ml", "--ray-image", "example/ray-jointserve:1")
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert manifest["metadata"] == {"name": "digits", "namespace": "ml"}
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == package_version("ray")
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    # Only the front door on the head: model replicas never land next to the GCS and controller.
    assert _parse_resources_param(head["rayStartParams"]["resources"]) == {
        "jointserve_front_door": LAYER_CAPACITY}
    workers = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    assert set(workers) == {"edge", "cloud"}
    for layer, group in workers.items():
        assert _parse_resources_param(group["rayStartParams"]["resources"]) == {
            f"jointserve_{layer}": LAYER_CAPACITY}

    switches = dict(SERVE_ENV)
    for group in [head, *workers.values()]:
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == "example/ray-jointserve:1"
        assert {e["name"]: e["value"] for e in container["env"]} == switches
        assert {"containerPort": 8000, "name": "serve"} in container["ports"]
        assert container["volumeMounts"][0]["mountPath"] == DEFAULT_STORE_ROOT


def test_head_carries_a_layer_only_when_asked(resources: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    code, out, err = _export(resources, tmp_path / "state", capsys, "--head-layer", "edge")
    assert code == 0, err
    head = yaml.safe_load(out)["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert _parse_resources_param(head["rayStartParams"]["resources"]) == {
        "jointserve_front_door": LAYER_CAPACITY, "jointserve_edge": LAYER_CAPACITY}


def test_default_image_is_the_installed_ray(resources: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    code, out, err = _export(resources, tmp_path / "state", capsys)
    assert code == 0, err
    head = yaml.safe_load(out)["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"] == \
        f"rayproject/ray:{package_version('ray')}-py311"


def test_resource_failing_verification_is_left_out_and_named(
        resources: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = yaml.safe_load((resources / f"{EDGE}.yaml").read_text())
    doc["spec"]["manifest"][0]["sha256sum"] = "0" * 64  # v1, the target
    (resources / f"{EDGE}.yaml").write_text(yaml.safe_dump(doc))

    code, out, err = _export(resources, tmp_path / "state", capsys)
    assert code == 1
    assert "InferenceModel default/digits-edge: Sha256Mismatch" in err
    # The service's gateway runs the edge model: no verified edge version, no gateway.
    assert "JointInferenceService default/digits: EdgeModelNotReady" in err
    # `export ... | kubectl apply -f -` must not apply half the resources.
    assert out == "" and "nothing printed" in err

    code, out, err = _export(resources, tmp_path / "state", capsys, "--partial")
    assert code == 1
    config = yaml.safe_load(yaml.safe_load(out)["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    assert [app["name"] for app in config["applications"]] == ["jointserve", "im.default.digits-cloud"]


def test_unreadable_file_is_reported(resources: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    (resources / "broken.yaml").write_text("kind: InferenceModel\nspec: [\n")
    code, _, err = _export(resources, tmp_path / "state", capsys)
    assert code == 1
    assert "broken.yaml" in err


def test_pod_templates_are_valid_kubernetes(resources: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture, kube_api: Any) -> None:
    """The RayService CRD is not installed in the test API server (kubectl cannot map the kind
    without it), so each pod template goes to the server inside a Deployment, dry run."""
    code, out, err = _export(resources, tmp_path / "state", capsys)
    assert code == 0, err
    cluster = yaml.safe_load(out)["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]} | {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    for name, group in groups.items():
        labels = {"app": f"ray-{name}"}
        template = {"metadata": {"labels": labels}, **group["template"]}
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": f"ray-{name}", "namespace": "default"},
                      "spec": {"selector": {"matchLabels": labels}, "template": template}}
        kube_api.kubectl_ok("apply", "--dry-run=server", "-f", "-", input=json.dumps(deployment))
