"""Refuse what cannot be a service account token before anyone asks the API server about it.

A Kubernetes service account token is a compact JWS: three base64url parts, a JSON header and a JSON
payload, ASCII only, about a kilobyte. Anything else is refused here with a reason a person can act on,
so garbage in an ``Authorization`` header costs no TokenReview and no cache slot.

The payload is also read *without verifying it*, for two things only: bounding a cache entry's life by
``exp``, and wording a refusal (which audience the token was minted for). It never decides acceptance.
Messages describe the token's shape, never its content.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from audience_token.errors import MALFORMED, Unauthenticated

MAX_TOKEN_LENGTH: Final = 16 * 1024
"""Real tokens are 1-2 KB; 16 KiB leaves room for many audiences and claims, and caps the hashing cost."""

_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_PART: Final = re.compile(r"[A-Za-z0-9_-]*")
_PART_NAMES: Final = ("header", "payload", "signature")


class NotAJwt(ValueError):
    """The text is not a JWT at all; the message says what is wrong with it (never what it holds)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the input is not a JWT: {why}")
        self.why = why


def malformed(why: str) -> Unauthenticated:
    return Unauthenticated(f"the bearer value is not a service account token: {why}", reason=MALFORMED)


def _length_problem(token: object) -> str | None:
    if not isinstance(token, str):
        return f"expected a string, got {type(token).__name__}"
    if not token:
        return "it is empty"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"it is {len(token)} characters long, over the {MAX_TOKEN_LENGTH} a token can have"
    if not token.isascii():
        return "it contains non-ASCII characters"
    return None


def check_length(token: object) -> str:
    """``token`` if it is a string of a plausible length and ASCII: the cheap checks done before hashing."""
    why = _length_problem(token)
    if why is not None:
        raise malformed(why)
    assert isinstance(token, str)
    return token


def decode_segment(part: str) -> bytes:
    """The bytes of one dot-separated part of a JWT (base64url, unpadded); ValueError if it is not base64url."""
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))  # binascii.Error is a ValueError


def _json_object(part: str) -> dict[str, Any] | None:
    try:
        value = json.loads(decode_segment(part))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def decode_unverified(token: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, claims)`` of a compact JWS, NOT verified; :class:`NotAJwt` saying why when it is not one.

    The one reader of a JWT's parts in this package: the verifiers' pre-check and ``token inspect``.
    """
    why = _length_problem(token)
    if why is not None:
        raise NotAJwt(why)
    assert isinstance(token, str)
    if _SHAPE.fullmatch(token) is None:
        parts = token.split(".")
        if len(parts) != 3:
            jwe = ": an encrypted JWE, not a signed token" if len(parts) == 5 else ""
            raise NotAJwt(f"a JWT has three parts separated by '.', this has {len(parts)}{jwe}")
        for name, part in zip(_PART_NAMES, parts, strict=True):
            if not part:
                raise NotAJwt(f"its {name} part is empty")
            if _PART.fullmatch(part) is None:
                raise NotAJwt(f"its {name} part is not base64url (A-Z, a-z, 0-9, '-', '_', no padding)")
    header_part, payload_part, signature_part = token.split(".")
    try:
        decode_segment(signature_part)
    except ValueError:
        raise NotAJwt("its signature part is not valid base64url") from None
    header = _json_object(header_part)
    if header is None:
        raise NotAJwt("its header part is not a JSON object")
    claims = _json_object(payload_part)
    if claims is None:
        raise NotAJwt("its payload part is not a JSON object")
    return header, claims


def precheck(token: object) -> Mapping[str, Any]:
    """The token's unverified claims, or Unauthenticated(reason="malformed") saying what is wrong with it."""
    try:
        header, claims = decode_unverified(token)
    except NotAJwt as error:
        raise malformed(error.why) from None
    if not isinstance(header.get("alg"), str):
        raise malformed("its header part is not a JSON object with an 'alg'")
    return claims


def audiences_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The unverified ``aud`` claim as a tuple (a JWT may carry one string or a list)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list):
        return tuple(a for a in aud if isinstance(a, str))
    return ()


MAX_NUMERIC_DATE: Final = 1e11
"""Year 5138: a time claim beyond it (a 400-digit ``exp``, ``1e308``) is no time at all."""


def numeric_date(value: object) -> float | None:
    """A JWT NumericDate claim in Unix seconds; None when it is absent, not a number, not finite (NaN,
    Infinity: Python's JSON accepts both), negative or absurdly large (a 400-digit integer, which
    ``float()`` cannot even hold)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return float(value) if 0 <= value <= MAX_NUMERIC_DATE else None
    return value if 0 <= value <= MAX_NUMERIC_DATE else None  # NaN compares false: None


def expiry_of(claims: Mapping[str, Any]) -> float | None:
    """The unverified ``exp`` claim in Unix seconds, or None when it is absent or not a usable time."""
    return numeric_date(claims.get("exp"))
