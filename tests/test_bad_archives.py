"""A target version whose archive fails never replaces the version that is serving.

Each case adds a version v3 that is a broken archive (or a broken download of a good one),
switches targetVersion to it, and checks: the status names the failure, v1 keeps answering.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests._fileserver import FileServer
from tests._harness import EDGE, MAX_MODEL_BYTES, OperatorHarness


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _bomb(path: Path) -> Path:
    # Compresses ~1000:1; unpacked it is over the store's cap.
    size = MAX_MODEL_BYTES + 2**20
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return path


# Each case: (archive_dir, server, good archive name) -> (url, sha256) of the bad version.
Case = Callable[[Path, FileServer, str], tuple[str, str]]


def wrong_sha(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    return server.url(good), "0" * 64


def not_found(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    return server.url("no-such-archive.tar.gz"), _sha(root / good)


def _copy(root: Path, good: str, name: str) -> Path:
    # A URL of its own per case: the operator remembers a failed URL (retrying it later with
    # backoff), so cases must not share one.
    path = root / name
    path.write_bytes((root / good).read_bytes())
    return path


def server_error(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    path = _copy(root, good, "flaky.tar.gz")
    server.fail(path.name, status=500, times=1000)
    return server.url(path.name), _sha(path)


def truncated(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    path = _copy(root, good, "truncated.tar.gz")
    server.truncate(path.name, 100)
    return server.url(path.name), _sha(path)


def corrupt(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    path = root / "corrupt.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 50)
    return server.url(path.name), _sha(path)


def path_traversal(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    path = _tar_gz(root / "traversal.tar.gz", {"model.onnx": b"x", "../../evil.sh": b"rm -rf /"})
    return server.url(path.name), _sha(path)


def archive_bomb(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    path = root / "bomb.tar.gz"
    if not path.exists():
        _bomb(path)
    return server.url(path.name), _sha(path)


def not_a_model(root: Path, server: FileServer, good: str) -> tuple[str, str]:
    path = _tar_gz(root / "garbage-model.tar.gz", {"model.onnx": b"this is not an onnx graph"})
    return server.url(path.name), _sha(path)


@pytest.mark.parametrize(
    ("make_case", "reason"),
    [
        pytest.param(wrong_sha, "Sha256Mismatch", id="wrong-sha256"),
        pytest.param(not_found, "HTTPError", id="http-404"),
        pytest.param(server_error, "HTTPError", id="http-500"),
        pytest.param(truncated, "DownloadFailed", id="truncated-download"),
        pytest.param(corrupt, "ArchiveCorrupt", id="corrupt-archive"),
        pytest.param(path_traversal, "UnsafeArchive", id="path-traversal"),
        pytest.param(archive_bomb, "ArchiveTooLarge", id="archive-bomb"),
        pytest.param(not_a_model, "ModelInvalid", id="not-an-onnx-model"),
    ],
)
def test_bad_target_version_keeps_serving_version(
    harness: OperatorHarness, archive_dir: Path, archive_server: FileServer,
    edge_on_v1: dict, example: Path, make_case: Case, reason: str,
) -> None:
    url, sha = make_case(archive_dir, archive_server, "digits-edge-v2.tar.gz")
    # A version never fetched before: the store is content-addressed by (model, version,
    # sha256), so a good v2 cached by another test would rightly satisfy a v2 with its sha.
    edge_on_v1["spec"]["manifest"].append({"version": "v3", "downloadURL": url, "sha256sum": sha})
    edge_on_v1["spec"]["targetVersion"] = "v3"
    harness.write(edge_on_v1)

    verified = harness.wait_for(
        lambda: (c := harness.condition(EDGE, "ArtifactVerified")).get("status") == "False" and c,
        f"ArtifactVerified=False ({reason})")
    assert verified["reason"] == reason, verified
    assert url in verified["message"] or reason == "ModelInvalid"
    assert harness.status(EDGE)["activeVersion"] == "v1"
    assert harness.condition(EDGE, "Ready")["status"] == "True"
    assert harness.condition(EDGE, "Progressing")["reason"] == "TargetVersionRejected"
    response = harness.infer(EDGE, (example / "request.json").read_bytes())
    assert response.status_code == 200 and response.json()["model_version"] == "v1"
