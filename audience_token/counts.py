"""What a verifier counts, as plain numbers: ``audience_token.metrics`` turns them into Prometheus samples.

The core never imports prometheus_client (an optional extra, ``metrics``): a verifier keeps a
:class:`Counts` and adds to it, and a scrape reads it (:func:`audience_token.metrics.register`). A
cache hit, the path every request of a known caller takes, costs one integer addition
(``accepted_from_cache += 1``); everything else is counted on paths that already wait for the API
server or refuse a request.

Nothing here is keyed by anything secret: outcomes and reasons are fixed words, a review error is
a short code (``timeout``, ``http_503``), and the only names are a caller's namespace and service
account, which are not credentials. Under threads, an increment of a plain ``int`` can very rarely
be lost (no lock on the hot path); a count never goes backwards.
"""

from __future__ import annotations

import bisect
import threading
from typing import Final

from audience_token.errors import REASONS

ACCEPTED: Final = "accepted"
UNAUTHENTICATED: Final = "unauthenticated"
NOT_ALLOWED: Final = "not_allowed"
UNAVAILABLE: Final = "unavailable"
OUTCOMES: Final = (ACCEPTED, UNAUTHENTICATED, NOT_ALLOWED, UNAVAILABLE)
"""A verdict's outcome, as the receivers answer it: 200 (accepted), 401, 403, 503."""

REVIEW_UNAVAILABLE: Final = "review_unavailable"
"""The reason of every ``unavailable`` verdict (the review error says why)."""

REVIEW_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""TokenReview latency buckets, seconds: a millisecond on a quiet API server up to the 5 s timeout."""

_REASONS_OF: Final = {
    ACCEPTED: frozenset({""}),
    UNAUTHENTICATED: REASONS,
    NOT_ALLOWED: frozenset({NOT_ALLOWED}),
    UNAVAILABLE: frozenset({REVIEW_UNAVAILABLE}),
}


class Counts:
    """A verifier's counts since it was made. Read by a scrape; reset by nothing."""

    def __init__(self) -> None:
        self.accepted_from_cache = 0
        """Requests accepted from the cache: a cache hit and an acceptance at once (the hot path)."""
        self.cache_misses = 0
        self._lock = threading.Lock()
        self.verdicts: dict[tuple[str, str], int] = {}
        """(outcome, reason) → verdicts not counted in ``accepted_from_cache``."""
        self.refused_from_cache = 0
        self.reviews = 0
        self.review_seconds_sum = 0.0
        self.review_buckets = [0] * (len(REVIEW_BUCKETS) + 1)
        """Per bucket (the last is +Inf), not cumulative; ``metrics`` adds them up."""
        self.review_errors: dict[str, int] = {}
        self.stale_tokens: dict[tuple[str, str], int] = {}
        """(namespace, service account) → callers warned about for keeping a token past its refresh."""
        self.served_stale: dict[str, int] = {}
        """outcome → verdicts answered from the ``stale_if_error`` window while reviews were unavailable."""

    def __repr__(self) -> str:
        return f"Counts(cache_hits={self.cache_hits}, cache_misses={self.cache_misses}, reviews={self.reviews})"

    @property
    def cache_hits(self) -> int:
        return self.accepted_from_cache + self.refused_from_cache

    def miss(self) -> None:
        """The cache held no verdict for a token: the verifier decides (pre-check, review)."""
        self.cache_misses += 1

    def verdict(self, outcome: str, reason: str = "", *, cached: bool = False) -> None:
        """One answer to one request; ``cached`` when a cached refusal answered it (a cache hit)."""
        if reason not in _REASONS_OF.get(outcome, ()):
            raise ValueError(f"no verdict {outcome!r} with reason {reason!r}")
        with self._lock:
            if cached:
                self.refused_from_cache += 1
            key = (outcome, reason)
            self.verdicts[key] = self.verdicts.get(key, 0) + 1

    def review(self, seconds: float, *, error: str | None = None) -> None:
        """One TokenReview sent, how long it took, and the short code of its failure if it failed."""
        with self._lock:
            self.reviews += 1
            self.review_seconds_sum += seconds
            # bisect_left: a latency equal to a bound belongs to that bucket (le = "less or equal").
            self.review_buckets[bisect.bisect_left(REVIEW_BUCKETS, seconds)] += 1
            if error is not None:
                self.review_errors[error] = self.review_errors.get(error, 0) + 1

    def stale_token(self, namespace: str, service_account: str) -> None:
        with self._lock:
            key = (namespace, service_account)
            self.stale_tokens[key] = self.stale_tokens.get(key, 0) + 1

    def stale_served(self, outcome: str) -> None:
        with self._lock:
            self.served_stale[outcome] = self.served_stale.get(outcome, 0) + 1

    def verdict_totals(self) -> dict[tuple[str, str], int]:
        """Every verdict by (outcome, reason), the cache's acceptances included."""
        with self._lock:
            totals = dict(self.verdicts)
        if self.accepted_from_cache:
            key = (ACCEPTED, "")
            totals[key] = totals.get(key, 0) + self.accepted_from_cache
        return totals
