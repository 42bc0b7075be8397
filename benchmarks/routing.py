"""Routing quality on digits: how much of the cloud model's accuracy each HEM policy recovers
for a given share of inputs sent to the cloud.

Per seed: a fresh stratified train/validation/test split of scikit-learn's bundled digits
(preprocessed as examples/digits/build.py does), the example's weak edge v1 recipe and its
cloud MLP recipe trained on the training part, and every policy's score for each validation
and test sample from the real policy classes in `jointserve.routing`. A policy's
cut for a target offload ratio ρ is calibrated on the validation scores only, as the
product's offload budget does (`hardExampleMining.budget`: `jointserve.routing.cutoff_for`),
and then applied to the test part, whose realised offload is reported beside the accuracy.

PGR (performance gap recovered) = (A − A_edge) / (A_cloud − A_edge): 0 is the edge model
alone, 1 the cloud model alone. Random routing recovers the gap in proportion to what it
sends, so its PGR curve is the diagonal and its average over offload 0..1 is 0.5; the oracle
(which knows the labels) is the upper bound.

    python -m benchmarks.routing [--seeds 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from jointserve.routing import build_policy, cutoff_for

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "examples" / "digits" / "build.py"

POLICIES = ("MaxProb", "Margin", "Entropy", "CrossEntropyFilter", "RandomFilter", "LearnedRouter")
LEARNED = "LearnedRouter"
ORACLE = "oracle"
SPLIT = {"train": 0.6, "validation": 0.2, "test": 0.2}
CURVE_GRID = np.round(np.linspace(0.0, 1.0, 51), 4)  # target offload ratios, steps of 0.02
TIMING_CALLS = 200  # single-sample predict_proba calls per model when timing them here


# -- one seed ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeedRun:
    """What one seed's split and models give; the arrays are not to be modified (cached)."""

    seed: int
    edge_correct: np.ndarray  # bool [n_test]: edge model's test prediction is right
    cloud_correct: np.ndarray  # bool [n_test]
    scores: dict[str, tuple[np.ndarray, np.ndarray]]  # policy -> (validation, test) scores
    n_train: int
    n_validation: int
    edge: Any  # fitted estimators, kept for timing them
    cloud: Any
    X_test: np.ndarray

    @property
    def a_edge(self) -> float:
        return float(self.edge_correct.mean())

    @property
    def a_cloud(self) -> float:
        return float(self.cloud_correct.mean())


@functools.cache
def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_build", BUILD_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@functools.cache
def evaluate_seed(seed: int) -> SeedRun:
    """Split, train and score for one seed. Cached: the runner, the CLI and the tests ask for
    the same seeds, and training is the only slow part."""
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    build = _build_module()
    # Exactly build.py's data and preprocessing (X / 16 as float32): its train and test parts
    # together are the whole data set, which is re-split here with this seed.
    base = build.load_split()
    X = np.concatenate([base.X_train, base.X_test])
    y = np.concatenate([base.y_train, base.y_test])
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y, train_size=SPLIT["train"], random_state=seed, stratify=y)
    val_share = SPLIT["validation"] / (SPLIT["validation"] + SPLIT["test"])
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, train_size=val_share, random_state=seed, stratify=y_rest)

    # One BLAS thread: on this 2-core machine, with anything else running, two threads made
    # the MLP ~6x slower (45 s instead of 7 s per fit, measured). With one thread the build.py
    # recipe as is (max_iter=500; it stops on its tolerance after ~100 epochs) takes ~2-5 s.
    with threadpool_limits(1):
        n_edge = build.EDGE_V1_SAMPLES
        edge = build._logistic().fit(X_train[:n_edge], y_train[:n_edge])
        cloud = build._mlp().set_params(random_state=seed).fit(X_train, y_train)
        # predict_proba rather than the ONNX exports: build.py checks that they agree, and
        # skl2onnx's probabilities equal scikit-learn's to float32 precision.
        p_val, p_test = edge.predict_proba(X_val), edge.predict_proba(X_test)
        cloud_val, cloud_test = cloud.predict(X_val), cloud.predict(X_test)
        # The training rows the edge model never saw also teach the router (the cloud saw
        # them, so there its answers are those of a model on its own training data).
        p_unseen = edge.predict_proba(X_train[n_edge:])
        cloud_unseen = cloud.predict(X_train[n_edge:])

    # Classes are 0..9, so argmax is the label.
    fixes_val = (p_val.argmax(axis=1) != y_val) & (cloud_val == y_val)
    fixes_unseen = (p_unseen.argmax(axis=1) != y_train[n_edge:]) & (cloud_unseen == y_train[n_edge:])
    rows = RouterRows(X_val, X_test, p_unseen, X_train[n_edge:], fixes_unseen)
    return SeedRun(
        seed=seed,
        edge_correct=p_test.argmax(axis=1) == y_test,
        cloud_correct=cloud_test == y_test,
        scores={name: policy_scores(name, seed, p_val, p_test, fixes_val, rows)
                for name in POLICIES},
        n_train=len(y_train), n_validation=len(y_val), edge=edge, cloud=cloud, X_test=X_test)


