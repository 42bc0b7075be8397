"""A run's last completed round on disk, so a restarted operator resumes instead of starting
over: `weights-<round>.npz` first, then `state.json` naming it (each written atomically, so
a crash between the two leaves the previous round's pair intact)."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from jointserve.store import write_atomic

from ._spec import RoundRecord, Weights, WorkerState

log = logging.getLogger(__name__)

STATE = "state.json"


def save(directory: Path, round_index: int, weights: Weights, history: list[RoundRecord],
         workers: list[WorkerState]) -> None:
    """Record round `round_index` (1-based) as completed; drop older weights files."""
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    name = f"weights-{round_index}.npz"
    write_atomic(directory / name, buffer.getvalue())
    state = {"round": round_index, "weights": name,
             "history": [asdict(r) for r in history],
             "workers": [asdict(w) for w in workers]}
    write_atomic(directory / STATE, (json.dumps(state, indent=1) + "\n").encode())
    for old in directory.glob("weights-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load(directory: Path) -> tuple[int, Weights, list[RoundRecord], list[WorkerState]] | None:
    """The last completed round, or None (no checkpoint, or one that cannot be read: then
    the job starts over, which is slower but never wrong)."""
    path = directory / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        with np.load(directory / state["weights"], allow_pickle=False) as arrays:
            weights = {name: arrays[name] for name in arrays.files}
        history = [RoundRecord(**r) for r in state["history"]]
        workers = [WorkerState(**w) for w in state["workers"]]
        return int(state["round"]), weights, history, workers
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("checkpoint %s cannot be read (%s): the job starts from round 0", path, exc)
        return None
