"""The training script (docs/training-script.md): loading it, checking what it returns, and
packing its export into an InferenceModel archive."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from jointserve.store import pack_tar_gz

from ._errors import FederatedError
from ._spec import Weights

FUNCTIONS = ("train_round", "evaluate", "export")
ARCHIVE_FILES = ("model.onnx", "metadata.json")


def load_script(path: Path) -> ModuleType:
    """Import the script file as a module of its own (a name from its bytes, so two jobs'
    scripts never share one); FederatedError if it does not import or lacks a function."""
    data = Path(path).read_bytes()
    name = f"jointserve_training_script_{hashlib.sha256(data).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FederatedError(f"training script {Path(path).name}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is named
        raise FederatedError(f"training script {Path(path).name} does not import: "
                             f"{type(exc).__name__}: {exc}") from exc
    missing = [f for f in FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise FederatedError(f"training script {Path(path).name} lacks "
                             f"{', '.join(missing)} (docs/training-script.md)")
    return module


def load_weights(path: Path) -> Weights:
    """The initial weights: an .npz of named arrays (no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            weights = {name: arrays[name] for name in arrays.files}
    except Exception as exc:  # noqa: BLE001 - a bad file is named, whatever numpy raised
        raise FederatedError(f"initial weights {Path(path).name}: not an .npz of arrays: "
                             f"{exc}") from exc
    if not weights:
        raise FederatedError(f"initial weights {Path(path).name}: the .npz holds no array")
    return weights


def checked_update(result: Any, reference: Weights) -> tuple[Weights, int, dict[str, float]]:
    """train_round's result as (weights, samples, metrics), or FederatedError saying how it
    breaks the contract: a missing key, an array of another shape or dtype, NaN, no samples."""
    if not isinstance(result, dict):
        raise FederatedError(f"train_round returned {type(result).__name__}, not a dict")
    weights = result.get("weights")
    if not isinstance(weights, dict):
        raise FederatedError("train_round's result has no 'weights' dict")
    if set(weights) != set(reference):
        raise FederatedError(f"train_round returned weights {sorted(weights)}; the model has "
                             f"{sorted(reference)}")
    for name, want in reference.items():
        got = weights[name]
        if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype != want.dtype:
            shown = (f"{got.dtype}{list(got.shape)}" if isinstance(got, np.ndarray)
                     else type(got).__name__)
            raise FederatedError(f"train_round returned weights {name!r} as {shown}; the "
                                 f"model has {want.dtype}{list(want.shape)}")
        if got.dtype.kind == "f" and not np.isfinite(got).all():
            raise FederatedError(f"train_round returned weights {name!r} with NaN or inf")
    samples = result.get("samples")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples <= 0:
        raise FederatedError(f"train_round's 'samples' must be a positive int, got {samples!r}")
    return weights, int(samples), _metrics(result.get("metrics") or {})


def _metrics(metrics: Any) -> dict[str, float]:
    """The finite numbers of a metrics dict (anything else is dropped, not fatal)."""
    if not isinstance(metrics, dict):
        return {}
    out = {}
    for key in ("loss", "accuracy"):
        value = metrics.get(key)
        if isinstance(value, (int, float, np.floating)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def export_archive(script_path: Path, weights: Weights, classes: list[str]) -> bytes:
    """The InferenceModel archive of `weights`: the script's export, packed reproducibly."""
    files = load_script(script_path).export(weights, list(classes))
    if not isinstance(files, dict):
        raise FederatedError(f"export returned {type(files).__name__}, not a dict of files")
    missing = [name for name in ARCHIVE_FILES if name not in files]
    if missing:
        raise FederatedError(f"export's files lack {', '.join(missing)}")
    bad = [name for name, data in files.items() if not isinstance(data, bytes)]
    if bad:
        raise FederatedError(f"export's files {', '.join(bad)} are not bytes")
    return pack_tar_gz(files)