@dataclass(frozen=True)
class RouterRows:
    """What a LearnedRouter learns from: each split's edge inputs, and the extra rows (the
    training rows the edge model never saw: their probabilities, inputs and fixes)."""

    X_val: np.ndarray
    X_test: np.ndarray
    p_extra: np.ndarray
    X_extra: np.ndarray
    fixes_extra: np.ndarray


def policy_scores(name: str, seed: int, p_val: np.ndarray, p_test: np.ndarray,
                  fixes_val: np.ndarray, rows: RouterRows) -> tuple[np.ndarray, np.ndarray]:
    """The real policy's score (higher = harder), one sample at a time as the gateway calls it.
    Its own threshold parameter is not used: the cut is calibrated on the validation scores.
    LearnedRouter: `learned_scores` (trained where the cloud's fixes are known)."""
    if name == LEARNED:
        return learned_scores(p_val, p_test, fixes_val, seed, rows)
    policy = build_policy(name, {"seed": seed} if name == "RandomFilter" else None)
    return (np.array([policy(row).score for row in p_val]),
            np.array([policy(row).score for row in p_test]))


def learned_scores(p_val: np.ndarray, p_test: np.ndarray, fixes_val: np.ndarray, seed: int,
                   rows: RouterRows) -> tuple[np.ndarray, np.ndarray]:
    """A LearnedRouter as the product trains one (jointserve.evaluation.fit_router: the
    feature set, with or without the inputs, and C chosen by cross-validation; ONNX, scored
    by routing.RouterModel), fitted on the validation rows and the extra rows. One router
    scores both splits: the cut is calibrated on its validation scores, as the operator
    calibrates a budget with the router it serves. (Scores of fold-wise routers would not
    do: each fold's router gives tied rows other values than the served one does.)"""
    from jointserve.evaluation import fit_router
    from jointserve.routing import RouterModel

    router = RouterModel(fit_router(np.concatenate([p_val, rows.p_extra]),
                                    np.concatenate([fixes_val, rows.fixes_extra]),
                                    np.concatenate([rows.X_val, rows.X_extra]), seed))
    return (np.asarray(router.scores(p_val, rows.X_val), dtype=np.float64),
            np.asarray(router.scores(p_test, rows.X_test), dtype=np.float64))


# -- routing at a target offload ratio --------------------------------------------------------

def hard_shares(val_scores: np.ndarray, test_scores: np.ndarray,
                targets: Sequence[float] | np.ndarray) -> np.ndarray:
    """[targets, n_test]: the chance each test sample goes to the cloud under the cut the
    product calibrates on the validation scores for each target ratio ρ
    (`jointserve.routing.cutoff_for`: the k-th hardest, k = round(ρ·n), with the ties at it
    split to make up k; the benchmark takes the expectation of those draws). ρ = 0 and 1 are
    the pure tiers (edge alone, cloud alone)."""
    rows = []
    for rho in np.asarray(targets, dtype=float):
        if rho <= 0.0 or rho >= 1.0:
            rows.append(np.full(len(test_scores), 1.0 if rho >= 1.0 else 0.0))
        else:
            rows.append(cutoff_for(val_scores, float(rho)).hard_share(test_scores))
    return np.array(rows)


