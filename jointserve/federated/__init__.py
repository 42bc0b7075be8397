"""Federated learning on Ray (TrainingModel): edge workers train on their own Datasets, the
cloud aggregates, the operator publishes the result as an InferenceModel version.

    JobSpec, WorkerSpec, DatasetSource   what a run is given (plain dataclasses)
    FederatedRun(spec, checkpoint_dir)   the round loop: start(), state(), stop()
    export_archive(script, weights, classes)   the script's export, packed (tar.gz bytes)
    script_file(store, spec)             the job's verified script in a node's store
    fedavg(updates)                      the sample-weighted mean of weights

The training script's contract is docs/training-script.md; the loop is in _run.py.
"""

from ._aggregate import fedavg
from ._data import script_file
from ._errors import FederatedError
from ._run import FederatedRun, Placement
from ._script import checked_update, export_archive, load_script, load_weights
from ._spec import DatasetSource, JobSpec, RoundRecord, RunState, WorkerSpec, WorkerState

__all__ = [
    "DatasetSource", "FederatedError", "FederatedRun", "JobSpec", "Placement", "RoundRecord",
    "RunState", "WorkerSpec", "WorkerState", "checked_update", "export_archive", "fedavg",
    "load_script", "load_weights", "script_file",
]
