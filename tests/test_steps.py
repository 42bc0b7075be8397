"""Pre/post-processing steps: the spec (validation, CRD schema) and the numpy pipeline."""

from __future__ import annotations

import io
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from jointserve.api import PostStep, PreStep, crd_for, describe_errors
from jointserve.runtime import Pipeline, StepInputError, TensorSpec, build_pipeline, nms_indices

# -- spec ---------------------------------------------------------------------------------------

DECODE = {"input": "image", "output": "input", "width": 4, "height": 3}


def _problems(model: type[BaseModel], doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as err:
        model.model_validate(doc)
    return describe_errors(err.value)


@pytest.mark.parametrize(
    ("model", "doc", "problem"),
    [
        pytest.param(PreStep, {}, ": exactly one of imageDecode, normalize must be set (got none)",
                     id="pre-none"),
        pytest.param(PreStep, {"imageDecode": DECODE, "normalize": {"tensor": "input"}},
                     ": exactly one of imageDecode, normalize must be set "
                     "(got imageDecode and normalize)", id="pre-two"),
        pytest.param(PostStep, {}, ": exactly one of softmax, topK, nms must be set (got none)",
                     id="post-none"),
        pytest.param(PostStep, {"softmax": {"tensor": "p"}, "topK": {"tensor": "p"}},
                     ": exactly one of softmax, topK, nms must be set (got softmax and topK)",
                     id="post-two"),
        pytest.param(PreStep, {"imageDecode": {**DECODE, "width": 0}},
                     "imageDecode.width: input should be greater than or equal to 1", id="width"),
        pytest.param(PreStep, {"imageDecode": {**DECODE, "layout": "CHW"}},
                     "imageDecode.layout: must be one of 'NCHW', 'NHWC' or 'flat'", id="layout"),
        pytest.param(PreStep, {"imageDecode": {**DECODE, "input": ""}},
                     "imageDecode.input: string should have at least 1 character", id="name"),
        pytest.param(PreStep, {"normalize": {"tensor": "x", "std": [0.5, 0.0]}},
                     "normalize.std[1]: input should be greater than 0", id="std-zero"),
        pytest.param(PreStep, {"normalize": {"tensor": "x", "mean": [1, 2, 3], "std": [1, 2]}},
                     "normalize.std: must have 1 entry or as many as mean (3 channels), got 2",
                     id="channels"),
        pytest.param(PreStep, {"normalize": {"tensor": "x", "sigma": [1]}},
                     "normalize.sigma: unknown field", id="unknown-field"),
        pytest.param(PostStep, {"topK": {"tensor": "p", "k": 0}},
                     "topK.k: input should be greater than or equal to 1", id="k"),
        pytest.param(PostStep, {"nms": {"boxes": "b", "scores": "s", "iouThreshold": 1.5}},
                     "nms.iouThreshold: input should be less than or equal to 1", id="iou"),
        pytest.param(PostStep, {"nms": {"boxes": "b", "scores": "b"}},
                     "nms.scores: must differ from boxes (both are 'b')", id="same-tensor"),
    ],
)
def test_bad_steps_name_the_field(model: type[BaseModel], doc: dict[str, Any], problem: str) -> None:
    problems = _problems(model, doc)
    assert any(problem in p for p in problems), problems


def test_defaults_and_kind() -> None:
    step = PreStep.model_validate({"imageDecode": DECODE})
    assert step.kind == "imageDecode"
    spec = step.imageDecode
    assert spec is not None
    assert (spec.mode, spec.layout, spec.resample) == ("RGB", "NCHW", "bilinear")
    nms = PostStep.model_validate({"nms": {"boxes": "b", "scores": "s"}})
    assert nms.kind == "nms" and nms.nms is not None
    assert (nms.nms.iouThreshold, nms.nms.scoreThreshold, nms.nms.maxDetections,
            nms.nms.output) == (0.5, 0.0, 100, "detections")


class _StepsSpec(BaseModel):
    preprocess: list[PreStep] = Field(default_factory=list)
    postprocess: list[PostStep] = Field(default_factory=list)


class _Steps(BaseModel):
    KIND: ClassVar[str] = "Steps"
    PLURAL: ClassVar[str] = "steps"
    SHORT_NAMES: ClassVar[list[str]] = []

    apiVersion: Literal["jointserve.io/v1alpha1"] = "jointserve.io/v1alpha1"
    kind: Literal["Steps"] = "Steps"
    metadata: dict[str, Any]
    spec: _StepsSpec


def _walk(node: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(where, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{where}.{name}")
    if "items" in node:
        out += _walk(node["items"], f"{where}[]")
    return out


def test_crd_schema_is_structural_and_carries_the_one_of_rules() -> None:
    schema = crd_for(_Steps)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for where, node in _walk(schema):
        assert isinstance(node.get("type"), str), where
        assert not {"anyOf", "oneOf", "allOf", "$ref"} & set(node), where
    spec = schema["properties"]["spec"]["properties"]
    pre, post = spec["preprocess"]["items"], spec["postprocess"]["items"]
    assert pre["x-kubernetes-validations"] == [{
        "rule": "[has(self.imageDecode), has(self.normalize)].filter(x, x).size() == 1",
        "message": "exactly one of imageDecode, normalize must be set",
    }]
    assert post["x-kubernetes-validations"] == PostStep.CEL_RULES
    assert post["x-kubernetes-validations"][0]["rule"] == (
        "[has(self.softmax), has(self.topK), has(self.nms)].filter(x, x).size() == 1")
    assert pre["properties"]["normalize"]["x-kubernetes-validations"][0]["message"].startswith(
        "mean and std")
    assert pre["properties"]["normalize"]["properties"]["std"]["items"] == {
        "type": "number", "minimum": 0.0, "exclusiveMinimum": True}
    assert post["properties"]["nms"]["properties"]["iouThreshold"] == {
        "type": "number", "minimum": 0.0, "maximum": 1.0, "default": 0.5}


# -- pipelines ----------------------------------------------------------------------------------


def _pipeline(pre: list[dict[str, Any]] = (), post: list[dict[str, Any]] = ()) -> Pipeline:  # type: ignore[assignment]
    return build_pipeline([PreStep.model_validate(s) for s in pre],
                          [PostStep.model_validate(s) for s in post])


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _bytes_tensor(*items: object) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)  # H=3, W=4


def test_empty_pipeline_copies_no_array() -> None:
    pipeline = _pipeline()
    feeds = {"input": np.zeros((2, 64), np.float32)}
    out = pipeline.preprocess(feeds)
    assert out == feeds and out is not feeds and out["input"] is feeds["input"]
    assert pipeline.postprocess(feeds)["input"] is feeds["input"]
    assert pipeline.empty and pipeline.request_inputs() == frozenset()


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        pytest.param("NCHW", RGB.transpose(2, 0, 1)[None], id="NCHW"),
        pytest.param("NHWC", RGB[None], id="NHWC"),
        pytest.param("flat", RGB.reshape(1, -1), id="flat"),
    ],
)
def test_png_decodes_losslessly_in_each_layout(layout: str, expected: np.ndarray) -> None:
    pipeline = _pipeline([{"imageDecode": {**DECODE, "layout": layout}}])
    assert pipeline.request_inputs() == frozenset({"image"})
    out = pipeline.preprocess({"image": _bytes_tensor(_encode(RGB, "PNG")), "other": np.ones(1)})
    assert set(out) == {"input", "other"}
    assert out["input"].dtype == np.float32 and out["input"].flags.c_contiguous
    np.testing.assert_array_equal(out["input"], expected.astype(np.float32))


