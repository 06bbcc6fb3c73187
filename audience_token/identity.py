"""Who a verified token belongs to, and which callers a receiver lets in.

Both verifiers (TokenReview and offline) end in the same two steps: turn what the cluster vouched for
into an ``Identity``, then match it against the receiver's ``AllowList``. Keeping those here means the
two modes cannot drift apart on what a service account name is or what ``api/*`` means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from audience_token.errors import ConfigError

SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
AUDIENCE_ANNOTATION: Final = "token-projector.io/audience"
"""The Pod annotation by which the webhook (default prefix) projects a token for an audience; messages name it."""
LEGACY_ISSUER: Final = "kubernetes/serviceaccount"
"""The issuer of the never-expiring tokens kept in ``kubernetes.io/service-account-token`` Secrets."""
WILDCARD: Final = "*"

API_SERVER_AUDIENCES: Final = frozenset(
    {
        "https://kubernetes.default.svc",
        "https://kubernetes.default.svc.cluster.local",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
)
"""The Kubernetes API's own audiences (the webhook's ``denied_audiences``); kube-apiserver's
``--api-audiences`` defaults to its issuer, which is usually the first of them."""


def api_server_audience(audience: str) -> bool:
    """True for an audience of the Kubernetes API itself (``kubernetes.default.svc`` and its longer names).

    kube-apiserver vouches for audience-agnostic credentials (legacy Secret tokens, and ordinary API
    tokens) for exactly those audiences, so a receiver that checks one accepts every credential of the
    cluster: it is refused when a verifier is built, as the webhook refuses it at admission.
    """
    name = audience.strip().rstrip("/").lower()
    return name in API_SERVER_AUDIENCES or name.startswith(
        ("https://kubernetes.default.svc.", "kubernetes.default.svc.")
    )


def refuse_api_server_audience(audience: str) -> None:
    """ConfigError when ``audience`` is the Kubernetes API's own (see :func:`api_server_audience`)."""
    if api_server_audience(audience):
        raise ConfigError(
            f"audience {audience!r} is the Kubernetes API's own: kube-apiserver vouches for legacy Secret tokens and "
            "ordinary API credentials for it, so every credential of the cluster would pass. Give the service an "
            "audience of its own, such as 'secret-store'"
        )


# The keys kube-apiserver puts in a TokenReview's status.user.extra for a Pod-bound token.
EXTRA_POD_NAME: Final = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID: Final = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME: Final = "authentication.kubernetes.io/node-name"
EXTRA_NODE_UID: Final = "authentication.kubernetes.io/node-uid"
EXTRA_CREDENTIAL_ID: Final = "authentication.kubernetes.io/credential-id"

# Kubernetes' own rules: a namespace is a DNS-1123 label, a ServiceAccount name a DNS-1123 subdomain.
_LABEL: Final = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_NAMESPACE = re.compile(_LABEL)
_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SUBDOMAIN_MAX = 253
_SHOWN = 80


def is_namespace(value: str) -> bool:
    return _NAMESPACE.fullmatch(value) is not None


def is_service_account_name(value: str) -> bool:
    return len(value) <= _SUBDOMAIN_MAX and _SUBDOMAIN.fullmatch(value) is not None


