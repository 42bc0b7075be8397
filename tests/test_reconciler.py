"""The Reconciler's decisions, without Ray: what it hands Serve and what status it reports.

Real pieces: the ArtifactStore (on tmp_path, file:// URLs), tiny real ONNX models packed as
tar.gz archives, onnxruntime (the operator's trial load), the StatusStore. Fake: Ray Serve
(`FakeBackend` records every applied config and reports the application states a test sets).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jointserve.api import parse_resource
from jointserve.operator import Reconciler, ServeSettings, StatusStore
from jointserve.store import ArtifactStore
from tests._fakes import Archive, FakeBackend, MemoryStatuses, onnx_identity, pack

IM = "InferenceModel"
JIS = "JointInferenceService"
EDGE = "digits-edge"
CLOUD = "digits-cloud"
SERVICE = "digits"
EDGE_KEY = (IM, "default", EDGE)
CLOUD_KEY = (IM, "default", CLOUD)
SERVICE_KEY = (JIS, "default", SERVICE)
PUBLIC_URL = "http://127.0.0.1:8000"
WRONG_SHA = hashlib.sha256(b"not the archive").hexdigest()


# -- reading the applied Serve config: the one place that knows its layout ----------------


def app_serving(config: dict, name: str) -> str | None:
    """Name of the application that answers /v2/models/<name> (a model's or a service's own,
    or the gateway that hosts it), as the server application is told, if any."""
    return user_config(config, "jointserve")["models"].get(name)


def user_config(config: dict, app_name: str) -> dict:
    """The user_config of the (single) deployment of application `app_name`."""
    app = next(a for a in config["applications"] if a["name"] == app_name)
    (deployment,) = app["deployments"]
    return deployment["user_config"]


def served_artifact(config: dict, app_name: str) -> tuple[str, str, str]:
    """(version, url, sha256) a model application's replicas are told to load.

    Either layout: nested (jointserve.contract.ModelReplicaConfig: {"artifact": {...}}) or
    the older flat one ({"version": ..., "url": ..., "sha256": ...})."""
    uc = user_config(config, app_name)
    artifact = uc.get("artifact") or (uc["edge"] if uc.get("edge_route") else uc)
    return artifact["version"], artifact["url"], artifact["sha256"]


def served_version(config: dict, app_name: str) -> str:
    return served_artifact(config, app_name)[0]


def gateway_edge_version(config: dict, app_name: str) -> str:
    """The edge model version a gateway application runs in its replicas."""
    return user_config(config, app_name)["edge"]["version"]


def gateway_cloud(config: dict, app_name: str) -> dict:
    """How a gateway application reaches its cloud model ({"transport": ...})."""
    return user_config(config, app_name)["services"][0]["cloud"]


# -- reading statuses -------------------------------------------------------------------


def status_of(out: Mapping, key: tuple[str, str, str]) -> dict:
    return out[key].model_dump(mode="json")


def condition(out: Mapping, key: tuple[str, str, str], type_: str) -> tuple[str, str]:
    """(status, reason) of condition `type_`, as strings."""
    conditions = status_of(out, key)["conditions"]
    found = next((c for c in conditions if c["type"] == type_), None)
    assert found is not None, f"{key}: no {type_} condition in {conditions}"
    return str(found["status"]), str(found["reason"])


# -- archives (tests/_fakes.py has the fakes and the packing) ----------------------------


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Archive]:
    root = tmp_path_factory.mktemp("archives")
    return {
        "edge-v1": pack(root / "edge-v1.tar.gz", {"model.onnx": onnx_identity("edge-v1")}),
        "edge-v2": pack(root / "edge-v2.tar.gz", {"model.onnx": onnx_identity("edge-v2")}),
        "cloud-v1": pack(root / "cloud-v1.tar.gz", {"model.onnx": onnx_identity("cloud-v1")}),
        "garbage-onnx": pack(root / "garbage.tar.gz", {"model.onnx": b"this is not an onnx graph"}),
        "no-onnx": pack(root / "readme-only.tar.gz", {"README.md": b"no model in here\n"}),
    }


# -- resources --------------------------------------------------------------------------


def entry(version: str, archive: Archive, sha256: str | None = None) -> dict[str, str]:
    return {"version": version, "downloadURL": archive.url, "sha256sum": sha256 or archive.sha256}


def inference_model(name: str, layer: str, manifest: list[dict], target: str | None = None,
                    *, model_name: str | None = None, replicas: int = 1, **spec: Any) -> Any:
    doc: dict[str, Any] = {
        "apiVersion": "jointserve.io/v1alpha1",
        "kind": IM,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"modelName": model_name or name, "deployToLayer": layer,
                 "manifest": manifest, "replicas": replicas, **spec},
    }
    if target is not None:
        doc["spec"]["targetVersion"] = target
    return parse_resource(doc, f"test:{name}")


def joint_service(name: str = SERVICE, edge: str = EDGE, cloud: str = CLOUD, *,
                  replicas: int = 1, **spec: Any) -> Any:
    return parse_resource({
        "apiVersion": "jointserve.io/v1alpha1",
        "kind": JIS,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "edgeModel": {"name": edge},
            "cloudModel": {"name": cloud},
            "hardExampleMining": {"name": "MaxProb", "parameters": {"threshold": 0.6}},
            "replicas": replicas,
            **spec,
        },
    }, f"test:{name}")


def edge_model(archives: dict[str, Archive], **kw: Any) -> Any:
    return inference_model(EDGE, "edge", [entry("v1", archives["edge-v1"])], **kw)


def cloud_model(archives: dict[str, Archive], **kw: Any) -> Any:
    return inference_model(CLOUD, "cloud", [entry("v1", archives["cloud-v1"])], **kw)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def statuses(tmp_path: Path) -> StatusStore:
    return StatusStore(tmp_path / "state")


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store", retries=0)


@pytest.fixture
def settings(tmp_path: Path) -> ServeSettings:
    return ServeSettings(store_root=str(tmp_path / "store"))


@pytest.fixture
def reconciler(backend: FakeBackend, store: ArtifactStore, statuses: StatusStore,
               settings: ServeSettings) -> Iterator[Reconciler]:
    yield Reconciler(backend, store, statuses, settings, PUBLIC_URL)


# -- InferenceModel ---------------------------------------------------------------------


def test_good_model_is_served_and_ready(reconciler: Reconciler, backend: FakeBackend,
                                        archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({EDGE_KEY: edge_model(archives)})

    app = app_serving(backend.config, EDGE)
    assert app is not None
    good = archives["edge-v1"]
    assert served_artifact(backend.config, app) == ("v1", good.url, good.sha256)
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("True", "Verified")
    assert condition(out, EDGE_KEY, "Ready") == ("True", "Serving")
    assert condition(out, EDGE_KEY, "Progressing") == ("False", "Complete")
    assert status_of(out, EDGE_KEY)["activeVersion"] == "v1"
    assert status_of(out, EDGE_KEY)["url"] == PUBLIC_URL


def test_status_record_is_persisted(reconciler: Reconciler, statuses: StatusStore,
                                    archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({EDGE_KEY: edge_model(archives)})

    record = statuses.read(EDGE_KEY)
    assert record is not None
    assert record["resource"]["spec"]["modelName"] == EDGE
    assert record["status"]["activeVersion"] == "v1"
    assert record["status"] == out[EDGE_KEY].model_dump(mode="json", exclude_none=True)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param("wrong-sha256", "Sha256Mismatch", id="wrong-sha256"),
        pytest.param("garbage-onnx", "ModelInvalid", id="not-an-onnx-graph"),
        pytest.param("no-onnx", "ModelInvalid", id="no-model-file"),
    ],
)
def test_bad_target_version_keeps_serving_previous_version(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive],
        bad: str, reason: str) -> None:
    v1 = entry("v1", archives["edge-v1"])
    reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1])})
    v2 = (entry("v2", archives["edge-v2"], sha256=WRONG_SHA) if bad == "wrong-sha256"
          else entry("v2", archives[bad]))

    out = reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target="v2")})

    app = app_serving(backend.config, EDGE)
    assert app is not None
    assert served_version(backend.config, app) == "v1"
    assert served_artifact(backend.config, app)[2] == archives["edge-v1"].sha256
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("False", reason)
    assert condition(out, EDGE_KEY, "Progressing") == ("False", "TargetVersionRejected")
    assert condition(out, EDGE_KEY, "Ready") == ("True", "Serving")
    assert status_of(out, EDGE_KEY)["activeVersion"] == "v1"


def test_bad_target_keeps_previous_version_after_operator_restart(
        backend: FakeBackend, store: ArtifactStore, statuses: StatusStore,
        settings: ServeSettings, archives: dict[str, Archive]) -> None:
    v1 = entry("v1", archives["edge-v1"])
    Reconciler(backend, store, statuses, settings, PUBLIC_URL).reconcile(
        {EDGE_KEY: inference_model(EDGE, "edge", [v1])})
    v2 = entry("v2", archives["edge-v2"], sha256=WRONG_SHA)

    # A new operator process: only the saved status and the store's cache remember v1.
    restarted = Reconciler(backend, store, statuses, settings, PUBLIC_URL)
    out = restarted.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target="v2")})

    app = app_serving(backend.config, EDGE)
    assert app is not None and served_version(backend.config, app) == "v1"
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("False", "Sha256Mismatch")
    assert status_of(out, EDGE_KEY)["activeVersion"] == "v1"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param("wrong-sha256", "Sha256Mismatch", id="wrong-sha256"),
        pytest.param("garbage-onnx", "ModelInvalid", id="not-an-onnx-graph"),
        pytest.param("missing-file", "DownloadFailed", id="missing-file"),
    ],
)
def test_bad_archive_without_previous_version_serves_nothing(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive],
        tmp_path: Path, bad: str, reason: str) -> None:
    if bad == "wrong-sha256":
        v1 = entry("v1", archives["edge-v1"], sha256=WRONG_SHA)
    elif bad == "missing-file":
        v1 = entry("v1", Archive(tmp_path / "nowhere.tar.gz", WRONG_SHA))
    else:
        v1 = entry("v1", archives[bad])

    out = reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1])})

    assert app_serving(backend.config, EDGE) is None
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("False", reason)
    assert condition(out, EDGE_KEY, "Ready") == ("False", reason)
    assert status_of(out, EDGE_KEY)["activeVersion"] is None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.monotonic, moved forward by adding seconds to the returned list's only item."""
    offset = [0.0]
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + offset[0])
    return offset


