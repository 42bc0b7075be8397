"""Running one model, or one joint service, over a dataset's samples, and what it measured.

    InferenceModel          samples -> the model (onnxruntime) -> predicted classes
    JointInferenceService   samples -> as an OIP request -> JointModel.infer, the gateway's own
                            hot path (preprocess, edge, HEM policy, cloud for the hard rows,
                            postprocess) with the cloud model called in process (or, for
                            cloudModel.url, over HTTP with the gateway's own client)
                            -> and each tier alone, for edgeAccuracy, cloudAccuracy and PGR

The samples go in chunks of CHUNK rows, so progress can be reported and memory stays bounded;
a chunk of a service evaluation is one request of CHUNK samples, as a client could send it.
Predictions are class names: a model's class ids are named by its metadata labels (else the
id as a string), the way the Dataset names its classes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jointserve.api import (
    MAX_CONFUSION_CLASSES,
    ConfusionMatrix,
    Evaluation,
    JointInferenceServiceSpec,
    ModelMetrics,
    now_rfc3339,
)
from jointserve.gateway import (
    CircuitBreaker,
    CloudAnswer,
    CloudCallError,
    CloudSettings,
    HttpCloud,
    JointModel,
)
from jointserve.protocol import InferenceError, InferenceRequest, LoadedModel, RequestInput
from jointserve.routing import Budgeted, Cutoff, HemPolicy, RouterModel, build_policy
from jointserve.runtime import Pipeline, StepInputError, TensorSpec, build_pipeline

from ._errors import EvaluationError
from ._metrics import ClassificationMetrics, DetectedBox, classification_metrics, voc_map
from ._samples import Samples

CHUNK = 256
Progress = Callable[[int, int], None]  # (samples done, samples in all)
Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class DatasetRef:
    """Which data the samples are: the Dataset's name and the sha256 of its file."""

    name: str
    sha256: str


def settings_digest(settings: Mapping[str, object]) -> str:
    """A short digest of the settings that decide a result, as recorded with it."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_digest(evaluation: Evaluation, info: Mapping[str, object] | None) -> str:
    """What decides a model's evaluation besides its version and the data: the output read
    and the resource's metadata (its labels name the classes)."""
    return settings_digest({"output": evaluation.output, "info": info})


def service_digest(spec: JointInferenceServiceSpec, edge_info: Mapping[str, object] | None,
                   cutoff: Cutoff | None = None, router_sha256: str | None = None) -> str:
    """What decides a service's evaluation besides the versions and the data: the policy,
    the steps, the output read, the edge model's metadata, a remote cloud's address, the
    calibrated cut the policy's score is judged by, and the router scoring (a trained one
    is not in the spec)."""
    settings = {"hem": spec.hardExampleMining.model_dump(mode="json"),
                "pre": [s.model_dump(mode="json") for s in spec.preprocess],
                "post": [s.model_dump(mode="json") for s in spec.postprocess],
                "output": spec.evaluation.output if spec.evaluation else None,
                "info": edge_info}
    if spec.cloudModel.url is not None:
        settings["remote"] = [spec.cloudModel.url, spec.cloudModel.modelName]
    if cutoff is not None:
        settings["cutoff"] = [cutoff.threshold, cutoff.at_threshold]
    if router_sha256 is not None:
        settings["router"] = router_sha256
    return settings_digest(settings)


def service_version(edge_version: str, cloud_version: str | None) -> str:
    """The version a service's metrics are recorded under: "<edge>+<cloud>", or for a remote
    cloud, whose version is known only from its answers (cloudVersion), "<edge>+remote"."""
    return f"{edge_version}+{cloud_version if cloud_version is not None else 'remote'}"


# -- one model ------------------------------------------------------------------------------


def evaluate_model(model: LoadedModel, samples: Samples, evaluation: Evaluation,
                   dataset: DatasetRef, digest: str = "",
                   progress: Progress | None = None) -> ModelMetrics:
    """Run `model` over `samples`; EvaluationError if it does not take them. `digest`:
    `model_digest` of the settings, recorded with the metrics."""
    if samples.features is None or samples.boxes is not None:
        raise EvaluationError("InputsRejected", f"dataset {dataset.name} holds images; an "
                              "InferenceModel takes tensors. Evaluate a JointInferenceService "
                              "whose preprocess decodes them (imageDecode)")
    spec = _single_input(model)
    features = _fitted(samples.features, spec, model.name)
    predicted: list[str] = []
    for start in range(0, len(samples), CHUNK):
        outputs = _run(model, {spec.name: features[start:start + CHUNK]})
        predicted += predicted_labels(outputs, evaluation.output, model.labels)
        _report(progress, len(predicted), len(samples))
    scores = classification_metrics(samples.labels, predicted)
    return _metrics(model.version, dataset, scores, digest)