def parse_service_account_username(username: str) -> tuple[str, str] | None:
    """``(namespace, name)`` of ``system:serviceaccount:NS:NAME``, or None for any other kind of user."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    parts = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
    if len(parts) != 2 or not is_namespace(parts[0]) or not is_service_account_name(parts[1]):
        return None
    return parts[0], parts[1]


def _shown(value: str) -> str:
    return repr(value) if len(value) <= _SHOWN else f"{value[:_SHOWN]!r}... ({len(value)} characters)"


_NO_EXTRA: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Identity:
    """A service account the cluster vouched for, with the Pod (and node) its token is bound to, if any."""

    namespace: str
    service_account: str
    uid: str = ""
    """The ServiceAccount object's uid: a deleted and re-created account with the same name differs."""
    pod_name: str | None = None
    pod_uid: str | None = None
    node_name: str | None = None
    node_uid: str | None = None
    credential_id: str | None = None
    """The token's ``jti`` as the API server reports it, for audit logs; not a secret."""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _NO_EXTRA, hash=False)

    @property
    def username(self) -> str:
        return f"{SERVICE_ACCOUNT_PREFIX}{self.namespace}:{self.service_account}"

    def __str__(self) -> str:
        pod = f" (pod {self.namespace}/{self.pod_name})" if self.pod_name else ""
        return f"{self.namespace}/{self.service_account}{pod}"

    @classmethod
    def from_user_info(cls, user: Mapping[str, object]) -> Identity | None:
        """The identity in a TokenReview's ``status.user``; None when it is not a service account."""
        username = user.get("username")
        parsed = parse_service_account_username(username) if isinstance(username, str) else None
        return None if parsed is None else cls.from_review(parsed, user)

    @classmethod
    def from_review(cls, account: tuple[str, str], user: Mapping[str, object]) -> Identity:
        """The identity of ``account`` (namespace, name) with the uid, groups and extra of a review's ``user``."""
        uid = user.get("uid")
        raw_groups = user.get("groups")
        groups = tuple(g for g in raw_groups if isinstance(g, str)) if isinstance(raw_groups, list) else ()
        return cls.with_extra(
            account, uid=uid if isinstance(uid, str) else "", groups=groups, extra=_extra(user.get("extra"))
        )

    @classmethod
    def with_extra(
        cls,
        account: tuple[str, str],
        *,
        uid: str,
        groups: tuple[str, ...],
        extra: Mapping[str, tuple[str, ...]],
    ) -> Identity:
        """The identity of ``account`` (namespace, name); the Pod, node and credential id read from ``extra``."""

        def first(key: str) -> str | None:
            values = extra.get(key, ())
            return values[0] if values else None

        return cls(
            namespace=account[0],
            service_account=account[1],
            uid=uid,
            pod_name=first(EXTRA_POD_NAME),
            pod_uid=first(EXTRA_POD_UID),
            node_name=first(EXTRA_NODE_NAME),
            node_uid=first(EXTRA_NODE_UID),
            credential_id=first(EXTRA_CREDENTIAL_ID),
            groups=groups,
            extra=extra,
        )


def _extra(raw: object) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        return _NO_EXTRA
    extra = {
        key: tuple(v for v in values if isinstance(v, str))
        for key, values in raw.items()
        if isinstance(key, str) and isinstance(values, list)
    }
    return MappingProxyType(extra)


@dataclass(frozen=True, slots=True)
class AllowPattern:
    """``NAMESPACE/SERVICEACCOUNT``; either part may be ``*`` (the whole part, not a glob)."""

    namespace: str
    service_account: str

    @classmethod
    def parse(cls, text: str) -> AllowPattern:
        if not isinstance(text, str):
            raise ConfigError(f"an allow pattern must be a string like 'api/api', not {type(text).__name__}")
        parts = text.strip().split("/")
        if len(parts) != 2:
            raise ConfigError(
                f"allow pattern {_shown(text)} must be NAMESPACE/SERVICEACCOUNT, such as 'api/api' or 'api/*'"
            )
        namespace, name = parts
        if namespace != WILDCARD and not is_namespace(namespace):
            raise ConfigError(
                f"allow pattern {_shown(text)}: {_shown(namespace)} is neither '*' nor a namespace name "
                "(lowercase letters, digits and '-', at most 63 characters)"
            )
        if name != WILDCARD and not is_service_account_name(name):
            raise ConfigError(
                f"allow pattern {_shown(text)}: {_shown(name)} is neither '*' nor a ServiceAccount name "
                "(a DNS subdomain: lowercase letters, digits, '-' and '.')"
            )
        return cls(namespace, name)

    def matches(self, namespace: str, service_account: str) -> bool:
        return self.namespace in (WILDCARD, namespace) and self.service_account in (WILDCARD, service_account)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}"


@dataclass(frozen=True, slots=True)
class AllowList:
    """The service accounts a receiver accepts; never empty, so "everyone" has to be written ``*/*``."""

    patterns: tuple[AllowPattern, ...]

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ConfigError(
                "allow is empty: list the callers to accept as NAMESPACE/SERVICEACCOUNT patterns "
                "(e.g. ['api/api']); write '*/*' to accept every service account of the cluster"
            )

    @classmethod
    def parse(cls, allow: AllowList | str | Iterable[str]) -> AllowList:
        """An AllowList from one pattern, several, or an AllowList; raises ConfigError naming the bad one."""
        if isinstance(allow, AllowList):
            return allow
        if allow is None:
            return cls(())
        items = [allow] if isinstance(allow, str) else list(allow)
        return cls(tuple(AllowPattern.parse(item) for item in items))

    def allows(self, identity: Identity) -> bool:
        return any(p.matches(identity.namespace, identity.service_account) for p in self.patterns)

    def __str__(self) -> str:
        return ", ".join(str(p) for p in self.patterns)
