"""Leader election through a `coordination.k8s.io/v1` Lease: one active operator replica.

Two operator replicas may run in a cluster; only the one holding the Lease may reconcile.
`LeaderElector.run` waits until this candidate holds the Lease, calls `lead(lost)` while a
background thread renews it, and releases it when `lead` returns, so a rolling update hands
over at once instead of after a lease duration.

The algorithm is client-go's (k8s.io/client-go/tools/leaderelection), as ported in
`kubernetes.leaderelection`:

- Every write carries the resourceVersion just read, so of two candidates writing at once one
  gets 409 Conflict (409 AlreadyExists when both create) and simply tries again later.
- A Lease held by another candidate is taken only after this candidate has seen the same
  record, unchanged, for leaseDurationSeconds on its own monotonic clock. The holder's
  renewTime is never compared with the local clock: the two machines' clocks may disagree.
  A released Lease (empty holderIdentity) is taken at once.
- The leader renews every retry period. If no renewal succeeds for renew_deadline_s, or another
  holder appears, `lost` is set; renew_deadline_s < lease_duration_s leaves lead() time to stop
  before another candidate may take over.

Not `kubernetes.leaderelection` itself: its loops cannot be stopped (acquire() loops until it
wins, the renew loop ends only on failure), it cannot release the Lease on shutdown without racing
its own renew loop, and its LeaseLock builds CoordinationV1Api from the global default config.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus

import kubernetes.client
import urllib3
from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

# client-go's JitterFactor (1.2): candidates retrying in lockstep would collide on every round.
_RETRY_JITTER = 0.2

# "The API server did not answer this time": connection refused while it restarts (urllib3),
# a timeout (TimeoutError is an OSError), 5xx/429, or a refusal that an RBAC fix may lift.
# All are logged and retried on the next round; none ends the election.
_API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class _Record:
    """The election fields of a Lease spec; a change in any of them means the holder is alive."""

    holder: str
    duration_s: int | None
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int

    @classmethod
    def of(cls, spec: V1LeaseSpec | None) -> _Record:
        spec = spec or V1LeaseSpec()
        return cls(spec.holder_identity or "", spec.lease_duration_seconds, spec.acquire_time,
                   spec.renew_time, spec.lease_transitions or 0)


class LeaderElector:
    """One candidate for the Lease `namespace/name`; `identity` must be unique per process.

    Args:
        api_client: the client whose configuration (kubeconfig or in-cluster) is used.
        namespace, name: the Lease; it is created on first use.
        identity: written to holderIdentity; the pod name is a good choice.
        lease_duration_s: how long others wait, after the record last changed, to take over.
        renew_deadline_s: how long the leader keeps trying to renew before `lost` is set.
        retry_period_s: the interval between attempts, both to acquire and to renew.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, name: str,
                 identity: str, *, lease_duration_s: float = 15.0, renew_deadline_s: float = 10.0,
                 retry_period_s: float = 2.0) -> None:
        _check_timings(lease_duration_s, renew_deadline_s, retry_period_s)
        if not identity:
            raise ValueError("identity must be non-empty: an empty holderIdentity means released")
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self._namespace = namespace
        self._name = name
        self._identity = identity
        self._lease_duration = lease_duration_s
        self._lease_seconds = math.ceil(lease_duration_s)  # leaseDurationSeconds is an int
        self._renew_deadline = renew_deadline_s
        self._retry_period = retry_period_s
        # Renewal and release never write at the same time: a release must not be undone by a
        # renewal that was already in flight.
        self._write_lock = threading.Lock()
        self._observed: _Record | None = None
        self._observed_at = 0.0  # time.monotonic() when self._observed last changed
        self._lost: threading.Event | None = None  # set while lead() runs

    @property
    def is_leader(self) -> bool:
        """True while lead() runs and `lost` is not set."""
        lost = self._lost
        return lost is not None and not lost.is_set()

    def holder(self) -> str | None:
        """The Lease's holderIdentity as the API server has it now; None if unheld or absent.

        API errors other than 404 propagate: this is a read for status and logs, and a caller
        should not mistake "could not ask" for "nobody holds it".
        """
        lease = self._read(time.monotonic() + self._renew_deadline)
        if lease is None:
            return None
        return _Record.of(lease.spec).holder or None

    def run(self, lead: Callable[[threading.Event], None], stop: threading.Event) -> bool:
        """Wait until this candidate holds the Lease (or `stop` is set), then call lead(lost).

        lead runs in the calling thread; `lost` is set when the Lease is lost (renewal failed
        for renew_deadline_s, or another holder took it) or when `stop` is set. While lead
        runs, a background thread renews the Lease every retry period. When lead returns (or
        raises, which propagates), renewal stops and the Lease is released if still held.

        Returns:
            True if it led; False if `stop` was set before it acquired the Lease.
        """
        if not self._acquire(stop):
            return False
        if stop.is_set():  # acquired just as shutdown began: hand the Lease straight back
            self._release()
            return False
        lost, done = threading.Event(), threading.Event()
        renewer = threading.Thread(target=self._renew_loop, args=(stop, lost, done),
                                   name=f"lease-renew-{self._name}", daemon=True)
        self._lost = lost
        renewer.start()
        try:
            lead(lost)
        finally:
            done.set()
            with self._write_lock:  # waits out a renewal in flight; none starts after `done`
                self._lost = None
                self._release()
            renewer.join()
        return True

    # -- the election loops ----------------------------------------------------------------

    def _acquire(self, stop: threading.Event) -> bool:
        log.info("%s: waiting for Lease %s", self._identity, self._lease_ref)
        while not stop.is_set():
            if self._try_acquire_or_renew(time.monotonic() + self._renew_deadline):
                log.info("%s: acquired Lease %s", self._identity, self._lease_ref)
                return True
            stop.wait(self._retry_period * (1 + random.random() * _RETRY_JITTER))
        return False

    def _renew_loop(self, stop: threading.Event, lost: threading.Event,
                    done: threading.Event) -> None:
        """Renew every retry period until `done`; set `lost` on stop or when renewal fails."""
        renewed_at = time.monotonic()
        while True:
            # Sleep on `stop` while it is unset, so a shutdown reaches lead() at once as `lost`.
            (done if stop.is_set() else stop).wait(self._retry_period)
            if stop.is_set():
                lost.set()  # but keep renewing: lead() is winding down and still holds the Lease
            with self._write_lock:
                if done.is_set():
                    return
                renewed = self._try_acquire_or_renew(renewed_at + self._renew_deadline)
            if renewed:
                renewed_at = time.monotonic()
                continue
            reason = self._loss_reason(renewed_at)
            if reason:
                log.info("%s: lost Lease %s (%s)", self._identity, self._lease_ref, reason)
                lost.set()
                return

    def _loss_reason(self, renewed_at: float) -> str | None:
        holder = self._observed.holder if self._observed else ""
        if holder and holder != self._identity:
            return f"now held by {holder}"
        if time.monotonic() - renewed_at >= self._renew_deadline:
            return f"not renewed for {self._renew_deadline:g}s"
        return None

    # -- one round against the API -------------------------------------------------------------

    def _try_acquire_or_renew(self, deadline: float) -> bool:
        """One round of client-go's tryAcquireOrRenew; API errors count as "not this round"."""
        try:
            lease = self._read(deadline)
            if lease is None:
                return self._create(deadline)
            return self._update(lease, deadline)
        except _API_ERRORS as error:
            log.warning("%s: Lease %s not acquired or renewed: %s", self._identity,
                        self._lease_ref, _describe(error))
            return False

    def _create(self, deadline: float) -> bool:
        body = V1Lease(metadata=V1ObjectMeta(name=self._name, namespace=self._namespace),
                       spec=self._claim(V1LeaseSpec(), None))
        try:
            created = self._api.create_namespaced_lease(
                self._namespace, body, _request_timeout=_timeout(deadline))
        except ApiException as error:
            if error.status == HTTPStatus.CONFLICT:  # AlreadyExists: another candidate won
                log.debug("%s: Lease %s created by another candidate", self._identity,
                          self._lease_ref)
                return False
            raise
        self._observe(_Record.of(created.spec))
        return True

    def _update(self, lease: V1Lease, deadline: float) -> bool:
        record = _Record.of(lease.spec)
        self._observe(record)
        if not self._may_take(record):
            log.debug("%s: Lease %s held by %s", self._identity, self._lease_ref, record.holder)
            return False
        # Keep the spec object: fields we do not own (preferredHolder, strategy) stay as they are.
        lease.spec = self._claim(lease.spec or V1LeaseSpec(), record)
        try:
            # `lease` carries the resourceVersion just read: a write in between gets 409.
            replaced = self._api.replace_namespaced_lease(
                self._name, self._namespace, lease, _request_timeout=_timeout(deadline))
        except ApiException as error:
            if error.status == HTTPStatus.CONFLICT:
                log.debug("%s: Lease %s written by another candidate first", self._identity,
                          self._lease_ref)
                return False
            raise
        self._observe(_Record.of(replaced.spec))
        return True

    def _observe(self, record: _Record) -> None:
        # Expiry is judged by when *we* last saw the record change, on our own clock.
        if record != self._observed:
            previous = self._observed.holder if self._observed else None
            if record.holder not in (previous, self._identity):  # our own win is logged apart
                log.info("%s: Lease %s is now held by %s", self._identity, self._lease_ref,
                         repr(record.holder) if record.holder else "nobody (released)")
            self._observed = record
            self._observed_at = time.monotonic()

    def _may_take(self, record: _Record) -> bool:
        if not record.holder or record.holder == self._identity:
            return True
        duration = record.duration_s or self._lease_duration
        return time.monotonic() - self._observed_at >= duration

    def _claim(self, spec: V1LeaseSpec, record: _Record | None) -> V1LeaseSpec:
        """`spec` rewritten to name this candidate, as client-go writes it."""
        now = _micro_time_now()
        spec.holder_identity = self._identity
        spec.lease_duration_seconds = self._lease_seconds
        spec.renew_time = now
        if record is None:  # a new Lease: the first holder is no transition
            spec.acquire_time, spec.lease_transitions = now, 0
        elif record.holder != self._identity:
            spec.acquire_time, spec.lease_transitions = now, record.transitions + 1
        return spec

    def _release(self) -> None:
        """Clear holderIdentity so a waiting candidate takes over at once (client-go's release).

        One attempt: if it fails, the Lease expires after its duration as after a crash.
        """
        deadline = time.monotonic() + self._renew_deadline
        try:
            lease = self._read(deadline)
            holder = _Record.of(lease.spec).holder if lease else ""
            if holder != self._identity:
                log.info("%s: Lease %s not released: held by %r", self._identity,
                         self._lease_ref, holder)
                return
            # leaseDurationSeconds 1: a candidate that ignores the empty holder waits 1 s only.
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.acquire_time = lease.spec.renew_time = _micro_time_now()
            self._api.replace_namespaced_lease(self._name, self._namespace, lease,
                                               _request_timeout=_timeout(deadline))
        except _API_ERRORS as error:
            log.warning("%s: could not release Lease %s (%s); the next leader waits out its "
                        "%ss duration", self._identity, self._lease_ref, _describe(error),
                        self._lease_seconds)
            return
        log.info("%s: released Lease %s", self._identity, self._lease_ref)

    def _read(self, deadline: float) -> V1Lease | None:
        try:
            return self._api.read_namespaced_lease(self._name, self._namespace,
                                                   _request_timeout=_timeout(deadline))
        except ApiException as error:
            if error.status == HTTPStatus.NOT_FOUND:
                return None
            raise

    @property
    def _lease_ref(self) -> str:
        return f"{self._namespace}/{self._name}"


