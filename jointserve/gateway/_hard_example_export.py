"""Saved hard examples as a Dataset: one npz of the inputs the edge found hard, each labelled
with the cloud's answer.

    jointserve hard-examples DIR --out hard.npz        DIR: a service's saveHardExamples.directory

reads every `writer-<n>/*.npz` a gateway replica saved (oldest first, `load_example`), and
writes one npz in the Dataset's npz format (axis 0 = samples):

    X         the model input the examples hold (after preprocess), rows stacked
    y         the cloud's answer per row: class ids ([N] integer output) or argmax ([N, C])
    edge_y    the edge's answer per row, the same way (where the two differ, the cloud fixed it)
    score     the HEM score of the request each row came from

A Dataset of `format: npz` over it (sha256 printed) then evaluates an edge model, or trains a
router, on the traffic the edge found hard. Examples whose cloud did not answer (a fallback)
have no label and are left out, and counted.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._hard_examples import HardExample, load_example

_EXAMPLE = re.compile(r"\d{20}-[0-9a-f]{8}\.npz")


class HardExampleExportError(ValueError):
    """The directory holds nothing exportable, or its tensors do not fit together."""


@dataclass(frozen=True)
class Exported:
    data: bytes  # the npz
    rows: int
    examples: int
    without_cloud: int  # examples left out: the cloud did not answer
    input_name: str
    label_output: str


def saved_examples(directory: Path) -> Iterator[tuple[Path, HardExample]]:
    """Every example the writers under `directory` saved, oldest first."""
    paths = [p for p in directory.glob("writer-*/*.npz") if _EXAMPLE.fullmatch(p.name)]
    for path in sorted(paths, key=lambda p: p.name):  # names start with their time
        yield path, load_example(path)


def export_hard_examples(directory: Path, input_name: str | None = None,
                         label_output: str | None = None) -> Exported:
    """The npz of the examples under `directory` (see the module docstring).
    `input_name`: default the examples' one input; `label_output`: default the last output."""
    features, labels, edge_labels, scores = [], [], [], []
    examples = without_cloud = 0
    for path, example in saved_examples(directory):
        examples += 1
        if example.cloud_outputs is None:
            without_cloud += 1
            continue
        input_name = input_name or _only(example.inputs, "input", path)
        label_output = label_output or list(example.cloud_outputs)[-1]
        rows = _tensor(example.inputs, input_name, "input", path)
        features.append(rows)
        labels.append(_classes(_tensor(example.cloud_outputs, label_output, "cloud output", path)))
        edge_labels.append(_classes(_tensor(example.edge_outputs, label_output, "edge output", path)))
        scores.append(np.full(len(rows), example.score, dtype=np.float64))
    if not features:
        raise HardExampleExportError(f"{directory}: no hard example with a cloud answer "
                                     f"({examples} examples, {without_cloud} without one)")
    assert input_name is not None and label_output is not None
    try:
        arrays = {"X": np.concatenate(features), "y": np.concatenate(labels),
                  "edge_y": np.concatenate(edge_labels), "score": np.concatenate(scores)}
    except ValueError as exc:
        raise HardExampleExportError(f"{directory}: the examples' {input_name!r} rows do not "
                                     f"stack: {exc}") from None
    out = io.BytesIO()
    np.savez(out, **arrays)
    return Exported(out.getvalue(), len(arrays["y"]), examples, without_cloud, input_name,
                    label_output)


def _only(tensors: Mapping[str, np.ndarray], role: str, path: Path) -> str:
    names = list(tensors)
    if len(names) != 1:
        raise HardExampleExportError(f"{path}: the example has {role}s {names}; name the one "
                                     "to export (--input)")
    return names[0]


def _tensor(tensors: Mapping[str, np.ndarray], name: str, role: str, path: Path) -> np.ndarray:
    if name not in tensors:
        raise HardExampleExportError(f"{path}: no {role} {name!r} (it has {list(tensors)})")
    array = tensors[name]
    if array.dtype == object:
        raise HardExampleExportError(f"{path}: {role} {name!r} holds bytes, not numbers")
    return np.asarray(array)


def _classes(output: np.ndarray) -> np.ndarray:
    """Class ids per row: an integer [N] output as it is, scores [N, C] by argmax."""
    if output.ndim == 1 and np.issubdtype(output.dtype, np.integer):
        return output.astype(np.int64)
    if output.ndim == 2:
        return output.argmax(axis=1).astype(np.int64)
    raise HardExampleExportError(f"output of shape {list(output.shape)} is neither class ids "
                                 "[N] nor scores [N, C]")
