"""Evaluation over Datasets without Ray: the library, the Reconciler running spec.evaluation
in its worker thread, model selection by metrics, and `jointserve evaluate`.

Real pieces: the digits example's archives (scikit-learn models exported to ONNX), the
ArtifactStore on tmp_path (file:// URLs), the StatusStore, jointserve.datasets and the
gateway's own JointModel. Fake: Ray Serve (`FakeBackend`).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from jointserve.api import (
    Dataset,
    DatasetSpec,
    Evaluation,
    InferenceModel,
    JointInferenceService,
    load_file,
    parse_resource,
)
from jointserve.cli import main
from jointserve.contract import app_name
from jointserve.evaluation import (
    DatasetRef,
    EvaluationError,
    evaluate_model,
    evaluate_service,
    load_samples,
    predicted_labels,
)
from jointserve.operator import Reconciler, ServeSettings, StatusStore
from jointserve.protocol import LoadedModel
from jointserve.store import ArtifactStore
from tests._cloudserver import CloudServer
from tests._fakes import FakeBackend

NS = "default"
PUBLIC_URL = "http://127.0.0.1:8000"
THRESHOLD = 0.6  # examples/digits/digits.yaml's MaxProb threshold


# -- the example's models and test split, as files -------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def split(example: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(example / "samples.npz") as arrays:
        return arrays["X"], arrays["y"]


@pytest.fixture(scope="module")
def loaded(example: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    """digits-edge v1, v2 and digits-cloud v1, unpacked by a real store."""
    store = ArtifactStore(tmp_path_factory.mktemp("store"))
    out = {}
    for name, version in (("digits-edge", "v1"), ("digits-edge", "v2"), ("digits-cloud", "v1")):
        entry = model_doc(example, name).spec.file_for(version)
        assert entry is not None
        fetched = store.fetch(name, version, archive_url(example, entry.downloadURL), entry.sha256sum)
        out[f"{name}-{version}"] = LoadedModel.load(name, version, fetched.path)
    return out


def archive_url(example: Path, served: str) -> str:
    """The file:// URL of an archive the example's YAML lists at its file server."""
    return (example / "archives" / served.rsplit("/", 1)[1]).as_uri()


def model_doc(example: Path, name: str, **changes: Any) -> InferenceModel:
    """The example's InferenceModel `name`, with file:// URLs and `changes` to its spec."""
    doc = yaml.safe_load((example / f"{name}.yaml").read_text())
    for entry in doc["spec"]["manifest"]:
        entry["downloadURL"] = archive_url(example, entry["downloadURL"])
    doc["spec"].update(changes)
    model = parse_resource(doc, name)
    assert isinstance(model, InferenceModel)
    return model


def csv_bytes(X: np.ndarray, y: np.ndarray) -> bytes:
    lines = [",".join([f"px{i}" for i in range(X.shape[1])] + ["label"])]
    lines += [",".join([repr(float(v)) for v in row] + [str(int(label))]) for row, label in zip(X, y)]
    return ("\n".join(lines) + "\n").encode()


def publish(tmp_path: Path, name: str, data: bytes) -> tuple[str, str]:
    path = tmp_path / "published" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.as_uri(), sha(data)


def csv_dataset(tmp_path: Path, X: np.ndarray, y: np.ndarray, name: str = "digits-test") -> Dataset:
    url, digest = publish(tmp_path, f"{name}.csv", csv_bytes(X, y))
    return Dataset.model_validate({
        "metadata": {"name": name},
        "spec": {"url": url, "sha256sum": digest, "format": "csv",
                 "csv": {"header": True, "labelColumn": "label"}}})


def service_doc(example: Path, **spec: Any) -> JointInferenceService:
    (service,) = load_file(example / "digits.yaml")
    assert isinstance(service, JointInferenceService)
    if spec:
        service = JointInferenceService.model_validate(
            {**service.model_dump(exclude_none=True),
             "spec": {**service.spec.model_dump(exclude_none=True), **spec}})
    return service


# -- the library ------------------------------------------------------------------------------


def edge_truth(model: LoadedModel, X: np.ndarray) -> np.ndarray:
    outputs = model.model.run({"input": X})
    return outputs["label"], outputs["probabilities"]


