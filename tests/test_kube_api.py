"""The CRDs against a real kube-apiserver, driven with kubectl exactly as a user types it.

What only a real API server can show: the CRDs are accepted (structural schema, CEL rules that
compile and fit the cost budget), short names and printer columns work, bad resources are
refused by the server itself with the field named, and the status subresource behaves (status
writes do not bump metadata.generation, spec writes do). These tests fail, never skip, when the
server cannot start.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests._kube import REPO, KubeAPIServer
from tests.test_training_model_api import training_doc

NS = "kube-api-test"
EXAMPLE = REPO / "examples" / "digits"
CRDS = ("inferencemodels.jointserve.io", "jointinferenceservices.jointserve.io", "datasets.jointserve.io")


@pytest.fixture(scope="module")
def kube(kube_api: KubeAPIServer) -> KubeAPIServer:
    """The session's server, with a namespace of this module's own (nothing else touches it)."""
    kube_api.kubectl_ok("create", "namespace", NS)
    return kube_api


def example(name: str, new_name: str | None = None) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLE / f"{name}.yaml").read_text(encoding="utf-8"))
    if new_name:
        doc["metadata"]["name"] = new_name
    return doc


def apply(kube: KubeAPIServer, doc: dict[str, Any]):
    return kube.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc))


def table_row(table: str) -> dict[str, str]:
    """kubectl's one-row table as {column: value}, cut at the header's column starts (a value
    may be empty, or hold spaces as a MESSAGE does)."""
    header, row = table.splitlines()
    names = header.split()
    starts = [header.index(f"{name}") if i == 0 else header.index(f"   {name}") + 3
              for i, name in enumerate(names)]
    ends = starts[1:] + [None]
    return {name: row[start:end].strip() for name, start, end in zip(names, starts, ends)}


def get_json(kube: KubeAPIServer, kind: str, name: str) -> dict[str, Any]:
    return json.loads(kube.kubectl_ok("get", kind, name, "-n", NS, "-o", "json"))


# -- (a) the server -------------------------------------------------------------------------------

def test_readyz_answers_ok(kube: KubeAPIServer) -> None:
    assert kube.kubectl_ok("get", "--raw", "/readyz").strip() == "ok"


def test_client_and_server_are_the_pinned_release(kube: KubeAPIServer) -> None:
    from tests._kube import kube_version

    versions = json.loads(kube.kubectl_ok("version", "-o", "json"))
    assert versions["serverVersion"]["gitVersion"] == kube_version()
    assert versions["clientVersion"]["gitVersion"] == kube_version()


# -- (b) CRDs, short names, printer columns -------------------------------------------------------

@pytest.mark.parametrize("crd", CRDS)
def test_crd_is_established(kube: KubeAPIServer, crd: str) -> None:
    status = kube.kubectl_ok("get", "crd", crd, "-o",
                             'jsonpath={.status.conditions[?(@.type=="Established")].status}')
    assert status == "True"


def test_short_names_and_category(kube: KubeAPIServer) -> None:
    resources = kube.kubectl_ok("api-resources", "--api-group=jointserve.io", "--no-headers")
    rows = {line.split()[0]: line.split() for line in resources.splitlines()}
    assert "im" in rows["inferencemodels"] and "jis" in rows["jointinferenceservices"]
    assert "tm" in rows["trainingmodels"]
    for short in ("im", "jis", "dset", "tm", "jointserve"):  # jointserve: the category, every kind
        kube.kubectl_ok("get", short, "-n", NS)


def test_valid_inference_model_is_listed_with_printer_columns(kube: KubeAPIServer) -> None:
    done = apply(kube, example("digits-edge"))
    assert done.returncode == 0, done.stderr
    assert "inferencemodel.jointserve.io/digits-edge created" in done.stdout

    header, *rows = kube.kubectl_ok("get", "inferencemodels", "-n", NS).splitlines()
    assert header.split() == ["NAME", "MODEL", "LAYER", "TARGET", "VERSION", "READY", "REASON",
                              "ACCURACY", "F1", "URL", "AGE"]
    assert [row.split()[:4] for row in rows] == [["digits-edge", "digits-edge", "edge", "v1"]]
    # Defaults from the schema are applied by the server, not only by the Python models.
    assert get_json(kube, "im", "digits-edge")["spec"]["replicas"] == 1


def test_a_failing_model_shows_its_reason_and_wide_its_message(kube: KubeAPIServer) -> None:
    assert apply(kube, example("digits-edge")).returncode == 0
    message = "sha256 of http://files/digits-edge-v1.tar.gz is 9f2c..., the manifest says 6c1f..."
    status = {"status": {"conditions": [
        {"type": "ArtifactVerified", "status": "False", "reason": "Sha256Mismatch",
         "message": message, "lastTransitionTime": "2026-12-02T00:00:00Z"},
        {"type": "Ready", "status": "False", "reason": "Sha256Mismatch", "message": message,
         "lastTransitionTime": "2026-12-02T00:00:00Z"}]}}
    kube.kubectl_ok("patch", "im", "digits-edge", "-n", NS, "--subresource=status",
                    "--type=merge", "-p", json.dumps(status))
    columns = table_row(kube.kubectl_ok("get", "im", "digits-edge", "-n", NS))
    assert "MESSAGE" not in columns  # priority 1: only with -o wide
    assert (columns["TARGET"], columns["VERSION"], columns["READY"], columns["REASON"]) == (
        "v1", "", "False", "Sha256Mismatch")
    wide = kube.kubectl_ok("get", "im", "digits-edge", "-n", NS, "-o", "wide")
    print(f"\n$ kubectl get im digits-edge -o wide\n{wide}")
    assert table_row(wide)["MESSAGE"] == message


def test_dataset_is_listed_with_its_counts(kube: KubeAPIServer) -> None:
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
           "metadata": {"name": "digits-test"},
           "spec": {"url": "http://127.0.0.1:8808/digits-test.csv", "sha256sum": "0" * 64,
                    "format": "csv", "csv": {"labelColumn": "label"}}}
    done = apply(kube, doc)
    assert done.returncode == 0, done.stderr
    status = {"status": {"numberOfSamples": 360, "numberOfClasses": 10,
                         "classes": {str(d): 36 for d in range(10)},
                         "facts": {"columns": ["p0", "label"], "labelColumn": "label"},
                         "conditions": [{"type": "Ready", "status": "True", "reason": "Counted",
                                         "message": "360 samples, 10 classes",
                                         "lastTransitionTime": "2026-12-02T00:00:00Z"}]}}
    kube.kubectl_ok("patch", "dset", "digits-test", "-n", NS, "--subresource=status",
                    "--type=merge", "-p", json.dumps(status))
    columns = table_row(kube.kubectl_ok("get", "dset", "digits-test", "-n", NS))
    assert [columns[c] for c in ("FORMAT", "SAMPLES", "CLASSES", "READY", "REASON")] == [
        "csv", "360", "10", "True", "Counted"]
    # The sha256 of digits only is kept a string: the API server would refuse an integer.
    assert get_json(kube, "dset", "digits-test")["spec"]["sha256sum"] == "0" * 64
    assert get_json(kube, "dset", "digits-test")["status"]["facts"]["columns"] == ["p0", "label"]


def test_a_followed_dataset_is_accepted_with_its_last_check(kube: KubeAPIServer) -> None:
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
           "metadata": {"name": "followed"},
           "spec": {"url": "https://data.example/train.csv", "refreshSeconds": 300,
                    "maxBytes": 10**9, "format": "csv"}}
    done = apply(kube, doc)
    assert done.returncode == 0, done.stderr
    status = {"status": {"sha256": "b" * 64, "lastChecked": "2026-12-02T00:00:00Z"}}
    kube.kubectl_ok("patch", "dset", "followed", "-n", NS, "--subresource=status",
                    "--type=merge", "-p", json.dumps(status))
    found = get_json(kube, "dset", "followed")
    assert (found["spec"]["refreshSeconds"], found["spec"]["maxBytes"]) == (300, 10**9)
    assert found["status"]["lastChecked"] == "2026-12-02T00:00:00Z"


def test_valid_joint_service_is_accepted(kube: KubeAPIServer) -> None:
    done = apply(kube, example("digits"))
    assert done.returncode == 0, done.stderr
    header, row = kube.kubectl_ok("get", "jis", "digits", "-n", NS).splitlines()
    assert header.split()[:4] == ["NAME", "EDGE", "CLOUD", "HEM"]
    assert row.split()[:4] == ["digits", "digits-edge", "digits-cloud", "MaxProb"]
    spec = get_json(kube, "jis", "digits")["spec"]
    assert spec["cloud"]["breaker"]["cooldownMs"] == 5000


# -- (c) invalid resources refused by the server --------------------------------------------------

def _edit(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[], dict[str, Any]]:
    """A bad copy of example `name`: `change` applied to its spec, renamed so nothing clashes."""
    def make() -> dict[str, Any]:
        doc = example(name, new_name=f"bad-{name}")
        change(doc["spec"])
        return doc
    return make


def _set(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda spec: spec.update(fields)


def _bad_sha(spec: dict[str, Any]) -> None:
    spec["manifest"][0]["sha256sum"] = "abc123"


def _two_steps_in_one(spec: dict[str, Any]) -> None:
    spec["postprocess"] = [{"softmax": {"tensor": "p"}, "topK": {"tensor": "p"}}]


BAD = {
    # field patterns and enums: the server names the field path
    "sha256sum not 64 hex": (_edit("digits-edge", _bad_sha),
                             ["spec.manifest[0].sha256sum", "should match"]),
    "deployToLayer not edge|cloud": (_edit("digits-edge", _set(deployToLayer="fog")),
                                     ["spec.deployToLayer", 'Unsupported value: "fog"']),
    "downloadURL not a URL": (_edit("digits-edge", lambda s: s["manifest"][1].update(
                                  downloadURL="not a url")),
                              ["spec.manifest[1].downloadURL"]),
    "replicas negative": (_edit("digits-edge", _set(replicas=-1)), ["spec.replicas"]),
    # CEL rules (x-kubernetes-validations): the server quotes the rule's message
    "targetVersion names no manifest entry": (_edit("digits-edge", _set(targetVersion="v9")),
                                              ["targetVersion must name a manifest entry"]),
    "image together with manifest": (_edit("digits-edge", _set(image="example/digits:1")),
                                     ["image excludes manifest"]),
    "neither image nor manifest": (_edit("digits-edge", lambda s: s.pop("manifest")),
                                   ["one of spec.image or spec.manifest is required"]),
    "batching on an edge model": (_edit("digits-edge", _set(batching={"maxBatchSize": 4})),
                                  ["batching is for cloud-layer models"]),
    "cloudModel with name and url": (
        _edit("digits", lambda s: s["cloudModel"].update(url="http://cloud:8000",
                                                         modelName="m")),
        ["spec.cloudModel", "set exactly one of cloudModel.name"]),
    "postprocess step with two kinds": (_edit("digits", _two_steps_in_one),
                                        ["spec.postprocess[0]", "exactly one of softmax"]),
    "autoscaling min above max": (_edit("digits", _set(autoscaling={"minReplicas": 3,
                                                                     "maxReplicas": 2})),
                                  ["autoscaling.minReplicas must not exceed maxReplicas"]),
    "autoscaling to zero": (_edit("digits-edge", _set(autoscaling={"minReplicas": 0,
                                                                   "maxReplicas": 2})),
                            ["spec.autoscaling.minReplicas"]),
    "dataset csv options on a txt list": (
        lambda: {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
                 "metadata": {"name": "bad-dataset"},
                 "spec": {"url": "http://h/list.txt", "sha256sum": "a" * 64, "format": "txt",
                          "csv": {"header": False}}},
        ["csv options are for format csv"]),
    "dataset with sha256sum and refreshSeconds": (
        lambda: {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
                 "metadata": {"name": "bad-dataset"},
                 "spec": {"url": "http://h/train.csv", "sha256sum": "a" * 64, "format": "csv",
                          "refreshSeconds": 60}},
        ["set sha256sum (a fixed file) or refreshSeconds"]),
    "dataset with neither sha256sum nor refreshSeconds": (
        lambda: {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
                 "metadata": {"name": "bad-dataset"},
                 "spec": {"url": "http://h/train.csv", "format": "csv"}},
        ["set sha256sum (a fixed file) or refreshSeconds"]),
    "hardExampleMining unknown": (_edit("digits", lambda s: s["hardExampleMining"].update(
                                      name="Guess")),
                                  ["spec.hardExampleMining.name", 'Unsupported value: "Guess"']),
    "a router archive and training": (
        _edit("digits", lambda s: s["hardExampleMining"].update(
            name="LearnedRouter", train={"dataset": "d"},
            router={"url": "http://h/r.tar.gz", "sha256sum": "a" * 64})),
        ["spec.hardExampleMining", "set router (an archive) or train"]),
    "training job with more participants than workers": (
        lambda: training_doc(aggregation={"minParticipants": 9}),
        ["minParticipants must not exceed the number of workers"]),
    "training job with a worker twice": (
        lambda: training_doc(workers=[{"name": "a", "dataset": "d-x"}, {"name": "a", "dataset": "d-y"}]),
        ["worker names must be unique"]),
    "training job: proximalMu without FedProx": (
        lambda: training_doc(aggregation={"proximalMu": 0.5}),
        ["proximalMu is for algorithm FedProx"]),
    "router training for another policy": (
        _edit("digits", lambda s: s["hardExampleMining"].update(train={"dataset": "d"})),
        ["router and train are for name LearnedRouter"]),
}


@pytest.mark.parametrize("make_doc, expected", BAD.values(), ids=BAD.keys())
def test_invalid_resource_is_refused_with_the_field_named(
        kube: KubeAPIServer, make_doc: Callable[[], dict[str, Any]], expected: list[str]) -> None:
    doc = make_doc()
    done = apply(kube, doc)
    assert done.returncode != 0, f"the server accepted an invalid {doc['kind']}: {done.stdout}"
    assert "is invalid" in done.stderr, done.stderr
    for text in expected:
        assert text in done.stderr, f"{text!r} not in kubectl's error:\n{done.stderr}"
    missing = kube.kubectl("get", doc["kind"], doc["metadata"]["name"], "-n", NS)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


# -- (d) the status subresource -------------------------------------------------------------------

def test_status_subresource_and_generation(kube: KubeAPIServer) -> None:
    name = "status-demo"
    done = apply(kube, example("digits-edge", new_name=name))
    assert done.returncode == 0, done.stderr
    generation = get_json(kube, "im", name)["metadata"]["generation"]

    status = {"activeVersion": "v1", "url": "http://127.0.0.1:8000/v2/models/digits-edge",
              "observedGeneration": generation,
              "conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                              "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
    kube.kubectl_ok("patch", "im", name, "-n", NS, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))
    obj = get_json(kube, "im", name)
    assert obj["status"]["activeVersion"] == "v1"
    assert obj["status"]["conditions"][0]["message"] == ""  # schema default, set by the server
    assert obj["metadata"]["generation"] == generation, "a status write bumped the generation"
    columns = table_row(kube.kubectl_ok("get", "im", name, "-n", NS))
    assert [columns[c] for c in ("VERSION", "READY", "REASON", "URL")] == [
        "v1", "True", "Serving", status["url"]]

    # A write to the main resource ignores status (only /status may change it) ...
    kube.kubectl_ok("patch", "im", name, "-n", NS, "--type=merge",
                    "-p", json.dumps({"status": {"activeVersion": "forged"}}))
    assert get_json(kube, "im", name)["status"]["activeVersion"] == "v1"
    # ... and a spec change is a new generation, which the operator must observe.
    kube.kubectl_ok("patch", "im", name, "-n", NS, "--type=merge",
                    "-p", json.dumps({"spec": {"targetVersion": "v2"}}))
    obj = get_json(kube, "im", name)
    assert obj["metadata"]["generation"] == generation + 1
    assert obj["status"]["observedGeneration"] == generation


def test_status_subresource_validates_too(kube: KubeAPIServer) -> None:
    done = kube.kubectl("patch", "im", "digits-edge", "-n", NS, "--subresource=status",
                        "--type=merge", "-p",
                        json.dumps({"status": {"conditions": [{"type": "Ready",
                                                               "status": "Maybe"}]}}))
    assert done.returncode != 0
    assert "status.conditions[0].status" in done.stderr, done.stderr


# -- restart: the API server goes away and comes back on the same URL, data kept ------------------

def test_api_server_restart_keeps_resources(kube: KubeAPIServer) -> None:
    before = get_json(kube, "im", "digits-edge")["metadata"]["uid"]
    kube.stop()
    down = kube.kubectl("get", "im", "-n", NS, "--request-timeout=5s")
    assert down.returncode != 0
    kube.start()
    assert kube.kubectl_ok("get", "--raw", "/readyz").strip() == "ok"
    assert get_json(kube, "im", "digits-edge")["metadata"]["uid"] == before


def test_valid_training_model_is_listed_with_printer_columns(kube: KubeAPIServer) -> None:
    done = apply(kube, training_doc())
    assert done.returncode == 0, done.stderr
    header, row = kube.kubectl_ok("get", "tm", "digits-fl", "-n", NS).splitlines()
    assert header.split() == ["NAME", "ROUND", "ROUNDS", "PARTICIPANTS", "ACCURACY", "PHASE",
                              "PUBLISHED", "AGE"]
    assert row.split()[:2] == ["digits-fl", "5"]  # no round nor phase before the operator
