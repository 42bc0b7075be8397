"""Pre/post-processing pipelines: the numpy (and pillow) side of jointserve.api's steps.

Part of jointserve.runtime. `build_pipeline` turns the declared steps into small callables once,
when a service is configured; the serving hot path then calls `Pipeline.preprocess` on the
request tensors before the model and `Pipeline.postprocess` on the model outputs after it.
Tensors are plain numpy arrays keyed by OIP tensor name; BYTES tensors are object arrays of
`bytes`. A pipeline without steps costs one dict copy and copies no array.

Bad input (an image that does not decode, a missing tensor, a wrong shape) raises
`StepInputError`, whose message names the step (`preprocess[0].imageDecode`) and the tensor;
the gateway answers it with 400.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

import numpy as np

from jointserve.api import ImageDecode, Nms, Normalize, PostStep, PreStep, Softmax, TopK

from ._onnx import TensorSpec

# Decoded images larger than this are refused before their pixels are decoded: a few KB of
# PNG can declare gigapixels (a decompression bomb). 40 MP covers any camera photo; pillow's
# own guard (warning at ~89 MP, error at twice that) is process-global and too lax for a server.
MAX_IMAGE_PIXELS = 40_000_000
_FORMATS = ("PNG", "JPEG")


def _pillow() -> ModuleType:
    """PIL.Image, imported by the first imageDecode step compiled: a process without one
    (the server and cloud replicas, most gateways) does not carry its ~5 MiB of PSS."""
    from PIL import Image

    return Image

Tensors = dict[str, np.ndarray]
Labels = Sequence[str] | None
# A compiled step: rewrites the tensor dict in place (the pipeline hands it a fresh dict);
# its errors name it by its path in the resource, e.g. "preprocess[0].imageDecode".
Run = Callable[[Tensors, Labels], None]


class StepInputError(ValueError):
    """A step cannot use its input; the message names the step, its kind and the tensor."""


class Pipeline:
    """Compiled steps of one service; immutable and safe to share between threads."""

    def __init__(self, pre: Sequence[Run], post: Sequence[Run], consumed: frozenset[str],
                 produced: frozenset[str] = frozenset()) -> None:
        self._pre = tuple(pre)
        self._post = tuple(post)
        self._consumed = consumed
        self._produced = produced

    @property
    def empty(self) -> bool:
        """True when both preprocess and postprocess are the identity."""
        return not self._pre and not self._post

    def request_inputs(self) -> frozenset[str]:
        """Request tensors the preprocess steps decode themselves (not model inputs as sent)."""
        return self._consumed

    def client_inputs(self, model_inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        """What a client sends, for OIP metadata: each tensor a step decodes (BYTES, one
        encoded item per sample), then the model inputs no step makes."""
        sent = [TensorSpec(name, "BYTES", (-1,), np.dtype(object))
                for name in sorted(self._consumed)]
        return sent + [spec for spec in model_inputs if spec.name not in self._produced]

    def preprocess(self, feeds: Mapping[str, np.ndarray]) -> Tensors:
        """Request tensors -> model feeds, as a new dict; StepInputError on bad input."""
        out = dict(feeds)
        for step in self._pre:
            step(out, None)
        return out

    def postprocess(self, outputs: Mapping[str, np.ndarray], labels: Labels = None) -> Tensors:
        """Model outputs -> response tensors, as a new dict. `labels`: the model's class names."""
        out = dict(outputs)
        for step in self._post:
            step(out, labels)
        return out


def build_pipeline(pre: Sequence[PreStep], post: Sequence[PostStep]) -> Pipeline:
    """Compile the declared steps; constants (normalisation factors) are computed once here."""
    pre_steps: list[Run] = []
    consumed: set[str] = set()
    produced: set[str] = set()
    for i, step in enumerate(pre):
        where = f"preprocess[{i}].{step.kind}"
        if step.imageDecode is not None:
            spec = step.imageDecode
            if spec.input not in produced:
                consumed.add(spec.input)
            produced.add(spec.output)
            pre_steps.append(_image_decode(where, spec))
        elif step.normalize is not None:
            pre_steps.append(_normalize(where, step.normalize))
    post_steps: list[Run] = []
    for i, post_step in enumerate(post):
        where = f"postprocess[{i}].{post_step.kind}"
        if post_step.softmax is not None:
            post_steps.append(_softmax(where, post_step.softmax))
        elif post_step.topK is not None:
            post_steps.append(_top_k(where, post_step.topK))
        elif post_step.nms is not None:
            post_steps.append(_nms(where, post_step.nms))
    return Pipeline(pre_steps, post_steps, frozenset(consumed), frozenset(produced))


def _tensor(tensors: Tensors, where: str, role: str, name: str) -> np.ndarray:
    try:
        return tensors[name]
    except KeyError:
        have = sorted(tensors)
        raise StepInputError(f"{where}: {role} {name!r} is missing (have {have})") from None


# -- preprocess ---------------------------------------------------------------------------------


