"""Session-wide real components: the example models, a loopback archive server, one Ray.

Nothing here is mocked: archives are the example script's real ONNX models, downloads go over
real HTTP on 127.0.0.1, and Serve applications run on one local Ray instance shared by the
whole session (starting Ray costs ~10 s; tests clean up their applications instead).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._fileserver import FileServer
from tests._harness import CLOUD, EDGE, JIS, OperatorHarness

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "digits"


@pytest.fixture(scope="session")
def example() -> Path:
    """The digits example, built (a no-op when `make test` built it already)."""
    subprocess.run([sys.executable, str(EXAMPLE / "build.py")], check=True)
    return EXAMPLE


@pytest.fixture(scope="session")
def archive_dir(example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the example archives that tests may add bad archives to."""
    root = tmp_path_factory.mktemp("archives")
    for archive in (example / "archives").glob("*.tar.gz"):
        shutil.copy(archive, root / archive.name)
    return root


@pytest.fixture(scope="session")
def archive_server(archive_dir: Path) -> Iterator[FileServer]:
    server = FileServer(archive_dir)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "archive_server" in request.fixturenames:
        request.getfixturevalue("archive_server").clear_faults()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def serve_backend() -> Iterator[object]:
    """One local Ray + Serve for the session, HTTP on a free loopback port."""
    import ray
    from ray import serve

    from jointserve.operator import ServeBackend, start_local_ray

    start_local_ray()
    backend = ServeBackend("127.0.0.1", free_port())
    yield backend
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def harness(tmp_path_factory, serve_backend, archive_server, example) -> Iterator[OperatorHarness]:
    """An operator serving the example's two models (edge on v1) for the whole session."""
    h = OperatorHarness(tmp_path_factory.mktemp("serving"), serve_backend, archive_server, example)
    h.write(h.example_doc(EDGE))
    h.write(h.example_doc(CLOUD))
    h.wait_serving(EDGE, EDGE, "v1")
    h.wait_serving(CLOUD, CLOUD, "v1")
    yield h
    h.close()


@pytest.fixture
def services(harness: OperatorHarness) -> Iterator[list[str]]:
    """Names of the resources a test wrote; removed (and awaited) afterwards."""
    written: list[str] = []
    yield written
    for name in written:
        harness.remove(name)
    harness.wait_for(lambda: not any(harness.status(n, JIS) or harness.status(n) for n in written),
                     "test resources removed")


@pytest.fixture
def edge_on_v1(harness: OperatorHarness) -> Iterator[dict]:
    """The edge model's document to edit; the file is restored to v1 (and awaited) afterwards."""
    doc = harness.example_doc(EDGE)
    yield doc
    harness.write(harness.example_doc(EDGE))
    harness.wait_serving(EDGE, EDGE, "v1")
    # Ready stays True while a bad target is rejected; wait until the restore is processed.
    harness.wait_for(lambda: harness.condition(EDGE, "Progressing").get("reason") == "Complete"
                     and harness.condition(EDGE, "ArtifactVerified").get("status") == "True",
                     "edge model restored to v1")


if TYPE_CHECKING:  # imported in the fixture: only Kubernetes-mode tests need it
    from tests._kube import KubeAPIServer


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A real kube-apiserver + etcd on loopback with the jointserve CRDs installed (Established).

    Start-up failures raise (with the server's log); Kubernetes-mode tests never skip.
    """
    from tests._kube import KubeAPIServer  # noqa: F811

    server = KubeAPIServer(tmp_path_factory.mktemp("kube"))
    try:
        server.start()
        server.install_crds(REPO / "deploy" / "crds")
        yield server
    finally:
        server.close()