def test_transient_failure_is_retried_after_a_backoff(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive],
        tmp_path: Path, clock: list[float]) -> None:
    good = archives["edge-v1"]
    late = Archive(tmp_path / "late.tar.gz", good.sha256)
    resources = {EDGE_KEY: inference_model(EDGE, "edge", [entry("v1", late)])}
    out = reconciler.reconcile(resources)
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("False", "DownloadFailed")

    shutil.copy(good.path, late.path)  # the server is back
    out = reconciler.reconcile(resources)
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("False", "DownloadFailed")  # backing off
    assert app_serving(backend.config, EDGE) is None

    clock[0] += 301.0  # past the longest backoff
    out = reconciler.reconcile(resources)
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("True", "Verified")
    app = app_serving(backend.config, EDGE)
    assert app is not None and served_version(backend.config, app) == "v1"


def test_sha256_mismatch_is_not_retried_without_a_spec_change(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive],
        tmp_path: Path, clock: list[float]) -> None:
    good = archives["edge-v1"]
    swapped = Archive(tmp_path / "swapped.tar.gz", good.sha256)
    shutil.copy(archives["edge-v2"].path, swapped.path)  # not the archive the sha256 names
    resources = {EDGE_KEY: inference_model(EDGE, "edge", [entry("v1", swapped)])}
    out = reconciler.reconcile(resources)
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("False", "Sha256Mismatch")

    shutil.copy(good.path, swapped.path)
    clock[0] += 3600.0
    out = reconciler.reconcile(resources)

    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("False", "Sha256Mismatch")
    assert app_serving(backend.config, EDGE) is None


