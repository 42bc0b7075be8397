"""Saved hard examples as a Dataset: `jointserve hard-examples DIR --out FILE` packs what a
gateway's HardExampleStore wrote into an npz, and the Dataset it prints counts and loads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from jointserve.api import Dataset, parse_resource
from jointserve.cli import main
from jointserve.datasets import count_dataset
from jointserve.evaluation import load_samples
from jointserve.gateway._hard_examples import HardExample, HardExampleStore
from jointserve.operator._datasets import count_options

BIG = 1 << 30


def hard_example(i: int, rows: int = 1, cloud: bool = True) -> HardExample:
    rng = np.random.default_rng(i)
    return HardExample(
        service="digits",
        inputs={"input": rng.random((rows, 64), dtype=np.float32)},
        edge_outputs={"probabilities": rng.random((rows, 10), dtype=np.float32)},
        cloud_outputs={"probabilities": np.eye(10, dtype=np.float32)[[(i + r) % 10 for r in range(rows)]]}
        if cloud else None,
        score=0.1 * i, tier="cloud" if cloud else "edge",
        fallback_reason=None if cloud else "cloud_timeout", timestamp=1_700_000_000.0 + i)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, list[HardExample]]:
    directory = tmp_path / "hard"
    store = HardExampleStore.claim(directory, BIG, BIG)
    examples = [hard_example(0), hard_example(1, rows=3), hard_example(2, cloud=False),
                hard_example(3)]
    for example in examples:
        store.save(example)
    store.close()
    return directory, examples


def test_hard_examples_become_a_dataset_labelled_by_the_cloud(
        saved: tuple[Path, list[HardExample]], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    directory, examples = saved
    out = tmp_path / "hard-digits.npz"
    assert main(["hard-examples", str(directory), "--out", str(out)]) == 0
    summary, *rest = capsys.readouterr().out.splitlines()
    assert summary.startswith(f"{out}: 5 rows from 4 examples (input 'input', labels from the "
                              "cloud's 'probabilities'; 1 examples without a cloud answer")
    dataset = parse_resource(yaml.safe_load("\n".join(rest)), "printed")
    assert isinstance(dataset, Dataset) and dataset.spec.format == "npz"

    answered = [e for e in examples if e.cloud_outputs is not None]
    stats = count_dataset(out, "npz", count_options(dataset.spec))
    cloud_labels = np.concatenate([e.cloud_outputs["probabilities"].argmax(axis=1) for e in answered])
    assert stats.samples == 5
    assert stats.classes == {str(c): int(n) for c, n in zip(*np.unique(cloud_labels, return_counts=True))}
    samples = load_samples(out, dataset.spec)
    np.testing.assert_array_equal(samples.features,
                                  np.concatenate([e.inputs["input"] for e in answered]))
    with np.load(out) as arrays:
        edge = np.concatenate([e.edge_outputs["probabilities"].argmax(axis=1) for e in answered])
        np.testing.assert_array_equal(arrays["edge_y"], edge)
        assert arrays["score"].tolist() == [0.0, 0.1, 0.1, 0.1, pytest.approx(0.3)]


def test_nothing_to_export_is_named(saved: tuple[Path, list[HardExample]], tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    store = HardExampleStore.claim(tmp_path / "fallbacks", BIG, BIG)
    store.save(hard_example(0, cloud=False))
    store.close()
    assert main(["hard-examples", str(tmp_path / "fallbacks"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "no hard example with a cloud answer (1 examples, 1 without one)" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    assert main(["hard-examples", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npz")]) == 2
    capsys.readouterr()
    assert main(["hard-examples", str(saved[0]), "--out", str(tmp_path / "x.npz"),
                 "--input", "pixels"]) == 2
    assert "no input 'pixels' (it has ['input'])" in capsys.readouterr().err
