"""Validation of resource documents: what is accepted, and the `path: rule` lines for what is not."""

from __future__ import annotations

import copy
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jointserve.api import InferenceModel, ResourceError, load_file, parse_resource

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"

SHA = "0123456789abcdef" * 4
VALID = f"""\
apiVersion: jointserve.io/v1alpha1
kind: InferenceModel
metadata:
  name: digits-edge
spec:
  modelName: digits-edge
  deployToLayer: edge
  frameworkType: onnx
  nodeSelector: {{zone: a}}
  manifest:
  - version: v1
    downloadURL: http://127.0.0.1:8000/digits-v1.tar.gz
    sha256sum: {SHA}
  - version: v2
    downloadURL: https://models.example/digits-v2.tar.gz
    sha256sum: {SHA}
  targetVersion: v2
"""


def _doc(**spec: Any) -> dict[str, Any]:
    """The valid document with spec keys replaced; a None value removes the key."""
    doc = yaml.safe_load(VALID)
    for key, value in spec.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


def _entry(version: str = "v1", url: str = "http://h/m.tar.gz", sha: str = SHA) -> dict[str, str]:
    return {"version": version, "downloadURL": url, "sha256sum": sha}


def _write(tmp_path: Path, *docs: Any, name: str = "model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def test_valid_document_parses(tmp_path: Path) -> None:
    [model] = load_file(_write(tmp_path, yaml.safe_load(VALID)))
    assert isinstance(model, InferenceModel)
    assert model.metadata.name == "digits-edge"
    assert model.metadata.namespace == "default"
    assert model.spec.deployToLayer == "edge"
    assert model.spec.replicas == 1
    assert model.spec.nodeSelector == {"zone": "a"}
    assert model.spec.target_file().version == "v2"


def test_image_alone_is_valid() -> None:
    model = parse_resource(_doc(image="registry/model:1", manifest=None, targetVersion=None), "x")
    assert model.spec.image == "registry/model:1" and model.spec.target_file() is None


def test_sha256_is_normalised_to_lowercase() -> None:
    doc = _doc(manifest=[_entry(sha=SHA.upper())], targetVersion=None)
    model = parse_resource(doc, "x")
    assert model.spec.manifest[0].sha256sum == SHA



@pytest.mark.parametrize(
    ("doc", "problems"),
    [
        pytest.param(_doc(bogus=1), ["spec.bogus: unknown field"], id="unknown-field"),
        pytest.param(
            _doc(manifest=[_entry("v1"), _entry("v2", sha="zz")]),
            ["spec.manifest[1].sha256sum: must be 64 hex characters (got 'zz')"],
            id="bad-sha256",
        ),
        pytest.param(
            _doc(targetVersion="v9"),
            ["spec.targetVersion: must name a manifest entry (got 'v9', manifest has: v1, v2)"],
            id="target-version-not-in-manifest",
        ),
        pytest.param(
            _doc(image="registry/model:1"),
            ["spec.image: excludes manifest (set one of spec.image or spec.manifest)"],
            id="image-and-manifest",
        ),
        pytest.param(
            _doc(manifest=None, targetVersion=None),
            ["spec.manifest: one of spec.image or spec.manifest is required"],
            id="neither-image-nor-manifest",
        ),
        pytest.param(
            _doc(manifest=[_entry("v1"), _entry("v1")], targetVersion="v1"),
            ["spec.manifest: versions must be unique, repeated: v1"],
            id="duplicate-versions",
        ),
        pytest.param(
            _doc(targetVersion=None),
            ["spec.targetVersion: is required when the manifest has more than one version"],
            id="several-versions-without-target",
        ),
        pytest.param(
            _doc(deployToLayer="fog"),
            ["spec.deployToLayer: must be one of 'edge' or 'cloud' (got 'fog')"],
            id="bad-layer",
        ),
        pytest.param(
            _doc(replicas=-1),
            ["spec.replicas: input should be greater than or equal to 0"],
            id="negative-replicas",
        ),
        pytest.param(
            _doc(modelName="team/digits"),
            ["spec.modelName: must be 1-63 letters, digits, '-', '_' or '.', starting and "
             "ending with a letter or digit (got 'team/digits')"],
            id="model-name-with-slash",
        ),
        pytest.param(
            _doc(manifest=[_entry(url="ftp://h/m.tar.gz")], targetVersion=None),
            ["spec.manifest[0].downloadURL: must be an http://, https:// or file:// URL "
             "(got 'ftp://h/m.tar.gz')"],
            id="bad-url-scheme",
        ),
        pytest.param(
            _doc(bogus=1, replicas=-1, modelName=None),
            ["spec.modelName: required field is missing",
             "spec.replicas: input should be greater than or equal to 0",
             "spec.bogus: unknown field"],
            id="several-problems-one-line-each",
        ),
        pytest.param(
            {**_doc(), "metadata": {"name": "Digits_Edge"}},
            ["metadata.name: must be a lowercase RFC 1123 name (a-z, 0-9, '-', '.') "
             "(got 'Digits_Edge')"],
            id="bad-metadata-name",
        ),
        pytest.param(
            {**_doc(), "metadata": "digits-edge"},
            ["metadata: input should be a valid dictionary or instance of ObjectMeta"],
            id="metadata-not-a-mapping",
        ),
        pytest.param(
            {**_doc(), "apiVersion": "jointserve.io/v1"},
            ["apiVersion: must be jointserve.io/v1alpha1 (got 'jointserve.io/v1')"],
            id="wrong-api-version",
        ),
        pytest.param(
            {**_doc(), "kind": "Model"},
            ["kind: must be one of ['Dataset', 'InferenceModel', 'JointInferenceService', "
             "'TrainingModel'] (got 'Model')"],
            id="wrong-kind",
        ),
        pytest.param(
            ["not", "a", "mapping"], ["document must be a mapping, got list"], id="not-a-mapping"
        ),
    ],
)
def test_invalid_document_is_refused(tmp_path: Path, doc: Any, problems: list[str]) -> None:
    path = _write(tmp_path, copy.deepcopy(doc))
    with pytest.raises(ResourceError) as caught:
        load_file(path)
    assert caught.value.problems == problems
    # The message leads with the file, so a log line alone says what to fix and where.
    assert str(caught.value).startswith(f"{path}: ")
    assert str(caught.value).endswith("; ".join(problems))


def test_seed_misspelling_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    doc = _doc(frameworkType=None, fraemworkType="onnx")
    with caplog.at_level(logging.WARNING, logger="jointserve.api"):
        model = parse_resource(doc, "models/edge.yaml")
    assert model.spec.frameworkType == "onnx"
    assert [r.getMessage() for r in caplog.records] == [
        "models/edge.yaml: InferenceModel digits-edge: spec.fraemworkType is the seed design's "
        "misspelling; use spec.frameworkType"
    ]


def test_correct_spelling_wins_over_the_seed_misspelling() -> None:
    model = parse_resource(_doc(frameworkType="onnx", fraemworkType="tensorflow"), "x")
    assert model.spec.frameworkType == "onnx"


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: jointserve.io/v1alpha1\nkind: InferenceModel\n\tspec: {}\n")
    with pytest.raises(ResourceError) as caught:
        load_file(path)
    assert caught.value.source == f"{path}:3:1"
    assert caught.value.problems == [
        "malformed YAML: found character '\\t' that cannot start any token"]
    assert str(caught.value).startswith(f"{path}:3:1: malformed YAML")


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ResourceError) as caught:
        load_file(tmp_path / "missing.yaml")
    assert str(caught.value).startswith(f"{tmp_path / 'missing.yaml'}: cannot read:")


