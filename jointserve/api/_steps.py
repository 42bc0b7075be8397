"""Pre- and post-processing steps a JointInferenceService declares around its models.

Clients of a vision model should be able to send a JPEG and get labels or boxes back, without
shipping the model's tensor conventions (size, layout, normalisation, class list) to every
client. The resource therefore lists `preprocess` steps (request tensors -> model inputs) and
`postprocess` steps (model outputs -> response tensors). These classes are the spec only: they
validate documents and generate the CRD schema; jointserve.runtime builds the numpy
implementation from them (`build_pipeline`).

A step is an object with exactly one key naming its kind (`{imageDecode: {...}}`), the
Kubernetes way of writing a tagged union (compare a Volume's `configMap` / `secret` / ...):
every field stays typed, so the schema is structural, and the one-of rule is a CEL rule.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from ._common import Strict

# OIP tensor names are free-form strings; bounded so the API server can cost CEL rules.
TensorName = Annotated[str, Field(min_length=1, max_length=256)]
# Per-channel statistics: a handful of channels in practice; bounded for the same reason.
MAX_CHANNELS = 64
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


def _exactly_one_rule(fields: tuple[str, ...]) -> dict[str, str]:
    flags = ", ".join(f"has(self.{name})" for name in fields)
    return {
        "rule": f"[{flags}].filter(x, x).size() == 1",
        "message": f"exactly one of {', '.join(fields)} must be set",
    }


def _check_exactly_one(step: Strict, fields: tuple[str, ...]) -> None:
    present = [name for name in fields if getattr(step, name) is not None]
    if len(present) != 1:
        got = " and ".join(present) if present else "none"
        # No ": " in the message: describe_errors would take the text before it as a field.
        raise ValueError(f"exactly one of {', '.join(fields)} must be set (got {got})")


class ImageDecode(Strict):
    """Decode PNG/JPEG images from a BYTES request tensor into a float32 pixel tensor.

    `input` holds one encoded image per element (batch size = number of elements); every
    image is converted to `mode`, resized to `width` x `height` and stacked into `output`
    in `layout`: NCHW [N, C, H, W], NHWC [N, H, W, C], or flat [N, H*W*C] (row-major HWC,
    for MLPs). Pixel values stay 0..255; scaling and normalisation are a `normalize` step.
    """

    input: TensorName
    output: TensorName
    width: Annotated[int, Field(ge=1, le=8192)]
    height: Annotated[int, Field(ge=1, le=8192)]
    mode: Literal["L", "RGB"] = "RGB"
    layout: Literal["NCHW", "NHWC", "flat"] = "NCHW"
    resample: Literal["bilinear", "nearest", "bicubic"] = "bilinear"


class Normalize(Strict):
    """Rewrite a tensor as (x * scale - mean) / std, per channel.

    `mean` and `std` have one entry (all channels) or one per channel along `channelAxis`
    (1 for NCHW, -1 for NHWC); empty means 0 and 1. Integer tensors become float32.
    """

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!has(self.mean) || !has(self.std) || size(self.mean) <= 1 || "
            "size(self.std) <= 1 || size(self.mean) == size(self.std)",
            "message": "mean and std must have the same number of channels (or one entry)",
        },
    ]

    tensor: TensorName
    scale: float = 1.0
    mean: list[float] = Field(default_factory=list, max_length=MAX_CHANNELS)
    std: list[Annotated[float, Field(gt=0.0)]] = Field(default_factory=list, max_length=MAX_CHANNELS)
    channelAxis: int = 1

    @model_validator(mode="after")
    def _channels_agree(self) -> "Normalize":
        m, s = len(self.mean), len(self.std)
        if m > 1 and s > 1 and m != s:
            raise ValueError(
                f"std: must have 1 entry or as many as mean ({m} channels), got {s}"
            )
        return self


class PreStep(Strict):
    """One preprocessing step: exactly one of its fields is set."""

    FIELDS: ClassVar[tuple[str, ...]] = ("imageDecode", "normalize")
    CEL_RULES: ClassVar[list[dict[str, str]]] = [_exactly_one_rule(FIELDS)]

    imageDecode: ImageDecode | None = None
    normalize: Normalize | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "PreStep":
        _check_exactly_one(self, self.FIELDS)
        return self

    @property
    def kind(self) -> str:
        """The name of the field that is set, e.g. "imageDecode"."""
        return next(name for name in self.FIELDS if getattr(self, name) is not None)


class Softmax(Strict):
    """Numerically stable softmax of `tensor` along `axis`, written to `output` (default: in place)."""

    tensor: TensorName
    output: TensorName | None = None
    axis: int = -1


class TopK(Strict):
    """The `k` best classes per row of a score tensor [N, K] (along its last axis).

    Writes `<prefix>_topk_indices` (INT64 [N, k]), `<prefix>_topk_scores` (FP32 [N, k]) and,
    when the model's metadata lists `labels`, `<prefix>_topk_labels` (BYTES [N, k]); the
    prefix is `outputPrefix`, or the tensor's name. The scores tensor itself is kept. A `k`
    above K yields K columns. Ties go to the lower class index.
    """

    tensor: TensorName
    k: Annotated[int, Field(ge=1, le=1024)] = 5
    outputPrefix: TensorName | None = None


class Nms(Strict):
    """Greedy non-maximum suppression of detector outputs into detection rows.

    `boxes` is [B, 4] (one image) or [N, B, 4], corners x1, y1, x2, y2. `scores` is [B] /
    [N, B] (one class: label 0, class-agnostic), or [B, C] / [N, B, C] class scores: each box
    takes its best class as label and score, and only boxes of the same label suppress each
    other. Boxes scoring below `scoreThreshold` are dropped; a box is suppressed by a
    higher-scoring kept box when their IoU exceeds `iouThreshold`; at most `maxDetections`
    are kept per image, best first.

    Output rows are [x1, y1, x2, y2, score, label] (FP32), the layout the HEM policies read:
    [D, 6] for one image; for a batch [N, Dmax, 6], zero-padded to the largest count in the
    batch, plus `<output>_count` (INT64 [N]). `boxes` and `scores` are removed from the
    response (raw detector heads are large).
    """

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.boxes != self.scores", "message": "boxes and scores must be different tensors"},
    ]

    boxes: TensorName
    scores: TensorName
    iouThreshold: Unit = 0.5
    scoreThreshold: Unit = 0.0
    maxDetections: Annotated[int, Field(ge=1, le=10000)] = 100
    output: TensorName = "detections"

    @model_validator(mode="after")
    def _distinct_inputs(self) -> "Nms":
        if self.boxes == self.scores:
            raise ValueError(f"scores: must differ from boxes (both are {self.boxes!r})")
        return self


class PostStep(Strict):
    """One postprocessing step: exactly one of its fields is set."""

    FIELDS: ClassVar[tuple[str, ...]] = ("softmax", "topK", "nms")
    CEL_RULES: ClassVar[list[dict[str, str]]] = [_exactly_one_rule(FIELDS)]

    softmax: Softmax | None = None
    topK: TopK | None = None
    nms: Nms | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "PostStep":
        _check_exactly_one(self, self.FIELDS)
        return self

    @property
    def kind(self) -> str:
        """The name of the field that is set, e.g. "topK"."""
        return next(name for name in self.FIELDS if getattr(self, name) is not None)
