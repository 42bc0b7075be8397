"""Hard example mining policies: Sedna's rules, classifier uncertainty rules, selection by name."""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import pytest
import yaml

from jointserve.api import JointInferenceService, crd_for, parse_resource
from jointserve.routing import POLICIES, HemDecision, build_policy

CONFIDENT = np.array([0.97, 0.01, 0.01, 0.01])
UNSURE = np.array([0.40, 0.35, 0.15, 0.10])


def _sedna_cross_entropy_is_hard(probs: list[float], threshold: float) -> bool:
    # Sedna's CrossEntropyFilter, verbatim in substance.
    log_sum = sum(p * math.log(p) for p in probs if p > 0)
    confidence = 1 + 1.0 * log_sum / math.log(len(probs))
    return confidence < threshold


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        pytest.param("CrossEntropyFilter", {"threshold_cross_entropy": 0.5}, id="cross-entropy"),
        pytest.param("MaxProb", {"threshold": 0.9}, id="max-prob"),
        pytest.param("Margin", {"threshold": 0.5}, id="margin"),
        pytest.param("Entropy", {"threshold": 0.3}, id="entropy"),
    ],
)
def test_classifier_policies_send_unsure_answers_to_the_cloud(name: str, parameters: dict) -> None:
    policy = build_policy(name, parameters)
    assert policy(CONFIDENT).hard is False
    assert policy(UNSURE).hard is True
    assert policy(UNSURE).score > policy(CONFIDENT).score


def test_cross_entropy_matches_sedna_on_random_vectors() -> None:
    rng = np.random.default_rng(0)
    policy = build_policy("CrossEntropyFilter", {"threshold_cross_entropy": 0.6})
    for _ in range(200):
        probs = rng.dirichlet(np.full(10, 0.3))
        assert policy(probs).hard == _sedna_cross_entropy_is_hard(probs.tolist(), 0.6)


def test_threshold_filter_on_detections() -> None:
    policy = build_policy("ThresholdFilter", {"threshold": 0.5})
    assert policy(np.array([[0, 0, 1, 1, 0.9, 1], [0, 0, 1, 1, 0.2, 2]])).hard is False
    assert policy(np.array([[0, 0, 1, 1, 0.3, 1]])).hard is True
    assert policy(np.empty((0, 6))).hard is True


def test_ibt_filter_counts_low_scoring_boxes() -> None:
    policy = build_policy("IBTFilter", {"threshold_img": 0.5, "threshold_box": 0.5})
    boxes = lambda *scores: np.array([[0, 0, 1, 1, s, 0] for s in scores])  # noqa: E731
    assert policy(boxes(0.9, 0.8, 0.2)).hard is False   # 1/3 low < 0.5
    assert policy(boxes(0.9, 0.2, 0.1)).hard is True    # 2/3 low >= 0.5
    assert policy(np.empty((0, 6))).hard is True


def test_random_filter_hits_its_ratio() -> None:
    policy = build_policy("RandomFilter", {"random_ratio": 0.2, "seed": 7})
    share = np.mean([policy(CONFIDENT).hard for _ in range(5000)])
    assert 0.17 < share < 0.23


def test_edge_only_and_cloud_only() -> None:
    assert build_policy("EdgeOnly")(UNSURE).hard is False
    assert build_policy("CloudOnly")(CONFIDENT).hard is True


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        pytest.param("Oracle", {}, "hardExampleMining.name: must be one of", id="unknown-name"),
        pytest.param("MaxProb", {"threshold": 1.5}, "hardExampleMining.parameters.threshold: "
                     "input should be less than or equal to 1", id="out-of-range"),
        pytest.param("MaxProb", {"treshold": 0.5}, "hardExampleMining.parameters.treshold: "
                     "unknown parameter for MaxProb", id="misspelled-parameter"),
        pytest.param("IBTFilter", {"threshold_box": "high"}, "hardExampleMining.parameters."
                     "threshold_box: input should be a valid number", id="not-a-number"),
    ],
)
def test_bad_policy_configuration_names_the_field(name: str, parameters: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        build_policy(name, parameters)
    assert message in str(err.value)


# What each policy judges (module docstring of jointserve/routing/_policies.py): a classifier's
# probability vector, detection rows [x1, y1, x2, y2, score, label], or anything (it ignores
# the edge output). A policy added to POLICIES without a kind here fails by name below.
PROBABILITIES, DETECTIONS = "probabilities", "detections"
KINDS = {
    "CrossEntropyFilter": {PROBABILITIES}, "MaxProb": {PROBABILITIES}, "Margin": {PROBABILITIES},
    "Entropy": {PROBABILITIES}, "ThresholdFilter": {DETECTIONS}, "IBTFilter": {DETECTIONS},
    "RandomFilter": {PROBABILITIES, DETECTIONS}, "EdgeOnly": {PROBABILITIES, DETECTIONS},
    "CloudOnly": {PROBABILITIES, DETECTIONS}, "LearnedRouter": {PROBABILITIES},
}
EDGE_OUTPUTS = {
    PROBABILITIES: UNSURE,
    DETECTIONS: np.array([[0, 0, 10, 10, 0.9, 1], [5, 5, 20, 20, 0.3, 2]]),
}
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits" / "digits.yaml"


def _parameters(name: str) -> dict:
    return {"random_ratio": 0.5, "seed": 7} if name == "RandomFilter" else {}


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in sorted(POLICIES)])
def test_every_policy_is_selectable_by_name_and_judges_its_kind_of_output(name: str) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["hardExampleMining"] = {"name": name, "parameters": _parameters(name)}
    resource = parse_resource(doc, "x.yaml")
    assert resource.spec.hardExampleMining.name == name

    assert name in KINDS, f"{name}: say in KINDS which edge output it judges"
    policy = build_policy(name, _parameters(name))
    for kind in sorted(KINDS[name]):
        decision = policy(EDGE_OUTPUTS[kind])
        assert isinstance(decision, HemDecision), kind
        assert isinstance(decision.hard, bool), kind
        assert math.isfinite(decision.score), kind


def _crd_enum() -> list[str]:
    schema = crd_for(JointInferenceService)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["hardExampleMining"]["properties"]["name"]["enum"]


def _json_schema_enum() -> list[str]:
    schema = JointInferenceService.model_json_schema()
    return schema["$defs"]["HardExampleMining"]["properties"]["name"]["enum"]


@pytest.mark.parametrize("enum", [pytest.param(_crd_enum, id="crd"),
                                  pytest.param(_json_schema_enum, id="json-schema")])
def test_the_schema_enum_of_policy_names_is_what_build_policy_accepts(enum) -> None:
    names = enum()
    assert len(names) == len(set(names))
    refused = []
    for name in names:
        try:
            build_policy(name, _parameters(name))
        except ValueError:
            refused.append(name)
    assert refused == [], "in the schema enum but refused by build_policy"
    # build_policy accepts exactly the names in its table (an unknown name is refused by the
    # test above); each must be offered by the schema, or a valid policy cannot be applied.
    assert sorted(set(POLICIES) - set(names)) == [], "accepted by build_policy, not in the enum"