def _image_decode(where: str, spec: ImageDecode) -> Run:
    size = (spec.width, spec.height)
    channels = 3 if spec.mode == "RGB" else 1
    image = _pillow()
    resample = image.Resampling[spec.resample.upper()]

    def run(tensors: Tensors, _labels: Labels) -> None:
        encoded = _tensor(tensors, where, "input", spec.input)
        if encoded.dtype != np.object_:
            raise StepInputError(
                f"{where}: input {spec.input!r} must be BYTES (encoded images), "
                f"got numpy dtype {encoded.dtype}"
            )
        items = encoded.ravel()
        # Decode straight into the output buffer: one array, no per-image stacking copy.
        hwc = np.empty((items.size, spec.height, spec.width, channels), dtype=np.float32)
        for n, item in enumerate(items):
            pixels = _decode_one(image, where, spec.input, n, item, spec.mode, size, resample)
            hwc[n] = pixels.reshape(spec.height, spec.width, channels)
        del tensors[spec.input]
        tensors[spec.output] = _layout(hwc, spec.layout)

    return run


def _decode_one(
    pil: ModuleType, where: str, name: str, n: int, item: object, mode: str,
    size: tuple[int, int], resample: int
) -> np.ndarray:
    if not isinstance(item, (bytes, bytearray, memoryview)):
        raise StepInputError(
            f"{where}: input {name!r} element {n} is {type(item).__name__}, not bytes"
        )
    try:
        # formats=: never hand request bytes to pillow's other (rarely fuzzed) decoders.
        with pil.open(io.BytesIO(item), formats=_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise StepInputError(
                    f"{where}: input {name!r} element {n} is {width}x{height} pixels, "
                    f"above the limit of {MAX_IMAGE_PIXELS}"
                )
            converted = image.convert(mode)  # decodes; truncated data raises OSError here
            if converted.size != size:
                converted = converted.resize(size, resample)
            return np.asarray(converted)
    except StepInputError:
        raise
    except (pil.UnidentifiedImageError, pil.DecompressionBombError, OSError, ValueError) as exc:
        raise StepInputError(
            f"{where}: input {name!r} element {n} is not a PNG or JPEG image ({exc})"
        ) from None


def _layout(hwc: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NHWC":
        return hwc
    if layout == "flat":
        return hwc.reshape(hwc.shape[0], -1)  # a view: HWC is already row-major
    # onnxruntime wants contiguous input; transposing once per batch is cheaper than per image.
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))


def _normalize(where: str, spec: Normalize) -> Run:
    mean = np.asarray(spec.mean or [0.0], dtype=np.float64)
    std = np.asarray(spec.std or [1.0], dtype=np.float64)
    # (x * scale - mean) / std == x * (scale / std) + (-mean / std): two passes over x.
    factor = spec.scale / std
    offset = -mean / std
    channels = max(factor.size, offset.size)

    def run(tensors: Tensors, _labels: Labels) -> None:
        x = _tensor(tensors, where, "tensor", spec.tensor)
        if x.dtype.kind not in "fiub":
            raise StepInputError(f"{where}: tensor {spec.tensor!r} is {x.dtype}, not numeric")
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        a, b = factor, offset
        if channels > 1:
            axis = spec.channelAxis
            if not -x.ndim <= axis < x.ndim or x.shape[axis] != channels:
                raise StepInputError(
                    f"{where}: tensor {spec.tensor!r} of shape {list(x.shape)} has no axis "
                    f"{axis} of {channels} channels"
                )
            shape = [1] * x.ndim
            shape[axis] = channels
            a, b = a.reshape(shape), b.reshape(shape)
        out = x.astype(dtype, copy=True)
        out *= a.astype(dtype)
        out += b.astype(dtype)
        tensors[spec.tensor] = out

    return run


# -- postprocess --------------------------------------------------------------------------------


def _softmax(where: str, spec: Softmax) -> Run:
    target = spec.output or spec.tensor

    def run(tensors: Tensors, _labels: Labels) -> None:
        x = _tensor(tensors, where, "tensor", spec.tensor)
        if x.ndim == 0 or not -x.ndim <= spec.axis < x.ndim:
            raise StepInputError(
                f"{where}: tensor {spec.tensor!r} of shape {list(x.shape)} has no axis {spec.axis}"
            )
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        # Subtracting the max keeps exp() finite for any logits (the result is unchanged).
        z = x.astype(dtype, copy=True)
        z -= z.max(axis=spec.axis, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=spec.axis, keepdims=True)
        tensors[target] = z

    return run


