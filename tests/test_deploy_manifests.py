"""deploy/rbac.yaml + deploy/operator.yaml against a real kube-apiserver: they apply, the
Deployment is what the operator needs, and its ServiceAccount may do what the operator
does and nothing more (RBAC evaluated by the API server, `kubectl auth can-i`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
RBAC = REPO / "deploy" / "rbac.yaml"
OPERATOR = REPO / "deploy" / "operator.yaml"
NAMESPACE = "jointserve-system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:jointserve-operator"

ALLOWED = [
    ("watch", "inferencemodels.jointserve.io"),
    ("update", "jointinferenceservices.jointserve.io"),
    ("patch", "inferencemodels.jointserve.io", "--subresource=status"),
    ("update", "inferencemodels.jointserve.io", "--subresource=finalizers"),
    ("watch", "datasets.jointserve.io"),
    ("patch", "datasets.jointserve.io"),  # finalizers
    ("patch", "datasets.jointserve.io", "--subresource=status"),
    ("create", "events"),
    ("create", "events.events.k8s.io"),
    ("update", "leases.coordination.k8s.io"),
    ("create", "deployments.apps"),
    ("delete", "services"),
    ("watch", "trainingmodels.jointserve.io"),
    ("patch", "trainingmodels.jointserve.io", "--subresource=status"),
    ("patch", "inferencemodels.jointserve.io"),  # a published version in the manifest
    ("create", "configmaps"),  # a published archive
    ("get", "configmaps"),
]
DENIED = [
    ("delete", "secrets"),
    ("get", "secrets"),
    ("create", "pods"),
    ("delete", "inferencemodels.jointserve.io"),  # users delete resources; the operator never
    ("delete", "datasets.jointserve.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("delete", "configmaps"),  # owned by their InferenceModel: the garbage collector's
]


@pytest.fixture(scope="module")
def applied(kube_api: Any) -> Iterator[Any]:
    done = kube_api.kubectl("apply", "-f", str(RBAC), "-f", str(OPERATOR))
    try:
        assert done.returncode == 0, done.stderr
        # The namespace enforces the "restricted" Pod Security Standard and warns on workloads
        # that break it: no warning means the operator's pod template meets it.
        assert "Warning" not in done.stderr, done.stderr
        yield kube_api
    finally:
        # Not the Namespace: without a controller-manager its deletion never finishes. It is
        # empty once these are gone, and a later apply reuses it.
        kube_api.kubectl("delete", "-n", NAMESPACE, "--ignore-not-found",
                         "deployment/jointserve-operator", "service/jointserve-operator",
                         "serviceaccount/jointserve-operator")
        kube_api.kubectl("delete", "--ignore-not-found", "clusterrolebinding/jointserve-operator",
                         "clusterrole/jointserve-operator")


def test_operator_deployment_is_created(applied: Any) -> None:
    deployment = json.loads(applied.kubectl_ok("get", "deployment", "jointserve-operator",
                                               "-n", NAMESPACE, "-o", "json"))
    spec = deployment["spec"]
    assert spec["replicas"] == 2  # a Lease elects the one that reconciles
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "jointserve-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    argv = container["command"] + container["args"]
    assert argv[:4] == ["jointserve", "operator", "--kubeconfig", ""]
    # Published TrainingModel archives: every replica serves them; nodes reach the Service.
    service = json.loads(applied.kubectl_ok("get", "service", "jointserve-operator",
                                            "-n", NAMESPACE, "-o", "json"))
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8809 and port["targetPort"] == "archives"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert argv[argv.index("--archive-url") + 1] == (
        f"http://jointserve-operator.{NAMESPACE}.svc:8809")
    assert container["ports"] == [{"name": "archives", "containerPort": 8809,
                                   "protocol": "TCP"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert mounts[container["workingDir"]] in empty_dirs  # the default ./.jointserve is writable


@pytest.mark.parametrize("check", ALLOWED, ids=" ".join)
def test_service_account_may_do_what_the_operator_does(applied: Any, check: tuple[str, ...]) -> None:
    assert _can_i(applied, check) == "yes"


@pytest.mark.parametrize("check", DENIED, ids=" ".join)
def test_service_account_may_do_nothing_more(applied: Any, check: tuple[str, ...]) -> None:
    assert _can_i(applied, check) == "no"


def _can_i(kube_api: Any, check: tuple[str, ...]) -> str:
    # Exit code 1 means "no"; the answer on stdout is what counts (errors give neither word).
    done = kube_api.kubectl("auth", "can-i", *check, f"--as={SERVICE_ACCOUNT}", "-n", "default")
    answer = done.stdout.strip()
    assert answer in {"yes", "no"}, f"kubectl auth can-i {' '.join(check)}: {done.stderr}"
    return answer