def route(run: SeedRun, policy: str,
          targets: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(realised test offload, joint test accuracy) per target ratio: the cloud's answer for
    the test samples the validation-calibrated cut sends, the edge's elsewhere (in
    expectation over the draws at tied scores)."""
    val_scores, test_scores = run.scores[policy]
    sent = hard_shares(val_scores, test_scores, targets)
    correct = sent * run.cloud_correct[None, :] + (1 - sent) * run.edge_correct[None, :]
    return sent.mean(axis=1), correct.mean(axis=1)


def oracle_accuracy(run: SeedRun, offload: Sequence[float] | np.ndarray) -> np.ndarray:
    """Best possible test accuracy sending `offload` of the test part: first the samples the
    edge gets wrong and the cloud right, then those where both agree in rightness, last the
    ones only the edge gets right."""
    n = len(run.edge_correct)
    gain = int(np.sum(~run.edge_correct & run.cloud_correct))
    loss = int(np.sum(run.edge_correct & ~run.cloud_correct))
    k = np.rint(np.asarray(offload, dtype=float) * n)
    return run.a_edge + (np.minimum(k, gain) - np.maximum(0, k - (n - loss))) / n


def _pgr(accuracy: np.ndarray, run: SeedRun) -> np.ndarray:
    return (accuracy - run.a_edge) / (run.a_cloud - run.a_edge)


def _curves(run: SeedRun, name: str,
            targets: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if name == ORACLE:  # sends exactly round(ρ·n_test) samples, chosen on the test labels
        offload = np.rint(np.asarray(targets, dtype=float) * len(run.edge_correct))
        offload /= len(run.edge_correct)
        return offload, oracle_accuracy(run, offload)
    return route(run, name, targets)


def _auc(offload: np.ndarray, pgr: np.ndarray) -> float:
    """Area under PGR against realised offload over [0, 1] (the grid includes both ends)."""
    order = np.argsort(offload, kind="stable")
    x, y = offload[order], pgr[order]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


# -- aggregation over seeds -------------------------------------------------------------------

def _stats(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def _key(rho: float) -> str:
    return f"{rho:g}"


def _summarise_policy(runs: Sequence[SeedRun], name: str,
                      offloads: Sequence[float]) -> dict[str, Any]:
    at: dict[str, Any] = {}
    per_seed_at = [_curves(run, name, offloads) for run in runs]
    for i, rho in enumerate(offloads):
        off = [o[i] for o, _ in per_seed_at]
        acc = [a[i] for _, a in per_seed_at]
        pgr = [_pgr(a, run)[i] for (_, a), run in zip(per_seed_at, runs)]
        at[_key(rho)] = {"accuracy": _stats(acc), "offload": _stats(off), "pgr": _stats(pgr)}
    grid = [_curves(run, name, CURVE_GRID) for run in runs]
    offload = np.array([o for o, _ in grid])  # [seeds, points]
    accuracy = np.array([a for _, a in grid])
    pgr = np.array([_pgr(a, run) for (_, a), run in zip(grid, runs)])
    return {
        "at": at,
        "pgr_auc": _stats([_auc(o, p) for o, p in zip(offload, pgr)]),
        "curve": {
            "target": CURVE_GRID.tolist(),
            "offload": offload.mean(axis=0).tolist(),
            "accuracy": accuracy.mean(axis=0).tolist(),
            "accuracy_std": accuracy.std(axis=0, ddof=1 if len(runs) > 1 else 0).tolist(),
            "pgr": pgr.mean(axis=0).tolist(),
            "pgr_std": pgr.std(axis=0, ddof=1 if len(runs) > 1 else 0).tolist(),
        },
    }


def router_cost_us(run: SeedRun) -> dict[str, float]:
    """What a LearnedRouter costs the gateway per row: the median time of one
    `LearnedRouter(row, input)` call (features + one onnxruntime call) of a router that reads
    the input too (the costlier kind), beside Margin's, in µs. (Fitted on the test rows: the
    timing needs a router of the right shape, not a good one.)"""
    from jointserve.evaluation import fit_router
    from jointserve.routing import RouterModel

    probs, X = run.edge.predict_proba(run.X_test), run.X_test
    router = RouterModel(fit_router(probs, ~run.edge_correct, X, use_inputs=True))
    learned = build_policy(LEARNED, None, router)
    out = {}
    for name, policy in ((LEARNED, learned), ("Margin", build_policy("Margin"))):
        times = []
        for i in range(TIMING_CALLS * 10):
            row, model_input = probs[i % len(probs)], X[i % len(probs)]
            start = time.perf_counter()
            policy(row, model_input)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times) * 1e6
    return out


def _time_ms(model: Any, X: np.ndarray) -> float:
    """Median wall time of one single-sample predict_proba call, in ms."""
    from threadpoolctl import threadpool_limits

    times = []
    with threadpool_limits(1):
        for i in range(TIMING_CALLS):
            row = X[i % len(X)][None, :]
            start = time.perf_counter()
            model.predict_proba(row)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _expected_latency(at: Mapping[str, Any], offloads: Sequence[float],
                      rtts_ms: Sequence[float], t_edge: float, t_cloud: float,
                      measured_ms: Mapping[float, float] | None) -> list[dict[str, Any]]:
    rows = []
    for rtt in rtts_ms:
        realised = {_key(r): at[_key(r)]["offload"]["mean"] for r in offloads}
        measured = (measured_ms or {}).get(float(rtt))
        rows.append({
            "rtt_ms": float(rtt),
            "offload": realised,
            "expected_ms": {k: t_edge + rho * (rtt + t_cloud) for k, rho in realised.items()},
            "measured_ms": None if measured is None else float(measured),
        })
    return rows


def summarise(runs: Sequence[SeedRun], offloads: Sequence[float] = (0.1, 0.2, 0.3),
              rtts_ms: Sequence[float] = (20, 50, 100), t_edge_ms: float | None = None,
              t_cloud_ms: float | None = None,
              measured_ms: Mapping[float, float] | None = None) -> dict[str, Any]:
    """The JSON-serialisable result for already evaluated seeds (see routing_quality)."""
    offloads = [float(r) for r in offloads]
    policies = {name: _summarise_policy(runs, name, offloads) for name in POLICIES}
    # Best real policy: highest mean PGR at the target offload nearest 20%.
    ref = _key(min(offloads, key=lambda r: abs(r - 0.2)))
    best = max(POLICIES, key=lambda name: policies[name]["at"][ref]["pgr"]["mean"])

    timing_source = {}
    if t_edge_ms is None:
        t_edge_ms = _time_ms(runs[0].edge, runs[0].X_test)
        timing_source["t_edge"] = "scikit-learn predict_proba, one sample, median of calls"
    else:
        timing_source["t_edge"] = "given"
    if t_cloud_ms is None:
        t_cloud_ms = _time_ms(runs[0].cloud, runs[0].X_test)
        timing_source["t_cloud"] = "scikit-learn predict_proba, one sample, median of calls"
    else:
        timing_source["t_cloud"] = "given"

    return {
        "seeds": [run.seed for run in runs],
        "split": {**SPLIT, "n_train": runs[0].n_train, "n_validation": runs[0].n_validation,
                  "n_test": len(runs[0].edge_correct)},
        "models": {"edge": "LogisticRegression on the first EDGE_V1_SAMPLES training samples "
                           "(examples/digits/build.py edge v1 recipe)",
                   "router": "LearnedRouter: fit_router (features with or without the inputs, and C, "
                             "by 5-fold CV) on the validation rows and the training rows the "
                             "edge never saw; its cut calibrated on its validation scores",
                   "cloud": "MLPClassifier(256, 256) on the whole training part "
                            "(build.py cloud v1 recipe, random_state = seed)"},
        "a_edge": _stats([run.a_edge for run in runs]),
        "a_cloud": _stats([run.a_cloud for run in runs]),
        "offloads": offloads,
        "policies": policies,
        ORACLE: _summarise_policy(runs, ORACLE, offloads),
        "best_policy": best,
        "best_policy_at": ref,
        "t_edge_ms": float(t_edge_ms),
        "t_cloud_ms": float(t_cloud_ms),
        "router_us": router_cost_us(runs[0]),
        "timing_source": timing_source,
        "expected_latency": _expected_latency(policies[best]["at"], offloads, rtts_ms,
                                              float(t_edge_ms), float(t_cloud_ms), measured_ms),
    }


def routing_quality(seeds: int = 10, offloads: Sequence[float] = (0.1, 0.2, 0.3),
                    rtts_ms: Sequence[float] = (20, 50, 100),
                    t_edge_ms: float | None = None, t_cloud_ms: float | None = None,
                    measured_ms: Mapping[float, float] | None = None) -> dict[str, Any]:
    """Routing quality over seeds 0..seeds-1 (see the module docstring). `t_edge_ms` and
    `t_cloud_ms` feed E[T] = t_edge + ρ·(RTT + t_cloud); when None they are timed here on
    scikit-learn. `measured_ms` ({RTT: measured mean latency of mixed traffic}) is reported
    beside the expected values."""
    runs = [evaluate_seed(seed) for seed in range(seeds)]
    return summarise(runs, offloads, rtts_ms, t_edge_ms, t_cloud_ms, measured_ms)


# -- plots and tables -------------------------------------------------------------------------

def _series(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [*result["policies"].items(), (ORACLE, result[ORACLE])]


# CrossEntropyFilter scores 1 - (1 - normalised entropy), the same as Entropy, so their
# curves coincide; a dotted line on top keeps both visible.
_STYLE: dict[str, dict[str, Any]] = {
    ORACLE: {"color": "black", "linestyle": "--"},
    "CrossEntropyFilter": {"linestyle": (0, (1, 2)), "linewidth": 2.5},
}
_LEGEND = {"CrossEntropyFilter": "CrossEntropyFilter (same score as Entropy)",
           "RandomFilter": "RandomFilter (random routing)", ORACLE: "oracle (upper bound)"}


def plot_routing(result: dict[str, Any], out_dir: Path, data_set: str = "digits") -> list[Path]:
    """routing_accuracy_vs_offload.png and routing_pgr.png in `out_dir` (another data set's
    prefixed by its name); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    n_seeds = len(result["seeds"])
    paths = []
    for figure, (column, ylabel) in {
        "routing_accuracy_vs_offload.png": ("accuracy", "test accuracy (joint)"),
        "routing_pgr.png": ("pgr", "PGR = (A − A_edge) / (A_cloud − A_edge)"),
    }.items():
        if data_set != "digits":
            figure = f"{data_set}_{figure}"
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for name, series in _series(result):
            curve = series["curve"]
            x, y = np.array(curve["offload"]), np.array(curve[column])
            std = np.array(curve[f"{column}_std"])
            style = {"linewidth": 1.5, **_STYLE.get(name, {})}
            (line,) = ax.plot(x, y, label=_LEGEND.get(name, name), **style)
            ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.12, linewidth=0)
        if column == "accuracy":
            for label, key, color in (("edge alone", "a_edge", "tab:red"),
                                      ("cloud alone", "a_cloud", "tab:green")):
                ax.axhline(result[key]["mean"], color=color, linestyle=":", label=label)
        else:
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random (expected)")
        for rho in result["offloads"]:
            ax.axvline(rho, color="lightgrey", linewidth=0.8, zorder=0)
        ax.set_xlabel("realised test offload ratio (share sent to the cloud)")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, 1)
        ax.set_title(f"{data_set.capitalize()} routing quality: mean ± std over {n_seeds} seeds "
                     "(cuts calibrated on validation)", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / figure
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _pm(stats: Mapping[str, float], digits: int) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def routing_markdown(result: dict[str, Any]) -> str:
    """Markdown tables for summary.md: accuracy and PGR per policy, then E[T]."""
    keys = [_key(r) for r in result["offloads"]]
    pct = [f"{float(k):.0%}" for k in keys]
    header = (["policy"] + [f"acc @{p} (offload)" for p in pct] + [f"PGR @{p}" for p in pct]
              + ["avg PGR"])
    lines = [
        f"{len(result['seeds'])} seeds; stratified {result['split']['train']:.0%} / "
        f"{result['split']['validation']:.0%} / {result['split']['test']:.0%} "
        f"train/validation/test split ({result['split']['n_test']} test samples); cuts "
        "calibrated on validation as hardExampleMining.budget does, figures on test, "
        "mean ± std over seeds. Edge: "
        f"{result['models']['edge']}; cloud: {result['models']['cloud']}; "
        f"{result['models']['router']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for label, key in (("edge alone", "a_edge"), ("cloud alone", "a_cloud")):
        acc = _pm(result[key], 3)
        pgr = "0" if key == "a_edge" else "1"
        lines.append(f"| {label} | " + " | ".join([acc] * len(keys) + [pgr] * (len(keys) + 1))
                     + " |")
    for name, series in _series(result):
        cells = [f"{_pm(series['at'][k]['accuracy'], 3)} ({series['at'][k]['offload']['mean']:.2f})"
                 for k in keys]
        cells += [_pm(series["at"][k]["pgr"], 2) for k in keys]
        cells.append(_pm(series["pgr_auc"], 2))
        label = f"**{name}** (best)" if name == result["best_policy"] else name
        label = f"{name} (upper bound)" if name == ORACLE else label
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    gap = (result["a_cloud"]["mean"] - result["a_edge"]["mean"]) * result["split"]["n_test"]
    lines += [
        "",
        "In brackets: the mean realised test offload. Avg PGR: area under PGR against realised "
        "offload over 0..1 (random routing's expectation is 0.5). PGR is noisy because the "
        f"edge–cloud gap is only ~{gap:.0f} test samples per seed; the oracle exceeds 1 because "
        "it also keeps the edge's answer where only the edge is right.",
    ]

    source = result["timing_source"]
    lines += [
        "",
        f"Expected latency E[T] = t_edge + ρ·(RTT + t_cloud) with ρ = {result['best_policy']}'s "
        f"realised test offload; t_edge = {result['t_edge_ms']:.3f} ms ({source['t_edge']}), "
        f"t_cloud = {result['t_cloud_ms']:.3f} ms ({source['t_cloud']}).",
        "",
        "| RTT | " + " | ".join(f"E[T] @{p} target" for p in pct) + " | measured (mixed traffic) |",
        "|" + "---|" * (len(keys) + 2),
    ]
    router = result.get("router_us")
    if router:
        lines.insert(0, f"LearnedRouter cost per row in the gateway: {router[LEARNED]:.1f} µs "
                        f"(Margin: {router['Margin']:.1f} µs), median of single calls.\n")
    for row in result["expected_latency"]:
        cells = [f"{row['expected_ms'][k]:.2f} ms (ρ = {row['offload'][k]:.3f})" for k in keys]
        measured = "n/a" if row["measured_ms"] is None else f"{row['measured_ms']:.2f} ms"
        lines.append(f"| {row['rtt_ms']:g} ms | " + " | ".join(cells) + f" | {measured} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None,
                        help="write routing.json and the PNGs here (default: print only)")
    parser.add_argument("--t-edge-ms", type=float, default=None)
    parser.add_argument("--t-cloud-ms", type=float, default=None)
    args = parser.parse_args(argv)
    start = time.monotonic()
    result = routing_quality(seeds=args.seeds, t_edge_ms=args.t_edge_ms,
                             t_cloud_ms=args.t_cloud_ms)
    elapsed = time.monotonic() - start
    print(routing_markdown(result))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "routing.json").write_text(json.dumps(result, indent=1))
        for path in plot_routing(result, args.out):
            print(f"wrote {path}")
    print(f"{args.seeds} seeds in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
