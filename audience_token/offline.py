"""OfflineVerifier: check a token against the cluster's published keys, with no API call per request.

kube-apiserver publishes its service account issuer discovery: ``/.well-known/openid-configuration``
(the ``issuer`` and a ``jwks_uri``) and the public keys at ``/openid/v1/jwks``. With those keys a
receiver can check a token by itself: the signature, ``iss``, that ``aud`` holds its own audience,
``exp``/``nbf``/``iat`` (with a small leeway), that ``sub`` is a service account, then the same ``allow``
rule and the same :class:`~audience_token.identity.Identity` as :class:`~audience_token.TokenReviewer`,
built from the token's ``kubernetes.io`` claims.

What that gives up: the API server is never asked, so a token stays valid until its ``exp`` after its
Pod, Secret or ServiceAccount is deleted (TokenReview notices within seconds). See
docs/audience-token-offline.md.

Where the keys come from, and how often they are fetched: :mod:`audience_token.jwks`.

JOSE: PyJWT (the ``offline`` extra, ``PyJWT[crypto]``): the most used Python JWT library, typed,
maintained, and built on ``cryptography``, which the rest of this project already trusts. Keys are
bound to their own algorithm (RS256/ES256/ES384/ES512 only; never a symmetric or ``none`` algorithm).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from audience_token.counts import ACCEPTED, NOT_ALLOWED, REVIEW_UNAVAILABLE, UNAUTHENTICATED, UNAVAILABLE, Counts
from audience_token.errors import (
    INVALID,
    MALFORMED,
    ConfigError,
    NotAllowed,
    Unauthenticated,
    VerificationError,
    unexpected,
)
from audience_token.identity import (
    EXTRA_CREDENTIAL_ID,
    EXTRA_NODE_NAME,
    EXTRA_NODE_UID,
    EXTRA_POD_NAME,
    EXTRA_POD_UID,
    AllowList,
    Identity,
)
from audience_token.jwks import ALGORITHMS, KeySet, KeySource, import_jwt
from audience_token.kube import Credentials
from audience_token.policy import Policy
from audience_token.precheck import audiences_of, check_length, precheck
from audience_token.shown import shown
from audience_token.stale_tokens import StaleTokenWatch

REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub")


@dataclass(frozen=True, slots=True)
class OfflineSettings:
    """Clock tolerance, key refresh and network bounds, in seconds."""

    leeway: float = 30.0
    """Tolerated clock difference for ``exp``, ``nbf`` and ``iat``."""
    refresh_every: float = 300.0
    """The keys are fetched again this often, so a key the cluster stops publishing stops working."""
    min_refresh_interval: float = 30.0
    """At most one fetch this often, however many tokens name an unknown key (``kid``)."""
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.leeway <= 300:
            raise ConfigError(f"leeway must be 0 to 300 seconds, not {self.leeway}")
        if self.timeout <= 0 or self.min_refresh_interval < 0 or self.refresh_every < self.min_refresh_interval:
            raise ConfigError("timeout must be over 0 s and refresh_every at least min_refresh_interval (>= 0 s)")


class OfflineVerifier:
    """Verifies bearer tokens for ``audience`` from the cluster's published keys; ``allow`` is required.

    Keys from the API server: in-cluster by default, or ``kubeconfig=PATH`` (``context=``), or
    ``credentials=``. From the issuer URL itself: ``issuer=URL`` alone. With both, ``issuer`` must be
    what the API server publishes. Use ``async with`` or ``await close()``.

    ``clock`` (monotonic) paces key refreshes; ``wall_clock`` (seconds since the epoch) is what the
    stale-token watch compares a token's refresh point with, as ``TokenReviewer``'s. (``exp``, ``nbf``
    and ``iat`` are checked by PyJWT against the system clock.)
    """

    def __init__(
        self,
        audience: str,
        *,
        allow: AllowList | str | Iterable[str],
        issuer: str | None = None,
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        credentials: Credentials | None = None,
        settings: OfflineSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._jwt: Any = import_jwt()  # first: a missing extra is the one error worth reporting
        self.policy = Policy.of(audience, allow)
        if isinstance(issuer, str) and issuer.rstrip("/") == self.policy.audience.rstrip("/"):
            raise ConfigError(
                f"audience {audience!r} is the cluster's issuer, which kube-apiserver treats as its own audience: "
                "every API credential of the cluster would pass. Give the service an audience of its own"
            )
        if issuer is not None and (not isinstance(issuer, str) or not issuer.startswith("https://")):
            raise ConfigError(f"issuer must be the https:// URL the cluster's tokens carry in 'iss', not {issuer!r}")
        self.audience: str = self.policy.audience
        self.allow = self.policy.allow
        self.settings = settings or OfflineSettings()
        self.issuer = issuer.rstrip("/") if issuer else None
        if credentials is None and kubeconfig is not None:
            credentials = Credentials.from_kubeconfig(kubeconfig, context=context)
        elif credentials is None and issuer is None:
            credentials = Credentials.in_cluster()
        self._keys = KeySource(
            credentials=credentials,
            issuer=self.issuer,
            refresh_every=self.settings.refresh_every,
            min_refresh_interval=self.settings.min_refresh_interval,
            timeout=self.settings.timeout,
            clock=clock,
        )
        self.counts = Counts()
        """What this verifier answered: ``audience_token.metrics.register(verifier)`` shows it."""
        self._stale_tokens = StaleTokenWatch(counts=self.counts, wall_clock=wall_clock)

    @property
    def source(self) -> str:
        """Where the keys come from, for messages."""
        return self._keys.source

    @property
    def fetches(self) -> int:
        """Key fetches so far: what the rate limit saves shows here."""
        return self._keys.fetches

    def __repr__(self) -> str:
        return f"OfflineVerifier({self.audience!r}, allow={str(self.allow)!r}, keys from {self.source})"

    async def verify(self, token: str) -> Identity:
        """The caller's Identity, or raises Unauthenticated, NotAllowed or ReviewUnavailable."""
        counts = self.counts
        try:
            identity = await self._verify(token)
        except Unauthenticated as refused:
            counts.verdict(UNAUTHENTICATED, refused.reason)
            raise
        except NotAllowed:
            counts.verdict(NOT_ALLOWED, NOT_ALLOWED)
            raise
        except VerificationError:
            counts.verdict(UNAVAILABLE, REVIEW_UNAVAILABLE)
            raise
        except Exception as error:  # a defect must become a verdict, never a 500 (issue 25, item 1)
            counts.verdict(UNAVAILABLE, REVIEW_UNAVAILABLE)
            raise unexpected(error) from None
        counts.verdict(ACCEPTED)
        return identity

    async def _verify(self, token: str) -> Identity:
        check_length(token)
        claims = precheck(token)
        self.policy.refuse_legacy(claims.get("iss"))  # before any key is fetched for it
        try:
            header = self._jwt.get_unverified_header(token)
        except self._jwt.PyJWTError:
            raise Unauthenticated(
                "the bearer value is not a service account token: bad JWT header", reason=MALFORMED
            ) from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(
                f"the token is signed with {shown(algorithm)}; service account tokens use one of {sorted(ALGORITHMS)}",
                reason=INVALID,
            )
        keyset = await self._keys.keys(kid if isinstance(kid, str) else None)
        if keyset.issuer.rstrip("/") == self.audience.rstrip("/"):
            raise self.policy.audience_is_issuer()
        payload = self._decode(token, keyset, algorithm=algorithm, kid=kid, claims=claims)
        identity = self._admit(payload)
        self._stale_tokens.observe(identity, payload)  # verified claims: iat and exp are the cluster's
        return identity

    async def close(self) -> None:
        await self._keys.close()

    async def __aenter__(self) -> OfflineVerifier:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- one token ----------------------------------------------------------------------------------

    def _decode(
        self, token: str, keyset: KeySet, *, algorithm: str, kid: object, claims: Mapping[str, Any]
    ) -> dict[str, Any]:
        if isinstance(kid, str):
            candidates = [keyset.keys[kid]] if kid in keyset.keys else []
        else:
            candidates = [k for k in keyset.keys.values() if k.algorithm_name == algorithm]
        if not candidates:
            raise Unauthenticated(
                f"the token is signed by a key {self.source} does not publish: it was not issued by this "
                "cluster, or its signing key was retired",
                reason=INVALID,
            )
        jwt = self._jwt
        for key in candidates:
            try:
                payload: dict[str, Any] = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm_name],
                    audience=self.audience,
                    issuer=keyset.issuer,
                    leeway=self.settings.leeway,
                    options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
                )
                return payload
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise self._refusal(error, keyset=keyset, claims=claims) from None
        raise Unauthenticated(
            f"the token's signature does not verify with the keys of {self.source}: it was not issued by this "
            "cluster, or it was altered",
            reason=INVALID,
        )

    def _refusal(self, error: Exception, *, keyset: KeySet, claims: Mapping[str, Any]) -> Unauthenticated:
        jwt = self._jwt
        if isinstance(error, jwt.ExpiredSignatureError):
            return self.policy.expired()
        if isinstance(error, jwt.InvalidAudienceError):
            return self.policy.minted_for_another_audience(audiences_of(claims))
        if isinstance(error, jwt.InvalidIssuerError):
            return self.policy.not_issued_here(f"its issuer is {shown(claims.get('iss'))}, not {keyset.issuer!r}")
        if isinstance(error, jwt.ImmatureSignatureError):
            return Unauthenticated(
                "the token is not valid yet (its iat or nbf is in the future): check the clocks", reason=INVALID
            )
        if isinstance(error, jwt.MissingRequiredClaimError):
            return Unauthenticated(
                f"the token has no {error.claim!r} claim, which every projected service account token has",
                reason=INVALID,
            )
        return Unauthenticated("the token's claims are not those of a service account token", reason=INVALID)

    def _admit(self, payload: Mapping[str, Any]) -> Identity:
        parsed = self.policy.account_of(payload.get("sub"), as_what="the token's subject is")
        identity = _identity(parsed, payload)
        if identity is None:
            raise Unauthenticated(
                "the token's kubernetes.io claims do not name the service account of its subject", reason=INVALID
            )
        return self.policy.admit(identity)


