"""Read what a token claims WITHOUT verifying it, to answer "why is my token refused?".

Nothing here checks a signature: a summary says what the token *claims* (issuer, audiences, subject,
the Pod and node it is bound to, its times), which is what a person needs to see a wrong audience,
an expired token, a legacy Secret token or an API-server credential sent by mistake. Never use it to
decide whether to trust a token; that is ``TokenReviewer`` or ``OfflineVerifier``.

A summary holds claims only: the signature and the token itself are never kept or shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from audience_token.identity import API_SERVER_AUDIENCES as _API_AUDIENCES
from audience_token.identity import AUDIENCE_ANNOTATION, LEGACY_ISSUER, SERVICE_ACCOUNT_PREFIX
from audience_token.precheck import NotAJwt, decode_unverified

__all__ = ["API_SERVER_AUDIENCES", "NotAJwt", "Summary", "decode_unverified", "render", "strip_bearer", "summarize"]

API_SERVER_AUDIENCES: Final = _API_AUDIENCES | {"api"}
"""Audiences kube-apiserver is commonly started with (``--api-audiences``; it defaults to the issuer).

A token for one of them, or for its own issuer, is a credential for the Kubernetes API itself.
"""

_LEGACY_CLAIM: Final = "kubernetes.io/serviceaccount/"

Kind = Literal["projected", "legacy", "api-server"]


@dataclass(frozen=True)
class Summary:
    """What a token claims, unverified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    kind: Kind
    issuer: str | None
    audiences: tuple[str, ...]
    subject: str | None
    namespace: str | None = None
    service_account: str | None = None
    service_account_uid: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    node_name: str | None = None
    secret_name: str | None = None
    token_id: str | None = None
    issued_at: datetime | None = None
    not_before: datetime | None = None
    expires_at: datetime | None = None
    notes: tuple[str, ...] = field(default=())
    """Plain sentences about what is unusual: legacy, API credential, expired, not yet valid."""

    def seconds_left(self, now: datetime) -> float | None:
        return None if self.expires_at is None else (self.expires_at - now).total_seconds()


def strip_bearer(text: str) -> str:
    """The token in ``text``, which may be a pasted ``Authorization: Bearer …`` line."""
    value = text.strip()
    for prefix in ("authorization:", "bearer "):
        if value[: len(prefix)].lower() == prefix:
            value = value[len(prefix) :].strip()
    return value


def summarize(
    token: str, *, now: datetime | None = None, api_audiences: Iterable[str] = API_SERVER_AUDIENCES
) -> Summary:
    """A :class:`Summary` of ``token`` (unverified); raises :class:`NotAJwt` if it is not a JWT."""
    header, claims = decode_unverified(strip_bearer(token))
    now = now or datetime.now(UTC)
    issuer = _str(claims.get("iss"))
    audiences = _audiences(claims.get("aud"))
    subject = _str(claims.get("sub"))
    k8s = claims.get("kubernetes.io")
    k8s = k8s if isinstance(k8s, dict) else {}
    namespace = _str(k8s.get("namespace")) or _str(claims.get(_LEGACY_CLAIM + "namespace"))
    account = _object(k8s.get("serviceaccount"))
    pod = _object(k8s.get("pod"))
    node = _object(k8s.get("node"))
    expires_at = _time(claims.get("exp"))
    not_before = _time(claims.get("nbf"))
    legacy = issuer == LEGACY_ISSUER
    api_server = bool(set(audiences) & (set(api_audiences) | ({issuer} if issuer else set())))
    kind: Kind = "legacy" if legacy else "api-server" if api_server else "projected"
    return Summary(
        header=header,
        claims=claims,
        kind=kind,
        issuer=issuer,
        audiences=audiences,
        subject=subject,
        namespace=namespace,
        service_account=_str(account.get("name")) or _str(claims.get(_LEGACY_CLAIM + "service-account.name")),
        service_account_uid=_str(account.get("uid")) or _str(claims.get(_LEGACY_CLAIM + "service-account.uid")),
        pod_name=_str(pod.get("name")),
        pod_uid=_str(pod.get("uid")),
        node_name=_str(node.get("name")),
        secret_name=_str(_object(k8s.get("secret")).get("name")) or _str(claims.get(_LEGACY_CLAIM + "secret.name")),
        token_id=_str(claims.get("jti")),
        issued_at=_time(claims.get("iat")),
        not_before=not_before,
        expires_at=expires_at,
        notes=_notes(kind, subject=subject, expires_at=expires_at, not_before=not_before, now=now),
    )