def test_duplicate_model_name_serves_only_first_by_key(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    first = (IM, "default", "a-digits")
    second = (IM, "default", "b-digits")
    # Given in reverse order: "first" means first by key, not first in the mapping.
    resources = {
        second: inference_model("b-digits", "edge", [entry("v2", archives["edge-v2"])],
                                model_name="digits"),
        first: inference_model("a-digits", "edge", [entry("v1", archives["edge-v1"])],
                               model_name="digits"),
    }

    out = reconciler.reconcile(resources)

    app = app_serving(backend.config, "digits")
    assert app is not None
    assert served_version(backend.config, app) == "v1"
    routes = [a.get("route_prefix") for a in backend.config["applications"]]
    assert routes.count("/v2/models/digits") == 1
    assert condition(out, first, "Ready") == ("True", "Serving")
    assert condition(out, second, "ArtifactVerified") == ("False", "ModelNameConflict")
    assert condition(out, second, "Ready") == ("False", "ModelNameConflict")


def test_image_model_is_refused_in_embedded_mode(
        reconciler: Reconciler, backend: FakeBackend) -> None:
    image = parse_resource({
        "apiVersion": "jointserve.io/v1alpha1", "kind": IM,
        "metadata": {"name": "vision"},
        "spec": {"modelName": "vision", "deployToLayer": "cloud", "image": "example/vision:1"},
    }, "test:vision")
    key = (IM, "default", "vision")

    out = reconciler.reconcile({key: image})

    assert app_serving(backend.config, "vision") is None
    assert condition(out, key, "Ready") == ("False", "ImageNotSupported")


def test_replicas_zero_removes_the_app(reconciler: Reconciler, backend: FakeBackend,
                                       archives: dict[str, Archive]) -> None:
    reconciler.reconcile({EDGE_KEY: edge_model(archives)})

    out = reconciler.reconcile({EDGE_KEY: edge_model(archives, replicas=0)})

    assert app_serving(backend.config, EDGE) is None
    assert condition(out, EDGE_KEY, "ArtifactVerified") == ("True", "Verified")
    assert condition(out, EDGE_KEY, "Ready") == ("False", "ScaledToZero")


# -- deletion ---------------------------------------------------------------------------


def test_deleted_model_loses_its_app_and_status_record(
        reconciler: Reconciler, backend: FakeBackend, statuses: StatusStore,
        archives: dict[str, Archive]) -> None:
    reconciler.reconcile({EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives)})
    assert app_serving(backend.config, EDGE) is not None
    assert statuses.read(EDGE_KEY) is not None

    out = reconciler.reconcile({CLOUD_KEY: cloud_model(archives)})

    assert app_serving(backend.config, EDGE) is None
    assert app_serving(backend.config, CLOUD) is not None
    assert statuses.read(EDGE_KEY) is None
    assert EDGE_KEY not in statuses.keys()
    assert statuses.read(CLOUD_KEY) is not None
    assert set(out) == {CLOUD_KEY}
    assert backend.forgotten == []  # only services have counters to forget


