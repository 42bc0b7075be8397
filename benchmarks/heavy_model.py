"""A compute-heavy cloud model for the batching scenario, built locally from a fixed seed.

The digits cloud model costs ~13 µs a call, so dynamic batching cannot pay for itself there:
the serving path, not the model, sets the throughput. This module builds a model whose compute
matters, with the digits models' signature (so the same OIP v2 request bodies fit):

    input          "input"          FP32  [-1, 64]
    outputs        "label"          INT64 [-1]      ArgMax of the logits
                   "probabilities"  FP32  [-1, 10]  Softmax of the logits

a random MLP with Relu: 64 -> W, then `depth` W x W layers, then W -> 10 (W = 2048, depth 8).
Each W x W layer has weights of its own: 128 MiB in all, four times the machine's 32 MiB L3,
so a call streams every weight from memory as a large model's does. At batch 1 each layer is
a matrix-vector product, bound by that stream; a batch reads the weights once per layer for
all its rows, so it costs far less than one call per row. Measured on the 2-core benchmark
machine (onnxruntime 1.32, 1 intra-op thread, 30 calls each, medians):

    batch 1:   3.0 ms per call
    batch 16: 10.1 ms per call, i.e. ~0.63 ms per row (~4.8x cheaper per row)
    batch 32: 14.3 ms per call, i.e. ~0.45 ms per row (~6.8x cheaper per row)

(An earlier version shared one W x W matrix between the layers to keep the archive at 16 MiB;
16 MiB stays in L3, a call took 1.15 ms and batching saved only ~3.5x per row in process:
that measured the cache, not the serving path.)

At batch 1 a call takes longer than jointserve's INLINE_MAX_S (2 ms), so the cloud replica
runs it off its event loop, batched or not: both configurations take the same path.

`build(directory)` packs it as the jointserve model archive `cloud-heavy-v1.tar.gz` (model.onnx
+ metadata.json, byte-for-byte reproducible) and returns its path and sha256; it rebuilds only
when the archive is missing or was built with other parameters (recorded in a sidecar JSON).
`measure(model_dir)` times it in process, as the figures above were.

    python -m benchmarks.heavy_model [DIR]      build (if needed) and measure
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

MODEL_NAME = "cloud-heavy"
VERSION = "v1"
ARCHIVE = f"{MODEL_NAME}-{VERSION}.tar.gz"
SIDECAR = f"{MODEL_NAME}-{VERSION}.json"  # the parameters and sha256 the archive was built with
N_FEATURES, N_CLASSES = 64, 10  # the digits models' signature
# Pinned like examples/digits/build.py: the same bytes whatever the installed onnx prefers,
# loadable by every onnxruntime pyproject allows (>= 1.20). IR 8 is opset 17's IR version.
OPSET, IR_VERSION = 17, 8
FORMAT = 2  # bump when the graph or packing changes in a way the parameters do not show
DIGITS_BUILD = Path(__file__).resolve().parent.parent / "examples" / "digits" / "build.py"


@dataclass(frozen=True)
class Params:
    """What the model is made of; any change rebuilds the archive."""

    width: int = 2048  # W: the hidden layers' size
    depth: int = 8  # hidden W x W layers after the first (64 -> W) one, each its own
    seed: int = 0
    logit_scale: float = 1.5  # see weights()

    def key(self) -> str:
        text = json.dumps({"format": FORMAT, "opset": OPSET, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class HeavyArchive:
    path: Path
    sha256: str
    params: Params


@dataclass(frozen=True)
class Timing:
    """In-process onnxruntime cost of one call, 1 intra-op thread (medians)."""

    batch1_ms: float
    batch16_ms: float

    @property
    def batch16_ms_per_row(self) -> float:
        return self.batch16_ms / 16

    def to_dict(self) -> dict[str, float]:
        return {"batch1_ms": self.batch1_ms, "batch16_ms": self.batch16_ms,
                "batch16_ms_per_row": self.batch16_ms_per_row}


# -- the model -------------------------------------------------------------------------------

def weights(params: Params) -> dict[str, np.ndarray]:
    """The weight matrices ([in, out], float32) by initializer name, from params.seed:
    w_in, w_hidden1 .. w_hidden<depth>, w_out.

    He-scaled so the activations keep their size through the Relus, and a last layer of std
    logit_scale * sqrt(3 / W), which for inputs in [0, 1] gives logits of std ~1 and softmaxes
    neither flat nor one-hot (top probability ~0.2-0.6). Only elementwise float32 ops follow
    the generator, so the bytes do not depend on the BLAS build.
    """
    rng = np.random.default_rng(params.seed)
    w = params.width

    def normal(fan_in: int, fan_out: int, std: float) -> np.ndarray:
        return rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(std)

    hidden = {f"w_hidden{i}": normal(w, w, np.sqrt(2.0 / w)) for i in range(1, params.depth + 1)}
    return {"w_in": normal(N_FEATURES, w, np.sqrt(2.0 / N_FEATURES)), **hidden,
            "w_out": normal(w, N_CLASSES, params.logit_scale * np.sqrt(3.0 / w))}


def model_bytes(params: Params) -> bytes:
    """The serialized ONNX model: input -> Gemm+Relu -> (Gemm+Relu) x depth -> Gemm -> logits,
    then ArgMax -> "label" and Softmax -> "probabilities"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = []

    def dense(x: str, w: str, out: str, relu: bool = True) -> str:
        nodes.append(helper.make_node("Gemm", [x, w], [f"{out}_pre" if relu else out]))
        if relu:
            nodes.append(helper.make_node("Relu", [f"{out}_pre"], [out]))
        return out

    h = dense("input", "w_in", "h0")
    for i in range(1, params.depth + 1):
        h = dense(h, f"w_hidden{i}", f"h{i}")
    dense(h, "w_out", "logits", relu=False)
    nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, MODEL_NAME,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", N_FEATURES])],
        outputs=[helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                 helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", N_CLASSES])],
        initializer=[numpy_helper.from_array(a, name) for name, a in weights(params).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="benchmarks.heavy_model")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def metadata(params: Params) -> dict[str, object]:
    return {"framework": "onnx", "task": "classification",
            "labels": [str(i) for i in range(N_CLASSES)],
            "description": f"random MLP 64 -> {params.width} -> ({params.width} x {params.depth}) "
                           f"-> 10, Relu, seed {params.seed}: a compute-heavy stand-in for "
                           "batching benchmarks",
            "params": asdict(params)}


# -- the archive -----------------------------------------------------------------------------

def build(directory: Path, params: Params = Params()) -> HeavyArchive:
    """`directory/cloud-heavy-v1.tar.gz`, built unless already there with these parameters."""
    archive, sidecar = directory / ARCHIVE, directory / SIDECAR
    cached = _cached(archive, sidecar, params)
    if cached:
        return cached
    digits = _digits_build()  # its reproducible tar.gz and atomic write, so both agree
    data = digits.tar_gz({"model.onnx": model_bytes(params),
                          "metadata.json": (json.dumps(metadata(params)) + "\n").encode()})
    sha256 = hashlib.sha256(data).hexdigest()
    digits.write_atomic(archive, data)
    # Written after the archive: a sidecar never vouches for an archive that is not complete.
    digits.write_atomic(sidecar, json.dumps({"key": params.key(), "sha256": sha256,
                                             "params": asdict(params)}, indent=1).encode())
    return HeavyArchive(archive, sha256, params)


def _cached(archive: Path, sidecar: Path, params: Params) -> HeavyArchive | None:
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("key") != params.key() or not archive.is_file():
        return None
    # Hashing the archive takes a fraction of a second and catches an archive replaced or cut short behind our back.
    if _sha256_file(archive) != recorded.get("sha256"):
        return None
    return HeavyArchive(archive, recorded["sha256"], params)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _digits_build() -> ModuleType:
    """examples/digits/build.py as a module (it is a script, not part of a package)."""
    name = "digits_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DIGITS_BUILD)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def default_cache_dir() -> Path:
    """Where the benchmarks keep the archive between runs (rebuilding costs a second or so)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "jointserve" / "benchmarks"


# -- its cost --------------------------------------------------------------------------------

def measure(model_dir: Path, seconds: float = 1.0) -> Timing:
    """Median time of one call at batch 1 and at batch 16, in onnxruntime as the cloud tier
    runs it (jointserve.runtime.OnnxModel: 1 intra-op thread, no spinning)."""
    from jointserve.runtime import OnnxModel

    model = OnnxModel(model_dir, intra_op_threads=1)
    rows = np.random.default_rng(1).random((16, N_FEATURES), dtype=np.float32)
    return Timing(batch1_ms=_median_ms(lambda: model.run({"input": rows[:1]}), seconds / 2),
                  batch16_ms=_median_ms(lambda: model.run({"input": rows}), seconds / 2))


def measure_archive(archive: Path, seconds: float = 1.0) -> Timing:
    """`measure` on an archive: unpacked into a temp dir first."""
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cloud-heavy-") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        return measure(Path(tmp), seconds)


def _median_ms(call: Callable[[], object], budget_s: float) -> float:
    for _ in range(3):  # warm-up: the first calls allocate
        call()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(times) < 5:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else default_cache_dir()
    built = build(directory)
    timing = measure_archive(built.path)
    print(f"{built.path}  sha256 {built.sha256}")
    print(f"batch 1: {timing.batch1_ms:.2f} ms per call; batch 16: {timing.batch16_ms:.2f} ms per "
          f"call = {timing.batch16_ms_per_row:.3f} ms per row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