def _single_input(model: LoadedModel) -> TensorSpec:
    inputs = model.model.inputs
    if len(inputs) != 1:
        names = [spec.name for spec in inputs]
        raise EvaluationError("InputsRejected", f"model {model.name} takes {len(inputs)} inputs "
                              f"{names}; a dataset's rows feed one")
    return inputs[0]


def _fitted(features: np.ndarray, spec: TensorSpec, model: str) -> np.ndarray:
    """`features` [N, ...] as the model's input: its dtype, and its shape where only the
    layout differs ([N, 64] rows feed an [N, 1, 8, 8] input)."""
    row, fixed = list(features.shape[1:]), list(spec.shape[1:])
    if len(row) == len(fixed) and all(f < 0 or f == r for f, r in zip(fixed, row)):
        pass
    elif all(f >= 0 for f in fixed) and math.prod(row) == math.prod(fixed):
        features = features.reshape((len(features), *fixed))
    else:
        raise EvaluationError("InputsRejected", f"model {model} input {spec.name!r} takes "
                              f"{list(spec.shape)} (-1 = any size); the dataset's samples are "
                              f"{row} each")
    return features.astype(spec.numpy_dtype, copy=False)


def _run(model: LoadedModel, feeds: Tensors) -> Tensors:
    try:
        return model.model.run(feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors name the problem
        raise EvaluationError("InputsRejected", f"model {model.name} {model.version} fails on "
                              f"the dataset's samples: {exc}") from None


# -- one joint service ----------------------------------------------------------------------


class LocalCloud:
    """The cloud model, called in the evaluator's process (no network: evaluation measures
    the models and the routing, not the wire)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> CloudAnswer:
        return CloudAnswer(self.model.version, self.model.model.run(dict(feeds)))

    async def aclose(self) -> None:
        return None


# The cloud tier of an evaluated service: a model loaded here, or the OIP infer URL of a
# remote server (cloudModel.url), called over HTTP with the gateway's own client.
CloudTier = LoadedModel | str


def evaluate_service(name: str, spec: JointInferenceServiceSpec, edge: LoadedModel,
                     cloud: CloudTier, samples: Samples, dataset: DatasetRef,
                     digest: str = "", progress: Progress | None = None,
                     cutoff: Cutoff | None = None,
                     router: RouterModel | None = None) -> ModelMetrics:
    """Run the joint model of `spec` over `samples`, and each of its tiers alone. `digest`:
    `service_digest` of the settings, recorded with the metrics; `cutoff`: a calibrated cut
    of the policy's score (status.calibration), applied as the gateway applies it (with
    fixed draws for ties, so the figures repeat). Classification samples give accuracy (and
    the rest); detection samples (VOC) give mAP@0.5."""
    hem = spec.hardExampleMining
    policy = build_policy(hem.name, hem.parameters, router)
    if cutoff is not None:
        policy = Budgeted(policy, cutoff, seed=0)
    run = run_service(name, spec, edge, cloud, samples, dataset, policy, progress)
    versions = {"edgeVersion": edge.version, "cloudVersion": run.cloud_version,
                "cloudRatio": run.to_cloud / len(samples)}
    version = service_version(edge.version, cloud.version if isinstance(cloud, LoadedModel)
                              else None)
    if run.detection:
        return _detection_metrics(version, dataset, samples, run.joint, run.alone, digest,
                                  versions)
    scores = classification_metrics(samples.labels, run.joint)
    edge_acc = classification_metrics(samples.labels, run.alone["edge"]).accuracy
    cloud_acc = classification_metrics(samples.labels, run.alone["cloud"]).accuracy
    return _metrics(version, dataset, scores, digest).model_copy(update={
        **versions, "edgeAccuracy": edge_acc, "cloudAccuracy": cloud_acc,
        "pgr": pgr(scores.accuracy, edge_acc, cloud_acc)})


@dataclass
class ServiceRun:
    """What one pass of a service over a dataset saw, per sample."""

    joint: list  # the joint model's predictions (class names, or detected boxes)
    scores: list[float]  # the policy's score of each sample (higher = harder)
    to_cloud: int  # samples the cloud answered
    alone: dict[str, list]  # "edge" / "cloud": each tier's predictions alone
    cloud_version: str  # as the cloud answered (a remote one's own version)
    detection: bool


def run_service(name: str, spec: JointInferenceServiceSpec, edge: LoadedModel,
                cloud: CloudTier, samples: Samples, dataset: DatasetRef, policy: HemPolicy,
                progress: Progress | None = None) -> ServiceRun:
    """`samples` through the gateway's JointModel with `policy`, then each tier alone. One
    event loop for all: a remote cloud's connection pool belongs to the loop it was made on."""
    return asyncio.run(_run_service(name, spec, edge, cloud, samples, dataset, policy,
                                    progress))


