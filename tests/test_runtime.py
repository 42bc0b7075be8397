"""jointserve.runtime on the real digits models, built by examples/digits/build.py into a temp dir.

The build is imported rather than run as a script, so the fitted scikit-learn models are at
hand to compare predictions with; the same build's outputs (manifests, archives) are checked too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from jointserve.api import load_file
from jointserve.runtime import (THREADS_ENV, ModelLoadError, OnnxModel, TensorSpec, numpy_dtype,
                                oip_datatype)

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "digits" / "build.py"
BASE_URL = "http://files.test:9000"
KEYS = ("digits-edge-v1", "digits-edge-v2", "digits-cloud-v1")


def _import_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_build", BUILD_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build() -> ModuleType:
    return _import_build()


@pytest.fixture(scope="module")
def built(build: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("digits")
    return out, build.build(out, BASE_URL)


@pytest.fixture(scope="module")
def model_dirs(built: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each archive unpacked into its own directory, as the artifact store would."""
    _, artifacts = built
    dirs = {}
    for key, artifact in artifacts.items():
        dirs[key] = tmp_path_factory.mktemp(key)
        with tarfile.open(artifact.archive) as tar:
            tar.extractall(dirs[key], filter="data")
    return dirs


@pytest.fixture(scope="module")
def samples(built: tuple[Path, dict]) -> tuple[np.ndarray, np.ndarray]:
    out, _ = built
    with np.load(out / "samples.npz") as npz:
        return npz["X"], npz["y"]


