"""One ONNX model version in onnxruntime: loading, tensor specs in OIP v2 terms, and running.

Part of jointserve.runtime. Both tiers (and the operator's trial load) load a model directory
unpacked by the artifact store: `model.onnx` (or the only `*.onnx`) plus an optional
`metadata.json`. Tensor specs are given as the Open Inference Protocol describes them
(datatype strings such as "FP32", -1 for a dynamic dimension), so the protocol layer never
has to know onnxruntime's own type names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

THREADS_ENV = "JOINTSERVE_ORT_THREADS"
DEFAULT_THREADS = 1
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"

# Accelerators used when this onnxruntime build has them, in this order; CPU always comes
# last. Not every available provider qualifies: Azure (in the stock CPU wheel) calls remote
# endpoints instead of computing, and TensorRT builds engines for minutes at load time.
_ACCELERATORS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
)

# OIP v2 datatype <-> numpy dtype. BYTES is carried as numpy object arrays (onnxruntime's
# tensor(string)). BF16 is left out: numpy has no such dtype.
_NUMPY_BY_OIP: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_OIP_BY_NUMPY: dict[np.dtype, str] = {dtype: name for name, dtype in _NUMPY_BY_OIP.items()}

# onnxruntime's type strings for tensors, e.g. "tensor(float)".
_ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class ModelLoadError(Exception):
    """A model directory that does not hold a model onnxruntime can load and jointserve serve."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot load model from {self.path}: {reason}")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output, in OIP v2 metadata terms."""

    name: str
    datatype: str  # OIP v2 datatype string: "FP32", "INT64", "BYTES", ...
    shape: tuple[int, ...]  # -1 for dynamic dimensions (OIP metadata convention)
    numpy_dtype: np.dtype


def oip_datatype(dtype: np.dtype | type) -> str:
    """The OIP v2 datatype of a numpy dtype; strings of any kind are BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    try:
        return _OIP_BY_NUMPY[dtype.newbyteorder("=")]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of an OIP v2 datatype string; ValueError naming it if unknown."""
    try:
        return _NUMPY_BY_OIP[datatype]
    except KeyError:
        known = ", ".join(_NUMPY_BY_OIP)
        raise ValueError(f"unknown or unsupported OIP datatype {datatype!r} (known: {known})") from None


def _threads(explicit: int | None) -> int:
    """Explicit argument, else $JOINTSERVE_ORT_THREADS, else 1. 0 means onnxruntime's default
    (one thread per physical core)."""
    if explicit is not None:
        value, origin = explicit, "intra_op_threads"
    elif raw := os.environ.get(THREADS_ENV, "").strip():
        try:
            value, origin = int(raw), THREADS_ENV
        except ValueError:
            raise ValueError(f"{THREADS_ENV}={raw!r} is not an integer") from None
    else:
        return DEFAULT_THREADS
    if value < 0:
        raise ValueError(f"{origin} must be >= 0, got {value}")
    return value


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Sized for small models on a small machine (2 cores): Ray Serve scales by adding
    # replicas, so each session computes on one thread, and its pool threads must not spin
    # while idle (the default) or they steal the cores Ray's own processes need.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _providers() -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in _ACCELERATORS if p in available] + ["CPUExecutionProvider"]


def _find_model_file(model_dir: Path) -> Path:
    if not model_dir.is_dir():
        raise ModelLoadError(model_dir, "not a directory" if model_dir.exists() else "no such directory")
    preferred = model_dir / MODEL_FILE
    if preferred.is_file():
        return preferred
    candidates = sorted(p for p in model_dir.glob("*.onnx") if p.is_file())
    if not candidates:
        raise ModelLoadError(model_dir, f"no {MODEL_FILE} and no other *.onnx file in the directory")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ModelLoadError(model_dir, f"no {MODEL_FILE} and several *.onnx files ({names}); "
                                        f"name the one to serve {MODEL_FILE}")
    return candidates[0]


def _read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(model_dir, f"{METADATA_FILE} is not readable JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ModelLoadError(model_dir, f"{METADATA_FILE} must hold a JSON object, "
                                        f"not {type(metadata).__name__}")
    return metadata


def _spec(model_dir: Path, kind: str, arg: Any) -> TensorSpec:
    datatype = _ORT_TO_OIP.get(arg.type)
    if datatype is None:
        raise ModelLoadError(model_dir, f"{kind} {arg.name!r} has type {arg.type}, which the Open "
                                        "Inference Protocol cannot carry (tensors only; for "
                                        "scikit-learn classifiers export with zipmap=False)")
    # onnxruntime reports a dynamic dimension as None or a symbolic name (str).
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, datatype, shape, _NUMPY_BY_OIP[datatype])


class OnnxModel:
    """One loaded ONNX model version.

    `run` is safe to call from several threads at once: onnxruntime documents concurrent
    `InferenceSession.run` calls on one session as supported, and this class keeps no other
    mutable state.
    """

    def __init__(self, model_dir: Path, *, intra_op_threads: int | None = None) -> None:
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.path = _find_model_file(model_dir)
        self.metadata: dict[str, Any] = _read_metadata(model_dir)
        options = _session_options(_threads(intra_op_threads))
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options,
                                                 providers=_providers())
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
            message = str(exc).strip() or type(exc).__name__
            raise ModelLoadError(model_dir, f"onnxruntime cannot load {self.path.name}: {message}") from exc
        self.inputs: tuple[TensorSpec, ...] = tuple(
            _spec(model_dir, "input", arg) for arg in self._session.get_inputs())
        self.outputs: tuple[TensorSpec, ...] = tuple(
            _spec(model_dir, "output", arg) for arg in self._session.get_outputs())
        self._output_names = [spec.name for spec in self.outputs]

    @property
    def providers(self) -> list[str]:
        """The execution providers the session ended up with, in priority order."""
        return self._session.get_providers()

    def run(self, feeds: Mapping[str, np.ndarray],
            output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model; returns the requested outputs (all by default) by name.

        Feeds must already have each input's dtype and a fitting shape (the protocol layer
        checks that and names the problem); onnxruntime's own errors pass through.
        """
        names = list(output_names) if output_names is not None else self._output_names
        results = self._session.run(names, dict(feeds))
        return dict(zip(names, results))

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, providers={self.providers})"
