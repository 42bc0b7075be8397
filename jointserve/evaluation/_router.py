"""Training a LearnedRouter on a Dataset: which of the edge's answers would the cloud fix?

    samples -> the edge model (the service's steps) -> its probabilities [N, C] (the HEM
               output), and its input after the steps [N, D]
            -> each tier alone -> target: edge wrong and cloud right
            -> routing.router_features: the probabilities' features, with or without the
               input's D values (`inputs`: True, False, or None to let cross-validation pick)
            -> standardised, logistic regression (scikit-learn); its C and the feature set
               picked by 5-fold cross-validated AUC on a stratified 70%, judged on the other
               30%, then refitted on every row
            -> ONNX (skl2onnx) in an archive: router.onnx + router.json, sha256-verified like
               any model version

The input features are what lift it above the static policies: the probabilities say how
unsure the edge is, the input says where in the input space it is unsure and the cloud is
not (benchmarks.routing measures both). scikit-learn and skl2onnx are imported only here,
when a router is trained (the `train` extra); serving a trained router needs onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from jointserve.api import JointInferenceServiceSpec, now_rfc3339
from jointserve.protocol import LoadedModel
from jointserve.routing import MAX_INPUT_FEATURES, ROUTER_FILE, ROUTER_INFO, RouterModel
from jointserve.routing import ScoreOnly, build_policy, router_features
from jointserve.runtime import build_pipeline
from jointserve.store import pack_tar_gz

from ._errors import EvaluationError
from ._run import CHUNK, CloudTier, DatasetRef, Progress, pgr, request_input, run_service
from ._run import sample_rows, settings_digest, tier_pass
from ._samples import Samples

HELD_OUT = 0.3
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)  # inverse regularisation strengths tried
FOLDS = 5
# Pinned as the examples' models are: the same inputs give the same bytes and sha256.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class TrainedRouter:
    archive: bytes  # tar.gz of router.onnx and router.json
    info: dict[str, Any]  # router.json: what it was trained on and how it did on held-out rows


@dataclass(frozen=True)
class RouterChoice:
    """What cross-validation picked: whether the router reads the input, and its C."""

    inputs: bool
    c: float
    cv_auc: dict[str, float]  # "probabilities" / "probabilities+inputs" -> best mean AUC


def train_router(name: str, spec: JointInferenceServiceSpec, edge: LoadedModel,
                 cloud: CloudTier, samples: Samples, dataset: DatasetRef, seed: int = 0,
                 progress: Progress | None = None, inputs: bool | None = None) -> TrainedRouter:
    """A router for `spec`'s edge model, trained and judged on `samples` (classification).
    `inputs`: read the edge's input too (True), never (False), or as cross-validation
    says (None; an input of one tensor of at most MAX_INPUT_FEATURES values only)."""
    if samples.boxes is not None or not samples.labels:
        raise EvaluationError("InputsRejected", f"dataset {dataset.name}: a router is trained on "
                              "labelled classification samples")
    run = run_service(name, spec, edge, cloud, samples, dataset, ScoreOnly(build_policy("Margin")),
                      progress)
    truth = np.asarray(samples.labels, dtype=object)
    edge_right = np.asarray(run.alone["edge"], dtype=object) == truth
    cloud_right = np.asarray(run.alone["cloud"], dtype=object) == truth
    fixes = ~edge_right & cloud_right
    if fixes.sum() < 2 or (~fixes).sum() < 2:
        raise EvaluationError("InputsRejected", f"dataset {dataset.name}: the cloud fixes "
                              f"{int(fixes.sum())} of {len(fixes)} edge answers; a router "
                              "needs at least 2 of each kind to learn from")
    probs, model_inputs = _edge_rows(spec, edge, samples, inputs)
    held_out = _held_out(fixes, seed)
    train = np.setdiff1d(np.arange(len(fixes)), held_out)
    choice = choose_router(probs[train], fixes[train], _rows(model_inputs, train), seed, inputs)
    features = router_features(probs, model_inputs if choice.inputs else None)
    judged = _judge(_fit(features[train], fixes[train], choice.c), features[held_out],
                    fixes[held_out], edge_right[held_out], cloud_right[held_out],
                    np.asarray(run.scores)[held_out])
    onnx = _to_onnx(_fit(features, fixes, choice.c), features.shape[1])
    RouterModel(onnx)  # loads: a router that onnxruntime refuses never leaves here
    classes = int(probs.shape[1])
    info = {"format": 1, "features": int(features.shape[1]), "classes": classes,
            "inputFeatures": int(features.shape[1]) - classes - 2, "C": choice.c,
            "crossValidatedAuc": choice.cv_auc,
            "dataset": dataset.name, "datasetSha256": dataset.sha256, "samples": len(samples),
            "edgeModel": edge.name, "edgeVersion": edge.version, "seed": seed,
            "trainedAt": now_rfc3339(), "heldOut": judged}
    archive = pack_tar_gz({ROUTER_FILE: onnx,
                           ROUTER_INFO: (json.dumps(info, indent=2) + "\n").encode()})
    return TrainedRouter(archive, info)


def router_digest(spec: JointInferenceServiceSpec) -> str:
    """What decides a router the operator trains (hardExampleMining.train) besides the
    versions and the data: the train settings, the output the policy reads, the steps."""
    hem = spec.hardExampleMining
    train = hem.train.model_dump(mode="json") if hem.train is not None else None
    return settings_digest({"train": train, "output": hem.output,
                            "pre": [s.model_dump(mode="json") for s in spec.preprocess],
                            "post": [s.model_dump(mode="json") for s in spec.postprocess]})


def _edge_rows(spec: JointInferenceServiceSpec, edge: LoadedModel, samples: Samples,
               inputs: bool | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The HEM output of the edge model (after the steps) for every sample, what the policy
    and so the router sees in the gateway; and the edge's input after the steps, where a
    router may read it (None where not: inputs=False, several inputs, too many values)."""
    pipeline = build_pipeline(spec.preprocess, spec.postprocess)
    input_name, _ = request_input(pipeline, edge, samples)
    wanted = spec.hardExampleMining.output
    parts, fed = [], []
    for start in range(0, len(samples), CHUNK):
        feeds, outputs = tier_pass(pipeline, edge, input_name, sample_rows(samples, start, CHUNK),
                                   edge)
        name = wanted or list(outputs)[-1]
        if name not in outputs:
            raise EvaluationError("InputsRejected", f"hardExampleMining.output {name!r} is not "
                                  f"an edge output ({sorted(outputs)})")
        parts.append(np.asarray(outputs[name], dtype=np.float64))
        if inputs is not False and len(feeds) == 1:
            fed.append(next(iter(feeds.values())))
    probs = np.concatenate(parts)
    if probs.ndim != 2:
        raise EvaluationError("InputsRejected", f"a router reads class probabilities [N, C]; "
                              f"the edge's HEM output is {list(probs.shape)}")
    model_inputs = np.concatenate(fed).reshape(len(probs), -1) if fed else None
    if model_inputs is not None and model_inputs.shape[1] > MAX_INPUT_FEATURES:
        model_inputs = None
    if inputs and model_inputs is None:
        raise EvaluationError("InputsRejected", "a router reads the edge model's input only "
                              f"when the model has one input of at most {MAX_INPUT_FEATURES} "
                              f"values a row; {edge.name} has not")
    return probs, model_inputs


