"""LeaderElector against a real kube-apiserver: one Lease, candidates as operator replicas would be.

Each candidate runs in its own thread with its own ApiClient (its own connection pool), so two
candidates race over the wire exactly as two pods would; the Lease is read back with kubectl.
Timings are short (lease 3 s, renew 2 s, retry 0.5 s), so the module takes some 30 s. The API
server restart test stops the session's shared server and always starts it again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import kubernetes
import pytest

from jointserve.operator._kube_leader import LeaderElector
from tests._kube import KubeAPIServer

NS = "leader-test"
LEASE_S = 3.0
FAST = {"lease_duration_s": LEASE_S, "renew_deadline_s": 2.0, "retry_period_s": 0.5}
WAIT_S = 20.0


@pytest.fixture(scope="module")
def kube(kube_api: KubeAPIServer) -> KubeAPIServer:
    """The session's server, with a namespace of this module's own."""
    kube_api.kubectl_ok("create", "namespace", NS)
    return kube_api


@pytest.fixture
def new_client(kube: KubeAPIServer) -> Iterator[Callable[[], kubernetes.client.ApiClient]]:
    """A fresh ApiClient per call (one per candidate, as one per pod); all closed afterwards."""
    clients: list[kubernetes.client.ApiClient] = []

    def make() -> kubernetes.client.ApiClient:
        clients.append(kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig)))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.05)


def lease_spec(kube: KubeAPIServer, name: str) -> dict[str, Any]:
    return json.loads(kube.kubectl_ok("get", "lease", name, "-n", NS, "-o", "json"))["spec"]


def micro_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Candidate:
    """A LeaderElector running in its own thread; lead() records when it entered and left."""

    def __init__(self, client: kubernetes.client.ApiClient, lease: str, identity: str,
                 hold: Callable[[threading.Event], None], **timings: float) -> None:
        self.identity = identity
        self.elector = LeaderElector(client, NS, lease, identity, **(timings or FAST))
        self.stop = threading.Event()
        self.lost: threading.Event | None = None
        self.started = self.entered = self.exited = None  # time.monotonic() values
        self.result: bool | None = None
        self.error: BaseException | None = None
        self._hold = hold
        self._thread = threading.Thread(target=self._run, name=identity, daemon=True)

    def start(self) -> Candidate:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _lead(self, lost: threading.Event) -> None:
        self.lost, self.entered = lost, time.monotonic()
        try:
            self._hold(lost)
        finally:
            self.exited = time.monotonic()

    def _run(self) -> None:
        try:
            self.result = self.elector.run(self._lead, self.stop)
        except BaseException as error:  # re-raised in the test's thread by join()
            self.error = error

    def join(self, timeout: float = WAIT_S) -> bool | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self._thread.name}: run() did not return"
        if self.error is not None:
            raise self.error
        return self.result

    def finish(self) -> bool | None:
        self.stop.set()
        return self.join()


def test_single_candidate_leads_names_itself_renews_and_releases(
        kube: KubeAPIServer, new_client: Callable, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jointserve.operator._kube_leader")
    # 2.5 s: a float lease duration, stored rounded up as whole leaseDurationSeconds.
    elector = LeaderElector(new_client(), NS, "single", "replica-a", lease_duration_s=2.5,
                            renew_deadline_s=2.0, retry_period_s=0.5)
    seen: dict[str, Any] = {}

    def lead(lost: threading.Event) -> None:
        seen.update(is_leader=elector.is_leader, holder=elector.holder(),
                    first=lease_spec(kube, "single"))
        wait_for(lambda: lease_spec(kube, "single")["renewTime"] != seen["first"]["renewTime"],
                 "the background thread to renew the Lease")
        seen["lost"] = lost.is_set()

    assert elector.run(lead, threading.Event()) is True
    first = seen["first"]
    assert first["holderIdentity"] == "replica-a"
    assert first["leaseDurationSeconds"] == 3
    assert first["leaseTransitions"] == 0 and first["acquireTime"]
    assert seen["is_leader"] is True and seen["holder"] == "replica-a"
    assert seen["lost"] is False
    assert elector.is_leader is False
    assert lease_spec(kube, "single").get("holderIdentity", "") == ""
    assert elector.holder() is None
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "replica-a: acquired Lease leader-test/single" in messages
    assert "replica-a: released Lease leader-test/single" in messages


def test_two_candidates_never_overlap_and_release_hands_over_at_once(
        kube: KubeAPIServer, new_client: Callable) -> None:
    pair: list[Candidate] = []
    other_leading_at_entry: list[bool] = []

    def hold(lost: threading.Event) -> None:
        # Whoever enters: the other must not be leading now.
        me = threading.current_thread().name
        other_leading_at_entry.append(any(c.elector.is_leader for c in pair if c.identity != me))
        # Longer than the retry period: the follower tries, and fails, while this one leads.
        assert not lost.wait(1.5), "lost the Lease while nobody else could take it"

    pair.extend(Candidate(new_client(), "turns", name, hold) for name in ("replica-a", "replica-b"))
    for candidate in pair:
        candidate.start()
    wait_for(lambda: all(c.exited is not None for c in pair), "both candidates to lead in turn")
    assert [c.join() for c in pair] == [True, True]

    first, second = sorted(pair, key=lambda c: c.entered)
    assert first.exited <= second.entered, "the two lead() calls overlapped"
    assert other_leading_at_entry == [False, False]
    # Released, not expired: the follower took over well inside one lease duration.
    assert second.entered - first.exited < LEASE_S / 2
    spec = lease_spec(kube, "turns")
    assert spec["leaseTransitions"] == 1  # created by the first, taken once by the second
    assert spec.get("holderIdentity", "") == ""


@pytest.mark.parametrize("renew_offset", [
    pytest.param(timedelta(0), id="fresh-renewTime"),
    # A naive expiry check (renewTime + duration < local now) would take this Lease at once.
    pytest.param(timedelta(hours=-1), id="renewTime-from-a-clock-an-hour-behind"),
])
def test_dead_holder_is_replaced_only_after_a_lease_duration_on_our_clock(
        kube: KubeAPIServer, new_client: Callable, renew_offset: timedelta,
        request: pytest.FixtureRequest) -> None:
    name = f"dead-{request.node.callspec.id.lower()}"
    stamp = micro_time(datetime.now(timezone.utc) + renew_offset)
    kube.kubectl_ok("apply", "-n", NS, "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
        "spec": {"holderIdentity": "crashed-replica", "leaseDurationSeconds": int(LEASE_S),
                 "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 4}}))

    candidate = Candidate(new_client(), name, "replica-b", lambda lost: None).start()
    wait_for(lambda: candidate.entered is not None, "the candidate to take over the dead Lease")
    assert candidate.join() is True

    # The first read is at or after `started`; the record must stay unchanged for LEASE_S from it.
    assert candidate.entered - candidate.started >= LEASE_S
    assert lease_spec(kube, name)["leaseTransitions"] == 5


def test_stop_before_acquiring_returns_false_and_never_leads(
        kube: KubeAPIServer, new_client: Callable) -> None:
    stop = threading.Event()
    stop.set()
    called: list[threading.Event] = []
    elector = LeaderElector(new_client(), NS, "never", "replica-a", **FAST)

    assert elector.run(called.append, stop) is False
    assert called == []
    assert elector.is_leader is False
    assert "NotFound" in kube.kubectl("get", "lease", "never", "-n", NS).stderr


def test_stop_while_waiting_for_a_held_lease_returns_false_promptly(
        kube: KubeAPIServer, new_client: Callable) -> None:
    leader = Candidate(new_client(), "held", "replica-a", lambda lost: lost.wait()).start()
    wait_for(lambda: leader.elector.is_leader, "the first candidate to lead")
    # A 10 s retry period: returning within 2 s shows the wait is on `stop`, not a sleep.
    follower = Candidate(new_client(), "held", "replica-b", lambda lost: None,
                         lease_duration_s=30.0, renew_deadline_s=20.0, retry_period_s=10.0)
    try:
        follower.start()
        time.sleep(0.5)  # let its first attempt find the Lease held
        follower.stop.set()
        assert follower.join(timeout=2.0) is False
        assert follower.entered is None
    finally:
        assert leader.finish() is True


def test_api_server_restart_keeps_a_patient_leader_and_loses_an_impatient_one(
        kube: KubeAPIServer, new_client: Callable) -> None:
    # Outlasts the restart (a few seconds): renew deadline 20 s.
    patient = Candidate(new_client(), "patient", "replica-a", lambda lost: lost.wait(),
                        lease_duration_s=30.0, renew_deadline_s=20.0, retry_period_s=0.5)
    # Loses while the server is down: renew deadline 2 s.
    impatient = Candidate(new_client(), "impatient", "replica-b", lambda lost: lost.wait())
    for candidate in (patient, impatient):
        candidate.start()
    wait_for(lambda: patient.elector.is_leader and impatient.elector.is_leader,
             "both candidates to lead their own Lease")
    renewed_before = lease_spec(kube, "patient")["renewTime"]
    try:
        kube.stop()
        wait_for(lambda: impatient.exited is not None,
                 "the impatient leader's `lost` while the API server is down")
        assert patient.elector.is_leader and not patient.lost.is_set()
    finally:
        kube.start()  # other modules share this server
    # The outage raised nothing out of run(); its release failed, so the Lease will expire.
    assert impatient.join() is True
    assert lease_spec(kube, "impatient")["holderIdentity"] == "replica-b"

    wait_for(lambda: lease_spec(kube, "patient")["renewTime"] > renewed_before,
             "the patient leader to renew again after the restart")
    assert patient.elector.is_leader and not patient.lost.is_set()
    assert patient.finish() is True
    assert lease_spec(kube, "patient").get("holderIdentity", "") == ""


@pytest.mark.parametrize("timings, named", [
    pytest.param({"lease_duration_s": 2.0, "renew_deadline_s": 2.0, "retry_period_s": 0.5},
                 "lease_duration_s", id="lease-not-above-renew"),
    pytest.param({"lease_duration_s": 3.0, "renew_deadline_s": 0.5, "retry_period_s": 0.5},
                 "renew_deadline_s", id="renew-not-above-retry"),
    pytest.param({"lease_duration_s": 3.0, "renew_deadline_s": 2.0, "retry_period_s": 0.0},
                 "retry_period_s", id="retry-zero"),
    pytest.param({"lease_duration_s": 3.0, "renew_deadline_s": 2.0, "retry_period_s": -1.0},
                 "retry_period_s", id="retry-negative"),
])
def test_bad_timings_raise_value_error_naming_the_argument(timings: dict[str, float],
                                                           named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named} "):
        LeaderElector(kubernetes.client.ApiClient(), NS, "unused", "replica-a", **timings)


def test_empty_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="^identity "):
        LeaderElector(kubernetes.client.ApiClient(), NS, "unused", "", **FAST)