def _notes(
    kind: Kind, *, subject: str | None, expires_at: datetime | None, not_before: datetime | None, now: datetime
) -> tuple[str, ...]:
    notes: list[str] = []
    if kind == "legacy":
        notes.append(
            "This is a LEGACY token from a kubernetes.io/service-account-token Secret: issuer "
            f"{LEGACY_ISSUER!r}, no audience"
            + (", no expiry" if expires_at is None else "")
            + ". Any service that trusts the cluster accepts it, until the Secret is deleted. "
            f"Annotate the Pod {AUDIENCE_ANNOTATION} and send the projected token instead."
        )
    elif kind == "api-server":
        notes.append(
            "This is an API-server credential: its audience is the Kubernetes API's own, so it works against "
            "kube-apiserver and a receiver that checks its own audience refuses it. Send the token from the "
            "file named by $SERVICE_ACCOUNT_TOKEN_PATH (the projected one), not "
            "/var/run/secrets/kubernetes.io/serviceaccount/token."
        )
    if expires_at is None and kind != "legacy":
        notes.append("It has no expiry (exp): projected service account tokens always have one.")
    elif expires_at is not None and expires_at <= now:
        notes.append("It has EXPIRED: a receiver refuses it. The kubelet rotates a projected token; re-read the file.")
    if not_before is not None and not_before > now:
        notes.append("It is not valid yet (nbf is in the future): check the clocks.")
    if subject is not None and not subject.startswith(SERVICE_ACCOUNT_PREFIX):
        notes.append(f"Its subject is not a service account ({SERVICE_ACCOUNT_PREFIX}NS:NAME).")
    return tuple(notes)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _audiences(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(a for a in value if isinstance(a, str))
    return ()


def _time(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def duration(seconds: float) -> str:
    """``1h 02m 03s`` style, for the time left or since."""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (control bytes, ANSI escapes, bidi overrides)
    written as a Python escape, so that a claim cannot move the cursor, recolour or rewrite other lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render(summary: Summary, *, now: datetime) -> str:
    """The summary as lines a person reads; never the signature, never the token. Every value from the
    token is passed through :func:`printable`: its claims are whatever its maker wrote."""

    def when(moment: datetime | None) -> str:
        return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    rows: list[tuple[str, str]] = [
        (
            "kind",
            {
                "projected": "projected service account token",
                "legacy": "legacy Secret token",
                "api-server": "Kubernetes API credential",
            }[summary.kind],
        ),
        ("issuer", summary.issuer or "-"),
        ("audiences", ", ".join(summary.audiences) or "- (none)"),
        ("subject", summary.subject or "-"),
    ]
    if summary.namespace or summary.service_account:
        account = f"{summary.namespace or '?'}/{summary.service_account or '?'}"
        rows.append(
            (
                "service account",
                account + (f" (uid {summary.service_account_uid})" if summary.service_account_uid else ""),
            )
        )
    if summary.pod_name:
        rows.append(("bound to Pod", summary.pod_name + (f" (uid {summary.pod_uid})" if summary.pod_uid else "")))
    if summary.secret_name:
        rows.append(("bound to Secret", summary.secret_name))
    if summary.node_name:
        rows.append(("on node", summary.node_name))
    rows.append(("issued at", when(summary.issued_at)))
    if summary.not_before is not None and summary.not_before != summary.issued_at:
        rows.append(("not before", when(summary.not_before)))
    left = summary.seconds_left(now)
    if left is None:
        rows.append(("expires", "never (no exp claim)"))
    elif left > 0:
        rows.append(("expires at", f"{when(summary.expires_at)} (in {duration(left)})"))
    else:
        rows.append(("expires at", f"{when(summary.expires_at)} (EXPIRED {duration(left)} ago)"))
    if summary.issued_at is not None and summary.expires_at is not None and summary.expires_at > summary.issued_at:
        rows.append(("lifetime", duration((summary.expires_at - summary.issued_at).total_seconds())))
    if summary.token_id:
        rows.append(("token id (jti)", summary.token_id))
    algorithm, key = _str(summary.header.get("alg")), _str(summary.header.get("kid"))
    rows.append(("signed with", f"{algorithm or '?'}" + (f", key id {key}" if key else "")))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name + ':':<{width + 1}} {printable(value)}" for name, value in rows]
    if summary.notes:
        lines += ["", *summary.notes]
    lines.append("(decoded without verifying the signature: this says what the token claims, not that it is valid)")
    return "\n".join(lines)