def _top_k(where: str, spec: TopK) -> Run:
    prefix = spec.outputPrefix or spec.tensor

    def run(tensors: Tensors, labels: Labels) -> None:
        scores = _tensor(tensors, where, "tensor", spec.tensor)
        if scores.ndim == 0 or scores.shape[-1] == 0:
            raise StepInputError(
                f"{where}: tensor {spec.tensor!r} of shape {list(scores.shape)} has no classes"
            )
        k = min(spec.k, scores.shape[-1])
        # A stable sort of the negated scores: the best first, ties to the lower index.
        # (Floats first: negating unsigned integers would wrap around.)
        keys = scores if scores.dtype.kind == "f" else scores.astype(np.float64)
        indices = np.argsort(-keys, axis=-1, kind="stable")[..., :k]
        tensors[f"{prefix}_topk_indices"] = indices.astype(np.int64, copy=False)
        tensors[f"{prefix}_topk_scores"] = np.take_along_axis(scores, indices, -1).astype(
            np.float32, copy=False)
        if labels is not None:
            tensors[f"{prefix}_topk_labels"] = _labels_of(where, spec.tensor, indices, labels,
                                                          scores.shape[-1])

    return run


def _labels_of(
    where: str, name: str, indices: np.ndarray, labels: Sequence[str], classes: int
) -> np.ndarray:
    if len(labels) != classes:
        # The model's metadata disagrees with the model: a server-side problem, not the request's.
        raise ValueError(
            f"{where}: the model's labels list {len(labels)} classes, tensor {name!r} has {classes}"
        )
    out = np.empty(indices.size, dtype=object)
    out[:] = [labels[i].encode("utf-8") for i in indices.ravel().tolist()]
    return out.reshape(indices.shape)


def _nms(where: str, spec: Nms) -> Run:
    count_name = f"{spec.output}_count"

    def run(tensors: Tensors, _labels: Labels) -> None:
        boxes = _tensor(tensors, where, "boxes", spec.boxes)
        scores = _tensor(tensors, where, "scores", spec.scores)
        single = boxes.ndim == 2
        if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4:
            raise StepInputError(
                f"{where}: boxes {spec.boxes!r} must be [B, 4] or [N, B, 4], got {list(boxes.shape)}"
            )
        lead = boxes.shape[:-1]  # (B,) or (N, B)
        if scores.shape[: len(lead)] != lead or scores.ndim not in (len(lead), len(lead) + 1):
            raise StepInputError(
                f"{where}: scores {spec.scores!r} of shape {list(scores.shape)} does not fit "
                f"boxes of shape {list(boxes.shape)} (want {list(lead)} or {[*lead, 'C']})"
            )
        if scores.ndim == len(lead) + 1:  # class scores: best class per box
            if scores.shape[-1] == 0:
                raise StepInputError(f"{where}: scores {spec.scores!r} have no classes")
            classes = scores.argmax(axis=-1)
            best = np.take_along_axis(scores, classes[..., None], -1)[..., 0]
        else:
            classes, best = None, scores
        if single:
            rows = _nms_image(spec, boxes, best, classes)
            del tensors[spec.boxes], tensors[spec.scores]
            tensors[spec.output] = rows
            return
        per_image = [
            _nms_image(spec, boxes[n], best[n], None if classes is None else classes[n])
            for n in range(boxes.shape[0])
        ]
        counts = np.array([rows.shape[0] for rows in per_image], dtype=np.int64)
        padded = np.zeros((len(per_image), int(counts.max(initial=0)), 6), dtype=np.float32)
        for n, rows in enumerate(per_image):
            padded[n, : rows.shape[0]] = rows
        del tensors[spec.boxes], tensors[spec.scores]
        tensors[spec.output] = padded
        tensors[count_name] = counts

    return run


def _nms_image(
    spec: Nms, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None
) -> np.ndarray:
    """Detection rows [D, 6] of one image, best first."""
    kept = nms_indices(boxes, scores, spec.iouThreshold, spec.scoreThreshold,
                       spec.maxDetections, classes)
    rows = np.empty((kept.size, 6), dtype=np.float32)
    rows[:, :4] = boxes[kept]
    rows[:, 4] = scores[kept]
    rows[:, 5] = 0 if classes is None else classes[kept]
    return rows


def nms_indices(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    score_threshold: float = 0.0,
    max_detections: int | None = None,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices (into `boxes`) that greedy NMS keeps, best score first.

    Boxes scoring below `score_threshold` are dropped; in score order (ties: lower index
    first), each box not yet suppressed is kept and suppresses the later boxes whose IoU with
    it exceeds `iou_threshold` (of the same class, if `classes` is given).

    One vector op per *kept* box, not a B x B IoU matrix: B is often thousands of anchors
    (8400 for YOLOv8, a 280 MB matrix) while the loop stops after `max_detections` keeps.
    """
    coords = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores)
    candidates = np.flatnonzero(scores >= score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    x1, y1, x2, y2 = (coords[order, i] for i in range(4))
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    labels = None if classes is None else np.asarray(classes)[order]
    limit = order.size if max_detections is None else max_detections
    keep: list[int] = []
    rest = np.arange(order.size)  # positions in `order` still in the running
    while rest.size and len(keep) < limit:
        i, rest = rest[0], rest[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        # IoU > t  <=>  inter > t * union (union > 0); avoids dividing by a zero union.
        overlaps = inter > iou_threshold * union
        if labels is not None:
            overlaps &= labels[rest] == labels[i]
        rest = rest[~overlaps]
    return order[np.asarray(keep, dtype=np.int64)]
