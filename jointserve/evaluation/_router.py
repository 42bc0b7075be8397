"""Training a LearnedRouter on a Dataset: which of the edge's answers would the cloud fix?

    samples -> the edge model (the service's steps) -> its probabilities [N, C] (the HEM output)
            -> each tier alone -> target: edge wrong and cloud right
            -> routing.router_features -> logistic regression (scikit-learn), fitted on a
               stratified 70% and judged on the other 30%
            -> ONNX (skl2onnx) in an archive: router.onnx + router.json, sha256-verified like
               any model version

scikit-learn and skl2onnx are imported only here, when a router is trained (the `train`
extra); serving a trained router needs onnxruntime alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from jointserve.api import JointInferenceServiceSpec, now_rfc3339
from jointserve.protocol import LoadedModel
from jointserve.routing import ROUTER_FILE, ROUTER_INFO, RouterModel, ScoreOnly, build_policy
from jointserve.routing import router_features
from jointserve.runtime import build_pipeline
from jointserve.store import pack_tar_gz

from ._errors import EvaluationError
from ._run import CHUNK, CloudTier, DatasetRef, Progress, _chunk, _request_input, _tier_outputs
from ._run import pgr, run_service
from ._samples import Samples

HELD_OUT = 0.3
# Pinned as the examples' models are: the same inputs give the same bytes and sha256.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class TrainedRouter:
    archive: bytes  # tar.gz of router.onnx and router.json
    info: dict[str, Any]  # router.json: what it was trained on and how it did on held-out rows


def train_router(name: str, spec: JointInferenceServiceSpec, edge: LoadedModel,
                 cloud: CloudTier, samples: Samples, dataset: DatasetRef, seed: int = 0,
                 progress: Progress | None = None) -> TrainedRouter:
    """A router for `spec`'s edge model, trained and judged on `samples` (classification)."""
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
    features = router_features(_edge_probabilities(spec, edge, samples))
    held_out = _held_out(fixes, seed)
    train = np.setdiff1d(np.arange(len(fixes)), held_out)
    model = _fit(features[train], fixes[train])
    judged = _judge(model, features[held_out], fixes[held_out], edge_right[held_out],
                    cloud_right[held_out], np.asarray(run.scores)[held_out])
    onnx = _to_onnx(model, features.shape[1])
    RouterModel(onnx)  # loads: a router that onnxruntime refuses never leaves here
    info = {"format": 1, "features": int(features.shape[1]), "classes": int(features.shape[1] - 2),
            "dataset": dataset.name, "datasetSha256": dataset.sha256, "samples": len(samples),
            "edgeModel": edge.name, "edgeVersion": edge.version, "seed": seed,
            "trainedAt": now_rfc3339(), "heldOut": judged}
    archive = pack_tar_gz({ROUTER_FILE: onnx,
                           ROUTER_INFO: (json.dumps(info, indent=2) + "\n").encode()})
    return TrainedRouter(archive, info)


def _edge_probabilities(spec: JointInferenceServiceSpec, edge: LoadedModel,
                        samples: Samples) -> np.ndarray:
    """The HEM output of the edge model (after the steps) for every sample: what the policy,
    and so the router, sees in the gateway."""
    pipeline = build_pipeline(spec.preprocess, spec.postprocess)
    input_name, _ = _request_input(pipeline, edge, samples)
    wanted = spec.hardExampleMining.output
    parts = []
    for start in range(0, len(samples), CHUNK):
        outputs = _tier_outputs(pipeline, edge, input_name, _chunk(samples, start, CHUNK), edge)
        name = wanted or list(outputs)[-1]
        if name not in outputs:
            raise EvaluationError("InputsRejected", f"hardExampleMining.output {name!r} is not "
                                  f"an edge output ({sorted(outputs)})")
        parts.append(np.asarray(outputs[name], dtype=np.float64))
    probs = np.concatenate(parts)
    if probs.ndim != 2:
        raise EvaluationError("InputsRejected", f"a router reads class probabilities [N, C]; "
                              f"the edge's HEM output is {list(probs.shape)}")
    return probs


def fit_router(probabilities: np.ndarray, fixes: np.ndarray) -> bytes:
    """router.onnx fitted on all the rows given: edge probabilities [N, C] and whether the
    cloud fixes each row's answer (the routing benchmark trains its routers with this)."""
    features = router_features(probabilities)
    return _to_onnx(_fit(features, np.asarray(fixes, dtype=bool)), features.shape[1])


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


def _fit(features: np.ndarray, fixes: np.ndarray) -> Any:
    """A logistic regression of `fixes` on `features`; classes balanced, as fixes are rare."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, class_weight="balanced").fit(features, fixes)


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
                  options={id(model): {"zipmap": False}}, target_opset=TARGET_OPSET)
    return onx.SerializeToString()
