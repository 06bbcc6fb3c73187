"""Reads a Pod's token-projector annotations into a ``TokenSpec``, or refuses them with a reason.

Every refusal names the annotation, the value it had and what is allowed, because the person
reading it is an application developer looking at ``kubectl`` output, not at our code.
"""

import re
from typing import NamedTuple

from webhook.core.contract import AUDIENCE_KEY, EXPIRATION_KEY, SKIP_CONTAINERS_KEY, Contract
from webhook.core.kubernetes import MIN_EXPIRATION_SECONDS
from webhook.core.messages import invalid, shown

_DIGITS = re.compile(r"[0-9]+")
_MAX_DIGITS = 20
_NONE_SKIPPED: frozenset[str] = frozenset()


class TokenSpec(NamedTuple):
    """What one annotated Pod asked for (a NamedTuple for the reason ``review.Reviewed`` is one)."""

    audience: str
    expiration_seconds: int
    skip_containers: frozenset[str]


def read_token_spec(annotations: dict[str, str], contract: Contract) -> TokenSpec | None:
    """The Pod's request, ``None`` when it did not opt in; raises ``Denied`` for a bad value."""
    audience_key = contract.annotation(AUDIENCE_KEY)
    if audience_key not in annotations:
        return None
    audience = annotations[audience_key]
    if not audience.strip():
        # An empty audience does not fail at the API server: it silently mints a token for the
        # API server's own audiences, i.e. a Kubernetes API credential. Never let that through.
        raise invalid(
            f"annotation {audience_key} is empty; it must name the audience that will verify the "
            f"token, e.g. {audience_key}: data-store (an empty audience would yield a Kubernetes API credential)"
        )
    if audience != audience.strip():
        raise invalid(
            f"annotation {audience_key} is {shown(audience)}, with leading or trailing white space; "
            f"use {shown(audience.strip())}: a token's audience must match the verifier's exactly"
        )
    if audience in contract.denied_audiences:
        raise invalid(
            f"annotation {audience_key} is {audience!r}, an audience of the Kubernetes API server "
            f"itself, which this cluster does not allow (denied: {', '.join(contract.denied_audiences)}); "
            "name your own service's audience instead"
        )
    return TokenSpec(
        audience=audience,
        expiration_seconds=_expiration(annotations, contract),
        skip_containers=_skipped(annotations, contract),
    )


def unknown_annotations(annotations: dict[str, str], contract: Contract) -> list[str]:
    """Annotations under our prefix that we do not know: most likely typos that would be ignored."""
    prefix, known = contract.annotation_prefix + "/", contract.known_annotations
    return sorted([key for key in annotations if key.startswith(prefix) and key not in known])


def _expiration(annotations: dict[str, str], contract: Contract) -> int:
    key = contract.annotation(EXPIRATION_KEY)
    raw = annotations.get(key)
    if raw is None:
        return contract.default_expiration_seconds
    allowed = f"a whole number of seconds from {MIN_EXPIRATION_SECONDS} to {contract.max_expiration_seconds}"
    if not _DIGITS.fullmatch(raw):
        raise invalid(f"annotation {key} is {shown(raw)}, which is not a whole number; it must be {allowed}")
    # Length first: CPython refuses int() on strings of over 4300 digits, and no lifetime needs 20.
    value = int(raw) if len(raw) <= _MAX_DIGITS else None
    if value is None or not MIN_EXPIRATION_SECONDS <= value <= contract.max_expiration_seconds:
        low = value is not None and value < MIN_EXPIRATION_SECONDS
        why = "the API server's minimum" if low else "this cluster's maximum"
        display = raw if value is not None else shown(raw)
        raise invalid(f"annotation {key} is {display}, outside {why}; it must be {allowed}")
    return value


def _skipped(annotations: dict[str, str], contract: Contract) -> frozenset[str]:
    raw = annotations.get(contract.annotation(SKIP_CONTAINERS_KEY))
    if not raw:
        return _NONE_SKIPPED
    return frozenset(name.strip() for name in raw.split(",") if name.strip())
