"""The acceptance policy both verifiers apply, and every refusal, worded once.

A TokenReview and the offline verifier establish what a token says in two ways (the API server's
answer; a signature checked against the cluster's keys), then judge it the same way: this module.
Its rules, in the order a verifier meets them:

- the receiver's audience must be a service's own, never the Kubernetes API's (checked when built);
- a legacy Secret token, or a token whose issuer is the receiver's audience, is never accepted: the
  API server vouches for those only because the audience is its own;
- the token must be for the receiver's audience;
- its user (or subject) must be ``system:serviceaccount:NAMESPACE:NAME``;
- an ``allow`` pattern must name that service account.

Each refusal is a function returning a fresh exception, so both verifiers say the same thing in the
same words. Messages name what a token claims (its audiences, its issuer, its subject) through
:func:`~audience_token.shown.shown`, never the token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from audience_token.errors import (
    EXPIRED_OR_REVOKED,
    INVALID,
    NOT_A_SERVICE_ACCOUNT,
    WRONG_AUDIENCE,
    ConfigError,
    NotAllowed,
    Unauthenticated,
)
from audience_token.identity import (
    AUDIENCE_ANNOTATION,
    LEGACY_ISSUER,
    AllowList,
    Identity,
    parse_service_account_username,
    refuse_api_server_audience,
)
from audience_token.shown import shown, shown_list

RE_READ = "the caller must re-read its token file, which the kubelet rotates"


@dataclass(frozen=True, slots=True)
class Policy:
    """Who a receiver accepts: tokens for ``audience`` from the service accounts ``allow`` names."""

    audience: str
    allow: AllowList

    @classmethod
    def of(cls, audience: object, allow: AllowList | str | Iterable[str]) -> Policy:
        """The policy, or a ConfigError naming the setting that cannot work."""
        if not isinstance(audience, str) or not audience.strip() or not audience.isprintable():
            raise ConfigError("audience must be a non-empty printable string, such as 'secret-store'")
        refuse_api_server_audience(audience)
        return cls(audience, AllowList.parse(allow))

    # -- what the token is ------------------------------------------------------------------------

    def refuse_credential(self, issuer: object) -> None:
        """Unauthenticated for a legacy Secret token, or a token whose issuer is this receiver's audience."""
        self.refuse_legacy(issuer)
        if isinstance(issuer, str) and issuer.rstrip("/") == self.audience.rstrip("/"):
            raise self.audience_is_issuer()

    def refuse_legacy(self, issuer: object) -> None:
        """Unauthenticated for a legacy Secret token (issuer ``kubernetes/serviceaccount``, no audience)."""
        if issuer == LEGACY_ISSUER:
            raise Unauthenticated(
                f"the token is a legacy Secret token (issuer {LEGACY_ISSUER!r}), which has no audience: it is never "
                f"accepted for {self.audience!r}; {self._fix}",
                reason=WRONG_AUDIENCE,
            )

    def audience_is_issuer(self) -> Unauthenticated:
        return Unauthenticated(
            f"the receiver's audience {self.audience!r} is the cluster's service account issuer, which kube-apiserver "
            "treats as its own (--api-audiences defaults to it): every API credential of the cluster would pass for "
            "it. The receiver must use an audience of its own",
            reason=WRONG_AUDIENCE,
        )

    def minted_for_another_audience(self, minted_for: Sequence[str]) -> Unauthenticated:
        """The token's own ``aud`` does not hold this receiver's audience."""
        for_what = f"audience {shown_list(minted_for)}" if minted_for else "no audience (a legacy token?)"
        return Unauthenticated(
            f"the token is for {for_what}, not {self.audience!r}: {self._fix}", reason=WRONG_AUDIENCE
        )

    def reported_for_other_audiences(self, reported: object) -> Unauthenticated:
        """The API server authenticated the token, but ``status.audiences`` lacks this receiver's audience."""
        listed = shown_list(a for a in reported if isinstance(a, str)) if isinstance(reported, list) else "none"
        return Unauthenticated(
            f"the API server authenticated the token but not for audience {self.audience!r} "
            f"(it reported audiences {listed})",
            reason=WRONG_AUDIENCE,
        )

    @staticmethod
    def expired(seconds_ago: float | None = None) -> Unauthenticated:
        when = "has expired" if seconds_ago is None else f"expired {seconds_ago:.0f} s ago"
        return Unauthenticated(f"the token {when}: {RE_READ}", reason=EXPIRED_OR_REVOKED)

    @staticmethod
    def not_issued_here(detail: str) -> Unauthenticated:
        return Unauthenticated(f"the token was not issued by this cluster ({detail})", reason=INVALID)

    @staticmethod
    def revoked(said: str = "") -> Unauthenticated:
        """Not authenticated, and nothing more definite to say (``said``: the API server's error, if any)."""
        if not said:
            return Unauthenticated(
                "the API server did not authenticate the token: it was revoked (its Pod, Secret or ServiceAccount "
                "was deleted), or it was not issued by this cluster",
                reason=EXPIRED_OR_REVOKED,
            )
        return Unauthenticated(
            "the API server did not authenticate the token: it was revoked (its Pod, Secret or ServiceAccount "
            "was deleted), or the API server could not look them up just now, which it words the same; this "
            f"refusal is not remembered, so a retry asks again (the API server said: {said})",
            reason=EXPIRED_OR_REVOKED,
        )

    # -- who sent it --------------------------------------------------------------------------------

    def account_of(self, user: object, *, as_what: str) -> tuple[str, str]:
        """``(namespace, name)`` of a ``system:serviceaccount:NS:NAME`` user, or Unauthenticated saying what it is.

        ``as_what`` words where the name came from: "the token authenticates" (a review's user),
        "the token's subject" (the ``sub`` claim).
        """
        parsed = parse_service_account_username(user) if isinstance(user, str) else None
        if parsed is None:
            raise Unauthenticated(
                f"{as_what} {shown(user)}, which is not a service account (system:serviceaccount:NAMESPACE:NAME); "
                "send a Pod's audience token instead",
                reason=NOT_A_SERVICE_ACCOUNT,
            )
        return parsed

    def admit(self, identity: Identity) -> Identity:
        """``identity`` when ``allow`` names it; NotAllowed (carrying it) when not. The allow list is not shown."""
        if not self.allow.allows(identity):
            raise NotAllowed(
                f"service account {identity.namespace}/{identity.service_account} is authenticated but not allowed "
                f"to call {self.audience!r}: the receiver's allow list does not name it",
                identity=identity,
            )
        return identity

    @property
    def _fix(self) -> str:
        return (
            f"the caller's Pod must be given a token for audience {self.audience!r} "
            f"(annotation {AUDIENCE_ANNOTATION}: {self.audience})"
        )