def test_grayscale_and_resize_match_pillow() -> None:
    big = RNG.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    png = _encode(big, "PNG")
    pipeline = _pipeline([{"imageDecode": {**DECODE, "mode": "L", "resample": "bicubic",
                                           "width": 8, "height": 5}}])
    out = pipeline.preprocess({"image": _bytes_tensor(png)})["input"]
    assert out.shape == (1, 1, 5, 8)
    want = Image.open(io.BytesIO(png)).convert("L").resize((8, 5), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(out[0, 0], np.asarray(want, dtype=np.float32))


def test_jpeg_and_png_batch() -> None:
    gray = np.full((10, 10, 3), 200, dtype=np.uint8)
    pipeline = _pipeline([{"imageDecode": {**DECODE, "layout": "NHWC", "resample": "nearest"}}])
    images = _bytes_tensor(_encode(gray, "JPEG"), _encode(RGB, "PNG"))
    out = pipeline.preprocess({"image": images.reshape(2, 1)})["input"]
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(out[0], 200, atol=3)  # JPEG is lossy
    np.testing.assert_array_equal(out[1], RGB)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        pytest.param((b"not an image",), "element 1 is not a PNG or JPEG image (", id="garbage"),
        pytest.param((_encode(RGB, "PNG")[:40],), "element 1 is not a PNG or JPEG image (",
                     id="truncated"),
        pytest.param((_encode(RGB, "GIF"),), "element 1 is not a PNG or JPEG image (", id="gif"),
        pytest.param(("a string",), "element 1 is str, not bytes", id="not-bytes"),
    ],
)
def test_undecodable_images_name_step_and_element(items: tuple[object, ...], message: str) -> None:
    pipeline = _pipeline([{"normalize": {"tensor": "other"}}, {"imageDecode": DECODE}])
    good = _encode(RGB, "PNG")
    with pytest.raises(StepInputError) as err:
        pipeline.preprocess({"image": _bytes_tensor(good, *items), "other": np.ones(1)})
    assert str(err.value).startswith(f"preprocess[1].imageDecode: input 'image' {message}")