# -- the digits models -----------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_specs_and_metadata_of_the_digits_models(key: str, model_dirs: dict[str, Path],
                                                 built: tuple[Path, dict]) -> None:
    model = OnnxModel(model_dirs[key])
    assert model.inputs == (TensorSpec("input", "FP32", (-1, 64), np.dtype(np.float32)),)
    assert model.outputs == (
        TensorSpec("label", "INT64", (-1,), np.dtype(np.int64)),
        TensorSpec("probabilities", "FP32", (-1, 10), np.dtype(np.float32)),
    )
    artifact = built[1][key]
    assert model.metadata["labels"] == [str(i) for i in range(10)]
    assert model.metadata["framework"] == "onnx"
    assert model.metadata["trained_on"] == artifact.trained_on
    assert model.metadata["accuracy"] == pytest.approx(artifact.accuracy, abs=1e-4)
    assert model.providers[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize("key", KEYS)
def test_run_predicts_like_scikit_learn(key: str, model_dirs: dict[str, Path],
                                        built: tuple[Path, dict], samples: tuple) -> None:
    X = samples[0][:8]
    estimator = built[1][key].estimator
    outputs = OnnxModel(model_dirs[key]).run({"input": X})
    assert set(outputs) == {"label", "probabilities"}
    assert outputs["label"].dtype == np.int64 and outputs["label"].shape == (8,)
    np.testing.assert_array_equal(outputs["label"], estimator.predict(X))
    np.testing.assert_allclose(outputs["probabilities"], estimator.predict_proba(X), atol=1e-4)


def test_run_returns_only_the_requested_outputs(model_dirs: dict[str, Path], samples: tuple) -> None:
    outputs = OnnxModel(model_dirs["digits-edge-v2"]).run({"input": samples[0][:2]}, ["label"])
    assert list(outputs) == ["label"]


def test_run_is_safe_from_several_threads(model_dirs: dict[str, Path], samples: tuple) -> None:
    model = OnnxModel(model_dirs["digits-cloud-v1"])
    X = samples[0][:64]
    expected = model.run({"input": X})["label"]

    def one(i: int) -> np.ndarray:
        return model.run({"input": X[i : i + 1]})["label"][0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(one, range(len(X))))
    np.testing.assert_array_equal(got, expected)


def test_metadata_is_optional(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(model_dirs["digits-edge-v1"] / "model.onnx", tmp_path / "digits.onnx")
    model = OnnxModel(tmp_path)  # the only *.onnx, under another name, is found too
    assert model.metadata == {} and model.path.name == "digits.onnx"


# -- session settings ------------------------------------------------------------------------


def _intra_op_threads(model: OnnxModel) -> int:
    return model._session.get_session_options().intra_op_num_threads  # noqa: SLF001


def test_threads_default_env_and_argument(model_dirs: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = model_dirs["digits-edge-v1"]
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert _intra_op_threads(OnnxModel(path)) == 1
    monkeypatch.setenv(THREADS_ENV, "2")
    assert _intra_op_threads(OnnxModel(path)) == 2
    assert _intra_op_threads(OnnxModel(path, intra_op_threads=1)) == 1
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match=f"{THREADS_ENV}='many' is not an integer"):
        OnnxModel(path)


# -- datatypes -------------------------------------------------------------------------------

OIP_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                 "INT64", "FP16", "FP32", "FP64", "BYTES"]


@pytest.mark.parametrize("datatype", OIP_DATATYPES)
def test_datatype_mapping_round_trips(datatype: str) -> None:
    assert oip_datatype(numpy_dtype(datatype)) == datatype


@pytest.mark.parametrize(("dtype", "datatype"), [
    (np.float32, "FP32"), (np.dtype(">f4"), "FP32"), (np.int64, "INT64"), (np.bool_, "BOOL"),
    (np.dtype("U5"), "BYTES"), (np.dtype("S3"), "BYTES"), (object, "BYTES"),
])
def test_oip_datatype_of_numpy_dtypes(dtype: object, datatype: str) -> None:
    assert oip_datatype(np.dtype(dtype)) == datatype


def test_unknown_datatypes_are_named() -> None:
    with pytest.raises(ValueError, match="'BF16'"):
        numpy_dtype("BF16")
    with pytest.raises(ValueError, match="complex64"):
        oip_datatype(np.dtype(np.complex64))


# -- load errors -----------------------------------------------------------------------------


def _two_models(path: Path, onnx: bytes) -> None:
    (path / "a.onnx").write_bytes(onnx)
    (path / "b.onnx").write_bytes(onnx)


@pytest.mark.parametrize(("setup", "reason"), [
    pytest.param(lambda path, onnx: None, "no model.onnx and no other *.onnx file", id="empty"),
    pytest.param(_two_models, "several *.onnx files (a.onnx, b.onnx)", id="two-onnx-files"),
    pytest.param(lambda path, onnx: (path / "model.onnx").write_bytes(onnx[: len(onnx) // 2]),
                 "onnxruntime cannot load model.onnx", id="truncated-onnx"),
    pytest.param(lambda path, onnx: (path / "model.onnx").write_bytes(b"not a model"),
                 "onnxruntime cannot load model.onnx", id="garbage-onnx"),
    pytest.param(lambda path, onnx: ((path / "model.onnx").write_bytes(onnx),
                                     (path / "metadata.json").write_text("{labels")),
                 "metadata.json is not readable JSON", id="bad-metadata"),
    pytest.param(lambda path, onnx: ((path / "model.onnx").write_bytes(onnx),
                                     (path / "metadata.json").write_text("[1]")),
                 "metadata.json must hold a JSON object", id="metadata-not-object"),
])
def test_load_errors_name_the_directory_and_reason(
        setup: Callable[[Path, bytes], object], reason: str, tmp_path: Path,
        model_dirs: dict[str, Path]) -> None:
    setup(tmp_path, (model_dirs["digits-edge-v1"] / "model.onnx").read_bytes())
    with pytest.raises(ModelLoadError) as err:
        OnnxModel(tmp_path)
    assert err.value.path == tmp_path
    assert reason in err.value.reason
    assert str(err.value).startswith(f"cannot load model from {tmp_path}: ")


def test_model_onnx_wins_over_other_onnx_files(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    onnx = (model_dirs["digits-edge-v1"] / "model.onnx").read_bytes()
    _two_models(tmp_path, b"ignored")
    (tmp_path / "model.onnx").write_bytes(onnx)
    assert OnnxModel(tmp_path).path == tmp_path / "model.onnx"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such directory"):
        OnnxModel(tmp_path / "nope")


# -- the build script's outputs --------------------------------------------------------------


def test_manifests_name_the_archives_by_url_and_sha256(built: tuple[Path, dict]) -> None:
    out, artifacts = built
    for name, versions in (("digits-edge", ["v1", "v2"]), ("digits-cloud", ["v1"])):
        path = out / f"{name}.yaml"
        assert path.read_text().startswith("# Generated by examples/digits/build.py")
        (model,) = load_file(path)
        spec = model.spec
        assert spec.modelName == name and spec.targetVersion == "v1" and spec.replicas == 1
        assert spec.deployToLayer == name.removeprefix("digits-")
        assert [m.version for m in spec.manifest] == versions
        for entry in spec.manifest:
            archive = out / "archives" / f"{name}-{entry.version}.tar.gz"
            assert entry.downloadURL == f"{BASE_URL}/{archive.name}"
            assert entry.sha256sum == hashlib.sha256(archive.read_bytes()).hexdigest()
            assert artifacts[f"{name}-{entry.version}"].sha256 == entry.sha256sum


def test_archives_are_reproducible(build: ModuleType, built: tuple[Path, dict],
                                   tmp_path: Path) -> None:
    again = build.build(tmp_path, BASE_URL)
    assert {k: a.sha256 for k, a in again.items()} == {k: a.sha256 for k, a in built[1].items()}
    with tarfile.open(again["digits-edge-v1"].archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["metadata.json", "model.onnx"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)


def test_request_and_samples(built: tuple[Path, dict], samples: tuple) -> None:
    out, _ = built
    body = json.loads((out / "request.json").read_text())
    (tensor,) = body["inputs"]
    assert {k: tensor[k] for k in ("name", "shape", "datatype")} == {
        "name": "input", "shape": [1, 64], "datatype": "FP32"}
    X, y = samples
    assert X.dtype == np.float32 and X.shape[1] == 64 and 0 <= X.min() and X.max() <= 1
    assert y.dtype == np.int64 and y.shape == (len(X),)
    np.testing.assert_array_equal(np.asarray(tensor["data"], np.float32), X[0])


def test_up_to_date_skips_and_force_rebuilds(build: ModuleType, built: tuple[Path, dict],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = built
    assert build.up_to_date(out, BASE_URL)
    assert not build.up_to_date(out, "http://elsewhere:1")
    assert build.main(["--out", str(out), "--base-url", BASE_URL]) == 0
    assert "up to date" in capsys.readouterr().out
