"""benchmarks.routing on two real seeds: the result's shape, and properties that hold for any
honest evaluation (the oracle bounds every policy, random routing recovers about half the gap
on average, cuts calibrated on validation give the asked offload on test)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import routing
from benchmarks.routing import (CURVE_GRID, POLICIES, SeedRun, evaluate_seed, oracle_accuracy,
                                plot_routing, route, routing_markdown, routing_quality, summarise)

SEEDS = 2
OFFLOADS = ("0.1", "0.2", "0.3")


@pytest.fixture(scope="module")
def runs() -> list[SeedRun]:
    return [evaluate_seed(seed) for seed in range(SEEDS)]


@pytest.fixture(scope="module")
def result(runs: list[SeedRun]) -> dict[str, Any]:
    return routing_quality(seeds=SEEDS)  # evaluate_seed is cached: no second training


def _is_stats(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) == {"mean", "std"}
            and all(isinstance(v, float) and math.isfinite(v) for v in value.values()))


def test_result_structure_is_complete_and_json_serialisable(result: dict[str, Any]) -> None:
    assert result["seeds"] == list(range(SEEDS))
    assert result["split"]["n_test"] > 300
    assert _is_stats(result["a_edge"]) and _is_stats(result["a_cloud"])
    assert result["a_edge"]["mean"] < result["a_cloud"]["mean"]  # the edge model is the weak one
    assert set(result["policies"]) == set(POLICIES)
    assert result["best_policy"] in POLICIES
    for series in [*result["policies"].values(), result["oracle"]]:
        assert set(series["at"]) == set(OFFLOADS)
        for point in series["at"].values():
            assert all(_is_stats(point[key]) for key in ("accuracy", "offload", "pgr"))
        assert _is_stats(series["pgr_auc"])
        curve = series["curve"]
        assert all(len(curve[key]) == len(CURVE_GRID) for key in curve)
    assert [row["rtt_ms"] for row in result["expected_latency"]] == [20.0, 50.0, 100.0]
    assert result["timing_source"]["t_edge"] != "given"  # timed here, none was passed
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_oracle_bounds_every_policy_at_its_realised_offload(runs: list[SeedRun]) -> None:
    for run in runs:
        for name in POLICIES:
            offload, accuracy = route(run, name, CURVE_GRID)
            assert np.all(oracle_accuracy(run, offload) >= accuracy - 1e-12), (run.seed, name)


def test_curves_run_from_edge_alone_to_cloud_alone(runs: list[SeedRun]) -> None:
    for run in runs:
        for name in POLICIES:
            offload, accuracy = route(run, name, [0.0, 1.0])
            assert offload.tolist() == [0.0, 1.0]
            assert accuracy.tolist() == pytest.approx([run.a_edge, run.a_cloud])


def test_oracle_recovers_the_gap_at_20_percent(result: dict[str, Any]) -> None:
    assert result["oracle"]["at"]["0.2"]["pgr"]["mean"] > 0.9
    for name in POLICIES:
        assert result["oracle"]["pgr_auc"]["mean"] >= result["policies"][name]["pgr_auc"]["mean"]


def test_random_routing_recovers_about_half(result: dict[str, Any]) -> None:
    random_auc = result["policies"]["RandomFilter"]["pgr_auc"]["mean"]
    assert 0.3 < random_auc < 0.7
    best = result["best_policy"]
    assert best != "RandomFilter"
    assert result["policies"][best]["pgr_auc"]["mean"] > random_auc


def test_cuts_calibrated_on_validation_give_the_target_offload_on_test(runs: list[SeedRun]) -> None:
    targets = [float(key) for key in OFFLOADS]
    for run in runs:
        for name in POLICIES:
            offload, _ = route(run, name, targets)
            assert np.abs(offload - targets).max() < 0.08, (run.seed, name, offload)


def test_given_timings_and_measurements_feed_expected_latency(runs: list[SeedRun]) -> None:
    result = summarise(runs, t_edge_ms=1.0, t_cloud_ms=2.0, measured_ms={50.0: 7.5})
    assert result["timing_source"] == {"t_edge": "given", "t_cloud": "given"}
    by_rtt = {row["rtt_ms"]: row for row in result["expected_latency"]}
    row = by_rtt[50.0]
    rho = result["policies"][result["best_policy"]]["at"]["0.2"]["offload"]["mean"]
    assert row["offload"]["0.2"] == rho
    assert row["expected_ms"]["0.2"] == pytest.approx(1.0 + rho * (50.0 + 2.0))
    assert row["measured_ms"] == 7.5 and by_rtt[20.0]["measured_ms"] is None


def test_markdown_and_plots(result: dict[str, Any], tmp_path: Path) -> None:
    text = routing_markdown(result)
    for label in (*POLICIES, "oracle", "edge alone", "cloud alone", "| 50 ms |"):
        assert label in text
    paths = plot_routing(result, tmp_path)
    assert {p.name for p in paths} == {"routing_accuracy_vs_offload.png", "routing_pgr.png"}
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_policy_scores_come_from_the_gateway_policies(runs: list[SeedRun]) -> None:
    # Guards against the benchmark drifting into its own re-implementation of the rules.
    from jointserve.routing import build_policy

    run = runs[0]
    # The whole test split, as the benchmark computes it: predict_proba of 5 rows is another
    # BLAS call whose blocking may differ in the last bits (seen: 1.8e-7). The tolerance is far
    # below what a different rule (another formula, clipping, a log base) would change.
    probs = run.edge.predict_proba(run.X_test)[:5]
    for name in ("MaxProb", "Margin", "Entropy"):
        policy = build_policy(name)
        expected = [policy(p).score for p in probs]
        assert run.scores[name][1][:5] == pytest.approx(expected, rel=1e-6, abs=1e-9), name
    assert routing.build_policy is build_policy
