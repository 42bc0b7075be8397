"""benchmarks.heavy_model: the compute-heavy cloud model of the batching scenario.

Built into a temp dir, unpacked through the real artifact store (file:// URL, sha256 checked)
and loaded with jointserve.runtime.OnnxModel, as the cloud tier does. No Ray, and no timing
asserts: how fast the model is gets reported by the benchmark runner, not judged here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from benchmarks import heavy_model
from benchmarks.heavy_model import HeavyArchive, Params
from jointserve.runtime import OnnxModel
from jointserve.store import ArtifactStore

SMALL = Params(width=32, depth=1)  # for the cache tests: builds in milliseconds


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> HeavyArchive:
    return heavy_model.build(tmp_path_factory.mktemp("heavy"))


@pytest.fixture(scope="module")
def model_dir(built: HeavyArchive, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = ArtifactStore(tmp_path_factory.mktemp("store"))
    result = store.fetch(heavy_model.MODEL_NAME, heavy_model.VERSION, built.path.as_uri(), built.sha256)
    return result.path


@pytest.fixture(scope="module")
def model(model_dir: Path) -> OnnxModel:
    return OnnxModel(model_dir)


def rows(n: int) -> np.ndarray:
    return np.random.default_rng(7).random((n, heavy_model.N_FEATURES), dtype=np.float32)


def test_archive_is_named_and_hashed(built: HeavyArchive) -> None:
    assert built.path.name == "cloud-heavy-v1.tar.gz"
    assert built.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()


def test_store_unpacks_model_and_metadata(model_dir: Path, model: OnnxModel) -> None:
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == \
        ["metadata.json", "model.onnx"]
    assert model.metadata["labels"] == [str(i) for i in range(10)]
    assert model.metadata["params"]["width"] == Params().width


def test_signature_matches_the_digits_models(model: OnnxModel) -> None:
    (spec,) = model.inputs
    assert (spec.name, spec.datatype, spec.shape) == ("input", "FP32", (-1, 64))
    outputs = {s.name: (s.datatype, s.shape) for s in model.outputs}
    assert outputs == {"label": ("INT64", (-1,)), "probabilities": ("FP32", (-1, 10))}


def test_batch_of_16_equals_row_by_row(model: OnnxModel) -> None:
    x = rows(16)
    batch = model.run({"input": x})
    single = [model.run({"input": x[i:i + 1]}) for i in range(16)]
    # Batched and single-row GEMMs may sum in another order: close, not bit-equal.
    np.testing.assert_allclose(batch["probabilities"],
                               np.concatenate([s["probabilities"] for s in single]), rtol=1e-5)
    np.testing.assert_array_equal(batch["label"], np.concatenate([s["label"] for s in single]))


def test_outputs_are_a_softmax_and_its_argmax(model: OnnxModel) -> None:
    out = model.run({"input": rows(64)})
    probabilities = out["probabilities"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["label"], probabilities.argmax(axis=1))
    top = probabilities.max(axis=1)
    assert 0.1 < top.min() and top.max() < 0.99  # the weight scaling: neither flat nor one-hot


def test_build_is_deterministic(built: HeavyArchive, tmp_path: Path) -> None:
    again = heavy_model.build(tmp_path)
    assert again.sha256 == built.sha256
    assert again.path.read_bytes() == built.path.read_bytes()


def test_build_reuses_the_cached_archive(tmp_path: Path) -> None:
    first = heavy_model.build(tmp_path, SMALL)
    stamp = first.path.stat().st_mtime_ns
    assert heavy_model.build(tmp_path, SMALL) == first
    assert first.path.stat().st_mtime_ns == stamp  # not written again


def test_build_rebuilds_for_other_parameters(tmp_path: Path) -> None:
    first = heavy_model.build(tmp_path, SMALL)
    other = heavy_model.build(tmp_path, Params(width=32, depth=1, seed=1))
    assert other.path == first.path and other.sha256 != first.sha256
    assert hashlib.sha256(other.path.read_bytes()).hexdigest() == other.sha256


def test_build_replaces_a_damaged_archive(tmp_path: Path) -> None:
    first = heavy_model.build(tmp_path, SMALL)
    first.path.write_bytes(first.path.read_bytes()[:100])  # cut short
    again = heavy_model.build(tmp_path, SMALL)
    assert again.sha256 == first.sha256
    assert hashlib.sha256(again.path.read_bytes()).hexdigest() == first.sha256


def test_measure_reports_both_batch_sizes(model_dir: Path) -> None:
    timing = heavy_model.measure(model_dir, seconds=0.02)
    assert timing.batch1_ms > 0 and timing.batch16_ms > 0
    assert set(timing.to_dict()) == {"batch1_ms", "batch16_ms", "batch16_ms_per_row"}