def _check_timings(lease_duration_s: float, renew_deadline_s: float,
                   retry_period_s: float) -> None:
    if not retry_period_s > 0:
        raise ValueError(f"retry_period_s must be > 0, got {retry_period_s}")
    if not renew_deadline_s > retry_period_s:
        raise ValueError(f"renew_deadline_s ({renew_deadline_s}) must be greater than "
                         f"retry_period_s ({retry_period_s})")
    if not lease_duration_s > renew_deadline_s:
        # Otherwise another candidate may take over while this leader still believes it leads.
        raise ValueError(f"lease_duration_s ({lease_duration_s}) must be greater than "
                         f"renew_deadline_s ({renew_deadline_s})")


def _timeout(deadline: float) -> float:
    """What is left of `deadline` for one request; TimeoutError (an OSError) if nothing is."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed before the request was sent")
    return left


def _micro_time_now() -> datetime:
    now = datetime.now(timezone.utc)
    # The client serializes with isoformat(), which drops ".000000"; the API server's MicroTime
    # parser (RFC3339 with exactly six fraction digits) rejects that with 400 BadRequest.
    return now.replace(microsecond=1) if now.microsecond == 0 else now


def _describe(error: BaseException) -> str:
    """One line for the log: the status of an API error, the cause of a connection failure."""
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason  # "connection refused", not the retry bookkeeping around it
    return f"{type(error).__name__}: {error}"
