"""Prometheus metrics, named in the style of Kubernetes webhooks (controller-runtime's ``*_webhook_*``).

Each server gets its own registry, so that tests and several apps in one process never share counts.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

WEBHOOK = "mutate"
"""The ``webhook`` label: the one admission endpoint, /mutate."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Sub-millisecond to seconds: a review takes well under a millisecond; the API server gives up at timeoutSeconds."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "token_projector_webhook_requests",
            "Admission requests by outcome (mutated, unchanged, denied, error) and HTTP status code.",
            ["webhook", "outcome", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "token_projector_webhook_latency_seconds",
            "Time from the request's arrival to the answer, body read included.",
            ["webhook"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "token_projector_webhook_requests_in_flight",
            "Admission requests being answered now.",
            ["webhook"],
            registry=self.registry,
        )
        self.certificate_reloads = Counter(
            "token_projector_tls_certificate_reloads",
            "Attempts to load a changed certificate and key, by result (success, failure).",
            ["result"],
            registry=self.registry,
        )
        self.certificate_not_after = Gauge(
            "token_projector_tls_certificate_not_after_timestamp_seconds",
            "Expiry of the certificate being served, as a Unix timestamp: alert before it passes.",
            registry=self.registry,
        )

        # labels() takes a lock and validates on every call: resolve each child once.
        self.webhook_latency = self.latency.labels(WEBHOOK)
        self.webhook_in_flight = self.in_flight.labels(WEBHOOK)
        self._request_counters: dict[tuple[str, int], MetricWrapperBase] = {}

    def count_request(self, outcome: str, code: int) -> None:
        counter = self._request_counters.get((outcome, code))
        if counter is None:
            counter = self._request_counters[(outcome, code)] = self.requests.labels(WEBHOOK, outcome, str(code))
        counter.inc()  # type: ignore[attr-defined]
