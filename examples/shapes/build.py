"""Builds the shapes example: a synthetic Pascal VOC detection set and two tiny detectors.

The images are 32x32 grayscale PNGs on black with Gaussian noise, each showing one to three
8x8 squares, "bright" (pixel value 230) or "dim" (115). The detectors are not trained: each
is a fixed ONNX graph, an 8x8 box filter whose mean gives two class scores (bright: mean
near 0.9; dim: mean near 0.45) where the window's darkest pixel shows it lies wholly on a
square (its inner 6x6, so a box a pixel off still counts), one box per filter position. The edge detector looks at
every 4th position (a coarse anchor grid: it often misplaces a box by 2 pixels, which at
8x8 is below IoU 0.5), the cloud detector at every position. A JointInferenceService
decodes the PNG (imageDecode), runs the edge detector, keeps the best boxes (nms) and sends
images the IBTFilter policy finds doubtful to the cloud detector. Evaluated over the VOC
set (mAP@0.5), the example shows edge < joint <= cloud.

    python examples/shapes/build.py [--out DIR] [--base-url URL] [--force]

Writes archives/shapes-edge-v1.tar.gz, archives/shapes-cloud-v1.tar.gz, archives/shapes-voc.tar.gz
and the generated shapes-edge.yaml, shapes-cloud.yaml and shapes-voc.yaml (the
JointInferenceService, shapes.yaml, is written by hand and committed). Reproducible: the same
library versions give the same bytes and sha256s.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jointserve.api import kube_yaml
from jointserve.store import pack_tar_gz as tar_gz
from jointserve.store import write_atomic

HERE = Path(__file__).resolve().parent
DEFAULT_BASE_URL = "http://127.0.0.1:8808"
SIZE = 32  # image side, pixels
SQUARE = 8  # object side, pixels
LEVELS = {"bright": 230, "dim": 115}
LABELS = list(LEVELS)  # class id -> name, in the detectors' score order
NOISE = 20.0  # standard deviation of the pixel noise
IMAGES = 120
SEED = 0
STRIDES = {"shapes-edge": 4, "shapes-cloud": 1}
LAYERS = {"shapes-edge": "edge", "shapes-cloud": "cloud"}
DATASET = "shapes-voc"


@dataclass(frozen=True)
class Square:
    label: str
    x: int  # left edge, pixels (continuous coordinates: the box is [x, x + SQUARE])
    y: int


# -- the data ---------------------------------------------------------------------------------


def scenes(rng: np.random.Generator) -> list[list[Square]]:
    """IMAGES scenes of 1-3 squares that do not touch each other."""
    out = []
    for _ in range(IMAGES):
        squares: list[Square] = []
        while len(squares) < rng.integers(1, 4):
            x, y = (int(v) for v in rng.integers(0, SIZE - SQUARE + 1, size=2))
            if all(abs(x - s.x) > SQUARE or abs(y - s.y) > SQUARE for s in squares):
                squares.append(Square(LABELS[int(rng.integers(0, 2))], x, y))
        out.append(squares)
    return out


def render(squares: list[Square], rng: np.random.Generator) -> bytes:
    """The scene as a PNG: squares at their level, noise everywhere, clipped to 0..255."""
    from PIL import Image

    pixels = np.zeros((SIZE, SIZE), dtype=np.float64)
    for s in squares:
        pixels[s.y:s.y + SQUARE, s.x:s.x + SQUARE] = LEVELS[s.label]
    pixels += rng.normal(0.0, NOISE, size=pixels.shape)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=9)
    return out.getvalue()


def annotation(name: str, squares: list[Square]) -> bytes:
    objects = "".join(
        f"<object><name>{s.label}</name><difficult>0</difficult><bndbox>"
        f"<xmin>{s.x}</xmin><ymin>{s.y}</ymin><xmax>{s.x + SQUARE}</xmax>"
        f"<ymax>{s.y + SQUARE}</ymax></bndbox></object>" for s in squares)
    return (f"<annotation><filename>{name}.png</filename><size><width>{SIZE}</width>"
            f"<height>{SIZE}</height><depth>1</depth></size>{objects}</annotation>\n").encode()


def voc_archive() -> bytes:
    """The VOC set: Annotations/*.xml and JPEGImages/*.png (PNGs, as the file names say)."""
    rng = np.random.default_rng(SEED)
    members: dict[str, bytes] = {}
    for i, squares in enumerate(scenes(rng)):
        name = f"shape-{i:04d}"
        members[f"Annotations/{name}.xml"] = annotation(name, squares)
        members[f"JPEGImages/{name}.png"] = render(squares, rng)
    return tar_gz(members)


# -- the detectors ----------------------------------------------------------------------------


def detector(stride: int) -> bytes:
    """image [N, 1, 32, 32] in 0..1 -> boxes [N, B, 4] (x1, y1, x2, y2), scores [N, B, 2]."""
    from onnx import TensorProto, helper, numpy_helper

    grid = (SIZE - SQUARE) // stride + 1
    anchors = np.array([[j * stride, i * stride, j * stride + SQUARE, i * stride + SQUARE]
                        for i in range(grid) for j in range(grid)], dtype=np.float32)[None]

    def const(name: str, value: np.ndarray | float) -> object:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "window"], ["mean"], strides=[stride, stride]),
        # covered: the darkest pixel of the window's inner 6x6 is above the background
        # (min = -max(-x)), so a window half over a bright square (its mean like a dim
        # one's) scores neither class, while one a pixel off a square still scores
        helper.make_node("Slice", ["image", "inner_start", "inner_end", "spatial"], ["inner"]),
        helper.make_node("Neg", ["inner"], ["negative"]),
        helper.make_node("MaxPool", ["negative"], ["darkest_neg"],
                         kernel_shape=[SQUARE - 2, SQUARE - 2], strides=[stride, stride]),
        helper.make_node("Neg", ["darkest_neg"], ["darkest"]),
        helper.make_node("Sub", ["darkest", "c01"], ["c0"]),
        helper.make_node("Mul", ["c0", "sharp"], ["c1"]),
        helper.make_node("Sigmoid", ["c1"], ["covered"]),
        # bright: the window's mean well above 0.7; dim: between 0.3 and 0.6
        helper.make_node("Sub", ["mean", "c07"], ["b0"]),
        helper.make_node("Mul", ["b0", "sharp"], ["b1"]),
        helper.make_node("Sigmoid", ["b1"], ["b2"]),
        helper.make_node("Mul", ["b2", "covered"], ["bright"]),
        helper.make_node("Sub", ["mean", "c03"], ["d0"]),
        helper.make_node("Mul", ["d0", "sharp"], ["d1"]),
        helper.make_node("Sigmoid", ["d1"], ["d2"]),
        helper.make_node("Sub", ["c06", "mean"], ["d3"]),
        helper.make_node("Mul", ["d3", "sharp"], ["d4"]),
        helper.make_node("Sigmoid", ["d4"], ["d5"]),
        helper.make_node("Mul", ["d2", "d5"], ["d6"]),
        helper.make_node("Mul", ["d6", "covered"], ["dim"]),
        helper.make_node("Concat", ["bright", "dim"], ["maps"], axis=1),
        helper.make_node("Reshape", ["maps", "flat"], ["per_class"]),
        helper.make_node("Transpose", ["per_class"], ["scores"], perm=[0, 2, 1]),
        # boxes: the anchors, one copy per image (broadcast over the batch)
        helper.make_node("ReduceSum", ["scores", "last"], ["summed"], keepdims=1),
        helper.make_node("Mul", ["summed", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "anchors"], ["boxes"]),
    ]
    initializers = [
        const("window", np.full((1, 1, SQUARE, SQUARE), 1.0 / SQUARE**2)),
        const("c07", 0.7), const("c03", 0.3), const("c06", 0.6), const("c01", 0.1),
        const("sharp", 30.0),
        const("zero", 0.0), const("anchors", anchors),
        numpy_helper.from_array(np.array([0, 2, -1], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
        numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "inner_start"),
        numpy_helper.from_array(np.array([SIZE - 1, SIZE - 1], dtype=np.int64), "inner_end"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "spatial"),
    ]
    graph = helper.make_graph(
        nodes, f"shapes_stride{stride}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [None, grid * grid, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, grid * grid, 2])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="examples/shapes/build.py")
    model.ir_version = 8
    return model.SerializeToString()


def model_archive(name: str) -> bytes:
    metadata = {"task": "detection", "labels": LABELS, "framework": "onnx",
                "description": f"fixed box-filter detector, anchor stride {STRIDES[name]}"}
    return tar_gz({"model.onnx": detector(STRIDES[name]),
                   "metadata.json": (json.dumps(metadata) + "\n").encode()})


# -- files ------------------------------------------------------------------------------------


HEADER = ("# Generated by examples/shapes/build.py; a rebuild overwrites it.\n")


def model_yaml(name: str, url: str, sha256: str) -> str:
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
           "metadata": {"name": name},
           "spec": {"modelName": name, "deployToLayer": LAYERS[name], "frameworkType": "onnx",
                    "manifest": [{"version": "v1", "downloadURL": url, "sha256sum": sha256}],
                    "replicas": 1}}
    return HEADER + kube_yaml([doc])


def dataset_yaml(url: str, sha256: str) -> str:
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
           "metadata": {"name": DATASET},
           "spec": {"url": url, "sha256sum": sha256, "format": "voc"}}
    return HEADER + kube_yaml([doc])


def build(out: Path, base_url: str = DEFAULT_BASE_URL) -> dict[str, str]:
    """Write the archives and their YAML into `out`; returns {archive name: sha256}."""
    base = base_url.rstrip("/")
    written = {}
    for name in STRIDES:
        data = model_archive(name)
        write_atomic(out / "archives" / f"{name}-v1.tar.gz", data)
        written[f"{name}-v1.tar.gz"] = digest = hashlib.sha256(data).hexdigest()
        write_atomic(out / f"{name}.yaml", model_yaml(name, f"{base}/{name}-v1.tar.gz", digest).encode())
    data = voc_archive()
    write_atomic(out / "archives" / f"{DATASET}.tar.gz", data)
    written[f"{DATASET}.tar.gz"] = digest = hashlib.sha256(data).hexdigest()
    write_atomic(out / f"{DATASET}.yaml", dataset_yaml(f"{base}/{DATASET}.tar.gz", digest).encode())
    return written


def up_to_date(out: Path, base_url: str) -> bool:
    script = Path(__file__).stat().st_mtime_ns
    paths = [out / "archives" / f"{n}-v1.tar.gz" for n in STRIDES] + [
        out / "archives" / f"{DATASET}.tar.gz", *(out / f"{n}.yaml" for n in (*STRIDES, DATASET))]
    fresh = all(p.is_file() and p.stat().st_mtime_ns > script for p in paths)
    return fresh and f"{base_url.rstrip('/')}/" in (out / f"{DATASET}.yaml").read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if not args.force and up_to_date(args.out, args.base_url):
        print(f"shapes example in {args.out}: up to date")
        return 0
    for name, digest in build(args.out, args.base_url).items():
        print(f"  {name}  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
