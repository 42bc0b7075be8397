"""benchmarks.routing_datasets on one seed: every data set is measured with every policy,
the tie-heavy edge model really has few distinct scores, and the budget's cut still sends
about the asked share of a test split there."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.routing import POLICIES
from benchmarks.routing_datasets import (
    RECIPES,
    datasets_markdown,
    learned_beats_static,
    routing_datasets,
)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return routing_datasets(seeds=1)


def test_every_data_set_and_policy_is_measured(results: dict[str, Any]) -> None:
    assert set(results) == set(RECIPES)
    for name, result in results.items():
        assert set(result["policies"]) == set(POLICIES), name
        assert result["a_edge"]["mean"] < result["a_cloud"]["mean"], name  # a weak edge
    assert json.loads(json.dumps(results, allow_nan=False)) == results
    assert set(learned_beats_static(results)) == set(RECIPES)


def test_the_budget_holds_where_scores_are_tied(results: dict[str, Any]) -> None:
    ties = results["synthetic-ties"]
    assert ties["distinct_maxprob_scores"] <= 5  # a 5-neighbour vote: steps of 0.2
    for policy, series in ties["policies"].items():
        for target in ("0.1", "0.2", "0.3"):
            realised = series["at"][target]["offload"]["mean"]
            assert abs(realised - float(target)) < 0.05, (policy, target, realised)


def test_the_table_names_every_data_set_and_policy(results: dict[str, Any]) -> None:
    text = datasets_markdown(results)
    for label in (*RECIPES, *POLICIES, "oracle", "distinct MaxProb scores"):
        assert label in text