def _rows(array: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if array is None else array[rows]


def fit_router(probabilities: np.ndarray, fixes: np.ndarray, inputs: np.ndarray | None = None,
               seed: int = 0, use_inputs: bool | None = None) -> bytes:
    """router.onnx chosen (`choose_router`) and fitted on all the rows given: edge
    probabilities [N, C], whether the cloud fixes each row's answer, and optionally the
    edge's inputs (the routing benchmark trains its routers with this)."""
    fixes = np.asarray(fixes, dtype=bool)
    choice = choose_router(probabilities, fixes, inputs, seed, use_inputs)
    features = router_features(probabilities, inputs if choice.inputs else None)
    return _to_onnx(_fit(features, fixes, choice.c), features.shape[1])


def choose_router(probabilities: np.ndarray, fixes: np.ndarray, inputs: np.ndarray | None,
                  seed: int, use_inputs: bool | None = None) -> RouterChoice:
    """The feature set (with the inputs or not, when `inputs` are given and `use_inputs` is
    None) and C with the best mean AUC over FOLDS stratified folds of these rows."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    options = [False] if inputs is None or use_inputs is False else (
        [True] if use_inputs else [False, True])
    folds = min(FOLDS, int(fixes.sum()), int((~fixes).sum()))
    if folds < 2:  # too few of a kind to cross-validate: the plainest router
        return RouterChoice(options[-1], 1.0, {})
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    best: tuple[float, bool, float] | None = None
    aucs: dict[str, float] = {}
    for with_inputs in options:
        features = router_features(probabilities, inputs if with_inputs else None)
        for c in C_GRID:
            auc = float(cross_val_score(_model(c), features, fixes, cv=split,
                                        scoring="roc_auc").mean())
            key = "probabilities+inputs" if with_inputs else "probabilities"
            aucs[key] = max(aucs.get(key, 0.0), round(auc, 4))
            if best is None or auc > best[0]:
                best = (auc, with_inputs, c)
    assert best is not None
    return RouterChoice(best[1], best[2], aucs)


def _held_out(fixes: np.ndarray, seed: int) -> np.ndarray:
    """A stratified HELD_OUT share of the rows, sorted."""
    try:
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise EvaluationError("RouterTrainingUnavailable", "training a router needs "
                              "scikit-learn and skl2onnx: pip install 'jointserve[train]'") from None
    _, held_out = train_test_split(np.arange(len(fixes)), test_size=HELD_OUT, random_state=seed,
                                   stratify=fixes)
    return np.sort(held_out)


def _fit(features: np.ndarray, fixes: np.ndarray, c: float) -> Any:
    return _model(c).fit(features, fixes)


def _model(c: float) -> Any:
    """Standardised features, then a logistic regression (inverse regularisation `c`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _judge(model: Any, features: np.ndarray, fixes: np.ndarray, edge_right: np.ndarray,
           cloud_right: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """On held-out rows: the router's AUC, and PGR at 10/20/30% sent by its score against
    the same shares sent by the Margin policy's score."""
    from sklearn.metrics import roc_auc_score

    score = model.predict_proba(features)[:, 1]
    edge, cloud = float(edge_right.mean()), float(cloud_right.mean())

    def pgr_at(scores: np.ndarray, share: float) -> float | None:
        sent = np.zeros(len(scores), dtype=bool)
        sent[np.argsort(-scores, kind="stable")[:int(round(share * len(scores)))]] = True
        return pgr(float(np.where(sent, cloud_right, edge_right).mean()), edge, cloud)

    auc = float(roc_auc_score(fixes, score)) if 0 < fixes.sum() < len(fixes) else None
    return {"rows": int(len(fixes)), "auc": auc, "edgeAccuracy": edge, "cloudAccuracy": cloud,
            "pgr": {f"{share:g}": pgr_at(score, share) for share in (0.1, 0.2, 0.3)},
            "marginPgr": {f"{share:g}": pgr_at(baseline, share) for share in (0.1, 0.2, 0.3)}}


def _to_onnx(model: Any, features: int) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(model, initial_types=[("features", FloatTensorType([None, features]))],
                  options={id(model[-1]): {"zipmap": False}}, target_opset=TARGET_OPSET)
    return onx.SerializeToString()
