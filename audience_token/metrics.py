"""Prometheus metrics for audience_token's verifiers (extra ``metrics``: prometheus-client).

One call: ``audience_token.metrics.register(verifier)`` (on prometheus_client's default registry, or
``registry=``) exposes what the verifier counted (:mod:`audience_token.counts`), read at scrape time:

==============================================  ===========================  ===========================================
metric                                          labels                       what it counts
==============================================  ===========================  ===========================================
``audience_token_verdicts_total``               audience, outcome, reason    answers: accepted, unauthenticated (with
                                                                             its reason), not_allowed, unavailable
``audience_token_cache_lookups_total``          audience, result             hit or miss, per token presented
``audience_token_tokenreview_duration_seconds`` audience                     TokenReview latency (a histogram)
``audience_token_tokenreview_errors_total``     audience, error              reviews without a verdict: ``timeout``,
                                                                             ``connection``, ``http_503``, ...
``audience_token_stale_token_callers_total``    audience, namespace,         callers warned about for sending a token
                                                service_account              past the kubelet's refresh point
``audience_token_stale_if_error_total``         audience, outcome            verdicts answered from the
                                                                             ``stale_if_error`` window in an outage
==============================================  ===========================  ===========================================

No label holds a token, a digest of one, a Pod name or an address: outcomes and reasons are fixed
words, and namespaces and service accounts are bounded by the callers a receiver allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, cast

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from audience_token.counts import REVIEW_BUCKETS, Counts


class Counted(Protocol):
    """A verifier that counts: ``TokenReviewer`` and ``OfflineVerifier`` have both."""

    @property
    def audience(self) -> str: ...

    @property
    def counts(self) -> Counts: ...


class VerifierCollector:
    """Turns the counts of one or more verifiers into samples when the registry is scraped."""

    def __init__(self, verifiers: Iterable[Counted]) -> None:
        self._verifiers = tuple(verifiers)

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        verdicts = CounterMetricFamily(
            "audience_token_verdicts",
            "Answers to presented tokens by outcome (accepted, unauthenticated, not_allowed, unavailable) and reason.",
            labels=["audience", "outcome", "reason"],
        )
        lookups = CounterMetricFamily(
            "audience_token_cache_lookups",
            "Tokens looked up in the verdict cache, by result (hit, miss).",
            labels=["audience", "result"],
        )
        latency = HistogramMetricFamily(
            "audience_token_tokenreview_duration_seconds",
            "Time for one TokenReview, from the request to its answer or failure.",
            labels=["audience"],
        )
        errors = CounterMetricFamily(
            "audience_token_tokenreview_errors",
            "TokenReviews that gave no verdict, by error (timeout, connection, http_STATUS, bad_answer).",
            labels=["audience", "error"],
        )
        stale_callers = CounterMetricFamily(
            "audience_token_stale_token_callers",
            "Warnings about a caller that sent a token past the kubelet's refresh point: it caches its token file.",
            labels=["audience", "namespace", "service_account"],
        )
        served_stale = CounterMetricFamily(
            "audience_token_stale_if_error",
            "Verdicts answered from the stale_if_error window while TokenReviews were unavailable, by outcome.",
            labels=["audience", "outcome"],
        )
        for verifier in self._verifiers:
            audience, counts = verifier.audience, verifier.counts
            for (outcome, reason), count in sorted(counts.verdict_totals().items()):
                verdicts.add_metric([audience, outcome, reason], count)
            lookups.add_metric([audience, "hit"], counts.cache_hits)
            lookups.add_metric([audience, "miss"], counts.cache_misses)
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, REVIEW_BUCKETS), "+Inf"), counts.review_buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([audience], buckets, sum_value=counts.review_seconds_sum)
            for error, count in sorted(counts.review_errors.items()):
                errors.add_metric([audience, error], count)
            for (namespace, account), count in sorted(counts.stale_tokens.items()):
                stale_callers.add_metric([audience, namespace, account], count)
            for outcome, count in sorted(counts.served_stale.items()):
                served_stale.add_metric([audience, outcome], count)
        yield from (verdicts, lookups, latency, errors, stale_callers, served_stale)


def register(*verifiers: object, registry: CollectorRegistry = REGISTRY) -> VerifierCollector:
    """Expose the metrics of ``verifiers`` on ``registry``; returns the collector (to ``unregister`` it).

    Each is a verifier that counts (``TokenReviewer``, ``OfflineVerifier``), or a wrapper of one that
    names it ``verifier`` (``SyncVerifier``): its counts are the wrapped verifier's. Register all of a
    process's verifiers in one call: a second call on the same registry is refused (the same names).
    """
    collector = VerifierCollector(_counted(v) for v in verifiers)
    registry.register(collector)
    return collector


def _counted(verifier: object) -> Counted:
    seen = verifier
    for _ in range(4):  # a wrapper of a wrapper, at most a few deep
        if isinstance(getattr(seen, "counts", None), Counts) and isinstance(getattr(seen, "audience", None), str):
            return cast(Counted, seen)
        seen = getattr(seen, "verifier", None)
        if seen is None:
            break
    raise TypeError(
        f"{type(verifier).__name__} counts nothing: register a TokenReviewer or OfflineVerifier (or a wrapper of "
        "one, such as SyncVerifier)"
    )
