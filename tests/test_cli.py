"""The `jointserve` command's read-only views: get, status, crds."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointserve.cli import main
from jointserve.operator import StatusStore

RECORD = {
    "resource": {
        "apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
        "metadata": {"name": "digits-edge", "namespace": "default"},
        "spec": {"modelName": "digits-edge", "deployToLayer": "edge", "targetVersion": "v2",
                 "manifest": [{"version": "v1"}, {"version": "v2"}]},
    },
    "status": {
        "url": "http://127.0.0.1:8000", "activeVersion": "v1",
        "conditions": [
            {"type": "ArtifactVerified", "status": "False", "reason": "Sha256Mismatch",
             "message": "sha256 mismatch for http://x/v2.tar.gz"},
            {"type": "Ready", "status": "True", "reason": "Serving", "message": "serving v1"},
        ],
    },
}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    StatusStore(tmp_path).write(("InferenceModel", "default", "digits-edge"), RECORD)
    return tmp_path


def test_get_prints_a_kubectl_like_table(state: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["get", "im", "--state-dir", str(state)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "MODEL", "LAYER", "TARGET", "ACTIVE", "READY", "REASON",
                              "ACCURACY", "F1", "EVALUATION", "URL"]
    assert row.split() == ["digits-edge", "digits-edge", "edge", "v2", "v1", "True", "Serving",
                           "-", "-", "-", "http://127.0.0.1:8000"]


def test_get_wide_adds_the_ready_message(state: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["get", "im", "-o", "wide", "--state-dir", str(state)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "MESSAGE"
    assert row.endswith("serving v1")


def test_status_shows_conditions_and_file_errors(state: Path, capsys: pytest.CaptureFixture) -> None:
    StatusStore(state).write_errors({"a.yaml": "a.yaml: InferenceModel x: spec.bogus: unknown field"})
    assert main(["status", "--state-dir", str(state)]) == 1  # errors make it non-zero
    out = capsys.readouterr().out
    assert "ArtifactVerified  False  Sha256Mismatch" in out
    assert "spec.bogus: unknown field" in out


def test_crds_writes_the_generated_files(tmp_path: Path) -> None:
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "inferencemodels.jointserve.io.yaml").exists()


def test_operator_without_a_usable_kubeconfig_says_so(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["operator", "--kubeconfig", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "cannot use kubeconfig" in err and str(tmp_path / "missing") in err