async def _run_service(name: str, spec: JointInferenceServiceSpec, edge: LoadedModel,
                       cloud: CloudTier, samples: Samples, dataset: DatasetRef,
                       policy: HemPolicy, progress: Progress | None) -> ServiceRun:
    evaluation = spec.evaluation or Evaluation(dataset=dataset.name)
    hem = spec.hardExampleMining
    pipeline = build_pipeline(spec.preprocess, spec.postprocess)
    client: LocalCloud | HttpCloud = (LocalCloud(cloud) if isinstance(cloud, LoadedModel)
                                      else HttpCloud(cloud, max_connections=4))
    joint = JointModel(
        name=name, edge=edge, policy=policy, policy_name=hem.name, pipeline=pipeline,
        cloud=client,
        # Nothing times out or trips: every hard sample gets the cloud's answer, as it would
        # in a healthy cluster (a cloud that fails is an EvaluationFailed, `_joint_chunk`).
        settings=CloudSettings(3600.0, 1 << 30, CircuitBreaker(1 << 30, 0.0)),
        hem_output=hem.output)
    input_name, datatype = request_input(pipeline, edge, samples)
    read = _Reader(evaluation.output, edge.labels, detection=samples.boxes is not None)
    # A request of several images would have its rows' detections merged from both tiers,
    # which padded detections of two models cannot be: detection goes one image a request.
    chunk = 1 if read.detection else CHUNK
    total, done = 3 * len(samples), 0  # joint, edge alone, cloud alone
    answers: list = []
    scores: list[float] = []
    to_cloud = 0
    try:
        for start in range(0, len(samples), chunk):
            rows = sample_rows(samples, start, chunk)
            found = await _joint_chunk(joint, input_name, datatype, rows, read)
            answers += found.answers
            scores += found.scores
            to_cloud += found.to_cloud
            done += len(rows)
            _report(progress, done, total)
        alone, cloud_version = await _tiers_alone(pipeline, edge, client, input_name, samples,
                                                  read, lambda n: _report(progress, done + n, total))
    finally:
        await client.aclose()
    return ServiceRun(answers, scores, to_cloud, alone, cloud_version, read.detection)


def pgr(joint: float, edge: float, cloud: float) -> float | None:
    """Performance gap recovered: the share of the cloud's lead over the edge the joint
    model keeps; undefined when the two tiers score the same."""
    return (joint - edge) / (cloud - edge) if cloud != edge else None


def _detection_metrics(version: str, dataset: DatasetRef, samples: Samples, joint: list,
                       alone: dict[str, list], digest: str, extra: dict) -> ModelMetrics:
    assert samples.boxes is not None
    scores = {tier: voc_map(samples.boxes, found).map50
              for tier, found in (("joint", joint), *alone.items())}
    return ModelMetrics(
        version=version, dataset=dataset.name, datasetSha256=dataset.sha256,
        evaluatedAt=now_rfc3339(), samples=len(samples), settingsDigest=digest,
        mAP50=scores["joint"], edgeMAP50=scores["edge"], cloudMAP50=scores["cloud"],
        pgr=pgr(scores["joint"], scores["edge"], scores["cloud"]), **extra)


class _Reader:
    """What a service's outputs predict, per sample: class names, or detected boxes."""

    def __init__(self, output: str | None, labels: Sequence[str] | None, detection: bool) -> None:
        self.output, self.labels, self.detection = output, labels, detection

    def __call__(self, outputs: Mapping[str, np.ndarray], rows: int) -> list:
        if self.detection:
            return detected_boxes(outputs, self.output, self.labels, rows)
        return predicted_labels(outputs, self.output, self.labels)


