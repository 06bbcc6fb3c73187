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


def malformed(why: str) -> Unauthenticated:
    return Unauthenticated(f"the bearer value is not a service account token: {why}", reason=MALFORMED)


def check_length(token: object) -> str:
    """``token`` if it is a string of a plausible length and ASCII: the cheap checks done before hashing."""
    if not isinstance(token, str):
        raise malformed(f"expected a string, got {type(token).__name__}")
    if not token:
        raise malformed("it is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise malformed(f"it is {len(token)} characters long, over the {MAX_TOKEN_LENGTH} a token can have")
    if not token.isascii():
        raise malformed("it contains non-ASCII characters")
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


def precheck(token: object) -> Mapping[str, Any]:
    """The token's unverified claims, or Unauthenticated(reason="malformed") saying what is wrong with it."""
    text = check_length(token)
    if _SHAPE.fullmatch(text) is None:
        parts = text.split(".")
        if len(parts) != 3:
            raise malformed(f"a JWT has three parts separated by '.', this has {len(parts)}")
        for name, part in zip(_PART_NAMES, parts, strict=True):
            if not part:
                raise malformed(f"its {name} part is empty")
            if _PART.fullmatch(part) is None:
                raise malformed(f"its {name} part is not base64url (A-Z, a-z, 0-9, '-', '_', no padding)")
    header_part, payload_part, signature_part = text.split(".")
    try:
        decode_segment(signature_part)
    except ValueError:
        raise malformed("its signature part is not valid base64url") from None
    header = _json_object(header_part)
    if header is None or not isinstance(header.get("alg"), str):
        raise malformed("its header part is not a JSON object with an 'alg'")
    claims = _json_object(payload_part)
    if claims is None:
        raise malformed("its payload part is not a JSON object")
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
