"""Prometheus metrics, named in the style of Kubernetes webhooks (controller-runtime's ``*_webhook_*``).

Each server gets its own registry, so that tests and several apps in one process never share counts.

The admission requests' metrics are counted as plain numbers and become Prometheus samples only
when scraped (``RequestMetrics.collect``). prometheus_client's own metric objects take a lock and
validate on every update, which costs a few microseconds per request: more than the rest of the
bookkeeping together. No lock is needed here: requests are counted and metrics scraped on the
one event loop thread.
"""

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

WEBHOOK = "mutate"
"""The ``webhook`` label: the one admission endpoint, /mutate."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Sub-millisecond to seconds: a review takes well under a millisecond; the API server gives up at timeoutSeconds."""


class RequestMetrics:
    """Counts of /mutate requests by outcome and status, their latency histogram, and those in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._answered: dict[tuple[str, int], int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self._latency_sum = 0.0

    def answered(self, outcome: str, code: int, *, seconds: float) -> None:
        key = (outcome, code)
        self._answered[key] = self._answered.get(key, 0) + 1
        # bisect_left: a latency equal to a bound belongs to that bucket (le = "less or equal").
        self._buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "token_projector_webhook_requests",
            "Admission requests by outcome (mutated, unchanged, denied, error) and HTTP status code.",
            labels=["webhook", "outcome", "code"],
        )
        for (outcome, code), count in self._answered.items():
            requests.add_metric([WEBHOOK, outcome, str(code)], count)
        yield requests
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self._buckets, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        latency = HistogramMetricFamily(
            "token_projector_webhook_latency_seconds",
            "Time from the request's arrival to the answer, body read included.",
            labels=["webhook"],
        )
        latency.add_metric([WEBHOOK], buckets, sum_value=self._latency_sum)
        yield latency
        in_flight = GaugeMetricFamily(
            "token_projector_webhook_requests_in_flight", "Admission requests being answered now.", labels=["webhook"]
        )
        in_flight.add_metric([WEBHOOK], self.in_flight)
        yield in_flight


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics()
        self.registry.register(self.requests)
        self.certificate_reloads = Counter(
            "token_projector_tls_certificate_reloads",
            "Attempts to load a changed certificate and key, by result (success, failure).",
            ["result"],
            registry=self.registry,
        )
        self.service_account_lookups = Counter(
            "token_projector_service_account_lookups",
            "ServiceAccount opt-in: Pods' ServiceAccounts read, by source (cache; api: a GET, not cached yet; "
            "unreadable: the Pod was refused if it needed it).",
            ["source"],
            registry=self.registry,
        )
        self.service_accounts_cached = Gauge(
            "token_projector_service_accounts_cached",
            "ServiceAccount opt-in: ServiceAccounts in the list-and-watch cache.",
            registry=self.registry,
        )
        self.certificate_not_after = Gauge(
            "token_projector_tls_certificate_not_after_timestamp_seconds",
            "Expiry of the certificate being served, as a Unix timestamp: alert before it passes.",
            registry=self.registry,
        )