def test_deleted_service_forgets_its_counters(
        reconciler: Reconciler, backend: FakeBackend, statuses: StatusStore,
        archives: dict[str, Archive]) -> None:
    models = {EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives)}
    reconciler.reconcile({**models, SERVICE_KEY: joint_service()})
    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None

    reconciler.reconcile(models)

    assert app_serving(backend.config, SERVICE) is None
    assert backend.forgotten == [gateway]
    assert statuses.read(SERVICE_KEY) is None


def test_deletion_is_noticed_after_operator_restart(
        backend: FakeBackend, store: ArtifactStore, statuses: StatusStore,
        settings: ServeSettings, archives: dict[str, Archive]) -> None:
    Reconciler(backend, store, statuses, settings, PUBLIC_URL).reconcile(
        {EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives)})

    # The edge model's file was removed while the operator was down.
    Reconciler(backend, store, statuses, settings, PUBLIC_URL).reconcile(
        {CLOUD_KEY: cloud_model(archives)})

    assert statuses.read(EDGE_KEY) is None
    assert statuses.read(CLOUD_KEY) is not None


# -- JointInferenceService --------------------------------------------------------------


def test_service_gets_a_gateway_over_verified_edge_and_cloud_handle(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                                SERVICE_KEY: joint_service()})

    config = backend.config
    gateway, cloud_app = app_serving(config, SERVICE), app_serving(config, CLOUD)
    assert gateway is not None and cloud_app is not None
    assert gateway_edge_version(config, gateway) == "v1"
    cloud = gateway_cloud(config, gateway)
    assert cloud["transport"] == "listener"
    assert cloud["model_name"] == "digits-cloud"
    assert condition(out, SERVICE_KEY, "Ready") == ("True", "Serving")
    assert condition(out, SERVICE_KEY, "CloudModelReady") == ("True", "Deployed")
    status = status_of(out, SERVICE_KEY)
    assert (status["edgeVersion"], status["cloudVersion"]) == ("v1", "v1")
    assert status["url"] == PUBLIC_URL


