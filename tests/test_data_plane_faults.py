"""The data plane under faults: no request fails while versions switch and replicas die.

Runs on the session's operator and Serve, through the front door (HAProxy programmed from the
listener registry) as a client sees it. Load is 8 client threads, each with a keep-alive
connection of its own; a test asserts what every response was, never how fast it came.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jointserve.registry import listener_registry
from tests._harness import CLOUD, EDGE, JIS, OperatorHarness
from tests._load import Load
from tests._procs import listening_sockets, processes_matching


@pytest.fixture(scope="module")
def samples(example: Path) -> np.ndarray:
    return np.load(example / "samples.npz")["X"]


def _service(harness: OperatorHarness, services: list[str], name: str, **spec: Any) -> str:
    services.append(name)  # first: removed afterwards even if it never gets ready
    return harness.serve_service(name, **spec)


def _cloud_model(harness: OperatorHarness, services: list[str], name: str) -> dict[str, Any]:
    """A cloud InferenceModel of its own with two versions of the example's archive."""
    doc = harness.example_doc(CLOUD)
    doc["metadata"]["name"] = name
    doc["spec"]["modelName"] = name
    first = doc["spec"]["manifest"][0]
    doc["spec"]["manifest"].append({**first, "version": "v1b"})
    harness.write(doc)
    services.append(name)
    harness.wait_for(lambda: harness.condition(name, "Ready").get("status") == "True",
                     f"cloud model {name} ready")
    return doc


def _replica_pids(app: str, deployment: str) -> list[int]:
    return [p.pid for p in processes_matching(f"ServeReplica:{app}:{deployment}")]


def _kill_one(app: str, deployment: str) -> int:
    pids = _replica_pids(app, deployment)
    assert pids, f"no replica process of {app}:{deployment}"
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


# -- version switches with one replica ---------------------------------------------------------

def test_edge_and_cloud_switches_with_one_replica_fail_no_request(
        harness: OperatorHarness, services: list[str], edge_on_v1: dict, samples: np.ndarray) -> None:
    cloud = _cloud_model(harness, services, "switch-cloud")
    name = _service(harness, services, "digits-switches", cloudModel={"name": "switch-cloud"},
                    hardExampleMining={"name": "MaxProb", "parameters": {"threshold": 0.9}})
    with Load(harness, name, samples) as load:
        for version in ("v2", "v1", "v2"):
            edge_on_v1["spec"]["targetVersion"] = version
            harness.write(edge_on_v1)
            harness.wait_for(lambda v=version: load.seen(lambda p: p.get("edge_model_version") == v),
                             f"answers from edge {version}")
        cloud["spec"]["targetVersion"] = "v1b"
        harness.write(cloud)
        harness.wait_for(lambda: load.seen(lambda p: p.get("cloud_model_version") == "v1b"),
                         "answers from cloud v1b")
    assert load.failures() == []
    versions = Counter(p.get("edge_model_version") for _, p in load.outcomes)
    assert versions["v1"] > 0 and versions["v2"] > 0, versions


# -- replicas killed -----------------------------------------------------------------------

def test_a_gateway_replica_sigkilled_under_load_with_two_replicas_fails_no_request(
        harness: OperatorHarness, services: list[str], samples: np.ndarray) -> None:
    name = _service(harness, services, "digits-two", replicas=2)
    app = f"jis.default.{name}"
    harness.wait_for(lambda: len(_replica_pids(app, "gateway")) == 2, "two gateway replicas")
    with Load(harness, name, samples) as load:
        harness.wait_for(lambda: len(load.outcomes) > 200, "traffic flowing")
        killed = _kill_one(app, "gateway")
        harness.wait_for(lambda: len(_replica_pids(app, "gateway")) == 2
                         and killed not in _replica_pids(app, "gateway"), "a new gateway replica")
        served = len(load.outcomes)
        harness.wait_for(lambda: len(load.outcomes) > served + 200, "traffic after the restart")
    assert load.failures() == []


def test_the_cloud_replica_sigkilled_gives_edge_answers_with_the_reason(
        harness: OperatorHarness, services: list[str], samples: np.ndarray) -> None:
    _cloud_model(harness, services, "killed-cloud")
    name = _service(harness, services, "digits-cloud-killed", cloudModel={"name": "killed-cloud"},
                    hardExampleMining={"name": "CloudOnly"}, cloud={"deadlineMs": 2000})
    app = "im.default.killed-cloud"
    with Load(harness, name, samples) as load:
        harness.wait_for(lambda: load.seen(lambda p: p.get("tier") == "cloud"), "cloud answers")
        _kill_one(app, "model")
        harness.wait_for(lambda: load.seen(lambda p: p.get("fallback_reason") == "cloud_unavailable",
                                           last=10**9), "edge answers while the cloud is down")
        harness.wait_for(lambda: load.seen(lambda p: p.get("tier") == "cloud", last=20),
                         "cloud answers again after Serve restarted it")
    assert load.failures() == []
    reasons = Counter(p.get("fallback_reason") for _, p in load.outcomes)
    assert set(reasons) <= {None, "cloud_unavailable", "circuit_open"}, reasons


# -- where things listen ---------------------------------------------------------------------

def test_every_listener_and_the_front_door_bind_the_configured_host(harness: OperatorHarness) -> None:
    harness.wait_serving(EDGE, EDGE, "v1")
    _version, routes = listener_registry().watch.remote(-1).result(timeout_s=30)
    assert EDGE in routes and CLOUD in routes, routes
    addresses = [a for listeners in routes.values() for a in listeners]
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
    haproxies = [p for p in processes_matching("haproxy") if p.name == "haproxy"]
    assert haproxies, "no HAProxy process"
    public = int(harness.base_url.rsplit(":", 1)[1])
    door = [p for p in haproxies if ("127.0.0.1", public) in listening_sockets(p.pid)]
    assert len(door) == 1, [(p.pid, listening_sockets(p.pid)) for p in haproxies]
    assert listening_sockets(door[0].pid) == {("127.0.0.1", public)}
