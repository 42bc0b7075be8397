"""Image-based InferenceModels as a Deployment + Service, against a real kube-apiserver.

InferenceModels are created with kubectl as a user would, read back as the operator reads them,
and handed to `ImageWorkloads`; what it wrote is read back with kubectl. The API server
validates, defaults and merges (server-side apply) for real. Without a controller-manager or
kubelet, pods never run: where a test needs a Deployment's status, it writes the status
subresource itself, as the Deployment controller would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from jointserve.operator._kube_workloads import (
    DEFAULT_IMAGE_PORT,
    ImageWorkloads,
    WorkloadError,
    WorkloadStatus,
)
from tests._kube import REPO, KubeAPIServer

NS = "workloads-test"
IMAGE = "registry.example.com/digits:1"
SPEC = {"modelName": "digits", "deployToLayer": "edge", "image": IMAGE,
        "nodeSelector": {"kubernetes.io/hostname": "edge-1"}, "replicas": 2}
LABELS = {"app.kubernetes.io/managed-by": "jointserve",
          "app.kubernetes.io/component": "model-server", "jointserve.io/layer": "edge"}
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


# -- fixtures and helpers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def kube(kube_api: KubeAPIServer) -> KubeAPIServer:
    """The session's server, with a namespace of this module's own."""
    create_namespace(kube_api, NS)
    return kube_api


@pytest.fixture(scope="module")
def api_client(kube: KubeAPIServer) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="module")
def workloads(api_client: kubernetes.client.ApiClient) -> ImageWorkloads:
    return ImageWorkloads(api_client)


@pytest.fixture(scope="module")
def digits(kube: KubeAPIServer, workloads: ImageWorkloads) -> tuple[dict, WorkloadStatus]:
    """One image-based model, ensured once; the read-only tests below look at its objects."""
    model = apply_model(kube, "digits")
    return model, workloads.ensure(model)


def create_namespace(kube: KubeAPIServer, name: str, labels: dict[str, str] | None = None) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels or {}}}
    kube.kubectl_ok("apply", "-f", "-", input=json.dumps(doc))


def apply_model(kube: KubeAPIServer, name: str, namespace: str = NS, **spec: Any) -> dict:
    """kubectl apply an image-based InferenceModel (SPEC with `spec` changes), read it back."""
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
           "metadata": {"name": name, "namespace": namespace}, "spec": {**SPEC, **spec}}
    kube.kubectl_ok("apply", "-f", "-", input=json.dumps(doc))
    return get(kube, "inferencemodel", name, namespace)


def get(kube: KubeAPIServer, kind: str, name: str, namespace: str = NS) -> dict:
    return json.loads(kube.kubectl_ok("get", kind, name, "-n", namespace, "-o", "json"))


def exists(kube: KubeAPIServer, kind: str, name: str, namespace: str = NS) -> bool:
    done = kube.kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name")
    assert done.returncode == 0, done.stderr
    return bool(done.stdout.strip())


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def report_rollout(kube: KubeAPIServer, name: str, *, ready: int, updated: int,
                   total: int | None = None) -> None:
    """Write the Deployment's status as its controller would after seeing the current spec;
    `total` above `updated` means old pods are still there."""
    generation = get(kube, "deployment", name)["metadata"]["generation"]
    status = {"observedGeneration": generation, "replicas": total or updated,
              "updatedReplicas": updated,
              "readyReplicas": ready, "availableReplicas": ready}
    kube.kubectl_ok("patch", "deployment", name, "-n", NS, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))


# -- what ensure() writes ----------------------------------------------------------------------

def test_deployment_runs_the_image_on_the_selected_nodes(kube: KubeAPIServer, digits) -> None:
    deployment = get(kube, "deployment", "digits")
    labels = {**LABELS, "app.kubernetes.io/name": "digits", "jointserve.io/inference-model": "digits"}
    assert deployment["metadata"]["labels"] == labels
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": {"jointserve.io/inference-model": "digits"}}
    assert spec["template"]["metadata"]["labels"] == labels
    assert spec["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "edge-1"}
    model = container(deployment)
    assert model["name"] == "model" and model["image"] == IMAGE
    assert model["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert model["env"] == [{"name": "MODEL_NAME", "value": "digits"}]


def test_probes_are_the_oip_health_endpoints(kube: KubeAPIServer, digits) -> None:
    model = container(get(kube, "deployment", "digits"))
    assert model["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http",
                                                  "scheme": "HTTP"}
    assert model["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http",
                                                 "scheme": "HTTP"}


def test_pod_is_admitted_under_restricted_pod_security(kube: KubeAPIServer, digits) -> None:
    # The namespace enforces the restricted standard on pods; the admission plugin decides.
    create_namespace(kube, "workloads-restricted", RESTRICTED)
    # Pod admission needs the namespace's default ServiceAccount, which only the
    # controller-manager would create.
    kube.kubectl_ok("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "workloads-restricted"}}))
    pod_spec = get(kube, "deployment", "digits")["spec"]["template"]["spec"]
    admitted = _dry_run_pod(kube, pod_spec)
    assert admitted.returncode == 0, admitted.stderr

    # The control: without the security contexts the same pod is refused, so the check bites.
    bare = {**pod_spec, "securityContext": {},
            "containers": [{**c, "securityContext": {}} for c in pod_spec["containers"]]}
    refused = _dry_run_pod(kube, bare)
    assert refused.returncode != 0 and "restricted" in refused.stderr


def _dry_run_pod(kube: KubeAPIServer, pod_spec: dict):
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "digits", "namespace": "workloads-restricted"}, "spec": pod_spec}
    return kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod))


def test_service_selects_the_pods_on_the_http_port(kube: KubeAPIServer, digits) -> None:
    service = get(kube, "service", "digits")
    assert service["metadata"]["labels"]["jointserve.io/inference-model"] == "digits"
    spec = service["spec"]
    assert spec["type"] == "ClusterIP" and spec["clusterIP"]
    assert spec["selector"] == {"jointserve.io/inference-model": "digits"}
    assert spec["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                              "protocol": "TCP"}]


@pytest.mark.parametrize("kind", ["deployment", "service"])
def test_objects_are_owned_by_the_inference_model(kube: KubeAPIServer, digits, kind: str) -> None:
    model, _ = digits
    assert get(kube, kind, "digits")["metadata"]["ownerReferences"] == [{
        "apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel", "name": "digits",
        "uid": model["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


# -- what ensure() reports ---------------------------------------------------------------------

def test_status_is_the_service_url_and_nothing_ready_without_a_kubelet(digits) -> None:
    _, status = digits
    assert status == WorkloadStatus(
        url=f"http://digits.{NS}.svc.cluster.local:{DEFAULT_IMAGE_PORT}", replicas=2,
        ready_replicas=0, ready=False,
        message=f"0/2 replicas ready (image {IMAGE}); rollout of generation 1 not complete")


def test_ready_once_every_replica_of_the_current_spec_is_ready(
        kube: KubeAPIServer, workloads: ImageWorkloads) -> None:
    model = apply_model(kube, "digits-ready")
    workloads.ensure(model)
    report_rollout(kube, "digits-ready", ready=1, updated=2)
    half = workloads.ensure(model)
    assert (half.ready, half.ready_replicas) == (False, 1)
    assert half.message == f"1/2 replicas ready (image {IMAGE})"

    # Two ready, but one of them an old pod that has yet to go.
    report_rollout(kube, "digits-ready", ready=2, updated=2, total=3)
    old_left = workloads.ensure(model)
    assert not old_left.ready and old_left.message.endswith("not complete")

    report_rollout(kube, "digits-ready", ready=2, updated=2)
    assert workloads.ensure(model) == WorkloadStatus(
        f"http://digits-ready.{NS}.svc.cluster.local:8080", 2, 2, True,
        f"2/2 replicas ready (image {IMAGE})")


def test_not_ready_while_a_new_image_rolls_out(kube: KubeAPIServer,
                                               workloads: ImageWorkloads) -> None:
    workloads.ensure(apply_model(kube, "digits-rollout"))
    report_rollout(kube, "digits-rollout", ready=2, updated=2)
    # The old pods are all ready, but they run the old image: not ready until the controller
    # has seen generation 2 and replaced them.
    status = workloads.ensure(apply_model(kube, "digits-rollout",
                                          image="registry.example.com/digits:2"))
    assert (status.ready, status.ready_replicas) == (False, 2)
    assert status.message.endswith("rollout of generation 2 not complete")


def test_zero_replicas_is_never_ready(kube: KubeAPIServer, workloads: ImageWorkloads) -> None:
    status = workloads.ensure(apply_model(kube, "digits-zero", replicas=0))
    assert get(kube, "deployment", "digits-zero")["spec"]["replicas"] == 0
    assert (status.replicas, status.ready) == (0, False)
    assert status.message == f"scaled to 0 replicas (image {IMAGE})"


# -- updates -----------------------------------------------------------------------------------

def test_second_ensure_changes_nothing(kube: KubeAPIServer, workloads: ImageWorkloads,
                                       digits) -> None:
    model, _ = digits
    before = {kind: get(kube, kind, "digits")["metadata"]["resourceVersion"]
              for kind in ("deployment", "service")}
    workloads.ensure(model)
    after = {kind: get(kube, kind, "digits")["metadata"]["resourceVersion"]
             for kind in ("deployment", "service")}
    assert after == before


def test_spec_change_updates_the_deployment(kube: KubeAPIServer, workloads: ImageWorkloads) -> None:
    workloads.ensure(apply_model(kube, "digits-scale"))
    service_version = get(kube, "service", "digits-scale")["metadata"]["resourceVersion"]

    changed = apply_model(kube, "digits-scale", replicas=3, frameworkType="onnx",
                          nodeSelector={"jointserve.io/zone": "north"})
    status = workloads.ensure(changed)

    deployment = get(kube, "deployment", "digits-scale")
    assert deployment["spec"]["replicas"] == 3 and status.replicas == 3
    # Replaced, not merged: the operator owned the old key and no longer sends it.
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"jointserve.io/zone": "north"}
    assert container(deployment)["env"] == [{"name": "MODEL_NAME", "value": "digits"},
                                            {"name": "FRAMEWORK_TYPE", "value": "onnx"}]
    assert deployment["metadata"]["generation"] == 2
    assert get(kube, "service", "digits-scale")["metadata"]["resourceVersion"] == service_version


def test_ensure_takes_back_fields_edited_by_hand(kube: KubeAPIServer,
                                                 workloads: ImageWorkloads) -> None:
    model = apply_model(kube, "digits-edited")
    workloads.ensure(model)
    kube.kubectl_ok("scale", "deployment", "digits-edited", "-n", NS, "--replicas=5")
    workloads.ensure(model)
    assert get(kube, "deployment", "digits-edited")["spec"]["replicas"] == 2


# -- delete and managed ------------------------------------------------------------------------

def test_delete_removes_both_and_tolerates_missing(kube: KubeAPIServer,
                                                   workloads: ImageWorkloads) -> None:
    workloads.ensure(apply_model(kube, "digits-gone"))
    assert exists(kube, "deployment", "digits-gone") and exists(kube, "service", "digits-gone")

    workloads.delete(NS, "digits-gone")
    assert not exists(kube, "deployment", "digits-gone")
    assert not exists(kube, "service", "digits-gone")
    workloads.delete(NS, "digits-gone")  # already gone: no error
    workloads.delete("no-such-namespace", "digits")


def test_managed_lists_exactly_the_managed_deployments(kube: KubeAPIServer,
                                                       workloads: ImageWorkloads) -> None:
    namespaces = ("workloads-all-a", "workloads-all-b")
    for namespace in namespaces:
        create_namespace(kube, namespace)
        workloads.ensure(apply_model(kube, "digits", namespace))
    workloads.ensure(apply_model(kube, "digits-old", "workloads-all-a"))
    workloads.delete("workloads-all-a", "digits-old")
    # Someone else's Deployment, in the same namespace: not the operator's to list or remove.
    kube.kubectl_ok("create", "deployment", "web", "-n", "workloads-all-a", "--image=nginx")

    managed = workloads.managed()
    assert {key for key in managed if key[0] in namespaces} == {
        ("workloads-all-a", "digits"), ("workloads-all-b", "digits")}
    assert ("workloads-all-a", "web") not in managed


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "spec", "server_says"), [
    pytest.param("digits-" + "x" * 60, {}, "must be no more than 63 characters",
                 id="name-too-long-for-a-label"),
    pytest.param("digits-selector", {"nodeSelector": {"bad key!": "edge"}},
                 "name part must consist of alphanumeric characters", id="invalid-node-selector"),
])
def test_server_refusal_raises_workload_error(kube: KubeAPIServer, workloads: ImageWorkloads,
                                              name: str, spec: dict, server_says: str) -> None:
    # The CRD accepts both InferenceModels; only the Deployment's validation refuses them.
    model = apply_model(kube, name, **spec)
    with pytest.raises(WorkloadError) as raised:
        workloads.ensure(model)
    error = raised.value
    assert error.reason == "Invalid" and not error.retryable
    assert error.message.startswith(f"Deployment {NS}/{name}: Deployment.apps \"{name}\" is invalid")
    assert server_says in error.message and str(error) == error.message
    assert not exists(kube, "deployment", name)


def test_manifest_model_is_not_a_workload(kube: KubeAPIServer, workloads: ImageWorkloads) -> None:
    doc = yaml.safe_load((REPO / "examples" / "digits" / "digits-edge.yaml").read_text())
    kube.kubectl_ok("apply", "-n", NS, "-f", "-", input=json.dumps(doc))
    with pytest.raises(ValueError, match="spec.image is not set"):
        workloads.ensure(get(kube, "inferencemodel", "digits-edge"))
    assert not exists(kube, "deployment", "digits-edge")


# -- RBAC --------------------------------------------------------------------------------------

@pytest.fixture
def as_operator(kube: KubeAPIServer) -> Iterator[kubernetes.client.ApiClient]:
    """A client acting as a service account bound to deploy/rbac.yaml's ClusterRole rules.

    A copy of the role under a name of this module's own: the shared objects belong to
    test_deploy_manifests, which creates and deletes them.
    """
    docs = list(yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    role["metadata"]["name"] = "workloads-test-operator"
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "workloads-test-operator"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "workloads-test-operator"},
               "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": NS}]}
    kube.kubectl_ok("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": [role, binding]}))
    client = kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    client.set_default_header("Impersonate-User", f"system:serviceaccount:{NS}:operator")
    try:
        yield client
    finally:
        client.close()
        kube.kubectl("delete", "--ignore-not-found", "clusterrolebinding/workloads-test-operator",
                     "clusterrole/workloads-test-operator")


def test_operator_role_allows_every_call(kube: KubeAPIServer,
                                         as_operator: kubernetes.client.ApiClient) -> None:
    workloads = ImageWorkloads(as_operator)
    model = apply_model(kube, "digits-rbac")
    assert workloads.ensure(model).replicas == 2
    assert (NS, "digits-rbac") in workloads.managed()
    workloads.delete(NS, "digits-rbac")
    assert not exists(kube, "deployment", "digits-rbac")


def test_forbidden_call_raises_workload_error(kube: KubeAPIServer) -> None:
    client = kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    client.set_default_header("Impersonate-User", f"system:serviceaccount:{NS}:nobody")
    with client:
        with pytest.raises(WorkloadError) as raised:
            ImageWorkloads(client).ensure(apply_model(kube, "digits-forbidden"))
    assert raised.value.reason == "Forbidden" and not raised.value.retryable
    assert raised.value.message.startswith(f"Deployment {NS}/digits-forbidden: ")
    assert "cannot patch resource \"deployments\"" in raised.value.message
