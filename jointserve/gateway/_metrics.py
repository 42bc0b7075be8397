"""Gateway metrics: Prometheus series through Ray Serve, and counters for the resource status.

Prometheus (ray.serve.metrics; Ray exports them on each node's metrics port, with the
deployment, replica and application as tags):

    jointserve_requests_total{service, tier}                 requests by who answered
    jointserve_samples_total{service, tier}                  samples (rows) by who answered
    jointserve_hard_examples_total{service}                  samples HEM called hard
    jointserve_fallbacks_total{service, reason}              hard samples answered by the edge
    jointserve_breaker_state{service}                        0 closed, 1 half open, 2 open
    jointserve_request_latency_ms{service, tier, quantile}   p50/p90/p99 of the last second
    jointserve_request_latency_ms_count / _sum{service, tier}

Nothing is handed to Ray per request: counts and a latency histogram are kept in the
replica and flushed to Ray's metrics once a second (a Prometheus summary: quantiles as
gauges, count and sum as counters). Each Ray metric call costs ~10-20 µs of tag handling and
recording, as much as the edge model; four of them per request were ~11% of a gateway's
samples at c=8 (py-spy, issue 12).

The Sedna-style counters in the status (inferenceNumber, hardExampleNumber, ...) need totals
over all gateway replicas. Each replica keeps cumulative counts and reports them, at most once
a second and off the request path, into Ray's GCS (jointserve.registry.report_counters); the
operator sums them on each pass. Cumulative reports keyed by replica make a lost or repeated
report harmless.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import Counter

from jointserve.api import ServiceCounters
from jointserve.registry import report_counters

from ._joint import Outcome

log = logging.getLogger(__name__)

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


SUMMARY_QUANTILES = (0.5, 0.9, 0.99)


class LatencyBuckets:
    """Request latencies of one flush interval, counted in LATENCY_BOUNDARIES_MS buckets."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDARIES_MS) + 1)  # the last: above every boundary
        self.count = 0
        self.total_ms = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDARIES_MS, ms)] += 1
        self.count += 1
        self.total_ms += ms

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the q-quantile (Prometheus' histogram rule,
        without interpolation); past the last boundary, the last boundary."""
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return float(LATENCY_BOUNDARIES_MS[min(index, len(LATENCY_BOUNDARIES_MS) - 1)])
        return float(LATENCY_BOUNDARIES_MS[-1])

    def clear(self) -> None:
        self.counts = [0] * len(self.counts)
        self.count = 0
        self.total_ms = 0.0


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
        self._latency = metrics.Gauge("jointserve_request_latency_ms",
                                      "Gateway latency by tier, quantiles of the last second",
                                      tag_keys=("service", "tier", "quantile"))
        self._latency_count = metrics.Counter("jointserve_request_latency_ms_count",
                                              "Requests timed", tag_keys=("service", "tier"))
        self._latency_sum = metrics.Counter("jointserve_request_latency_ms_sum",
                                            "Total gateway latency, ms", tag_keys=("service", "tier"))
        self._latencies: dict[str, LatencyBuckets] = {}
        self._last_breaker: str | None = None
        # Since the last flush: requests and samples by tier, fallbacks by reason, hard samples.
        self._requests_by_tier: Counter[str] = Counter()
        self._samples_by_tier: Counter[str] = Counter()
        self._fallbacks_by_reason: Counter[str] = Counter()
        self._hard_samples = 0

    def record(self, outcome: Outcome, latency_s: float) -> None:
        tier = outcome.tier
        self.counters.add(outcome)
        self._requests_by_tier[tier] += 1
        self._samples_by_tier[tier] += outcome.samples
        self._hard_samples += outcome.hard
        if outcome.fallback_reason is not None:
            self._fallbacks_by_reason[outcome.fallback_reason] += outcome.hard - outcome.cloud_answered
        buckets = self._latencies.get(tier)
        if buckets is None:
            buckets = self._latencies[tier] = LatencyBuckets()
        buckets.observe(latency_s * 1000.0)

    def flush(self) -> None:
        """Hand the counts summed since the last flush to Ray's metrics."""
        for tier, count in self._requests_by_tier.items():
            tags = {**self._tags, "tier": tier}
            self._requests.inc(count, tags)
            self._samples.inc(self._samples_by_tier[tier], tags)
        for reason, count in self._fallbacks_by_reason.items():
            self._fallbacks.inc(count, {**self._tags, "reason": reason})
        if self._hard_samples:
            self._hard.inc(self._hard_samples, self._tags)
        for tier, buckets in self._latencies.items():
            if buckets.count == 0:
                continue
            tags = {**self._tags, "tier": tier}
            self._latency_count.inc(buckets.count, tags)
            self._latency_sum.inc(buckets.total_ms, tags)
            for quantile in SUMMARY_QUANTILES:
                self._latency.set(buckets.quantile(quantile), {**tags, "quantile": str(quantile)})
            buckets.clear()
        self._requests_by_tier.clear()
        self._samples_by_tier.clear()
        self._fallbacks_by_reason.clear()
        self._hard_samples = 0

    def breaker_state(self, state: str) -> None:
        if state != self._last_breaker:  # a gauge set per request would be wasted work
            self._breaker.set(BREAKER_STATES[state], self._tags)
            self._last_breaker = state

    async def report_forever(self) -> None:
        """Report the counters whenever they changed, about once a second."""
        sent: Counters | None = None
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            self.flush()
            if self.counters == sent:
                continue
            snapshot = self.counters.model_copy()
            try:
                await asyncio.to_thread(report_counters, self.stats_key, self.replica_id, snapshot)
                sent = snapshot
            except Exception as exc:  # noqa: BLE001 - GCS unreachable: try again later
                log.debug("stats report for %s not delivered: %s", self.service, exc)
