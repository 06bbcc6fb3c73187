"""TokenReviewer: is this bearer token a service account token for *my* audience, from a caller I allow?

The Kubernetes API server is the authority (the TokenReview API, as in the reference article), and it
is only half the check: the API documents that the client must compare ``status.audiences`` with its
own audience, and a TokenReview happily authenticates people and nodes too. So a token is accepted only
when all four hold, in this order:

1. the review says ``authenticated: true``;
2. this reviewer's audience is in ``status.audiences``;
3. the user is ``system:serviceaccount:NS:NAME``;
4. an ``allow`` pattern matches ``NS/NAME``.

Around that: a pre-check that refuses non-tokens without an API call (``precheck``), a short cache
keyed by HMAC (``cache``), and one TokenReview for any number of concurrent requests with the same new
token (``SingleFlight``). Credentials and transport are ``kube``'s job. For operating it: every answer
is counted (``counts``, shown by ``audience_token.metrics``), a caller that keeps its token past the
kubelet's refresh is warned about (``stale_tokens``), and an opt-in window of recent verdicts answers
while reviews fail (``stale_if_error``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from audience_token.cache import CacheKeys, SingleFlight, TtlLru
from audience_token.counts import ACCEPTED, NOT_ALLOWED, REVIEW_UNAVAILABLE, UNAUTHENTICATED, UNAVAILABLE, Counts
from audience_token.errors import (
    ConfigError,
    NotAllowed,
    ReviewUnavailable,
    Unauthenticated,
    VerificationError,
    unexpected,
)
from audience_token.identity import AllowList, Identity
from audience_token.kube import Answer, Credentials, KubeApi
from audience_token.policy import Policy
from audience_token.precheck import MAX_TOKEN_LENGTH, audiences_of, check_length, expiry_of, precheck
from audience_token.stale_if_error import RECHECK_SECONDS, StaleIfError, StaleVerdicts
from audience_token.stale_tokens import StaleTokenWatch

log = logging.getLogger("audience_token")

TOKENREVIEWS: Final = "/apis/authentication.k8s.io/v1/tokenreviews"
PERMISSION: Final = "`create` on `tokenreviews.authentication.k8s.io`"
CLUSTER_ROLE: Final = "audience-token-reviewer"


@dataclass(frozen=True, slots=True)
class ReviewerSettings:
    """How long verdicts are kept, how many, and how long to wait for the API server."""

    success_ttl: float = 10.0
    """Seconds an acceptance is kept; never past the token's ``exp``. A revoked token works that long."""
    failure_ttl: float = 10.0
    """Seconds a definite refusal (Unauthenticated, NotAllowed) is kept. Never kept: unavailability, and a
    refusal that carries the API server's ``status.error`` (it may be a passing fault, such as an etcd
    timeout while looking up the token's Pod), unless the token's own claims decide it."""
    cache_size: int = 10_000
    timeout: float = 5.0
    """Seconds for one TokenReview, connecting included."""
    connections: int = 16
    """At most this many connections to the API server at once (one pool)."""
    stale_if_error: StaleIfError = StaleIfError()
    """Opt-in: recent verdicts that answer while TokenReviews are unavailable (off by default)."""

    def __post_init__(self) -> None:
        for name in ("success_ttl", "failure_ttl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be zero (no caching) or more seconds, not {getattr(self, name)}")
        if self.cache_size < 1 or self.connections < 1 or self.timeout <= 0:
            raise ConfigError("cache_size and connections must be at least 1 and timeout more than 0 seconds")


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A refusal as data: each caller raises its own fresh exception, none is shared between tasks."""

    kind: type[VerificationError]
    message: str
    reason: str = ""
    identity: Identity | None = None
    retry_after: int = 1
    definite: bool = True
    """False for a refusal that rests on an error the API server reported: it is not cached."""

    def error(self) -> VerificationError:
        if self.kind is Unauthenticated:
            return Unauthenticated(self.message, reason=self.reason)
        if self.kind is NotAllowed and self.identity is not None:
            return NotAllowed(self.message, identity=self.identity)
        return ReviewUnavailable(self.message, retry_after=self.retry_after)

    @classmethod
    def unavailable(cls, error: ReviewUnavailable) -> _Refusal:
        return cls(ReviewUnavailable, error.message, retry_after=error.retry_after)

    @classmethod
    def of(cls, refused: Unauthenticated | NotAllowed, *, definite: bool = True) -> _Refusal:
        if isinstance(refused, NotAllowed):
            return cls(NotAllowed, refused.message, identity=refused.identity, definite=definite)
        return cls(Unauthenticated, refused.message, reason=refused.reason, definite=definite)

    @property
    def counted_as(self) -> tuple[str, str]:
        """(outcome, reason) for ``Counts``."""
        if self.kind is Unauthenticated:
            return UNAUTHENTICATED, self.reason
        if self.kind is NotAllowed:
            return NOT_ALLOWED, NOT_ALLOWED
        return UNAVAILABLE, REVIEW_UNAVAILABLE


_Verdict: TypeAlias = Identity | _Refusal


class TokenReviewer:
    """Verifies bearer tokens for ``audience`` with the TokenReview API; ``allow`` is required.

    Credentials: in-cluster by default; or ``kubeconfig=PATH`` (``context=``), or ``credentials=``.
    Use ``async with`` or ``await close()`` to close the connection pool.
    """

    def __init__(
        self,
        audience: str,
        *,
        allow: AllowList | str | Iterable[str],
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        credentials: Credentials | None = None,
        settings: ReviewerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = Policy.of(audience, allow)
        self.audience: str = self.policy.audience
        self.allow = self.policy.allow
        self.settings = settings or ReviewerSettings()
        if credentials is None:
            credentials = (
                Credentials.from_kubeconfig(kubeconfig, context=context)
                if kubeconfig is not None
                else Credentials.in_cluster()
            )
        self._credentials = credentials
        self._api = KubeApi(credentials, timeout=self.settings.timeout, connections=self.settings.connections)
        self._cache: TtlLru[_Verdict] = TtlLru(maxsize=self.settings.cache_size, clock=clock)
        # Bound once: lookup() runs on every request, and a stored bound method is the cheapest call.
        self._key_of = CacheKeys(audience).__call__
        self._cached = self._cache.get
        self._flight: SingleFlight[_Verdict] = SingleFlight()
        self._wall_clock = wall_clock
        self.reviews_sent = 0
        """TokenReviews sent so far: what the cache and single flight save shows here."""
        self.counts = Counts()
        """What this reviewer answered: ``audience_token.metrics.register(reviewer)`` shows it."""
        self._stale_tokens = StaleTokenWatch(counts=self.counts, wall_clock=wall_clock)
        stale = self.settings.stale_if_error
        self._stale: StaleVerdicts[_Verdict] | None = (
            StaleVerdicts(stale, maxsize=self.settings.cache_size, clock=clock, wall_clock=wall_clock)
            if stale.enabled
            else None
        )

    def __repr__(self) -> str:
        return f"TokenReviewer({self.audience!r}, allow={str(self.allow)!r}, via={self._credentials.source!r})"

    @property
    def cached(self) -> int:
        return len(self._cache)

    def lookup(self, token: str) -> Identity | None:
        """The cached verdict for ``token``, without awaiting: its Identity, or None when ``verify`` must ask.

        Raises a cached refusal (Unauthenticated, NotAllowed) as ``verify`` would, and Unauthenticated for
        a value that is empty, too long or not ASCII. Never calls the API server. The middleware's fast path.
        """
        # check_length's own tests, inline for the token that passes them: every request comes here.
        if type(token) is not str or not 0 < len(token) <= MAX_TOKEN_LENGTH or not token.isascii():
            self._refuse_malformed(token)
        verdict = self._cached(self._key_of(token))
        if isinstance(verdict, Identity):
            self.counts.accepted_from_cache += 1
            return verdict
        if verdict is None:
            return None
        self.counts.verdict(*verdict.counted_as, cached=True)
        raise verdict.error()

    async def verify(self, token: str) -> Identity:
        """The caller's Identity, or raises Unauthenticated, NotAllowed or ReviewUnavailable."""
        known = self.lookup(token)
        if known is not None:
            return known
        self.counts.miss()
        key = self._key_of(token)  # again, on a miss only: next to a TokenReview, a microsecond
        try:
            claims = precheck(token)
        except Unauthenticated as refused:
            self.counts.verdict(UNAUTHENTICATED, refused.reason)
            raise
        verdict = await self._flight.run(key, lambda: self._review(token, key, claims))
        if isinstance(verdict, Identity):
            self.counts.verdict(ACCEPTED)
            return verdict
        self.counts.verdict(*verdict.counted_as)
        raise verdict.error()

    def _refuse_malformed(self, token: object) -> None:
        try:
            check_length(token)  # raises, saying which test failed
        except Unauthenticated as refused:
            self.counts.verdict(UNAUTHENTICATED, refused.reason)
            raise

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> TokenReviewer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _review(self, token: str, key: bytes, claims: Mapping[str, Any]) -> _Verdict:
        started = time.perf_counter()
        try:
            status = await self._token_review(token)
            verdict = self._judge(status, claims)
        except ReviewUnavailable as error:
            self.counts.review(time.perf_counter() - started, error=error.cause)
            log.warning("token review unavailable: %s", error.message)
            return self._kept_or_unavailable(key, claims, error)
        except Exception as error:  # a defect must become a verdict, never a 500 (issue 25, item 1)
            unavailable = unexpected(error)
            self.counts.review(time.perf_counter() - started, error=unavailable.cause)
            return self._kept_or_unavailable(key, claims, unavailable)
        self.counts.review(time.perf_counter() - started)
        exp = expiry_of(claims)
        if isinstance(verdict, Identity):
            ttl = self.settings.success_ttl
            if exp is not None:
                ttl = min(ttl, exp - self._wall_clock())
            self._stale_tokens.observe(verdict, claims)
        else:
            ttl = self.settings.failure_ttl if verdict.definite else 0.0
        self._cache.put(key, verdict, ttl=ttl)
        if self._stale is not None:
            # A refusal that rests on the API server's error is kept as nothing, and forgets what was kept.
            if isinstance(verdict, Identity) or verdict.definite:
                self._stale.keep(key, verdict, accepted=isinstance(verdict, Identity), expires_at=exp)
            else:
                self._stale.forget(key)
        return verdict

    def _kept_or_unavailable(self, key: bytes, claims: Mapping[str, Any], error: ReviewUnavailable) -> _Verdict:
        """With ``stale_if_error``, the verdict kept for ``key`` if its window is open; else unavailability."""
        kept = self._stale.recall(key, cause=error.cause) if self._stale is not None else None
        if kept is None:
            return _Refusal.unavailable(error)
        outcome = ACCEPTED if isinstance(kept, Identity) else kept.counted_as[0]
        self.counts.stale_served(outcome)
        log.warning("answering %s from a recent verdict while token reviews are unavailable (stale_if_error)", outcome)
        # Kept a second in the cache, so that an outage costs one review attempt per token per second.
        ttl = RECHECK_SECONDS
        exp = expiry_of(claims)
        if isinstance(kept, Identity) and exp is not None:
            ttl = min(ttl, exp - self._wall_clock())
        self._cache.put(key, kept, ttl=ttl)
        return kept

    async def _token_review(self, token: str) -> Mapping[str, Any]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        answer = await self._post(body)
        if answer.status == 401 and self._credentials.token_file is not None:
            self._api.token_changed_since_401()  # the kubelet may have rotated our own token: one more try
            answer = await self._post(body)
        return self._status_of(answer)

    async def _post(self, body: Mapping[str, Any]) -> Answer:
        self.reviews_sent += 1
        return await self._api.post_json(TOKENREVIEWS, body)

    def _status_of(self, answer: Answer) -> Mapping[str, Any]:
        source, server = self._credentials.source, self._credentials.server
        said = answer.body.get("message") if isinstance(answer.body, dict) else None
        said = f" (the API server said: {str(said)[:300]})" if said else ""
        if answer.status == 403:
            raise ReviewUnavailable(
                f"the reviewer's own credentials ({source}) lack the RBAC permission {PERMISSION}: bind the "
                f"ClusterRole {CLUSTER_ROLE} (manifests/audience-token) to the reviewer's identity{said}",
                cause="http_403",
            )
        if answer.status == 401:
            raise ReviewUnavailable(
                f"the API server at {server} refused the reviewer's own credentials ({source}) as invalid or "
                f"expired (401){said}",
                cause="http_401",
            )
        if answer.status in (429, 503) or answer.status >= 500:
            raise ReviewUnavailable(
                f"the API server at {server} answered {answer.status}{said}",
                retry_after=_seconds(answer.retry_after),
                cause=f"http_{answer.status}",
            )
        if 300 <= answer.status < 400:
            raise ReviewUnavailable(
                f"the API server at {server} answered {answer.status}, a redirect, to a TokenReview: a token review "
                "is never re-sent elsewhere; point the reviewer at the API server itself",
                cause="redirect",
            )
        if answer.status not in (200, 201):
            raise ReviewUnavailable(
                f"the API server at {server} answered {answer.status} to a TokenReview{said}",
                cause=f"http_{answer.status}",
            )
        status = answer.body.get("status") if isinstance(answer.body, dict) else None
        if not isinstance(status, dict) or answer.body.get("kind") != "TokenReview":
            raise ReviewUnavailable(
                f"the API server at {server} answered {answer.status} without a TokenReview", cause="bad_answer"
            )
        return status

    def _judge(self, status: Mapping[str, Any], claims: Mapping[str, Any]) -> _Verdict:
        """The verdict on a review's ``status``; the unverified claims only word a refusal."""
        policy = self.policy
        try:
            if status.get("authenticated") is not True:
                return self._not_authenticated(claims, status.get("error"))
            audiences = status.get("audiences")
            if not isinstance(audiences, list) or self.audience not in audiences:
                raise policy.reported_for_other_audiences(audiences)
            # The API server vouched for these very bytes, so their claims are the signed ones.
            policy.refuse_credential(claims.get("iss"))
            user = status.get("user")
            user = user if isinstance(user, dict) else {}
            account = policy.account_of(user.get("username"), as_what="the token authenticates")
            return policy.admit(Identity.from_review(account, user))
        except (Unauthenticated, NotAllowed) as refused:
            return _Refusal.of(refused)

    def _not_authenticated(self, claims: Mapping[str, Any], error: object) -> _Refusal:
        # The API server's verdict is final; the unverified claims and its error text only word the reason.
        # Refusals the token's own claims decide (its audience, its exp, its signature) are cached;
        # one that rests on the API server's error is not (see ReviewerSettings.failure_ttl).
        minted_for = audiences_of(claims)
        if self.audience not in minted_for:
            return _Refusal.of(self.policy.minted_for_another_audience(minted_for))
        exp = expiry_of(claims)
        now = self._wall_clock()
        if exp is not None and exp <= now:
            return _Refusal.of(self.policy.expired(now - exp))
        said = _api_error(error)
        if any(hint in said for hint in _FORGED):
            return _Refusal.of(self.policy.not_issued_here(f"the API server said: {said}"))
        return _Refusal.of(self.policy.revoked(said), definite=not said)


_FORGED: Final = ("cryptographic primitive", "signature", "issuer")
"""Words of kube-apiserver's errors for a token it cannot verify at all (not a contract: wording only)."""
_TOKENISH: Final = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}(?:\.[A-Za-z0-9_-]*)?")


def _api_error(error: object) -> str:
    """The API server's error text, cut short, with anything shaped like a token blanked out."""
    if not isinstance(error, str):
        return ""
    return _TOKENISH.sub("<redacted>", error)[:200]


_DIGITS: Final = re.compile(r"[0-9]+")


def _seconds(retry_after: str | None) -> int:
    """``Retry-After`` as whole seconds from 1 to 60; 1 for anything but ASCII digits (an HTTP date too).

    ``str.isdigit`` is not the test: it accepts superscripts and other scripts' digits that ``int``
    refuses or reads, and ``int`` of thousands of digits raises: so more than two digits, leading
    zeros aside ("007" is 7), is 60 without ``int``.
    """
    text = retry_after.strip() if retry_after else ""
    if not _DIGITS.fullmatch(text):
        return 1
    significant = text.lstrip("0")
    return 60 if len(significant) > 2 else max(1, min(int(significant or "0"), 60))
