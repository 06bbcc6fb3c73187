"""``stale_if_error``: an opt-in window of recent verdicts that answer while TokenReview is unavailable.

By default a receiver that cannot reach the API server answers 503 to every token its cache (10 s)
does not hold: fail closed, the safe default. With ``StaleIfError(accepted_for=N)`` a token accepted
by a review within the last N seconds stays accepted while reviews fail (timeouts, 5xx, refused
connections), never past its own ``exp``; ``refused_for=M`` does the same for definite refusals, so
a caller refused a moment ago still gets its 401/403 rather than a 503. 0 turns either off.

The window never answers when the API server refuses the reviewer's *own* credentials (401: its
token is not valid; 403: it may not create TokenReviews, a lost RBAC binding): that is an operator's
error, not an outage, and it surfaces at once as 503s (the cause in the log) rather than hiding behind old verdicts.

Each new review's verdict replaces the kept one: a token accepted an hour ago and refused a second
ago is not accepted in an outage. What it costs: a Pod deleted during an outage keeps working for
up to N seconds after its token's last successful review (see the trade-off table in
docs/audience-token.md, "Operating it"). The kept verdicts are keyed like the cache (HMAC digests,
never a token) and bounded in number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from audience_token.cache import TtlLru
from audience_token.errors import ConfigError

V = TypeVar("V")

OPERATOR_ERRORS: Final = frozenset({"http_401", "http_403"})
"""``ReviewUnavailable.cause`` values the window never answers for: the reviewer's own credentials refused."""

RECHECK_SECONDS: Final = 1.0
"""While the window answers, a review is tried again at most this often per token (the rest from the cache)."""

MAX_WINDOW_SECONDS: Final = 24 * 3600.0
"""A longer window is refused: past a day the API server is not briefly unavailable, it is gone."""


@dataclass(frozen=True, slots=True)
class StaleIfError:
    """How long recent verdicts may answer while TokenReviews are unavailable; 0 (the default) is off."""

    accepted_for: float = 0.0
    """Seconds after its last successful review that a token stays accepted in an outage; never past ``exp``."""
    refused_for: float = 0.0
    """Seconds after its last definite refusal that a token stays refused (401/403, not 503) in an outage."""

    def __post_init__(self) -> None:
        for name in ("accepted_for", "refused_for"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"stale_if_error {name} must be a number of seconds, not {value!r}")
            if not 0 <= value <= MAX_WINDOW_SECONDS:
                raise ConfigError(
                    f"stale_if_error {name} must be 0 (off) to {MAX_WINDOW_SECONDS:.0f} seconds, not {value}"
                )

    @property
    def enabled(self) -> bool:
        return self.accepted_for > 0 or self.refused_for > 0


class StaleVerdicts(Generic[V]):
    """The verdicts kept for an outage, by cache key; each lives for its window, an acceptance not past exp."""

    def __init__(
        self,
        policy: StaleIfError,
        *,
        maxsize: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self._kept: TtlLru[V] = TtlLru(maxsize=maxsize, clock=clock)
        self._wall_clock = wall_clock

    def __repr__(self) -> str:
        return f"StaleVerdicts({self.policy!r}, kept={len(self._kept)})"

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, key: bytes, verdict: V, *, accepted: bool, expires_at: float | None = None) -> None:
        """Remember a fresh review's verdict; ``expires_at`` (Unix seconds) is the token's ``exp``.

        An acceptance without a known ``exp`` is not kept. Any verdict replaces the one kept before,
        even when its own window is 0: an older acceptance never outlives a newer refusal.
        """
        if accepted:
            ttl = self.policy.accepted_for
            ttl = 0.0 if expires_at is None else min(ttl, expires_at - self._wall_clock())
        else:
            ttl = self.policy.refused_for
        self._kept.put(key, verdict, ttl=ttl)  # a ttl of 0 or less forgets the key

    def forget(self, key: bytes) -> None:
        """Drop what was kept for ``key`` (a review answered with something that must not be kept)."""
        self._kept.put(key, None, ttl=0)  # type: ignore[arg-type]

    def recall(self, key: bytes, *, cause: str = "") -> V | None:
        """The verdict kept for ``key`` if its window is still open; for use only when no review can be had.

        ``cause``: why not (``ReviewUnavailable.cause``); None for the reviewer's own credentials refused
        (``OPERATOR_ERRORS``), whatever is kept.
        """
        return None if cause in OPERATOR_ERRORS else self._kept.get(key)
