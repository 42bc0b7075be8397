"""KubeSource against the real kube-apiserver: list, watch, and the 410 Gone re-list.

The operator end-to-end tests (test_kube_operator.py) show the source doing its job inside
the operator, API server restart included; here its bookkeeping is checked directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from jointserve.api import InferenceModel
from jointserve.operator._kube_source import KubeSource, is_deleting, kube_client, to_resource
from tests._kube import KubeAPIServer

NS = "source-test"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def kube(kube_api: KubeAPIServer) -> KubeAPIServer:
    kube_api.kubectl_ok("create", "namespace", NS)
    return kube_api


@pytest.fixture
def source(kube: KubeAPIServer) -> Iterator[KubeSource]:
    stop = threading.Event()
    src = KubeSource(kube_client(kube.kubeconfig), namespace=NS)
    src.start(stop)
    assert src.wait_synced(stop, timeout_s=WAIT_S)
    yield src
    stop.set()


def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def model(name: str) -> str:
    """An image-based InferenceModel: no archive to serve, only an object to watch."""
    return yaml.safe_dump({
        "apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": {"modelName": name, "deployToLayer": "edge", "image": "example.com/m:1"}})


def key(name: str) -> tuple[str, str, str]:
    return (InferenceModel.KIND, NS, name)


def test_watch_follows_create_update_delete(kube: KubeAPIServer, source: KubeSource) -> None:
    kube.kubectl_ok("apply", "-n", NS, "-f", "-", input=model("watched"))
    until(lambda: source.get(key("watched")), "the created object")
    source.changed.clear()
    kube.kubectl_ok("patch", "im", "watched", "-n", NS, "--type", "merge",
                    "-p", '{"spec":{"replicas":3}}')
    until(lambda: source.get(key("watched"))["spec"].get("replicas") == 3, "the update")
    assert source.changed.is_set()
    kube.kubectl_ok("delete", "im", "watched", "-n", NS)
    until(lambda: source.get(key("watched")) is None, "the deletion")
    assert source.relists(InferenceModel.KIND) == 1  # one list; the rest came by watch


def test_resource_keeps_only_what_the_reconciler_reads(kube: KubeAPIServer, source: KubeSource) -> None:
    kube.kubectl_ok("apply", "-n", NS, "-f", "-", input=model("typed"))
    obj = until(lambda: source.get(key("typed")), "the object")
    resource = to_resource(obj)
    assert isinstance(resource, InferenceModel)
    assert resource.metadata.uid == obj["metadata"]["uid"]
    assert resource.metadata.generation == obj["metadata"]["generation"]
    # resourceVersion moves with every status write; keeping it would make each write look
    # like a new spec to the reconciler.
    assert resource.metadata.resourceVersion is None
    assert not is_deleting(obj)


def test_410_gone_lists_again(kube: KubeAPIServer) -> None:
    kube.kubectl_ok("apply", "-n", NS, "-f", "-", input=model("listed"))
    stop = threading.Event()
    src = KubeSource(kube_client(kube.kubeconfig), namespace=NS)
    # As if a previous watch had stopped at resourceVersion 1, long compacted away: the
    # server answers 410 Gone, and the source must list again instead of giving up.
    src._kinds[InferenceModel.KIND].resource_version = "1"
    src.start(stop)
    try:
        until(lambda: src.relists(InferenceModel.KIND) == 1, "the re-list after 410")
        until(lambda: src.get(key("listed")), "the object, from the re-list")
        kube.kubectl_ok("patch", "im", "listed", "-n", NS, "--type", "merge",
                        "-p", '{"spec":{"replicas":2}}')
        until(lambda: src.get(key("listed"))["spec"].get("replicas") == 2, "the watch after it")
    finally:
        stop.set()


def test_wants_a_model_while_a_live_resource_serves_it(kube: KubeAPIServer,
                                                       source: KubeSource) -> None:
    kube.kubectl_ok("apply", "-n", NS, "-f", "-", input=model("wanted"))
    until(lambda: source.wants_model("wanted"), "the model wanted")
    assert not source.wants_model("nobody-serves-this")
    kube.kubectl_ok("delete", "im", "wanted", "-n", NS)
    until(lambda: not source.wants_model("wanted"), "the model no longer wanted")
