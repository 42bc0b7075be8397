"""The directory source: bad files are reported by name and field, good ones keep serving."""

from __future__ import annotations

from pathlib import Path

from tests._harness import CLOUD, EDGE, OperatorHarness


def _errors_mention(harness: OperatorHarness, *needles: str) -> bool:
    return any(all(n in message for n in needles)
               for message in harness.statuses.read_errors().values())


def _edge_still_answers(harness: OperatorHarness, example: Path) -> None:
    response = harness.infer(EDGE, (example / "request.json").read_bytes())
    assert response.status_code == 200, response.text


def test_malformed_yaml_is_reported_and_others_keep_serving(
    harness: OperatorHarness, example: Path
) -> None:
    bad = harness.resources / "broken.yaml"
    bad.write_text("apiVersion: jointserve.io/v1alpha1\nkind: InferenceModel\nspec: [unclosed\n")
    try:
        harness.wait_for(lambda: _errors_mention(harness, "broken.yaml:", "malformed YAML"),
                         "the malformed file reported")
        _edge_still_answers(harness, example)
        assert harness.condition(CLOUD, "Ready")["status"] == "True"
    finally:
        bad.unlink()
    harness.wait_for(lambda: not harness.statuses.read_errors(), "error cleared after removal")


def test_unknown_field_names_file_and_field(harness: OperatorHarness, example: Path) -> None:
    doc = harness.example_doc(EDGE)
    doc["metadata"]["name"] = "typo"
    doc["spec"]["modelName"] = "typo"
    doc["spec"]["replica"] = 2
    path = harness.write(doc, "typo.yaml")
    try:
        harness.wait_for(lambda: _errors_mention(harness, "typo.yaml", "spec.replica: unknown field"),
                         "unknown field reported")
        assert harness.statuses.read(("InferenceModel", "default", "typo")) is None
        _edge_still_answers(harness, example)
    finally:
        path.unlink()


def test_breaking_a_served_file_keeps_its_last_good_version(
    harness: OperatorHarness, example: Path, edge_on_v1: dict
) -> None:
    path = harness.resources / f"{EDGE}.yaml"
    path.write_text(path.read_text().replace("sha256sum: ", "sha256sum: zz", 1))
    harness.wait_for(
        lambda: _errors_mention(harness, f"{EDGE}.yaml", "spec.manifest[0].sha256sum: must be 64 hex"),
        "invalid sha256 reported")
    _edge_still_answers(harness, example)
    assert harness.condition(EDGE, "Ready")["status"] == "True"


def test_duplicate_model_name_is_refused(harness: OperatorHarness, example: Path) -> None:
    doc = harness.example_doc(EDGE)
    doc["metadata"]["name"] = "edge-twin"
    path = harness.write(doc)
    try:
        ready = harness.wait_for(lambda: harness.condition("edge-twin", "Ready") or None,
                                 "twin status")
        assert ready["status"] == "False" and ready["reason"] == "ModelNameConflict"
        _edge_still_answers(harness, example)
    finally:
        path.unlink()


def test_removing_a_file_removes_its_application(harness: OperatorHarness) -> None:
    doc = harness.example_doc(EDGE)
    doc["metadata"]["name"] = "digits-extra"
    doc["spec"]["modelName"] = "digits-extra"
    path = harness.write(doc)
    harness.wait_serving("digits-extra", "digits-extra", "v1")
    path.unlink()
    harness.wait_for(
        lambda: harness.http.get("/v2/models/digits-extra/ready").status_code == 404,
        "digits-extra application removed")
    assert harness.statuses.read(("InferenceModel", "default", "digits-extra")) is None
    assert "digits-extra" not in [
        r["resource"]["metadata"]["name"] for r in harness.statuses.all()]