def test_model_accuracy_is_the_share_of_right_labels(loaded: dict, split: tuple, tmp_path: Path) -> None:
    X, y = split
    ds = csv_dataset(tmp_path, X, y)
    path = Path(ds.spec.url.removeprefix("file://"))
    samples = load_samples(path, ds.spec)
    assert len(samples) == len(y) and samples.labels[:3] == [str(v) for v in y[:3]]
    seen: list[tuple[int, int]] = []
    metrics = evaluate_model(loaded["digits-edge-v1"], samples, Evaluation(dataset="digits-test"),
                             DatasetRef("digits-test", "ab" * 32), "digest",
                             lambda done, total: seen.append((done, total)))
    labels, _ = edge_truth(loaded["digits-edge-v1"], X)
    assert metrics.accuracy == pytest.approx(float(np.mean(labels == y)))
    assert metrics.samples == len(y) and metrics.version == "v1"
    assert metrics.datasetSha256 == "ab" * 32 and metrics.settingsDigest == "digest"
    assert seen[-1] == (len(y), len(y)) and len(seen) >= 2  # chunked, progress to the end
    confusion = np.array(metrics.confusion.counts)
    assert confusion.sum() == len(y) and np.trace(confusion) == int(np.sum(labels == y))
    recall_8 = float(np.mean(labels[y == 8] == 8))
    assert metrics.perClassRecall["8"] == pytest.approx(recall_8)


def test_scores_and_class_ids_predict_the_same(loaded: dict, split: tuple) -> None:
    X, _ = split
    outputs = loaded["digits-cloud-v1"].model.run({"input": X})
    by_id = predicted_labels(outputs, "label", None)
    by_scores = predicted_labels(outputs, "probabilities", None)
    assert by_id == by_scores
    assert predicted_labels(outputs, None, None) == by_id  # default: the integer output
    named = predicted_labels(outputs, "label", [f"digit {i}" for i in range(10)])
    assert named[0] == f"digit {by_id[0]}"


def test_service_evaluation_routes_like_the_gateway(loaded: dict, split: tuple, example: Path) -> None:
    X, y = split
    edge, cloud = loaded["digits-edge-v1"], loaded["digits-cloud-v1"]
    samples = load_samples(_npz(X, y), DatasetSpec(url="file:///d.npz", sha256sum="0" * 64,
                                                   format="npz"))
    metrics = evaluate_service("digits", service_doc(example).spec, edge, cloud, samples,
                               DatasetRef("digits-test", "0" * 64))
    edge_labels, probabilities = edge_truth(edge, X)
    cloud_labels, _ = edge_truth(cloud, X)
    hard = probabilities.max(axis=1) < THRESHOLD  # MaxProb: below the threshold is hard
    joint = np.where(hard, cloud_labels, edge_labels)
    assert metrics.cloudRatio == pytest.approx(float(hard.mean()))
    assert metrics.accuracy == pytest.approx(float(np.mean(joint == y)))
    assert metrics.edgeAccuracy == pytest.approx(float(np.mean(edge_labels == y)))
    assert metrics.cloudAccuracy == pytest.approx(float(np.mean(cloud_labels == y)))
    gap = metrics.cloudAccuracy - metrics.edgeAccuracy
    assert metrics.pgr == pytest.approx((metrics.accuracy - metrics.edgeAccuracy) / gap)
    assert (metrics.edgeVersion, metrics.cloudVersion, metrics.version) == ("v1", "v1", "v1+v1")


def _npz(X: np.ndarray, y: np.ndarray) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "d.npz"
    np.savez(path, X=X, y=y)
    return path


@pytest.mark.parametrize("data, problem", [
    (b"a,b,label\n1,2,0\n", "input 'input' takes [-1, 64]"),
    (b"a,label\n1,0\nx,1\n", "line 3: column 'a' is not a number ('x')"),
    (b"a,b\n1,2\n", None),  # no label column in the options below: refused before running
])
def test_samples_the_model_cannot_take_are_named(loaded: dict, tmp_path: Path, data: bytes,
                                                 problem: str | None) -> None:
    url, digest = publish(tmp_path, "bad.csv", data)
    options = {"header": True, "labelColumn": "label"} if problem else {"header": True}
    spec = DatasetSpec(url=url, sha256sum=digest, format="csv", csv=options)
    with pytest.raises(EvaluationError) as caught:
        samples = load_samples(Path(url.removeprefix("file://")), spec)
        evaluate_model(loaded["digits-edge-v1"], samples, Evaluation(dataset="bad"),
                       DatasetRef("bad", digest))
    assert caught.value.reason == "InputsRejected"
    assert (problem or "has no label column") in caught.value.detail


