"""The request metrics, counted as plain numbers, read as Prometheus reads them."""

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from webhook.server.metrics import LATENCY_BUCKETS, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_latency_buckets_are_cumulative_and_a_latency_on_a_bound_falls_in_that_bucket() -> None:
    metrics = Metrics()
    for seconds in (0.0001, 0.0005, 0.0007, 3.0):
        metrics.requests.answered("mutated", 200, seconds=seconds)
    found = samples(metrics)

    def bucket(le: str) -> float:
        return found[("token_projector_webhook_latency_seconds_bucket", (("le", le), ("webhook", "mutate")))]

    assert bucket("0.0005") == 2
    assert bucket("0.001") == 3
    assert bucket(str(LATENCY_BUCKETS[-1])) == 3
    assert bucket("+Inf") == 4
    assert found[("token_projector_webhook_latency_seconds_count", (("webhook", "mutate"),))] == 4
    assert abs(found[("token_projector_webhook_latency_seconds_sum", (("webhook", "mutate"),))] - 3.0013) < 1e-9


def test_requests_are_counted_by_outcome_and_code_and_in_flight_is_reported() -> None:
    metrics = Metrics()
    metrics.requests.answered("mutated", 200, seconds=0.001)
    metrics.requests.answered("mutated", 200, seconds=0.001)
    metrics.requests.answered("error", 413, seconds=0.001)
    metrics.requests.in_flight = 3
    found = samples(metrics)
    key = "token_projector_webhook_requests_total"
    assert found[(key, (("code", "200"), ("outcome", "mutated"), ("webhook", "mutate")))] == 2
    assert found[(key, (("code", "413"), ("outcome", "error"), ("webhook", "mutate")))] == 1
    assert found[("token_projector_webhook_requests_in_flight", (("webhook", "mutate"),))] == 3