def detected_boxes(outputs: Mapping[str, np.ndarray], wanted: str | None,
                   labels: Sequence[str] | None, images: int) -> list[list[DetectedBox]]:
    """The detections of each image: rows [x1, y1, x2, y2, score, label] of `wanted` (default
    `detections`), [D, 6] for one image or [N, Dmax, 6] padded, `<wanted>_count` real rows."""
    name = wanted or "detections"
    if name not in outputs:
        raise EvaluationError("InputsRejected", f"evaluation.output {name!r} is not an output; "
                              f"the service answers {list(outputs)} (detection needs an nms step)")
    rows = np.asarray(outputs[name], dtype=np.float64)
    if rows.ndim == 2:
        rows = rows[None]
    if rows.ndim != 3 or rows.shape[-1] != 6 or len(rows) != images:
        raise EvaluationError("InputsRejected", f"output {name!r} has shape {list(rows.shape)}; "
                              "detections are rows [x1, y1, x2, y2, score, label] per image")
    counts = outputs.get(f"{name}_count")
    named = list(labels or ())
    out = []
    for i, image in enumerate(rows):
        kept = image[: int(counts[i])] if counts is not None else image
        out.append([DetectedBox(named[int(r[5])] if 0 <= int(r[5]) < len(named) else str(int(r[5])),
                                float(r[4]), float(r[0]), float(r[1]), float(r[2]), float(r[3]))
                    for r in kept])
    return out


def request_input(pipeline: Pipeline, edge: LoadedModel, samples: Samples) -> tuple[str, str]:
    """The request tensor the samples travel as: the one a preprocess step decodes, else the
    edge model's one input; and its OIP datatype."""
    decoded = sorted(pipeline.request_inputs())
    if samples.images is not None:
        if len(decoded) != 1:
            raise EvaluationError("InputsRejected", "the dataset holds images: the service needs "
                                  "one preprocess imageDecode step to read them "
                                  f"(its steps decode {decoded or 'no request tensor'})")
        return decoded[0], "BYTES"
    if decoded:
        raise EvaluationError("InputsRejected", f"the service's preprocess decodes {decoded}; "
                              "the dataset holds tensors, not what those steps read")
    spec = _single_input(edge)
    return spec.name, spec.datatype


def sample_rows(samples: Samples, start: int, size: int) -> np.ndarray:
    source = samples.images if samples.images is not None else samples.features
    assert source is not None
    return source[start:start + size]


@dataclass(frozen=True)
class _Answered:
    answers: list  # predictions
    scores: list[float]  # the policy's score per row
    to_cloud: int  # rows the cloud answered


async def _joint_chunk(joint: JointModel, input_name: str, datatype: str, rows: np.ndarray,
                       read: _Reader) -> _Answered:
    """One request of `rows` through the gateway's hot path."""
    spec = next((s for s in joint.edge.model.inputs if s.name == input_name), None)
    tensor = _fitted(rows, spec, joint.edge.name) if spec is not None else rows
    item = RequestInput(name=input_name, shape=list(tensor.shape), datatype=datatype)
    item._tensor = tensor  # as the binary tensor extension delivers it
    try:
        response = await joint.infer(InferenceRequest(inputs=[item]))
    except InferenceError as exc:
        raise EvaluationError("InputsRejected", f"the service refuses the dataset's samples: "
                              f"{exc}") from None
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response["outputs"]}
    parameters = response["parameters"]
    if "fallback_reason" in parameters:
        # The edge answered rows the cloud should have: the figures would be the edge's.
        raise EvaluationError("EvaluationFailed", f"the cloud model did not answer: "
                              f"{parameters['fallback_reason']}")
    tiers = parameters.get("row_tiers", [parameters["tier"]] * len(rows))
    scores = parameters.get("row_hem_scores", [parameters["hem_score"]] * len(rows))
    return _Answered(read(outputs, len(rows)), scores, sum(tier == "cloud" for tier in tiers))


def tier_outputs(pipeline: Pipeline, model: LoadedModel, input_name: str, rows: np.ndarray,
                 edge: LoadedModel) -> Tensors:
    """One tier alone on `rows`: preprocess, the model, postprocess, as the gateway runs it."""
    return tier_pass(pipeline, model, input_name, rows, edge)[1]


def tier_pass(pipeline: Pipeline, model: LoadedModel, input_name: str, rows: np.ndarray,
              edge: LoadedModel) -> tuple[Tensors, Tensors]:
    """`tier_outputs`, and the model's feeds (its inputs after the preprocess steps)."""
    spec = next((s for s in model.model.inputs if s.name == input_name), None)
    tensors = {input_name: _fitted(rows, spec, model.name) if spec is not None else rows}
    try:
        preprocessed = pipeline.preprocess(tensors)
        feeds = {s.name: preprocessed[s.name] for s in model.model.inputs}
        return feeds, pipeline.postprocess(_run(model, feeds), edge.labels)
    except (StepInputError, KeyError) as exc:
        raise EvaluationError("InputsRejected", f"model {model.name} {model.version} does not "
                              f"take the dataset's samples: {exc}") from None