def test_two_documents_one_bad_names_the_bad_one(tmp_path: Path) -> None:
    bad = {**_doc(bogus=1), "metadata": {"name": "digits-bad"}}
    path = _write(tmp_path, _doc(), bad)
    with pytest.raises(ResourceError) as caught:
        load_file(path)
    assert caught.value.source == f"{path}[1]: InferenceModel digits-bad"
    assert caught.value.problems == ["spec.bogus: unknown field"]
    assert str(caught.value) == f"{path}[1]: InferenceModel digits-bad: spec.bogus: unknown field"


def test_every_bad_document_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc(bogus=1), {**_doc(), "kind": "Model"}, _doc(replicas=2))
    with pytest.raises(ResourceError) as caught:
        load_file(path)
    assert caught.value.source == str(path)
    assert caught.value.problems == [
        "[0]: InferenceModel digits-edge: spec.bogus: unknown field",
        "[1]: kind: must be one of ['Dataset', 'InferenceModel', 'JointInferenceService', "
        "'TrainingModel'] (got 'Model')",
    ]


def test_several_good_documents_load_and_empty_ones_are_skipped(tmp_path: Path) -> None:
    second = {**_doc(), "metadata": {"name": "digits-cloud"}}
    path = tmp_path / "models.yaml"
    path.write_text("---\n" + yaml.safe_dump(_doc()) + "---\n" + yaml.safe_dump(second) + "---\n")
    assert [m.metadata.name for m in load_file(path)] == ["digits-edge", "digits-cloud"]


def test_trailing_separator_keeps_a_file_single_document(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(_doc(bogus=1)) + "---\n")
    with pytest.raises(ResourceError) as caught:
        load_file(path)
    assert caught.value.source == f"{path}: InferenceModel digits-edge"