def test_an_output_that_is_not_there_is_named(loaded: dict, split: tuple) -> None:
    X, _ = split
    outputs = loaded["digits-edge-v1"].model.run({"input": X[:2]})
    with pytest.raises(EvaluationError, match="evaluation.output 'scores' is not an output"):
        predicted_labels(outputs, "scores", None)


# -- the Reconciler: spec.evaluation ------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def new_reconciler(backend: FakeBackend, store: ArtifactStore, state: Path) -> Reconciler:
    return Reconciler(backend, store, StatusStore(state), ServeSettings(store_root=str(store.root)),
                      PUBLIC_URL)


def passes(reconciler: Reconciler, resources: list, until: Any, limit_s: float = 60.0) -> dict:
    """Reconcile until `until(statuses)` holds (the evaluations run in the reconciler's worker
    thread); the statuses as JSON. Fails after `limit_s` with the last statuses."""
    keyed = {(r.kind, r.metadata.namespace, r.metadata.name): r for r in resources}
    deadline = time.monotonic() + limit_s
    while True:
        out = {k[2]: s.model_dump(mode="json", exclude_none=True)
               for k, s in reconciler.reconcile(keyed).items()}
        if until(out):
            return out
        assert time.monotonic() < deadline, f"not reached in {limit_s} s: {out}"
        time.sleep(0.05)


def settled(name: str, type_: str) -> Any:
    """A `passes` goal: `name`'s condition `type_` is there and no longer Unknown."""
    def done(statuses: dict) -> bool:
        cond = next((c for c in statuses[name].get("conditions", []) if c["type"] == type_),
                    None)
        return cond is not None and cond["status"] != "Unknown"
    return done


def evaluated(name: str) -> Any:
    return settled(name, "Evaluated")


def condition(status: dict, type_: str) -> tuple[str, str, str]:
    found = next(c for c in status["conditions"] if c["type"] == type_)
    return found["status"], found["reason"], found["message"]


def test_spec_evaluation_writes_metrics_into_the_status(backend: FakeBackend, store: ArtifactStore,
                                                        tmp_path: Path, example: Path,
                                                        split: tuple, loaded: dict) -> None:
    X, y = split
    ds = csv_dataset(tmp_path, X, y)
    edge = model_doc(example, "digits-edge", evaluation={"dataset": "digits-test"})
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    out = passes(reconciler, [ds, edge], evaluated("digits-edge"))
    status = out["digits-edge"]
    assert condition(status, "Evaluated")[:2] == ("True", "Evaluated")
    (metrics,) = status["metrics"]
    labels, _ = edge_truth(loaded["digits-edge-v1"], X)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(labels == y)))
    assert metrics["datasetSha256"] == ds.spec.sha256sum and metrics["version"] == "v1"
    assert condition(status, "Ready")[0] == "True"  # serving untouched

    # A restarted operator finds the metrics in the saved status: no second run.
    again = new_reconciler(backend, store, tmp_path / "state")
    first = {k[2]: s for k, s in again.reconcile({
        ("Dataset", NS, "digits-test"): ds, ("InferenceModel", NS, "digits-edge"): edge}).items()}
    assert first["digits-edge"].metrics[0].evaluatedAt == metrics["evaluatedAt"]
    assert condition(first["digits-edge"].model_dump(), "Evaluated")[0] == "True"


def test_a_new_target_version_is_evaluated_and_listed_first(backend: FakeBackend,
                                                             store: ArtifactStore, tmp_path: Path,
                                                             example: Path, split: tuple) -> None:
    ds = csv_dataset(tmp_path, *split)
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    v1 = model_doc(example, "digits-edge", evaluation={"dataset": "digits-test"})
    passes(reconciler, [ds, v1], evaluated("digits-edge"))
    v2 = model_doc(example, "digits-edge", evaluation={"dataset": "digits-test"},
                   targetVersion="v2")
    out = passes(reconciler, [ds, v2], lambda s: evaluated("digits-edge")(s)
                 and s["digits-edge"]["metrics"][0]["version"] == "v2")
    versions = [m["version"] for m in out["digits-edge"]["metrics"]]
    accuracy = {m["version"]: m["accuracy"] for m in out["digits-edge"]["metrics"]}
    assert versions == ["v2", "v1"] and accuracy["v2"] > accuracy["v1"]