def test_gateway_keeps_edge_version_when_edge_target_is_rejected(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    v1 = entry("v1", archives["edge-v1"])
    rest = {CLOUD_KEY: cloud_model(archives), SERVICE_KEY: joint_service()}
    reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1]), **rest})
    v2 = entry("v2", archives["edge-v2"], sha256=WRONG_SHA)

    out = reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target="v2"),
                                **rest})

    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None
    assert gateway_edge_version(backend.config, gateway) == "v1"
    assert condition(out, SERVICE_KEY, "Ready") == ("True", "Serving")


def test_gateway_follows_a_good_new_edge_version(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    v1, v2 = entry("v1", archives["edge-v1"]), entry("v2", archives["edge-v2"])
    rest = {CLOUD_KEY: cloud_model(archives), SERVICE_KEY: joint_service()}
    reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1]), **rest})

    reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target="v2"), **rest})

    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None
    assert gateway_edge_version(backend.config, gateway) == "v2"
    edge_app = app_serving(backend.config, EDGE)
    assert edge_app is not None and served_version(backend.config, edge_app) == "v2"


def test_edge_model_at_replicas_zero_still_runs_inside_the_gateway(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({EDGE_KEY: edge_model(archives, replicas=0),
                                CLOUD_KEY: cloud_model(archives), SERVICE_KEY: joint_service()})

    assert app_serving(backend.config, EDGE) is None
    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None
    assert gateway_edge_version(backend.config, gateway) == "v1"
    assert condition(out, SERVICE_KEY, "Ready") == ("True", "Serving")


def test_service_without_edge_model_has_no_gateway(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({CLOUD_KEY: cloud_model(archives), SERVICE_KEY: joint_service()})

    assert app_serving(backend.config, SERVICE) is None
    assert condition(out, SERVICE_KEY, "Ready") == ("False", "EdgeModelNotFound")
    assert status_of(out, SERVICE_KEY)["url"] is None


def test_service_whose_edge_model_has_no_verified_version_has_no_gateway(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    bad_edge = inference_model(EDGE, "edge", [entry("v1", archives["garbage-onnx"])])

    out = reconciler.reconcile({EDGE_KEY: bad_edge, CLOUD_KEY: cloud_model(archives),
                                SERVICE_KEY: joint_service()})

    assert app_serving(backend.config, SERVICE) is None
    assert condition(out, SERVICE_KEY, "Ready") == ("False", "EdgeModelNotReady")


def test_service_without_cloud_model_still_gets_a_gateway(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({EDGE_KEY: edge_model(archives), SERVICE_KEY: joint_service()})

    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None
    assert gateway_edge_version(backend.config, gateway) == "v1"
    assert gateway_cloud(backend.config, gateway)["transport"] == "none"
    assert condition(out, SERVICE_KEY, "CloudModelReady") == ("False", "CloudModelNotFound")
    assert condition(out, SERVICE_KEY, "Ready") == ("True", "Serving")


def test_service_with_cloud_model_at_replicas_zero_has_no_cloud(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({EDGE_KEY: edge_model(archives),
                                CLOUD_KEY: cloud_model(archives, replicas=0),
                                SERVICE_KEY: joint_service()})

    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None
    assert gateway_cloud(backend.config, gateway)["transport"] == "none"
    assert condition(out, SERVICE_KEY, "CloudModelReady") == ("False", "CloudModelNotReady")


def test_service_at_replicas_zero_is_scaled_to_zero(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    out = reconciler.reconcile({EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                                SERVICE_KEY: joint_service(replicas=0)})

    assert app_serving(backend.config, SERVICE) is None
    assert app_serving(backend.config, EDGE) is not None  # the models themselves still serve
    assert condition(out, SERVICE_KEY, "Ready") == ("False", "ScaledToZero")


def test_service_named_like_a_model_is_a_name_conflict(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    clash = (JIS, "default", EDGE)  # /v2/models/digits-edge belongs to the edge model

    out = reconciler.reconcile({EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                                clash: joint_service(name=EDGE)})

    edge_app = app_serving(backend.config, EDGE)
    assert edge_app is not None
    assert served_version(backend.config, edge_app) == "v1"  # still the model, not a gateway
    assert condition(out, clash, "Ready") == ("False", "ModelNameConflict")
    assert condition(out, EDGE_KEY, "Ready") == ("True", "Serving")


def test_service_status_carries_gateway_counters(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    resources = {EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                 SERVICE_KEY: joint_service()}
    reconciler.reconcile(resources)
    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None
    backend.counters = {gateway: {"inferenceNumber": 200, "hardExampleNumber": 50,
                                  "cloudAnswerNumber": 45, "fallbackNumber": 5}}

    status = status_of(reconciler.reconcile(resources), SERVICE_KEY)

    assert (status["inferenceNumber"], status["hardExampleNumber"]) == (200, 50)
    assert (status["cloudAnswerNumber"], status["fallbackNumber"]) == (45, 5)
    assert status["uploadCloudRatio"] == pytest.approx(0.25)

    # Counters not reported in a pass (e.g. a gateway restarting) keep the last known totals.
    backend.counters = {}
    assert status_of(reconciler.reconcile(resources), SERVICE_KEY)["inferenceNumber"] == 200


# -- applying and rolling out -----------------------------------------------------------


def test_config_is_applied_only_when_it_changes(
        backend: FakeBackend, store: ArtifactStore, settings: ServeSettings,
        archives: dict[str, Archive]) -> None:
    records = MemoryStatuses()
    reconciler = Reconciler(backend, store, records, settings, PUBLIC_URL)
    resources = {EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                 SERVICE_KEY: joint_service()}

    reconciler.reconcile(resources)
    writes = records.writes
    reconciler.reconcile(resources)

    assert len(backend.applied) == 1
    assert records.writes == writes  # nothing changed, nothing rewritten

    reconciler.reconcile({**resources, CLOUD_KEY: cloud_model(archives, replicas=3)})
    assert len(backend.applied) == 2


def test_rollout_in_progress_stays_ready_on_previous_version(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    v1, v2 = entry("v1", archives["edge-v1"]), entry("v2", archives["edge-v2"])
    reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1])})

    backend.status = "DEPLOYING"
    rolling = {EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target="v2")}
    out = reconciler.reconcile(rolling)

    app = app_serving(backend.config, EDGE)
    assert app is not None and served_version(backend.config, app) == "v2"
    assert condition(out, EDGE_KEY, "Ready") == ("True", "Serving")
    assert condition(out, EDGE_KEY, "Progressing") == ("True", "Deploying")
    assert status_of(out, EDGE_KEY)["activeVersion"] == "v1"

    backend.status = "RUNNING"
    out = reconciler.reconcile(rolling)
    assert status_of(out, EDGE_KEY)["activeVersion"] == "v2"
    assert condition(out, EDGE_KEY, "Progressing") == ("False", "Complete")


def test_first_deployment_is_not_ready_until_running(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    backend.status = "DEPLOYING"

    out = reconciler.reconcile({EDGE_KEY: edge_model(archives)})

    assert condition(out, EDGE_KEY, "Ready") == ("False", "Deploying")
    assert condition(out, EDGE_KEY, "Progressing") == ("True", "Deploying")
    assert status_of(out, EDGE_KEY)["activeVersion"] is None


def test_restarted_operator_does_not_claim_ready_before_seeing_running(
        backend: FakeBackend, store: ArtifactStore, statuses: StatusStore,
        settings: ServeSettings, archives: dict[str, Archive]) -> None:
    resources = {EDGE_KEY: edge_model(archives)}
    Reconciler(backend, store, statuses, settings, PUBLIC_URL).reconcile(resources)

    # Embedded mode restarted: Ray is new, the saved status still says Ready.
    fresh = FakeBackend(status="DEPLOYING")
    out = Reconciler(fresh, store, statuses, settings, PUBLIC_URL).reconcile(resources)

    assert condition(out, EDGE_KEY, "Ready") == ("False", "Deploying")


def test_failed_deployment_is_not_ready(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    resources = {EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                 SERVICE_KEY: joint_service()}
    reconciler.reconcile(resources)

    backend.status = "DEPLOY_FAILED"
    out = reconciler.reconcile(resources)

    assert condition(out, EDGE_KEY, "Ready") == ("False", "DeployFailed")
    assert condition(out, SERVICE_KEY, "Ready") == ("False", "DeployFailed")


# -- what the operator tells about each resource (Kubernetes Events) ----------------------


@pytest.fixture
def events() -> list[tuple[tuple[str, str, str], str, str, str]]:
    return []


@pytest.fixture
def reporting(backend: FakeBackend, store: ArtifactStore, statuses: StatusStore,
              settings: ServeSettings, events: list) -> Reconciler:
    """A Reconciler whose events go to `events` (Kubernetes mode's KubeEvents sink)."""
    return Reconciler(backend, store, statuses, settings, PUBLIC_URL,
                      events=lambda key, type_, reason, message: events.append(
                          (key, type_, reason, message)))


def test_one_failure_is_one_warning_not_one_per_condition(
        reporting: Reconciler, events: list, archives: dict[str, Archive]) -> None:
    broken = inference_model(EDGE, "edge", [entry("v1", archives["edge-v1"], WRONG_SHA)])
    reporting.reconcile({EDGE_KEY: broken})
    warnings = [e for e in events if e[1] == "Warning"]
    # ArtifactVerified, Ready and Progressing all say the same thing: one event names all three.
    assert len(warnings) == 1, warnings
    (_, _, reason, message), = warnings
    assert reason == "Sha256Mismatch"
    assert message.startswith("ArtifactVerified=False, Ready=False, Progressing=False: ")
    reporting.reconcile({EDGE_KEY: broken})
    assert [e for e in events if e[1] == "Warning"] == warnings  # nothing changed: no event


def test_switching_one_model_tells_nothing_about_the_untouched_other(
        reporting: Reconciler, backend: FakeBackend, events: list,
        archives: dict[str, Archive]) -> None:
    v1, v2 = entry("v1", archives["edge-v1"]), entry("v2", archives["edge-v2"])
    cloud = cloud_model(archives)
    reporting.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target="v1"),
                         CLOUD_KEY: cloud})
    cloud_app = app_serving(backend.config, CLOUD)
    events.clear()
    # Serve applies the edge switch; while it does, it reports every application DEPLOYING.
    backend.status = "DEPLOYING"
    switched = {EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target="v2"), CLOUD_KEY: cloud}
    out = reporting.reconcile(switched)
    assert cloud_app is not None and served_version(backend.config, cloud_app) == "v1"
    assert condition(out, CLOUD_KEY, "Ready") == ("True", "Serving")
    assert condition(out, CLOUD_KEY, "Progressing") == ("False", "Complete")
    backend.status = "RUNNING"
    reporting.reconcile(switched)
    assert {e[0] for e in events} == {EDGE_KEY}, events
    assert any(e[2] == "Deploying" for e in events) and any(e[2] == "Complete" for e in events)


def test_coming_back_to_a_verified_version_does_not_claim_a_download(
        reporting: Reconciler, events: list, archives: dict[str, Archive]) -> None:
    v1, v2 = entry("v1", archives["edge-v1"]), entry("v2", archives["edge-v2"])
    for target in ("v1", "v2", "v1"):
        reporting.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2], target=target)})
    verified = [e[3] for e in events if e[2] == "Verified"]
    assert verified and not any("download" in message for message in verified), verified