async def _tiers_alone(pipeline: Pipeline, edge: LoadedModel, client: LocalCloud | HttpCloud,
                       input_name: str, samples: Samples, read: "_Reader",
                       report: Callable[[int], None]) -> tuple[dict[str, list], str]:
    """Each tier alone over `samples`: its predictions, and the cloud's version (a remote
    cloud's as it answered). `report(n)`: n more samples done."""
    alone: dict[str, list] = {"edge": [], "cloud": []}
    cloud_version = client.model.version if isinstance(client, LocalCloud) else ""
    done = 0
    for tier in ("edge", "cloud"):
        for start in range(0, len(samples), CHUNK):
            rows = sample_rows(samples, start, CHUNK)
            if tier == "cloud" and isinstance(client, HttpCloud):
                outputs, cloud_version = await _remote_outputs(pipeline, client, input_name,
                                                               rows, edge)
            else:
                model = edge if tier == "edge" else client.model  # type: ignore[union-attr]
                outputs = tier_outputs(pipeline, model, input_name, rows, edge)
            alone[tier] += read(outputs, len(rows))
            done += len(rows)
            report(done)
    return alone, cloud_version


async def _remote_outputs(pipeline: Pipeline, client: HttpCloud, input_name: str,
                          rows: np.ndarray, edge: LoadedModel) -> tuple[Tensors, str]:
    """The remote cloud alone on `rows`, sent what the gateway sends it (the preprocessed
    feeds of the edge model's inputs); its outputs postprocessed, and its model version."""
    spec = next((s for s in edge.model.inputs if s.name == input_name), None)
    tensors = {input_name: _fitted(rows, spec, edge.name) if spec is not None else rows}
    try:
        feeds = pipeline.preprocess(tensors)
        answer = await client.infer({s.name: feeds[s.name] for s in edge.model.inputs})
        return pipeline.postprocess(dict(answer.outputs), edge.labels), answer.version
    except CloudCallError as exc:
        raise EvaluationError("EvaluationFailed", f"the cloud model at {client.infer_url} did "
                              f"not answer: {exc}") from None
    except (StepInputError, KeyError) as exc:
        raise EvaluationError("InputsRejected", f"the cloud model at {client.infer_url} does "
                              f"not take the dataset's samples: {exc}") from None


# -- predictions and metrics ----------------------------------------------------------------


def default_output(outputs: Mapping[str, np.ndarray]) -> str:
    """The first integer output of rank 1 (class ids), else the last output."""
    ids = [name for name, value in outputs.items()
           if value.ndim == 1 and value.dtype.kind in "iu"]
    return ids[0] if ids else list(outputs)[-1]


def predicted_labels(outputs: Mapping[str, np.ndarray], wanted: str | None,
                     labels: Sequence[str] | None) -> list[str]:
    """The predicted class name of each row of `outputs[wanted]`: class ids [N] (or [N, k],
    best first), scores [N, C] (argmax), or class names [N] / [N, k]."""
    name = wanted or default_output(outputs)
    if name not in outputs:
        raise EvaluationError("InputsRejected", f"evaluation.output {name!r} is not an output; "
                              f"the model answers {list(outputs)}")
    value = np.asarray(outputs[name])
    if value.ndim == 2 and value.dtype.kind not in "iuOSU" and value.shape[1] > 1:
        value = value.argmax(axis=1)
    elif value.ndim == 2:
        value = value[:, 0]
    if value.ndim != 1:
        raise EvaluationError("InputsRejected", f"output {name!r} has shape {list(value.shape)}; "
                              "predictions are class ids [N], scores [N, C] or names [N]")
    if value.dtype.kind in "OSU":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in value.tolist()]
    if value.dtype.kind not in "iu":
        raise EvaluationError("InputsRejected", f"output {name!r} holds {value.dtype} values of "
                              "rank 1; predictions are class ids, scores [N, C] or names")
    named = list(labels or ())
    return [named[i] if 0 <= i < len(named) else str(i) for i in value.tolist()]


def _metrics(version: str, dataset: DatasetRef, scores: ClassificationMetrics,
             digest: str) -> ModelMetrics:
    confusion = None
    if len(scores.labels) <= MAX_CONFUSION_CLASSES:
        confusion = ConfusionMatrix(labels=scores.labels, counts=scores.confusion)
    return ModelMetrics(
        version=version, dataset=dataset.name, datasetSha256=dataset.sha256,
        evaluatedAt=now_rfc3339(), samples=scores.samples, settingsDigest=digest,
        accuracy=scores.accuracy, macroPrecision=scores.macro_precision,
        macroRecall=scores.macro_recall, macroF1=scores.macro_f1,
        perClassRecall=scores.per_class_recall, confusion=confusion)


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
