"""Versions the operator publishes for an InferenceModel in directory mode: kept in a file
of their own beside the user's YAML, merged on every scan, never written into the user's
file."""

from __future__ import annotations

from pathlib import Path

import yaml

from jointserve.api import InferenceModel, ModelFile
from jointserve.operator import DirectorySource
from jointserve.operator._published import PUBLISHED_DIR, publish_version

KEY = ("InferenceModel", "default", "digits-edge")


def model_yaml(versions: list[str], target: str | None = None) -> str:
    spec = {"modelName": "digits-edge", "deployToLayer": "edge",
            "manifest": [{"version": v, "downloadURL": f"file:///a/{v}.tar.gz",
                          "sha256sum": v[-1] * 64 if v[-1].isdigit() else "a" * 64}
                         for v in versions]}
    if target:
        spec["targetVersion"] = target
    return yaml.safe_dump({"apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
                           "metadata": {"name": "digits-edge"}, "spec": spec})


def entry(version: str) -> ModelFile:
    return ModelFile(version=version, downloadURL=f"file:///published/{version}.tar.gz",
                     sha256sum="b" * 64)


def test_published_versions_are_merged_and_the_users_file_is_untouched(tmp_path: Path) -> None:
    user = tmp_path / "digits-edge.yaml"
    user.write_text(model_yaml(["v1"]))
    before = user.read_bytes()
    source = DirectorySource(tmp_path)

    publish_version(tmp_path, KEY, entry("fl-1"), "digits-fl", rollout=False)
    model = source.scan().resources[KEY]
    assert isinstance(model, InferenceModel)
    assert [f.version for f in model.spec.manifest] == ["v1", "fl-1"]
    assert model.spec.targetVersion == "v1"  # not rolled out: the user's version serves

    publish_version(tmp_path, KEY, entry("fl-2"), "digits-fl", rollout=True)
    snapshot = source.scan()
    model = snapshot.resources[KEY]
    assert [f.version for f in model.spec.manifest] == ["v1", "fl-1", "fl-2"]
    assert model.spec.targetVersion == "fl-2" and not snapshot.errors
    assert user.read_bytes() == before
    assert list(snapshot.resources) == [KEY]  # the published file is no resource itself

    # Deleting the file takes the published versions away again.
    (tmp_path / PUBLISHED_DIR / "default.digits-edge.yaml").unlink()
    assert [f.version for f in source.scan().resources[KEY].spec.manifest] == ["v1"]


def test_a_version_the_user_wrote_wins_and_a_broken_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "digits-edge.yaml").write_text(model_yaml(["v1", "fl-1"], target="v1"))
    publish_version(tmp_path, KEY, entry("fl-1"), "digits-fl", rollout=False)
    model = DirectorySource(tmp_path).scan().resources[KEY]
    assert [(f.version, f.sha256sum) for f in model.spec.manifest] == [
        ("v1", "1" * 64), ("fl-1", "1" * 64)]
    (tmp_path / PUBLISHED_DIR / "default.digits-edge.yaml").write_text("versions: 7\n")
    model = DirectorySource(tmp_path).scan().resources[KEY]
    assert [f.version for f in model.spec.manifest] == ["v1", "fl-1"]