def test_a_followed_dataset_that_changes_is_evaluated_again(backend: FakeBackend,
                                                             store: ArtifactStore, tmp_path: Path,
                                                             example: Path, split: tuple) -> None:
    X, y = split
    half = len(y) // 2
    url, _ = publish(tmp_path, "digits-test.csv", csv_bytes(X[:half], y[:half]))
    ds = Dataset.model_validate({
        "metadata": {"name": "digits-test"},
        "spec": {"url": url, "refreshSeconds": 1, "format": "csv",
                 "csv": {"labelColumn": "label"}}})
    edge = model_doc(example, "digits-edge", evaluation={"dataset": "digits-test"})
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    first = passes(reconciler, [ds, edge], evaluated("digits-edge"))
    assert first["digits-edge"]["metrics"][0]["samples"] == half

    # The whole split replaces the half: a new sha256 (and mtime); within a refresh it is
    # counted, and the model is evaluated on it; both results are kept, the newest first.
    path = tmp_path / "published" / "digits-test.csv"
    before = path.stat().st_mtime_ns
    path.write_bytes(csv_bytes(X, y))
    os.utime(path, ns=(before + 10**9, before + 10**9))
    out = passes(reconciler, [ds, edge], lambda s: evaluated("digits-edge")(s)
                 and s["digits-edge"]["metrics"][0]["samples"] == len(y))
    assert out["digits-test"]["sha256"] == sha(csv_bytes(X, y))
    assert [m["samples"] for m in out["digits-edge"]["metrics"]] == [len(y), half]
    assert out["digits-edge"]["metrics"][0]["datasetSha256"] == out["digits-test"]["sha256"]


def test_evaluation_problems_are_named_and_serving_goes_on(backend: FakeBackend,
                                                           store: ArtifactStore, tmp_path: Path,
                                                           example: Path) -> None:
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    missing = model_doc(example, "digits-edge", evaluation={"dataset": "nowhere"})
    out = passes(reconciler, [missing], evaluated("digits-edge"))
    assert condition(out["digits-edge"], "Evaluated")[:2] == ("False", "DatasetNotFound")
    assert "'nowhere'" in condition(out["digits-edge"], "Evaluated")[2]

    url, digest = publish(tmp_path, "narrow.csv", b"a,b,label\n1,2,0\n3,4,1\n")
    narrow = Dataset.model_validate({"metadata": {"name": "narrow"}, "spec": {
        "url": url, "sha256sum": digest, "format": "csv", "csv": {"labelColumn": "label"}}})
    rejected = model_doc(example, "digits-edge", evaluation={"dataset": "narrow"})
    out = passes(reconciler, [narrow, rejected], evaluated("digits-edge"))
    status, reason, message = condition(out["digits-edge"], "Evaluated")
    assert (status, reason) == ("False", "InputsRejected") and "[-1, 64]" in message
    assert condition(out["digits-edge"], "Ready")[0] == "True"
    assert out["digits-edge"]["metrics"] == []


def test_a_joint_service_reports_cloud_ratio_and_pgr(backend: FakeBackend, store: ArtifactStore,
                                                     tmp_path: Path, example: Path,
                                                     split: tuple) -> None:
    ds = csv_dataset(tmp_path, *split)
    service = service_doc(example, evaluation={"dataset": "digits-test"})
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    resources = [ds, model_doc(example, "digits-edge"), model_doc(example, "digits-cloud"), service]
    out = passes(reconciler, resources, evaluated("digits"))
    (metrics,) = out["digits"]["metrics"]
    assert 0.05 < metrics["cloudRatio"] < 0.3
    assert metrics["edgeAccuracy"] < metrics["accuracy"] <= metrics["cloudAccuracy"] + 0.01
    assert 0.5 < metrics["pgr"] <= 1.2


