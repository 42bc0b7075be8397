"""Detection evaluation on the shapes example: a synthetic Pascal VOC set and two fixed ONNX
detectors (examples/shapes/build.py), evaluated through the JointInferenceService's own
imageDecode -> detector -> nms -> IBTFilter path, by the library and by the Reconciler.

Real pieces: the example's build (into tmp), the ArtifactStore (file:// URLs), the VOC reader,
the gateway's JointModel. Fake: Ray Serve (`FakeBackend`).
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from jointserve.api import DatasetSpec, load_file, parse_resource
from jointserve.evaluation import DatasetRef, EvaluationError, evaluate_service, load_samples
from jointserve.operator import Reconciler, ServeSettings, StatusStore
from jointserve.protocol import LoadedModel
from jointserve.store import ArtifactStore
from tests._fakes import FakeBackend

SHAPES = Path(__file__).resolve().parent.parent / "examples" / "shapes"


def _import_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shapes_build", SHAPES / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shapes_build"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shapes example built into a temp dir, its YAML pointing at file:// URLs."""
    out = tmp_path_factory.mktemp("shapes")
    _import_build().build(out, (out / "archives").as_uri())
    return out


@pytest.fixture(scope="module")
def detectors(built: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    store = ArtifactStore(tmp_path_factory.mktemp("store"))
    out = {}
    for name in ("shapes-edge", "shapes-cloud"):
        entry = parse_resource(yaml.safe_load((built / f"{name}.yaml").read_text()), name)
        file = entry.spec.target_file()
        fetched = store.fetch(name, file.version, file.downloadURL, file.sha256sum)
        out[name] = LoadedModel.load(name, "v1", fetched.path)
    return out


def voc_spec(path: Path) -> DatasetSpec:
    return DatasetSpec(url=path.as_uri(), sha256sum="0" * 64, format="voc")


def test_the_build_is_reproducible(built: Path, tmp_path: Path) -> None:
    again = _import_build().build(tmp_path, (built / "archives").as_uri())
    first = {p.name: p.read_bytes() for p in (built / "archives").iterdir()}
    assert {name: (tmp_path / "archives" / name).read_bytes() for name in again} == {
        name: first[name] for name in again}


def test_joint_map_lies_between_the_tiers(built: Path, detectors: dict) -> None:
    samples = load_samples(built / "archives" / "shapes-voc.tar.gz",
                           voc_spec(built / "archives" / "shapes-voc.tar.gz"))
    assert len(samples) == 120 and samples.boxes is not None
    assert sum(len(b) for b in samples.boxes) == 204
    (service,) = load_file(SHAPES / "shapes.yaml")
    metrics = evaluate_service("shapes", service.spec, detectors["shapes-edge"],
                               detectors["shapes-cloud"], samples, DatasetRef("shapes-voc", "0" * 64))
    # The coarse edge grid misplaces many boxes; the cloud places every one.
    assert metrics.edgeMAP50 < metrics.mAP50 <= metrics.cloudMAP50
    assert metrics.cloudMAP50 > 0.95 and metrics.edgeMAP50 < 0.8
    assert 0.0 < metrics.cloudRatio < 1.0
    gap = metrics.cloudMAP50 - metrics.edgeMAP50
    assert metrics.pgr == pytest.approx((metrics.mAP50 - metrics.edgeMAP50) / gap)
    assert metrics.accuracy is None and metrics.samples == 120


def test_a_detection_set_without_its_images_is_refused(built: Path, tmp_path: Path) -> None:
    annotations_only = io.BytesIO()
    with tarfile.open(built / "archives" / "shapes-voc.tar.gz") as source, \
            tarfile.open(fileobj=annotations_only, mode="w:gz") as target:
        for member in source.getmembers():
            if member.name.startswith("Annotations/"):
                target.addfile(member, source.extractfile(member))
    path = tmp_path / "no-images.tar.gz"
    path.write_bytes(annotations_only.getvalue())
    with pytest.raises(EvaluationError) as caught:
        load_samples(path, voc_spec(path))
    assert caught.value.reason == "InputsRejected"
    assert "Annotations/shape-0000.xml: its image 'shape-0000.png' is not in JPEGImages/" in str(caught.value)


def test_the_operator_writes_the_map_into_the_service_status(built: Path, tmp_path: Path) -> None:
    resources = [*(r for name in ("shapes-edge", "shapes-cloud", "shapes-voc")
                   for r in load_file(built / f"{name}.yaml")), *load_file(SHAPES / "shapes.yaml")]
    keyed = {(r.kind, r.metadata.namespace, r.metadata.name): r for r in resources}
    store = ArtifactStore(tmp_path / "store")
    reconciler = Reconciler(FakeBackend(), store, StatusStore(tmp_path / "state"),
                            ServeSettings(store_root=str(store.root)), "http://127.0.0.1:8000")
    deadline = time.monotonic() + 60
    while True:
        status = reconciler.reconcile(keyed)[("JointInferenceService", "default", "shapes")]
        evaluated = next((c for c in status.conditions if c.type == "Evaluated"), None)
        if evaluated is not None and evaluated.status != "Unknown":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert (evaluated.status, evaluated.reason) == ("True", "Evaluated"), evaluated
    (metrics,) = status.metrics
    assert metrics.dataset == "shapes-voc" and metrics.mAP50 is not None
    assert metrics.edgeMAP50 < metrics.mAP50 <= metrics.cloudMAP50
