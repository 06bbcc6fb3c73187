"""audience_token.metrics: what a verifier counted, as Prometheus samples on a registry, read at scrape time."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from audience_token import metrics
from audience_token.counts import ACCEPTED, NOT_ALLOWED, UNAUTHENTICATED, UNAVAILABLE, Counts
from audience_token.errors import EXPIRED_OR_REVOKED, MALFORMED
from tests.tools import require

REPO = Path(__file__).parents[2]


@dataclass
class CountingVerifier:
    """Stands in for a verifier: metrics needs only its audience and its counts."""

    audience: str
    counts: Counts = field(default_factory=Counts)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return samples(registry)[(name, tuple(sorted(labels.items())))]


def test_verdicts_are_counted_by_outcome_and_reason_cache_acceptances_included() -> None:
    registry = CollectorRegistry()
    verifier = CountingVerifier("secret-store")
    metrics.register(verifier, registry=registry)
    counts = verifier.counts
    counts.accepted_from_cache += 3
    counts.miss()
    counts.verdict(ACCEPTED)
    counts.verdict(UNAUTHENTICATED, EXPIRED_OR_REVOKED)
    counts.verdict(UNAUTHENTICATED, EXPIRED_OR_REVOKED, cached=True)
    counts.verdict(UNAUTHENTICATED, MALFORMED)
    counts.verdict(NOT_ALLOWED, NOT_ALLOWED)
    counts.verdict(UNAVAILABLE, "review_unavailable")
    base = {"audience": "secret-store"}
    assert value(registry, "audience_token_verdicts_total", **base, outcome="accepted", reason="") == 4
    assert (
        value(registry, "audience_token_verdicts_total", **base, outcome="unauthenticated", reason=EXPIRED_OR_REVOKED)
        == 2
    )
    assert value(registry, "audience_token_verdicts_total", **base, outcome="unauthenticated", reason=MALFORMED) == 1
    assert value(registry, "audience_token_verdicts_total", **base, outcome="not_allowed", reason="not_allowed") == 1
    assert (
        value(registry, "audience_token_verdicts_total", **base, outcome="unavailable", reason="review_unavailable")
        == 1
    )
    assert value(registry, "audience_token_cache_lookups_total", **base, result="hit") == 4
    assert value(registry, "audience_token_cache_lookups_total", **base, result="miss") == 1


def test_counts_made_after_registering_show_at_the_next_scrape() -> None:
    registry = CollectorRegistry()
    verifier = CountingVerifier("secret-store")
    metrics.register(verifier, registry=registry)
    assert value(registry, "audience_token_cache_lookups_total", audience="secret-store", result="hit") == 0
    verifier.counts.accepted_from_cache += 1
    assert value(registry, "audience_token_cache_lookups_total", audience="secret-store", result="hit") == 1


def test_tokenreview_latency_is_a_histogram_and_errors_are_counted_by_code() -> None:
    registry = CollectorRegistry()
    verifier = CountingVerifier("secret-store")
    metrics.register(verifier, registry=registry)
    verifier.counts.review(0.004)
    verifier.counts.review(0.005)  # on a bound: that bucket (le is "less or equal")
    verifier.counts.review(5.0, error="timeout")
    verifier.counts.review(0.02, error="http_503")
    base = {"audience": "secret-store"}
    assert value(registry, "audience_token_tokenreview_duration_seconds_bucket", **base, le="0.0025") == 0
    assert value(registry, "audience_token_tokenreview_duration_seconds_bucket", **base, le="0.005") == 2
    assert value(registry, "audience_token_tokenreview_duration_seconds_bucket", **base, le="0.025") == 3
    assert value(registry, "audience_token_tokenreview_duration_seconds_bucket", **base, le="+Inf") == 4
    assert value(registry, "audience_token_tokenreview_duration_seconds_count", **base) == 4
    assert value(registry, "audience_token_tokenreview_duration_seconds_sum", **base) == pytest.approx(5.029)
    assert value(registry, "audience_token_tokenreview_errors_total", **base, error="timeout") == 1
    assert value(registry, "audience_token_tokenreview_errors_total", **base, error="http_503") == 1


def test_stale_token_callers_and_stale_if_error_answers_are_counted() -> None:
    registry = CollectorRegistry()
    verifier = CountingVerifier("secret-store")
    metrics.register(verifier, registry=registry)
    verifier.counts.stale_token("api", "api")
    verifier.counts.stale_served("accepted")
    base = {"audience": "secret-store"}
    assert (
        value(registry, "audience_token_stale_token_callers_total", **base, namespace="api", service_account="api") == 1
    )
    assert value(registry, "audience_token_stale_if_error_total", **base, outcome="accepted") == 1


def test_one_call_registers_several_verifiers_told_apart_by_audience() -> None:
    registry = CollectorRegistry()
    first, second = CountingVerifier("secret-store"), CountingVerifier("billing")
    metrics.register(first, second, registry=registry)
    first.counts.accepted_from_cache += 2
    second.counts.accepted_from_cache += 5
    name = "audience_token_cache_lookups_total"
    assert value(registry, name, audience="secret-store", result="hit") == 2
    assert value(registry, name, audience="billing", result="hit") == 5


def test_a_verdict_outside_the_fixed_words_is_refused_so_no_label_can_carry_a_value() -> None:
    counts = Counts()
    with pytest.raises(ValueError, match="no verdict"):
        counts.verdict(UNAUTHENTICATED, "eyJhbGciOiJSUzI1NiJ9")
    with pytest.raises(ValueError, match="no verdict"):
        counts.verdict("maybe")


def test_registering_twice_on_one_registry_is_refused_by_prometheus_client() -> None:
    registry = CollectorRegistry()
    metrics.register(CountingVerifier("a"), registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.register(CountingVerifier("b"), registry=registry)


def test_promtool_finds_the_exposition_valid(tmp_path: Path) -> None:
    promtool = require("promtool", hint="run `make tools` (builds promtool from the Prometheus Go module)")
    registry = CollectorRegistry()
    verifier = CountingVerifier("secret-store")
    metrics.register(verifier, registry=registry)
    verifier.counts.review(0.01, error="timeout")
    verifier.counts.verdict(ACCEPTED)
    verifier.counts.stale_token("api", "api")
    verifier.counts.stale_served("accepted")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=generate_latest(registry), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_core_modules_load_no_prometheus_client() -> None:
    code = (
        "import sys, audience_token.counts, audience_token.stale_tokens, audience_token.stale_if_error;"
        "print('prometheus_client' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"


@dataclass
class Wrapper:
    """Stands in for SyncVerifier: it names the verifier it wraps ``verifier``."""

    verifier: CountingVerifier


def test_a_wrapper_of_a_verifier_is_registered_through_what_it_wraps() -> None:
    registry = CollectorRegistry()
    inner = CountingVerifier("secret-store")
    metrics.register(Wrapper(inner), registry=registry)
    inner.counts.accepted_from_cache += 1
    assert value(registry, "audience_token_cache_lookups_total", audience="secret-store", result="hit") == 1


def test_an_object_that_counts_nothing_is_refused_saying_what_to_register() -> None:
    with pytest.raises(TypeError, match="register a TokenReviewer or OfflineVerifier"):
        metrics.register(object(), registry=CollectorRegistry())
