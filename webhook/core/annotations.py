"""Reads a Pod's token-projector annotations into a ``TokenSpec``, or refuses them with a reason.

Every refusal names the annotation, the value it had and what is allowed, because the person
reading it is an application developer looking at ``kubectl`` output, not at our code.

The audience annotation holds one audience or a comma-separated list (white space after a comma
is allowed). A value without a comma is read exactly as it always was; a list is read element by
element with the same rules, then as a whole: no duplicate, no more than ``max_audiences``, and
token files that do not collide (the file rule is ``contract.audience_file_name``).
"""

import re
from fnmatch import fnmatchcase
from typing import NamedTuple

from webhook.core.contract import (
    AUDIENCE_KEY,
    EXPIRATION_KEY,
    MAX_FILE_NAME_BYTES,
    SKIP_CONTAINERS_KEY,
    Contract,
)
from webhook.core.kubernetes import MIN_EXPIRATION_SECONDS
from webhook.core.messages import invalid, shown
from webhook.errors import Denied

_DIGITS = re.compile(r"[0-9]+")
_MAX_DIGITS = 20
_NONE_SKIPPED: frozenset[str] = frozenset()


class TokenSpec(NamedTuple):
    """What one annotated Pod asked for (a NamedTuple for the reason ``review.Reviewed`` is one)."""

    audiences: tuple[str, ...]
    """One token per audience, in the Pod's order; never empty. The first is the primary."""
    expiration_seconds: int
    skip_containers: frozenset[str]


def read_token_spec(annotations: dict[str, str], contract: Contract) -> TokenSpec | None:
    """The Pod's request, ``None`` when it did not opt in; raises ``Denied`` for a bad value."""
    audience_key = contract.annotation(AUDIENCE_KEY)
    if audience_key not in annotations:
        return None
    value = annotations[audience_key]
    if "," in value:
        audiences = _audience_list(value, key=audience_key, contract=contract)
    else:
        check_audience(value, key=audience_key, contract=contract)
        audiences = (value,)
    return TokenSpec(
        audiences=audiences,
        expiration_seconds=_expiration(annotations, contract),
        skip_containers=_skipped(annotations, contract),
    )


def unknown_annotations(annotations: dict[str, str], contract: Contract) -> list[str]:
    """Annotations under our prefix that we do not know: most likely typos that would be ignored."""
    prefix, known = contract.annotation_prefix + "/", contract.known_annotations
    return sorted([key for key in annotations if key.startswith(prefix) and key not in known])


def check_audience(audience: str, *, key: str, contract: Contract) -> None:
    """The rules for one audience, said as they always were for an annotation that holds one."""
    if not audience.strip():
        # An empty audience does not fail at the API server: it silently mints a token for the
        # API server's own audiences, i.e. a Kubernetes API credential. Never let that through.
        raise invalid(
            f"annotation {key} is empty; it must name the audience that will verify the "
            f"token, e.g. {key}: data-store (an empty audience would yield a Kubernetes API credential)"
        )
    if audience != audience.strip():
        raise invalid(
            f"annotation {key} is {shown(audience)}, with leading or trailing white space; "
            f"use {shown(audience.strip())}: a token's audience must match the verifier's exactly"
        )
    if audience in contract.denied_audiences:
        raise _api_server_audience(f"annotation {key} is {audience!r}, an audience", contract)
    if contract.allowed_audiences and not _allowed(audience, contract):
        raise _not_allowed(f"annotation {key} is {shown(audience)}, which is not an audience", contract)


def _audience_list(value: str, *, key: str, contract: Contract) -> tuple[str, ...]:
    """The audiences of a comma-separated list, each checked, then the list as a whole."""
    # Counted before anything else, so that a hostile list of 100,000 elements costs one split.
    parts = value.split(",")
    said = f"annotation {key} is {shown(value)}"
    if len(parts) > contract.max_audiences:
        raise invalid(
            f"{said}, a list of {len(parts)} audiences; this cluster allows at most {contract.max_audiences} "
            "per Pod (each one is a token the kubelet requests and rotates): ask only for the services this "
            "Pod calls"
        )
    # White space is allowed after a comma, and nowhere else around an audience.
    audiences = (parts[0], *(part.lstrip() for part in parts[1:]))
    for number, audience in enumerate(audiences, start=1):
        if not audience:
            raise invalid(
                f"{said}: audience {number} of the list is empty; separate the audiences with single commas, "
                f"e.g. {key}: data-store, secret-store (an empty audience would yield a Kubernetes API credential)"
            )
        if audience != audience.strip():
            fixed = ", ".join(part.strip() for part in parts if part.strip())
            raise invalid(
                f"{said}: audience {number}, {shown(audience)}, has white space before a comma or at an end "
                f"(it is allowed only after a comma); use {shown(fixed)}: a token's audience must match the "
                "verifier's exactly"
            )
        if audience in contract.denied_audiences:
            raise _api_server_audience(f"{said}: audience {number}, {audience!r}, is an audience", contract)
        if contract.allowed_audiences and not _allowed(audience, contract):
            raise _not_allowed(f"{said}: audience {number}, {shown(audience)}, is not an audience", contract)
    if len(set(audiences)) < len(audiences):
        twice = next(a for i, a in enumerate(audiences) if a in audiences[:i])
        raise invalid(f"{said}: audience {shown(twice)} is listed twice; list each audience once (each gets one token)")
    _check_files(audiences, said=said, contract=contract)
    return audiences


def _check_files(audiences: tuple[str, ...], *, said: str, contract: Contract) -> None:
    """Every audience's token file can be written by the kubelet, and no two are the same file."""
    files = contract.token_files(audiences)
    for audience, path in files[1:]:
        if len(path) > MAX_FILE_NAME_BYTES:
            raise invalid(
                f"{said}: audience {shown(audience)} is too long for a token file: its file name would be "
                f"{len(path)} bytes, and the kubelet writes names of at most {MAX_FILE_NAME_BYTES} "
                "(see docs/multiple-audiences.md for the file rule); use a shorter audience"
            )
    collision = contract.colliding_files(files)
    if collision is not None:
        (first, first_path), (second, second_path) = collision
        if first_path.casefold() == second_path.casefold():
            fix = (
                f"list {shown(second)} first (the first audience's token is also at {contract.token_file}), "
                "or drop one of them"
            )
        else:
            fix = f"a file and a directory cannot have one name; drop {shown(second)} from the list"
        raise invalid(
            f"{said}: the token files of {shown(first)} ({first_path}) and {shown(second)} ({second_path}) "
            f"would collide in {contract.token_dir}; {fix}"
        )


def _allowed(audience: str, contract: Contract) -> bool:
    return any(fnmatchcase(audience, pattern) for pattern in contract.allowed_audiences)


def _api_server_audience(said: str, contract: Contract) -> Denied:
    return invalid(
        f"{said} of the Kubernetes API server itself, which this cluster does not allow "
        f"(denied: {', '.join(contract.denied_audiences)}); name your own service's audience instead"
    )


def _not_allowed(said: str, contract: Contract) -> Denied:
    return invalid(
        f"{said} this cluster allows; allowed: {', '.join(contract.allowed_audiences)} (glob patterns); "
        "check its spelling against the audience the receiving service verifies"
    )


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