def test_a_service_whose_edge_model_is_being_deleted_says_so(
        reporting: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    resources = {EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                 SERVICE_KEY: joint_service()}
    reporting.reconcile(resources)
    # Kubernetes mode: digits-edge has a deletionTimestamp; its finalizer holds it meanwhile.
    live = {k: v for k, v in resources.items() if k != EDGE_KEY}
    out = reporting.reconcile(live, deleting={EDGE_KEY})
    assert condition(out, SERVICE_KEY, "Ready") == ("False", "EdgeModelDeleting")
    assert app_serving(backend.config, SERVICE) is None
    out = reporting.reconcile(live)  # the finalizer released: the model is gone
    assert condition(out, SERVICE_KEY, "Ready") == ("False", "EdgeModelNotFound")


def test_a_service_whose_cloud_model_is_being_deleted_answers_from_the_edge(
        reporting: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    resources = {EDGE_KEY: edge_model(archives), SERVICE_KEY: joint_service()}
    out = reporting.reconcile(resources, deleting={CLOUD_KEY})
    assert condition(out, SERVICE_KEY, "CloudModelReady") == ("False", "CloudModelDeleting")
    gateway = app_serving(backend.config, SERVICE)
    assert gateway is not None and gateway_cloud(backend.config, gateway)["transport"] == "none"


def test_a_rejected_target_falls_back_to_the_version_that_ran_not_one_that_failed_in_serve(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    v1, v2 = entry("v1", archives["edge-v1"]), entry("v2", archives["edge-v2"])
    v3 = entry("v3", archives["edge-v2"], WRONG_SHA)
    reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2, v3], target="v1")})
    app = app_serving(backend.config, EDGE)
    assert app is not None
    backend.overrides[app] = "DEPLOY_FAILED"  # v2 verified, but its replicas never came up
    out = reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2, v3], target="v2")})
    assert condition(out, EDGE_KEY, "Ready") == ("False", "DeployFailed")

    out = reconciler.reconcile({EDGE_KEY: inference_model(EDGE, "edge", [v1, v2, v3], target="v3")})
    assert served_version(backend.config, app) == "v1"
    assert condition(out, EDGE_KEY, "Progressing") == ("False", "TargetVersionRejected")


