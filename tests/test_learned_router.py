"""LearnedRouter: the router's features, training it on a Dataset (scikit-learn, ONNX out),
the archive `jointserve train-router` writes, and the operator verifying it and handing it to
the gateway. Real models of the digits example, a real ArtifactStore; Serve is the
FakeBackend (the gateway's user_config is what is checked)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from jointserve.cli import main
from jointserve.evaluation import DatasetRef, EvaluationError, load_samples, train_router
from jointserve.protocol import LoadedModel
from jointserve.routing import ROUTER_FILE, ROUTER_INFO, RouterModel, build_policy, router_features
from jointserve.store import ArtifactStore
from tests._fakes import FakeBackend
from tests.test_evaluation import (
    condition,
    csv_dataset,
    gateway_config,
    model_doc,
    new_reconciler,
    passes,
    service_doc,
    settled,
)


@pytest.fixture(scope="module")
def split(example: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(example / "samples.npz") as arrays:
        return arrays["X"], arrays["y"]


@pytest.fixture(scope="module")
def trained(example: Path, split: tuple, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A router for the digits service, trained on the test split; its archive on disk."""
    tmp = tmp_path_factory.mktemp("router")
    store = ArtifactStore(tmp / "store")
    loaded = {}
    for name in ("digits-edge", "digits-cloud"):
        entry = model_doc(example, name).spec.file_for("v1")
        path = store.fetch(name, "v1", entry.downloadURL, entry.sha256sum).path
        loaded[name] = LoadedModel.load(name, "v1", path)
    ds = csv_dataset(tmp, *split)
    samples = load_samples(Path(ds.spec.url.removeprefix("file://")), ds.spec)
    router = train_router("digits", service_doc(example).spec, loaded["digits-edge"],
                          loaded["digits-cloud"], samples, DatasetRef("digits-test", ds.spec.sha256sum))
    archive = tmp / "router.tar.gz"
    archive.write_bytes(router.archive)
    return {"router": router, "archive": archive, "dataset": ds, "loaded": loaded,
            "samples": samples}


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_features_are_the_sorted_probabilities_margin_and_entropy() -> None:
    features = router_features(np.array([[0.2, 0.7, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    assert features.dtype == np.float32 and features.shape == (2, 5)
    np.testing.assert_allclose(features[0, :3], [0.7, 0.2, 0.1], rtol=1e-6)
    assert features[0, 3] == pytest.approx(0.5)
    assert features[1, 3] == pytest.approx(0.0, abs=1e-7)
    assert features[1, 4] == pytest.approx(1.0, rel=1e-6)  # uniform: the largest entropy
    with pytest.raises(ValueError, match=r"class probabilities \[N, C\] with C >= 2"):
        router_features(np.zeros((2, 1)))
    # With the edge's inputs: their values follow, one flat row per sample.
    images = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    both = router_features(np.array([[0.2, 0.7, 0.1], [0.5, 0.5, 0.0]]), images)
    assert both.shape == (2, 5 + 6)
    np.testing.assert_array_equal(both[1, 5:], images[1].ravel())
    with pytest.raises(ValueError, match="at most 4096 input values a row; this edge input has 5000"):
        router_features(np.array([[0.5, 0.5]]), np.zeros((1, 5000)))


def test_a_trained_router_scores_the_samples_the_cloud_fixes_higher(trained: dict, split: tuple) -> None:
    router, samples = trained["router"], trained["samples"]
    files = members(router.archive)
    assert set(files) == {ROUTER_FILE, ROUTER_INFO}
    info = json.loads(files[ROUTER_INFO])
    assert info == router.info and info["edgeVersion"] == "v1"
    # Cross-validation chose the features: the probabilities' 12, and maybe the 64 pixels.
    assert info["inputFeatures"] in (0, 64) and info["features"] == 12 + info["inputFeatures"]
    assert set(info["crossValidatedAuc"]) == {"probabilities", "probabilities+inputs"}
    held = info["heldOut"]
    assert held["rows"] == round(0.3 * len(samples)) and 0.0 <= held["auc"] <= 1.0
    model = RouterModel(files[ROUTER_FILE])
    edge = trained["loaded"]["digits-edge"].model
    pixels = split[0].astype(np.float32)
    probs = edge.run({"input": pixels})["probabilities"]
    cloud = trained["loaded"]["digits-cloud"].model.run({"input": pixels})
    fixes = (probs.argmax(axis=1) != split[1]) & (cloud["label"] == split[1])
    scores = model.scores(probs, pixels)
    # Ranked: a sample the cloud fixes mostly scores above one it does not (an AUC).
    above = (scores[fixes][:, None] > scores[~fixes][None, :]).mean()
    assert above > 0.8 and scores[fixes].mean() > 3 * scores[~fixes].mean()
    # One row at a time, as the gateway calls it, the same score.
    assert model.score(probs[0], pixels[0]) == pytest.approx(float(scores[0]), abs=1e-6)
    # As a policy: the router's probability is the score, and hard above the threshold.
    policy = build_policy("LearnedRouter", {"threshold": 0.5}, model)
    hardest = int(np.argmax(scores))
    decision = policy(probs[hardest], pixels[hardest])
    assert decision.hard and decision.score == pytest.approx(float(scores.max()), abs=1e-6)


@pytest.mark.parametrize("inputs, features", [(True, 12 + 64), (False, 12)])
def test_the_router_reads_the_input_when_told(trained: dict, example: Path, split: tuple,
                                              inputs: bool, features: int) -> None:
    router = train_router("digits", service_doc(example).spec, trained["loaded"]["digits-edge"],
                          trained["loaded"]["digits-cloud"], trained["samples"],
                          DatasetRef("digits-test", "0" * 64), inputs=inputs)
    assert router.info["features"] == features
    model = RouterModel(members(router.archive)[ROUTER_FILE])
    probs = trained["loaded"]["digits-edge"].model.run(
        {"input": split[0][:1].astype(np.float32)})["probabilities"]
    if inputs:
        with pytest.raises(ValueError, match="reads the edge model's input .64 values a row. "
                                             "and was given none"):
            model.score(probs[0])
        with pytest.raises(ValueError, match="trained on 64 input values a row; this edge "
                                             "input has 3"):
            model.score(probs[0], np.zeros(3))
    else:
        assert model.score(probs[0], np.zeros(3)) == model.score(probs[0])  # input unread


def test_an_untrained_learned_router_scores_as_margin() -> None:
    probs = np.array([0.6, 0.3, 0.1], np.float32)
    assert build_policy("LearnedRouter")(probs) == build_policy("Margin")(probs)


def test_nothing_to_learn_is_named(trained: dict, example: Path) -> None:
    samples = trained["samples"]
    edge = trained["loaded"]["digits-edge"]
    # The edge against itself as the cloud: it never fixes anything.
    with pytest.raises(EvaluationError) as info:
        train_router("digits", service_doc(example).spec, edge, edge, samples,
                     DatasetRef("digits-test", "0" * 64))
    assert info.value.reason == "InputsRejected" and "the cloud fixes 0 of 450" in info.value.detail


def learned_service(example: Path, archive: Path, sha256: str):
    return service_doc(example, hardExampleMining={
        "name": "LearnedRouter", "output": "probabilities",
        "router": {"url": archive.as_uri(), "sha256sum": sha256}})


def test_the_operator_verifies_the_router_and_hands_it_to_the_gateway(
        trained: dict, example: Path, tmp_path: Path) -> None:
    backend, store = FakeBackend(), ArtifactStore(tmp_path / "store")
    archive = trained["archive"]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    models = [model_doc(example, "digits-edge"), model_doc(example, "digits-cloud")]
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    status = passes(reconciler, [*models, learned_service(example, archive, digest)],
                    settled("digits", "RouterReady"))["digits"]
    assert condition(status, "RouterReady")[:2] == ("True", "RouterVerified")
    assert status["routerSha256"] == digest
    assert gateway_config(backend, "digits")["router"]["sha256"] == digest

    # A wrong sha256 is refused by name and the good router stays in place.
    wrong = learned_service(example, archive, "0" * 64)
    status = passes(reconciler, [*models, wrong],
                    lambda s: condition(s["digits"], "RouterReady")[0] == "False")["digits"]
    assert condition(status, "RouterReady")[1] == "Sha256Mismatch"
    assert status["routerSha256"] == digest
    assert gateway_config(backend, "digits")["router"]["sha256"] == digest


def test_a_learned_router_without_an_archive_says_so(example: Path, tmp_path: Path) -> None:
    backend, store = FakeBackend(), ArtifactStore(tmp_path / "store")
    service = service_doc(example, hardExampleMining={"name": "LearnedRouter"})
    status = passes(new_reconciler(backend, store, tmp_path / "state"),
                    [model_doc(example, "digits-edge"), model_doc(example, "digits-cloud"), service],
                    settled("digits", "RouterReady"))["digits"]
    assert condition(status, "RouterReady")[:2] == ("False", "RouterNotSet")
    assert "router" not in gateway_config(backend, "digits")
    assert condition(status, "Ready")[0] == "True"


def test_jointserve_train_router_writes_an_archive_and_the_spec(
        example: Path, split: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = tmp_path / "resources"
    files.mkdir()
    for name in ("digits-edge", "digits-cloud"):
        (files / f"{name}.yaml").write_text(yaml.safe_dump(
            model_doc(example, name).model_dump(mode="json", exclude_none=True)))
    (files / "digits.yaml").write_text(yaml.safe_dump(
        service_doc(example).model_dump(mode="json", exclude_none=True)))
    ds = csv_dataset(tmp_path, *split)
    (files / "data.yaml").write_text(yaml.safe_dump(ds.model_dump(mode="json", exclude_none=True)))
    out = tmp_path / "router.tar.gz"
    code = main(["train-router", str(files / "digits.yaml"), "--dataset", "digits-test",
                 "--out", str(out), "--state-dir", str(tmp_path / "state"), "--inputs", "yes"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary, held, *spec = printed.out.splitlines()
    assert summary.startswith(f"{out}: router on 76 features (12 of the edge's probabilities "
                              "+ 64 of its input)")
    assert held.startswith("held out: AUC ")
    hem = yaml.safe_load("\n".join(spec))["hardExampleMining"]
    assert hem["router"]["sha256sum"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert set(members(out.read_bytes())) == {ROUTER_FILE, ROUTER_INFO}


def training_service(example: Path, dataset: str = "digits-test", **train: object):
    return service_doc(example, hardExampleMining={
        "name": "LearnedRouter", "output": "probabilities",
        "train": {"dataset": dataset, **train}})


def test_the_operator_trains_the_router_and_serves_it(
        example: Path, split: tuple, tmp_path: Path) -> None:
    backend, store = FakeBackend(), ArtifactStore(tmp_path / "store")
    models = [model_doc(example, "digits-edge"), model_doc(example, "digits-cloud")]
    data = csv_dataset(tmp_path, *split)
    resources = [*models, data, training_service(example)]
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    statuses = passes(reconciler, resources, settled("digits", "RouterReady"))
    status = statuses["digits"]
    assert condition(status, "RouterReady")[:2] == ("True", "RouterVerified"), status
    router = status["router"]
    assert router["dataset"] == "digits-test" and router["edgeVersion"] == "v1"
    assert router["datasetSha256"] == data.spec.sha256sum and router["samples"] == len(split[1])
    assert router["features"] == 12 + router["inputFeatures"] and 0.5 < router["heldOutAuc"] <= 1
    # The archive travels in the Serve config as a data: URL, verified by its sha256.
    served = gateway_config(backend, "digits")["router"]
    assert served["url"] == router["url"] and served["url"].startswith("data:application/gzip;")
    assert served["sha256"] == router["sha256"] == status["routerSha256"]
    archive = store.path_for(served["model_name"], served["version"])
    info = json.loads((archive / ROUTER_INFO).read_text())
    assert info["datasetSha256"] == data.spec.sha256sum and info["features"] == router["features"]

    # A restarted operator finds the trained router in the status: nothing is trained again.
    again = new_reconciler(backend, store, tmp_path / "state")
    status = again.reconcile({(r.kind, r.metadata.namespace, r.metadata.name): r
                              for r in resources})[("JointInferenceService", "default", "digits")]
    assert status.router is not None and status.router.sha256 == router["sha256"]
    assert not [job for job in again._evaluator._jobs if job[0] == "router"]  # none started

    # Other data (half the rows): trained again, and the new router replaces the old one.
    half = csv_dataset(tmp_path, split[0][:300], split[1][:300], name="digits-test")
    resources = [*models, half, training_service(example)]

    def retrained(s: dict) -> bool:
        return (s["digits"].get("router", {}).get("datasetSha256") == half.spec.sha256sum
                and condition(s["digits"], "RouterReady")[0] == "True")

    statuses = passes(again, resources, retrained)
    status = statuses["digits"]
    assert status["router"]["samples"] == 300 and status["router"]["sha256"] != router["sha256"]
    assert gateway_config(backend, "digits")["router"]["sha256"] == status["router"]["sha256"]


def test_a_router_that_cannot_be_trained_keeps_the_last_one(
        example: Path, split: tuple, tmp_path: Path) -> None:
    backend, store = FakeBackend(), ArtifactStore(tmp_path / "store")
    models = [model_doc(example, "digits-edge"), model_doc(example, "digits-cloud")]
    reconciler = new_reconciler(backend, store, tmp_path / "state")
    good = [*models, csv_dataset(tmp_path, *split), training_service(example)]
    first = passes(reconciler, good, settled("digits", "RouterReady"))["digits"]["router"]
    # Told to read the input of a service whose edge input comes from... a dataset of one
    # class: the cloud fixes nothing there, so there is nothing to learn.
    ones = split[1] == split[1][0]
    bad = [*models, csv_dataset(tmp_path, split[0][ones][:5], split[1][ones][:5]),
           training_service(example)]
    status = passes(reconciler, bad,
                    lambda s: condition(s["digits"], "RouterReady")[0] == "False")["digits"]
    state, reason, message = condition(status, "RouterReady")
    assert reason == "InputsRejected" and "a router needs at least 2 of each kind" in message
    assert f"the router {first['sha256'][:12]} scores until a new one is trained" in message
    assert status["router"]["sha256"] == first["sha256"] == status["routerSha256"]
    assert gateway_config(backend, "digits")["router"]["sha256"] == first["sha256"]


def test_router_and_train_are_for_a_learned_router_one_at_a_time(example: Path) -> None:
    with pytest.raises(ValueError, match="set router .an archive. or train .the operator trains "
                                         "one., not both"):
        service_doc(example, hardExampleMining={
            "name": "LearnedRouter", "train": {"dataset": "d"},
            "router": {"url": "file:///r.tar.gz", "sha256sum": "0" * 64}})
    with pytest.raises(ValueError, match="train: is for name LearnedRouter .name is Margin."):
        service_doc(example, hardExampleMining={"name": "Margin", "train": {"dataset": "d"}})


def test_a_budget_is_calibrated_on_the_trained_routers_scores(
        example: Path, split: tuple, tmp_path: Path) -> None:
    backend, store = FakeBackend(), ArtifactStore(tmp_path / "store")
    models = [model_doc(example, "digits-edge"), model_doc(example, "digits-cloud")]
    service = service_doc(example, hardExampleMining={
        "name": "LearnedRouter", "output": "probabilities", "train": {"dataset": "digits-test"},
        "budget": {"cloudRatio": 0.2, "dataset": "digits-test"}})
    reconciler = new_reconciler(backend, store, tmp_path / "state")

    def calibrated_on_the_router(s: dict) -> bool:
        router = s["digits"].get("router")
        ready = [c for c in s["digits"].get("conditions", [])
                 if c["type"] in ("RouterReady", "Calibrated") and c["status"] == "True"]
        # Until the router is trained the LearnedRouter scores as Margin, and that cut
        # never applies to the router's scores.
        calibration = s["digits"].get("calibration", {})
        return (router is not None and len(ready) == 2
                and calibration.get("routerSha256") == router["sha256"]
                and gateway_config(backend, "digits").get("calibration") is not None)

    status = passes(reconciler, [*models, csv_dataset(tmp_path, *split), service],
                    calibrated_on_the_router)["digits"]
    calibration = status["calibration"]
    assert calibration["policy"] == "LearnedRouter"
    assert calibration["cloudRatio"] == pytest.approx(0.2, abs=0.005)
    config = gateway_config(backend, "digits")
    assert config["router"]["sha256"] == status["router"]["sha256"]
    assert config["calibration"]["threshold"] == calibration["threshold"]
