"""A federated run: the round loop, in a thread of the operator, driving Ray actors.

    verify script + initial weights (sha256; a mismatch fails the job before any actor)
    resume the last completed round from the checkpoint, if there is one
    per round: put the global weights in the object store once; every EdgeTrainer trains
        from them; the round closes when minParticipants reported, when no worker is still
        running, or at roundTimeoutSeconds; workers that failed, died or were still running
        are recorded (and their actors replaced) and the round goes on without them
    the Aggregator (cloud) averages the reported weights where they are and evaluates them;
    the round is checkpointed; after the last round the run is Succeeded with its weights

A round nobody reported in fails the job with every worker's reason. `stop()` ends the
actors; nothing is published by the engine (the operator publishes a Succeeded run).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from jointserve.store import ArtifactStore

from . import _checkpoint as checkpoint
from ._actors import Aggregator, EdgeTrainer
from ._aggregate import weighted_mean
from ._data import script_file, weights_file
from ._errors import FederatedError
from ._script import load_weights
from ._spec import JobSpec, RoundRecord, RunState, Weights, WorkerSpec, WorkerState

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a waiting round looks at stop()
MAX_ERROR = 400  # characters of a worker's error kept in the status


@dataclass(frozen=True)
class Placement:
    """The Ray resources that put an actor on an edge or a cloud node (the layer resources
    the nodes advertise). Actors claim no CPU: edge nodes serve while they train."""

    edge: dict[str, float] = field(default_factory=dict)
    cloud: dict[str, float] = field(default_factory=dict)


@dataclass
class _Trainer:
    spec: WorkerSpec
    actor: Any = None
    prepare_ref: Any = None  # its prepare() call, until read
    prepared: bool = False


class FederatedRun:
    """One job's rounds; `start()` returns at once, `state()` is cheap and thread-safe."""

    def __init__(self, spec: JobSpec, checkpoint_dir: Path,
                 placement: Placement | None = None) -> None:
        self.spec = spec
        self.checkpoint_dir = Path(checkpoint_dir)
        self.placement = placement or Placement()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._state = RunState("Pending", 0, spec.rounds,
                               [WorkerState(w.name) for w in spec.workers], [])
        self._thread = threading.Thread(target=self._main, name=f"federated-{spec.job_id}",
                                        daemon=True)
        self._trainers = [_Trainer(w) for w in spec.workers]
        self._aggregator: Any = None

    def start(self) -> None:
        self._thread.start()

    def state(self) -> RunState:
        with self._lock:
            return copy.deepcopy(self._state)

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the run and its actors (a round in flight is abandoned, not published)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._kill_actors()
        with self._lock:
            if self._state.phase in ("Pending", "Running"):
                self._state.phase = "Stopped"

    def wait(self, timeout_s: float) -> RunState:
        """The state once the run ended (or at the timeout): for tests and the CLI."""
        self._thread.join(timeout_s)
        return self.state()

    # -- the loop -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            weights, first = self._begin()
            for round_index in range(first, self.spec.rounds):
                if self._stopping.is_set():
                    return
                weights = self._round(round_index, weights)
            self._update(phase="Succeeded", weights=weights)
            log.info("federated job %s: %d rounds done", self.spec.job_id, self.spec.rounds)
        except Exception as exc:  # noqa: BLE001 - any failure ends the job, with its reason
            if not self._stopping.is_set():
                log.warning("federated job %s failed: %s", self.spec.job_id, exc)
                self._update(phase="Failed", error=_reason(exc))
        finally:
            self._kill_actors()

    def _begin(self) -> tuple[Weights, int]:
        """Verified initial weights (or the checkpoint's), and the round to start from."""
        store = ArtifactStore(Path(self.spec.store_root))
        script_file(store, self.spec)  # a wrong sha256 raises here: no actor has started
        weights = load_weights(weights_file(store, self.spec))
        resumed = checkpoint.load(self.checkpoint_dir)
        first = 0
        if resumed is not None:
            first, weights, history, workers = resumed
            self._update(round=first, history=history, workers=workers)
            log.info("federated job %s: resuming after round %d", self.spec.job_id, first)
        self._update(phase="Running")
        if first < self.spec.rounds:
            self._aggregator = ray.remote(Aggregator).options(
                num_cpus=0, resources=self.placement.cloud, max_restarts=0).remote(self.spec)
            ray.get(self._aggregator.prepare.remote())
        return weights, first

    def _round(self, round_index: int, weights: Weights) -> Weights:
        """Round `round_index` (0-based): train, close, aggregate, evaluate, checkpoint."""
        global_ref = ray.put(weights)
        calls = {t.spec.name: self._train(t, round_index, global_ref) for t in self._trainers}
        reports, errors = self._close(calls)
        number = round_index + 1
        if not reports:
            raise FederatedError(f"round {number}: no worker reported: " + "; ".join(
                f"{name}: {why}" for name, why in errors.items()))
        names = sorted(reports)
        samples = [reports[n][0]["samples"] for n in names]
        new_ref = self._aggregator.aggregate.remote(samples, *[reports[n][1] for n in names])
        metrics = _worker_metrics([reports[n][0] for n in names])
        metrics |= ray.get(self._aggregator.evaluate.remote(new_ref))
        new = ray.get(new_ref)
        record = RoundRecord(number, names, int(sum(samples)), metrics,
                             {n: why[:MAX_ERROR] for n, why in sorted(errors.items())})
        self._record_round(record, reports, errors)
        with self._lock:
            checkpoint.save(self.checkpoint_dir, number, new, self._state.history,
                            self._state.workers)
        return new

    def _train(self, trainer: _Trainer, round_index: int, global_ref: Any) -> tuple[Any, Any]:
        """Submit the worker's round (after its prepare, if it needs one): (report, weights)."""
        if trainer.actor is None:
            options: dict[str, Any] = {"num_cpus": 0, "resources": self.placement.edge,
                                       "max_restarts": 0}
            if trainer.spec.node_selector:
                options["label_selector"] = dict(trainer.spec.node_selector)
            trainer.actor = ray.remote(EdgeTrainer).options(**options).remote(
                self.spec, trainer.spec)
            trainer.prepared, trainer.prepare_ref = False, None
        if not trainer.prepared and trainer.prepare_ref is None:
            # Queued on the actor ahead of train; its result is read when the round closes.
            trainer.prepare_ref = trainer.actor.prepare.remote()
        return tuple(trainer.actor.train.options(num_returns=2).remote(round_index, global_ref))

    def _close(self, calls: dict[str, tuple[Any, Any]]
               ) -> tuple[dict[str, tuple[dict, Any]], dict[str, str]]:
        """Wait for the round's reports; returns (name -> (report, weights ref), name -> why
        it did not report). Workers still running at the close are replaced."""
        deadline = time.monotonic() + self.spec.round_timeout_s
        pending = {ref[0]: name for name, ref in calls.items()}
        reports: dict[str, tuple[dict, Any]] = {}
        errors: dict[str, str] = {}
        while pending and len(reports) < self.spec.min_participants:
            if self._stopping.is_set():
                raise FederatedError("stopped")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=min(POLL_S, left))
            for ref in ready:
                name = pending.pop(ref)
                try:
                    self._read_prepare(self._trainer(name))
                    reports[name] = (ray.get(ref), calls[name][1])
                except Exception as exc:  # noqa: BLE001 - the worker failed this round
                    errors[name] = _reason(exc)
                    if isinstance(exc, ray.exceptions.RayActorError):
                        self._replace(name)
        for name in pending.values():
            errors[name] = self._why_late(self._trainer(name), len(reports))
            self._replace(name)  # its round is abandoned: a fresh actor takes the next one
        return reports, errors

    def _why_late(self, trainer: _Trainer, reported: int) -> str:
        if reported >= self.spec.min_participants:
            return "still training when minParticipants had reported"
        if trainer.prepare_ref is not None and not ray.wait([trainer.prepare_ref], timeout=0)[0]:
            return "not started: no node took it (nodeSelector, edge resource) or it hung " \
                   "preparing"
        return f"no report within roundTimeoutSeconds ({self.spec.round_timeout_s:g} s)"

    # -- workers --------------------------------------------------------------------------

    def _trainer(self, name: str) -> _Trainer:
        return next(t for t in self._trainers if t.spec.name == name)

    def _read_prepare(self, trainer: _Trainer) -> None:
        """Record the node and samples of a fresh worker; its prepare's error, if it failed
        (then it prepares again next round: a fixed Dataset may come back)."""
        if trainer.prepared or trainer.prepare_ref is None:
            return
        ref, trainer.prepare_ref = trainer.prepare_ref, None
        info = ray.get(ref)
        trainer.prepared = True
        self._update_worker(trainer.spec.name, node=info["node"], samples=info["samples"])

    def _replace(self, name: str) -> None:
        trainer = self._trainer(name)
        if trainer.actor is not None:
            ray.kill(trainer.actor, no_restart=True)
        trainer.actor, trainer.prepared, trainer.prepare_ref = None, False, None

    def _kill_actors(self) -> None:
        for trainer in self._trainers:
            if trainer.actor is not None:
                self._replace(trainer.spec.name)
        if self._aggregator is not None:
            ray.kill(self._aggregator, no_restart=True)
            self._aggregator = None

    # -- state ----------------------------------------------------------------------------

    def _record_round(self, record: RoundRecord, reports: dict[str, tuple[dict, Any]],
                      errors: dict[str, str]) -> None:
        with self._lock:
            for worker in self._state.workers:
                if worker.name in reports:
                    worker.last_round, worker.error = record.round, None
                elif worker.name in errors:
                    worker.error = f"round {record.round}: {errors[worker.name]}"[:MAX_ERROR]
            self._state.history.append(record)
            self._state.round = record.round

    def _update_worker(self, name: str, **values: Any) -> None:
        with self._lock:
            worker = next(w for w in self._state.workers if w.name == name)
            for key, value in values.items():
                setattr(worker, key, value)

    def _update(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._state, key, value)


def _worker_metrics(reports: list[dict]) -> dict[str, float]:
    """The participants' own loss and accuracy, weighted by their samples."""
    out = {}
    for key in ("loss", "accuracy"):
        values = [(r["metrics"][key], r["samples"]) for r in reports if key in r["metrics"]]
        mean = weighted_mean(values)
        if mean is not None:
            out[key] = mean
    return out


def _reason(exc: BaseException) -> str:
    """One line for the status: the user's exception, not Ray's wrapping traceback."""
    cause = exc
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
    if isinstance(cause, ray.exceptions.RayActorError):
        return "the worker's actor died (its node or process went away)"
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    name = type(cause).__name__
    shown = text if isinstance(cause, FederatedError) else f"{name}: {text}"
    return shown[:MAX_ERROR]