@dataclass
class FakeWorkload:
    url: str
    ready: bool = True
    message: str = "1/1 replicas ready"


class FakeImages:
    """Kubernetes mode's image runner (Deployment + Service), recording what it was asked."""

    def __init__(self) -> None:
        self.ensured: list[str] = []

    def ensure(self, model: dict[str, Any]) -> FakeWorkload:
        self.ensured.append(model["metadata"]["name"])
        return FakeWorkload(url=f"http://{model['metadata']['name']}.default.svc:8080")


def test_two_image_models_with_one_model_name_run_only_the_first(
        backend: FakeBackend, store: ArtifactStore, statuses: StatusStore,
        settings: ServeSettings) -> None:
    images = FakeImages()
    reconciler = Reconciler(backend, store, statuses, settings, PUBLIC_URL, images=images)

    def image_model(name: str) -> Any:
        return parse_resource({"apiVersion": "jointserve.io/v1alpha1", "kind": IM,
                               "metadata": {"name": name, "namespace": "default"},
                               "spec": {"modelName": "shared", "deployToLayer": "cloud",
                                        "image": "example/model:1"}}, f"test:{name}")

    first, second = (IM, "default", "a-model"), (IM, "default", "b-model")
    out = reconciler.reconcile({second: image_model("b-model"), first: image_model("a-model")})
    assert images.ensured == ["a-model"]
    assert condition(out, first, "Ready") == ("True", "Serving")
    assert condition(out, second, "Ready") == ("False", "ModelNameConflict")


def test_an_autoscaled_service_gets_an_autoscaled_gateway(
        reconciler: Reconciler, backend: FakeBackend, archives: dict[str, Archive]) -> None:
    reconciler.reconcile({EDGE_KEY: edge_model(archives), CLOUD_KEY: cloud_model(archives),
                          SERVICE_KEY: joint_service(autoscaling={"minReplicas": 1,
                                                                  "maxReplicas": 4})})
    gateway = app_serving(backend.config, SERVICE)
    app = next(a for a in backend.config["applications"] if a["name"] == gateway)
    (deployment,) = app["deployments"]
    assert deployment["autoscaling_config"]["max_replicas"] == 4
    assert "num_replicas" not in deployment
