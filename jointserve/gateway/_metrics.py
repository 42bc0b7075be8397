"""Gateway metrics: Prometheus series through Ray Serve, and counters for the resource status.

Prometheus (ray.serve.metrics; Ray exports them on each node's metrics port, with the
deployment, replica and application as tags):

    jointserve_requests_total{service, tier}                 requests by who answered
    jointserve_samples_total{service, tier}                  samples (rows) by who answered
    jointserve_hard_examples_total{service}                  samples HEM called hard
    jointserve_fallbacks_total{service, reason}              hard samples answered by the edge
    jointserve_breaker_state{service}                        0 closed, 1 half open, 2 open
    jointserve_request_latency_ms{service, tier}             histogram

The Sedna-style counters in the status (inferenceNumber, hardExampleNumber, ...) need totals
over all gateway replicas. Each replica keeps cumulative counts and reports them, at most once
a second and off the request path, to one named Ray actor (`StatsBoard`); the operator reads the
totals from it on each pass. Cumulative reports keyed by replica make a lost or repeated report
harmless.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from jointserve.api import ServiceCounters

from ._joint import Outcome

log = logging.getLogger(__name__)

STATS_BOARD = "jointserve-stats"
STATS_NAMESPACE = "jointserve"
REPORT_INTERVAL_S = 1.0
LATENCY_BOUNDARIES_MS = [0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 35, 50, 100, 200, 500, 1000, 2000, 5000]
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Counters(ServiceCounters):
    """Cumulative counts of one replica (samples, as Sedna counts inferences): the status's
    own counter fields, so a name is spelled once."""

    def add(self, outcome: Outcome) -> None:
        self.inferenceNumber += outcome.samples
        self.hardExampleNumber += outcome.hard
        self.cloudAnswerNumber += outcome.cloud_answered
        self.fallbackNumber += outcome.hard - outcome.cloud_answered


class GatewayMetrics:
    """Records each request's outcome as Prometheus series and as status counters."""

    def __init__(self, service: str, stats_key: str, replica_id: str) -> None:
        from ray.serve import metrics

        self.service = service
        self.stats_key = stats_key  # unique per resource (its Serve application name)
        self.replica_id = replica_id
        self.counters = Counters()
        # Tags passed on every call: Serve's set_default_tags refuses the tags it adds itself.
        self._tags = {"service": service}
        self._requests = metrics.Counter("jointserve_requests_total", "Requests by answering tier",
                                         tag_keys=("service", "tier"))
        self._samples = metrics.Counter("jointserve_samples_total", "Samples by answering tier",
                                        tag_keys=("service", "tier"))
        self._hard = metrics.Counter("jointserve_hard_examples_total", "Samples the HEM policy called hard",
                                     tag_keys=("service",))
        self._fallbacks = metrics.Counter("jointserve_fallbacks_total",
                                          "Hard samples answered by the edge, by reason",
                                          tag_keys=("service", "reason"))
        self._breaker = metrics.Gauge("jointserve_breaker_state",
                                      "Cloud circuit breaker: 0 closed, 1 half open, 2 open",
                                      tag_keys=("service",))
        self._latency = metrics.Histogram("jointserve_request_latency_ms", "Gateway latency by tier",
                                          boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("service", "tier"))
        self._last_breaker: str | None = None

    def record(self, outcome: Outcome, latency_s: float) -> None:
        tier = {**self._tags, "tier": outcome.tier}
        self.counters.add(outcome)
        self._requests.inc(1, tier)
        self._samples.inc(outcome.samples, tier)
        self._latency.observe(latency_s * 1000.0, tier)
        if outcome.hard:
            self._hard.inc(outcome.hard, self._tags)
        if outcome.fallback_reason is not None:
            self._fallbacks.inc(outcome.hard - outcome.cloud_answered,
                                {**self._tags, "reason": outcome.fallback_reason})

    def breaker_state(self, state: str) -> None:
        if state != self._last_breaker:  # a gauge set per request would be wasted work
            self._breaker.set(BREAKER_STATES[state], self._tags)
            self._last_breaker = state

    async def report_forever(self) -> None:
        """Send the counters to the StatsBoard whenever they changed, about once a second."""
        sent: Counters | None = None
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            if self.counters == sent:
                continue
            snapshot = self.counters.model_copy()
            try:
                board = ray.get_actor(STATS_BOARD, namespace=STATS_NAMESPACE)
                await board.report.remote(self.stats_key, self.replica_id, snapshot.model_dump())
                sent = snapshot
            except Exception as exc:  # noqa: BLE001 - no board (no operator): try again later
                log.debug("stats report for %s not delivered: %s", self.service, exc)


@ray.remote(num_cpus=0)
class StatsBoard:
    """Latest cumulative counters per (service, replica); totals per service on request."""

    def __init__(self) -> None:
        self._reports: dict[str, dict[str, dict[str, int]]] = {}

    def report(self, service: str, replica_id: str, counters: dict[str, int]) -> None:
        self._reports.setdefault(service, {})[replica_id] = counters

    def totals(self) -> dict[str, dict[str, int]]:
        out = {}
        for service, replicas in self._reports.items():
            out[service] = {name: sum(counters.get(name, 0) for counters in replicas.values())
                            for name in ServiceCounters.model_fields}
        return out

    def forget(self, service: str) -> None:
        """The service was deleted: a new one of the same name starts from zero."""
        self._reports.pop(service, None)


def stats_board() -> "ray.actor.ActorHandle":
    """The cluster's StatsBoard, created on first use (by the operator)."""
    return StatsBoard.options(name=STATS_BOARD, namespace=STATS_NAMESPACE, get_if_exists=True,
                              lifetime="detached").remote()