def _identity(parsed: tuple[str, str], payload: Mapping[str, Any]) -> Identity | None:
    """The Identity a TokenReview would report for these (verified) claims, or None if they disagree."""
    namespace, name = parsed
    k8s = _object(payload.get("kubernetes.io"))
    account = _object(k8s.get("serviceaccount"))
    if k8s.get("namespace") != namespace or account.get("name") != name:
        return None
    pod, node = _object(k8s.get("pod")), _object(k8s.get("node"))
    jti = payload.get("jti")
    extra: dict[str, tuple[str, ...]] = {}
    for key, value in (
        (EXTRA_POD_NAME, pod.get("name")),
        (EXTRA_POD_UID, pod.get("uid")),
        (EXTRA_NODE_NAME, node.get("name")),
        (EXTRA_NODE_UID, node.get("uid")),
        # kube-apiserver reports the token's jti this way in a TokenReview's user.extra.
        (EXTRA_CREDENTIAL_ID, f"JTI={jti}" if isinstance(jti, str) and jti else None),
    ):
        if isinstance(value, str) and value:
            extra[key] = (value,)
    uid = account.get("uid")
    return Identity.with_extra(
        parsed,
        uid=uid if isinstance(uid, str) else "",
        groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        extra=MappingProxyType(extra),
    )


def _object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