def test_a_remote_cloud_is_evaluated_over_http_like_a_local_one(
        backend: FakeBackend, store: ArtifactStore, tmp_path: Path, example: Path,
        split: tuple) -> None:
    """cloudModel.url: the evaluation calls the remote server as the gateway would, and
    measures what the same model measured in process."""
    ds = csv_dataset(tmp_path, *split)
    entry = model_doc(example, "digits-cloud").spec.file_for("v1")
    assert entry is not None
    cloud_dir = ArtifactStore(tmp_path / "remote").fetch("digits-cloud", "v1", entry.downloadURL,
                                                          entry.sha256sum).path
    server = CloudServer(cloud_dir, "digits-cloud", "v7")
    try:
        remote = {"url": server.base_url, "modelName": "digits-cloud"}
        service = service_doc(example, evaluation={"dataset": "digits-test"}, cloudModel=remote)
        reconciler = new_reconciler(backend, store, tmp_path / "state")
        out = passes(reconciler, [ds, model_doc(example, "digits-edge"), service],
                     evaluated("digits"))
        assert condition(out["digits"], "Evaluated")[:2] == ("True", "Evaluated")
        (metrics,) = out["digits"]["metrics"]
        assert (metrics["version"], metrics["cloudVersion"]) == ("v1+remote", "v7")
        assert server.request_count > 0

        local = service_doc(example, evaluation={"dataset": "digits-test"})
        in_process = passes(new_reconciler(backend, store, tmp_path / "state-local"),
                            [ds, model_doc(example, "digits-edge"),
                             model_doc(example, "digits-cloud"), local],
                            evaluated("digits"))["digits"]["metrics"][0]
        for name in ("accuracy", "cloudRatio", "edgeAccuracy", "cloudAccuracy", "pgr"):
            assert metrics[name] == pytest.approx(in_process[name]), name

        # A cloud that stops answering fails the evaluation by name; nothing is measured.
        server.behave("error500")
        failing = service_doc(example, evaluation={"dataset": "digits-test"},
                              cloudModel=remote, hardExampleMining={
                                  "name": "MaxProb", "parameters": {"threshold": 0.99}})
        out = passes(new_reconciler(backend, store, tmp_path / "state-failing"),
                     [ds, model_doc(example, "digits-edge"), failing], evaluated("digits"))
        status, reason, message = condition(out["digits"], "Evaluated")
        assert (status, reason) == ("False", "EvaluationFailed")
        assert "the cloud model did not answer" in message
        assert out["digits"].get("metrics", []) == []
    finally:
        server.stop()


# -- offload budget (hardExampleMining.budget) ---------------------------------------------------


def gateway_config(backend: FakeBackend, service: str) -> dict:
    """What the last applied Serve config tells the gateway replicas that answer `service`:
    the gateway's own fields (edge) with that service's (spec, cloud, calibration, router)."""
    for app in backend.config["applications"]:
        config = app["deployments"][0].get("user_config") or {}
        for entry in config.get("services", []):
            if entry["service"] == service:
                return {**config, **entry}
    raise AssertionError(f"no gateway answers {service}")


def calibrated_of(name: str) -> Any:
    return settled(name, "Calibrated")


