"""The operator loop of embedded mode: directory source -> reconcile, on change and on a timer."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from ._directory import DirectorySource, Snapshot
from ._reconcile import Reconciler
from ._status_store import StatusStore

log = logging.getLogger(__name__)


@dataclass
class DirectoryOperator:
    """Reconciles the resources of one directory until stopped."""

    source: DirectorySource
    reconciler: Reconciler
    statuses: StatusStore
    # How often to re-read Serve status when no file changed (rollouts progress on their own).
    resync_s: float = 1.0
    # Set after the first pass: from then on the status files describe this run, not a
    # previous one.
    first_pass: threading.Event = field(default_factory=threading.Event)

    def step(self) -> Snapshot:
        """One scan + reconcile pass. Errors are logged; the next pass tries again."""
        snapshot = self.source.scan()
        self.statuses.write_errors(snapshot.errors)
        try:
            self.reconciler.reconcile(snapshot.resources)
        except Exception:  # noqa: BLE001 - one failed pass must not end the operator
            log.exception("reconcile pass failed; retrying on the next change or resync")
        else:
            self.first_pass.set()
        return snapshot

    def start(self, stop: threading.Event) -> threading.Thread:
        """`run` in a daemon thread of its own, until `stop` is set."""
        worker = threading.Thread(target=self.run, args=(stop,), name="operator", daemon=True)
        worker.start()
        return worker

    def run(self, stop: threading.Event) -> None:
        """Reconcile now, then after every change and at least every `resync_s`; on stop,
        end what the reconciler runs (evaluations, training runs: checkpoints resume them)."""
        try:
            self.step()
            for _ in self.source.changes(stop, self.resync_s):
                if stop.is_set():
                    break
                self.step()
        finally:
            self.reconciler.close()