def test_decode_refuses_decompression_bombs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jointserve.runtime._steps.MAX_IMAGE_PIXELS", 11)
    with pytest.raises(StepInputError, match=r"element 0 is 4x3 pixels, above the limit of 11"):
        _pipeline([{"imageDecode": DECODE}]).preprocess(
            {"image": _bytes_tensor(_encode(RGB, "PNG"))})


def test_decode_needs_a_bytes_tensor() -> None:
    pipeline = _pipeline([{"imageDecode": DECODE}])
    with pytest.raises(StepInputError, match=r"preprocess\[0\].imageDecode: input 'image' is "
                                             r"missing \(have \['x'\]\)"):
        pipeline.preprocess({"x": np.zeros(1)})
    with pytest.raises(StepInputError, match="must be BYTES"):
        pipeline.preprocess({"image": np.zeros(3, np.uint8)})


def test_normalize_per_channel_nchw_and_nhwc() -> None:
    x = RNG.integers(0, 256, size=(2, 3, 4, 5)).astype(np.float32)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    step = {"tensor": "x", "scale": 1 / 255, "mean": mean, "std": std}
    want = (x / 255 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    got = _pipeline([{"normalize": step}]).preprocess({"x": x})["x"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    nhwc = x.transpose(0, 2, 3, 1)
    got = _pipeline([{"normalize": {**step, "channelAxis": -1}}]).preprocess({"x": nhwc})["x"]
    np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    assert x.max() > 1  # the input array is left alone


def test_normalize_scalar_and_integers() -> None:
    x = np.array([[0, 8, 16]], dtype=np.int64)
    got = _pipeline([{"normalize": {"tensor": "x", "scale": 0.5, "mean": [2.0]}}]).preprocess(
        {"x": x})["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[-2.0, 2.0, 6.0]])


def test_normalize_channel_mismatch_names_the_tensor() -> None:
    pipeline = _pipeline([{"normalize": {"tensor": "x", "mean": [1, 2, 3]}}])
    with pytest.raises(StepInputError, match=r"preprocess\[0\].normalize: tensor 'x' of shape "
                                             r"\[1, 4, 2\] has no axis 1 of 3 channels"):
        pipeline.preprocess({"x": np.zeros((1, 4, 2), np.float32)})


def test_decode_then_normalize_flat_for_an_mlp() -> None:
    pipeline = _pipeline([
        {"imageDecode": {**DECODE, "mode": "L", "layout": "flat", "width": 8, "height": 8}},
        {"normalize": {"tensor": "input", "scale": 16 / 255}},
    ])
    white = np.full((8, 8, 3), 255, dtype=np.uint8)
    out = pipeline.preprocess({"image": _bytes_tensor(_encode(white, "PNG"))})
    assert pipeline.request_inputs() == frozenset({"image"})
    np.testing.assert_allclose(out["input"], np.full((1, 64), 16.0), rtol=1e-6)


def test_client_inputs_name_what_a_client_sends() -> None:
    """OIP metadata of a service with steps: the tensor a step decodes replaces the model
    input it makes; other model inputs stay as the model declares them."""
    pipeline = _pipeline([{"imageDecode": {**DECODE, "mode": "L", "layout": "flat",
                                           "width": 8, "height": 8}}])
    model_inputs = [TensorSpec("input", "FP32", (-1, 64), np.dtype(np.float32)),
                    TensorSpec("scale", "FP32", (-1, 1), np.dtype(np.float32))]
    sent = pipeline.client_inputs(model_inputs)
    assert [(t.name, t.datatype, t.shape) for t in sent] == [
        ("image", "BYTES", (-1,)), ("scale", "FP32", (-1, 1))]
    assert _pipeline().client_inputs(model_inputs) == model_inputs


def test_softmax_sums_to_one_and_survives_large_logits() -> None:
    logits = np.array([[1000.0, 1001.0, 1002.0], [-5.0, 0.0, 5.0]], dtype=np.float32)
    out = _pipeline(post=[{"softmax": {"tensor": "logits", "output": "p"}}]).postprocess(
        {"logits": logits})
    assert out["logits"] is logits
    p = out["p"]
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)
    # Default: in place, any axis.
    col = _pipeline(post=[{"softmax": {"tensor": "l", "axis": 0}}]).postprocess({"l": logits})["l"]
    np.testing.assert_allclose(col.sum(axis=0), 1.0, rtol=1e-6)


def test_top_k_with_and_without_labels() -> None:
    scores = np.array([[0.1, 0.5, 0.2, 0.5], [0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    pipeline = _pipeline(post=[{"topK": {"tensor": "probabilities", "k": 2}}])
    out = pipeline.postprocess({"probabilities": scores})
    assert set(out) == {"probabilities", "probabilities_topk_indices", "probabilities_topk_scores"}
    indices = out["probabilities_topk_indices"]
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, [[1, 3], [0, 1]])  # tie: lower index first
    np.testing.assert_array_equal(out["probabilities_topk_scores"],
                                  np.array([[0.5, 0.5], [0.4, 0.3]], dtype=np.float32))
    labelled = _pipeline(post=[{"topK": {"tensor": "probabilities", "k": 9, "outputPrefix": "cls"}}])
    out = labelled.postprocess({"probabilities": scores}, labels=["a", "b", "c", "dé"])
    assert out["cls_topk_indices"].shape == (2, 4)  # k above the class count: all classes
    assert out["cls_topk_labels"].dtype == object
    assert out["cls_topk_labels"].tolist() == [[b"b", "dé".encode(), b"c", b"a"],
                                               [b"a", b"b", b"c", "dé".encode()]]


def test_top_k_refuses_labels_of_another_model() -> None:
    pipeline = _pipeline(post=[{"topK": {"tensor": "p"}}])
    with pytest.raises(ValueError, match="labels list 2 classes, tensor 'p' has 3") as err:
        pipeline.postprocess({"p": np.ones((1, 3))}, labels=["a", "b"])
    assert not isinstance(err.value, StepInputError)  # server-side: 500, not 400


# -- NMS ----------------------------------------------------------------------------------------


def _iou(a: list[float], b: list[float]) -> float:
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = w * h
    union = (max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
             + max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0) - inter)
    return inter / union if union > 0 else 0.0


def _reference_nms(boxes: list[list[float]], scores: list[float], iou_t: float, score_t: float,
                   max_d: int, classes: list[int] | None) -> list[int]:
    """Textbook greedy NMS, O(B^2), pure Python."""
    order = sorted((i for i in range(len(boxes)) if scores[i] >= score_t), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if len(keep) == max_d:
            break
        if all(_iou(boxes[i], boxes[j]) <= iou_t
               or (classes is not None and classes[i] != classes[j]) for j in keep):
            keep.append(i)
    return keep


def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    corner = rng.uniform(0, 100, size=(count, 2))
    size = rng.uniform(0, 40, size=(count, 2))
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_nms_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(10):
        count = int(rng.integers(0, 80))
        boxes = _random_boxes(rng, count)
        scores = rng.permutation(count).astype(np.float32) / max(count, 1)  # no ties
        classes = rng.integers(0, 3, size=count) if trial % 2 else None
        iou_t = float(rng.choice([0.0, 0.3, 0.5, 0.7]))
        score_t = float(rng.choice([0.0, 0.5]))
        max_d = int(rng.choice([1, 5, 100]))
        got = nms_indices(boxes, scores, iou_t, score_t, max_d, classes)
        want = _reference_nms(boxes.astype(np.float64).tolist(), scores.tolist(), iou_t, score_t,
                              max_d, None if classes is None else classes.tolist())
        assert got.tolist() == want, (seed, trial)


def test_nms_step_single_image_rows() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.3], dtype=np.float32)
    pipeline = _pipeline(post=[{"nms": {"boxes": "boxes", "scores": "scores"}}])
    out = pipeline.postprocess({"boxes": boxes, "scores": scores, "other": np.ones(1)})
    assert set(out) == {"detections", "other"}
    np.testing.assert_allclose(out["detections"], [[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.3, 0]])
    assert out["detections"].dtype == np.float32


def test_nms_step_batch_with_class_scores_is_padded_and_counted() -> None:
    boxes = np.array([
        [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]],
        [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 1, 1]],
    ], dtype=np.float32)
    # Image 0: boxes 0 and 1 overlap but have different best classes, so both stay.
    scores = np.array([
        [[0.9, 0.1], [0.2, 0.8], [0.05, 0.0]],
        [[0.1, 0.7], [0.0, 0.0], [0.0, 0.0]],
    ], dtype=np.float32)
    pipeline = _pipeline(post=[{"nms": {"boxes": "b", "scores": "s", "scoreThreshold": 0.1,
                                        "output": "det"}}])
    out = pipeline.postprocess({"b": boxes, "s": scores})
    assert out["det_count"].tolist() == [2, 1] and out["det_count"].dtype == np.int64
    np.testing.assert_allclose(out["det"], [
        [[0, 0, 10, 10, 0.9, 0], [1, 1, 10, 10, 0.8, 1]],
        [[0, 0, 10, 10, 0.7, 1], [0, 0, 0, 0, 0, 0]],
    ])


def test_nms_shape_mismatch_names_the_tensors() -> None:
    pipeline = _pipeline(post=[{"softmax": {"tensor": "x"}},
                               {"nms": {"boxes": "b", "scores": "s"}}])
    with pytest.raises(StepInputError, match=r"postprocess\[1\].nms: scores 's' of shape \[2, 5\] "
                                             r"does not fit boxes of shape \[2, 4, 4\]"):
        pipeline.postprocess({"x": np.ones(2), "b": np.zeros((2, 4, 4)), "s": np.zeros((2, 5))})
    with pytest.raises(StepInputError, match=r"boxes 'b' must be \[B, 4\] or \[N, B, 4\]"):
        pipeline.postprocess({"x": np.ones(2), "b": np.zeros((4, 5)), "s": np.zeros(4)})