def test_a_budget_is_calibrated_and_the_gateway_gets_the_cut(
        backend: FakeBackend, store: ArtifactStore, tmp_path: Path, example: Path,
        split: tuple, capsys: pytest.CaptureFixture) -> None:
    ds = csv_dataset(tmp_path, *split)
    service = service_doc(example, evaluation={"dataset": "digits-test"}, hardExampleMining={
        "name": "MaxProb", "parameters": {"threshold": 0.6}, "output": "probabilities",
        "budget": {"cloudRatio": 0.3, "dataset": "digits-test"}})
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    resources = [ds, model_doc(example, "digits-edge"), model_doc(example, "digits-cloud"), service]
    # Before the calibration the gateway judges by the policy's own threshold.
    first = passes(reconciler, resources, lambda s: True)
    assert "calibration" not in gateway_config(backend, "digits")
    assert condition(first["digits"], "Calibrated")[:2] == ("Unknown", "Calibrating")

    out = passes(reconciler, resources, lambda s: calibrated_of("digits")(s)
                 and s["digits"]["metrics"][0]["settingsDigest"] != "" and evaluated("digits")(s)
                 and "calibration" in gateway_config(backend, "digits"))
    calibration = out["digits"]["calibration"]
    n = len(split[1])
    assert condition(out["digits"], "Calibrated")[:2] == ("True", "Calibrated")
    assert calibration["cloudRatio"] == pytest.approx(round(0.3 * n) / n)
    assert calibration["edgeAccuracy"] < calibration["accuracy"] <= calibration["cloudAccuracy"]
    assert (calibration["policy"], calibration["budget"]) == ("MaxProb", 0.3)
    # The gateway replicas get the cut in their user_config (a reconfigure, no restart).
    assert gateway_config(backend, "digits")["calibration"]["threshold"] == calibration["threshold"]
    # The service's evaluation, once it runs with the cut, sends the budgeted share.
    passes(reconciler, resources, lambda s: abs(s["digits"]["metrics"][0]["cloudRatio"] - 0.3) < 0.02)
    assert main(["get", "jis", "--state-dir", str(tmp_path / "state")]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[-2:] == ["BUDGET", "URL"]
    assert row.split()[-2] == f"30%@{calibration['threshold']:.4g}"


def test_tied_scores_still_meet_the_budget(backend: FakeBackend, store: ArtifactStore,
                                           tmp_path: Path, example: Path, split: tuple) -> None:
    """CloudOnly scores every input 1.0: all tied. The cut sends a fifth of them, at random."""
    ds = csv_dataset(tmp_path, *split)
    service = service_doc(example, evaluation={"dataset": "digits-test"}, hardExampleMining={
        "name": "CloudOnly", "budget": {"cloudRatio": 0.2, "dataset": "digits-test"}})
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    resources = [ds, model_doc(example, "digits-edge"), model_doc(example, "digits-cloud"), service]
    out = passes(reconciler, resources, lambda s: calibrated_of("digits")(s) and evaluated("digits")(s)
                 and s["digits"]["metrics"][0]["cloudRatio"] < 0.5)
    calibration = out["digits"]["calibration"]
    assert (calibration["threshold"], calibration["distinctScores"]) == (1.0, 1)
    assert calibration["atThreshold"] == pytest.approx(0.2, abs=1 / len(split[1]))
    assert abs(out["digits"]["metrics"][0]["cloudRatio"] - 0.2) < 0.05

    # Live traffic: the gateways' counters, as Serve reports them on each pass.
    gateway = app_name(("JointInferenceService", NS, "digits"))
    backend.counters[gateway] = {"inferenceNumber": 1000, "hardExampleNumber": 200}
    passes(reconciler, resources, lambda s: True)
    backend.counters[gateway] = {"inferenceNumber": 2000, "hardExampleNumber": 600}
    status = passes(reconciler, resources, lambda s: True)["digits"]
    # Within the window since the first pass (no traffic then): 600 hard of 2000.
    assert (status["offload"]["cloudRatio"], status["offload"]["samples"]) == (0.3, 2000)
    assert condition(status, "OffloadBudget")[:2] == ("False", "OverBudget")


def test_a_budget_on_a_missing_dataset_is_named(backend: FakeBackend, store: ArtifactStore,
                                                tmp_path: Path, example: Path) -> None:
    service = service_doc(example, hardExampleMining={
        "name": "MaxProb", "budget": {"cloudRatio": 0.2, "dataset": "nowhere"}})
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    out = passes(reconciler, [model_doc(example, "digits-edge"), model_doc(example, "digits-cloud"),
                              service], calibrated_of("digits"))
    status, reason, message = condition(out["digits"], "Calibrated")
    assert (status, reason) == ("False", "DatasetNotFound") and "nowhere" in message
    assert "calibration" not in gateway_config(backend, "digits")
    assert condition(out["digits"], "Ready")[0] == "True"  # served on the policy's threshold


# -- model selection ----------------------------------------------------------------------------


def edge_candidates(example: Path) -> list[InferenceModel]:
    """Two edge models of the example: `weak` serves v1, `strong` serves v2."""
    out = []
    for name, version in (("weak", "v1"), ("strong", "v2")):
        doc = model_doc(example, "digits-edge", targetVersion=version,
                        modelName=f"digits-{name}").model_dump(exclude_none=True)
        doc["metadata"] = {"name": name, "labels": {"app": "digits"}}
        out.append(parse_resource(doc, name))
    return out


def selecting_service(example: Path, **rank_by: Any) -> JointInferenceService:
    return service_doc(example, edgeModel={
        "selector": {"layer": "edge", "matchLabels": {"app": "digits"}},
        "rankBy": {"dataset": "digits-test", "maximize": "accuracy", **rank_by}})


def test_a_selector_picks_the_best_model_on_the_dataset(backend: FakeBackend, store: ArtifactStore,
                                                        tmp_path: Path, example: Path,
                                                        split: tuple) -> None:
    ds = csv_dataset(tmp_path, *split)
    resources = [ds, *edge_candidates(example), model_doc(example, "digits-cloud"),
                 selecting_service(example)]
    reconciler = new_reconciler(backend, store, tmp_path / "state")

    def chose_from_both(statuses: dict) -> bool:
        # A choice is made as soon as one candidate is measured; wait for both.
        edge = statuses["digits"].get("selection", {}).get("edge", {})
        return edge.get("model") is not None and "still evaluating" not in edge["reason"]
    out = passes(reconciler, resources, chose_from_both)
    choice = out["digits"]["selection"]["edge"]
    assert choice["model"] == "strong" and choice["version"] == "v2"
    assert "best of 2" in choice["reason"] and "weak" in choice["reason"]
    # Both candidates were evaluated for the selection, into their own statuses.
    assert out["weak"]["metrics"][0]["accuracy"] < out["strong"]["metrics"][0]["accuracy"]
    gateway = next(a for a in backend.config["applications"] if a["name"].endswith("digits"))
    assert "digits-strong" in str(gateway) and "digits-weak" not in str(gateway)


def test_a_minimum_no_candidate_reaches_is_the_reason(backend: FakeBackend, store: ArtifactStore,
                                                     tmp_path: Path, example: Path,
                                                     split: tuple) -> None:
    ds = csv_dataset(tmp_path, *split)
    service = selecting_service(example, minimum={"accuracy": 0.999})
    resources = [ds, *edge_candidates(example), model_doc(example, "digits-cloud"), service]
    reconciler = new_reconciler(backend, store, tmp_path / "state")

    def settled(statuses: dict) -> bool:
        return "no candidate reaches" in condition(statuses["digits"], "Ready")[2]
    out = passes(reconciler, resources, settled)
    assert condition(out["digits"], "Ready")[:2] == ("False", "NoModelSelected")
    assert out["digits"]["selection"]["edge"].get("model") is None


def test_a_selector_that_matches_nothing_names_itself(backend: FakeBackend, store: ArtifactStore,
                                                      tmp_path: Path, example: Path) -> None:
    service = service_doc(example, edgeModel={"selector": {"task": "detection"}})
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    out = passes(reconciler, [model_doc(example, "digits-edge"), model_doc(example, "digits-cloud"),
                              service], lambda s: True)
    status, reason, message = condition(out["digits"], "Ready")
    assert (status, reason) == ("False", "NoModelSelected")
    assert "'task': 'detection'" in message


# -- the command line ---------------------------------------------------------------------------


def test_jointserve_evaluate_prints_the_metrics(tmp_path: Path, example: Path, split: tuple,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    X, y = split
    ds = csv_dataset(tmp_path, X, y)
    files = tmp_path / "resources"
    files.mkdir()
    (files / "edge.yaml").write_text(yaml.safe_dump(
        model_doc(example, "digits-edge").model_dump(mode="json", exclude_none=True)))
    (files / "data.yaml").write_text(yaml.safe_dump(ds.model_dump(mode="json", exclude_none=True)))
    code = main(["evaluate", str(files / "edge.yaml"), "--dataset", "digits-test",
                 "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = dict(line.split(None, 1) for line in out.out.splitlines() if line.strip()
                 and not line.startswith(("class", "true")))
    assert float(lines["accuracy"]) == pytest.approx(0.9467, abs=5e-4)
    assert lines["samples"].strip() == str(len(y))
    assert "evaluating digits-edge on digits-test: 450/450 samples" in out.err


def test_jointserve_evaluate_names_a_missing_dataset(tmp_path: Path, example: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(
        model_doc(example, "digits-edge").model_dump(mode="json", exclude_none=True)))
    code = main(["evaluate", str(path), "--dataset", "nope", "--state-dir", str(tmp_path / "s")])
    assert code == 2
    assert "no Dataset named 'nope'" in capsys.readouterr().err