def test_set_condition_moves_transition_time_only_on_status_change(monkeypatch) -> None:
    from jointserve.api import _common, set_condition

    monkeypatch.setattr(_common, "now_rfc3339", lambda: "T1")
    conditions = set_condition([], "Ready", "False", "Deploying")
    monkeypatch.setattr(_common, "now_rfc3339", lambda: "T2")
    same = set_condition(conditions, "Ready", "False", "Deploying", "still")
    flipped = set_condition(same, "Ready", "True", "Serving")
    assert [c.lastTransitionTime for c in same] == ["T1"]
    assert same[0].message == "still"
    assert [(c.status, c.lastTransitionTime) for c in flipped] == [("True", "T2")]


def test_overlong_model_name_is_refused() -> None:
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
           "metadata": {"name": "a"},
           "spec": {"modelName": "m" * 64, "deployToLayer": "edge", "manifest": [
               {"version": "v1", "downloadURL": "http://x/a", "sha256sum": "a" * 64}]}}
    with pytest.raises(ResourceError) as err:
        parse_resource(doc, "f.yaml")
    assert err.value.problems == ["spec.modelName: string should have at most 63 characters"]


# -- YAML's implicit types: a string field written without quotes -------------------------------


def test_a_digits_only_sha256_read_as_a_number_says_quote_it(tmp_path: Path) -> None:
    sha = "0" * 63 + "7"  # valid hex, but YAML reads it as the integer 7
    path = tmp_path / "m.yaml"
    path.write_text(f"""apiVersion: jointserve.io/v1alpha1
kind: InferenceModel
metadata: {{name: m}}
spec:
  modelName: m
  deployToLayer: edge
  manifest:
    - version: 1.0
      downloadURL: http://127.0.0.1:8808/m.tar.gz
      sha256sum: {sha}
""")
    with pytest.raises(ResourceError) as err:
        load_file(path)
    text = str(err.value)
    assert ("spec.manifest[0].sha256sum: must be a string, but YAML read the value as an "
            "integer (7); quote it") in text
    assert "spec.manifest[0].version: must be a string, but YAML read the value as a number" in text


def test_the_example_manifests_quote_what_yaml_would_retype(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("digits_build", EXAMPLE / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "digits_build", build)  # dataclasses look it up there
    spec.loader.exec_module(build)
    sha = "0" * 64
    artifact = build.Artifact("digits-edge", "1.0", tmp_path / "a.tar.gz", sha,
                              "http://127.0.0.1:8808/a.tar.gz", 0.9, 100, None)
    text = build.manifest_yaml("digits-edge", [artifact])
    assert text.startswith("# Generated by examples/digits/build.py")
    (tmp_path / "digits-edge.yaml").write_text(text)
    (model,) = load_file(tmp_path / "digits-edge.yaml")
    assert model.spec.manifest[0].sha256sum == sha and model.spec.manifest[0].version == "1.0"


@pytest.mark.parametrize(("autoscaling", "extra", "message"), [
    pytest.param({"minReplicas": 3, "maxReplicas": 2}, {}, "spec.autoscaling.minReplicas: must "
                 "not exceed maxReplicas (3 > 2)", id="min-above-max"),
    pytest.param({"minReplicas": 0, "maxReplicas": 2}, {}, "spec.autoscaling.minReplicas",
                 id="to-zero"),
    pytest.param({"maxReplicas": 2, "targetInFlight": 0}, {}, "spec.autoscaling.targetInFlight",
                 id="no-target"),
    pytest.param({"maxReplicas": 2}, {"image": "example/m:1", "manifest": []},
                 "spec.autoscaling: is for manifest models", id="image-model"),
])
def test_bad_autoscaling_names_the_field(autoscaling: dict, extra: dict, message: str) -> None:
    doc = yaml.safe_load((EXAMPLE / "digits-edge.yaml").read_text())
    doc["spec"].update(autoscaling=autoscaling, **extra)
    if "image" in extra:
        doc["spec"].pop("targetVersion", None)
    with pytest.raises(ResourceError) as err:
        parse_resource(doc, "m.yaml")
    assert message in str(err.value)


def test_autoscaling_defaults() -> None:
    doc = yaml.safe_load((EXAMPLE / "digits-edge.yaml").read_text())
    doc["spec"]["autoscaling"] = {"maxReplicas": 4}
    model = parse_resource(doc, "m.yaml")
    assert isinstance(model, InferenceModel) and model.spec.autoscaling is not None
    assert (model.spec.autoscaling.minReplicas, model.spec.autoscaling.targetInFlight) == (1, 2.0)
