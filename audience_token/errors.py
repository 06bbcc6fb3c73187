"""Every error audience_token raises, in one small tree::

    AudienceTokenError
    ├── ConfigError              settings that cannot work (empty ``allow``, a bad pattern, an unusable
    │                            kubeconfig); also a ``ValueError``; raised when a verifier is built
    ├── TokenFileError           the caller side: no token could ever be read from the token file
    └── VerificationError        a presented token was not accepted; ``verify`` raises only these
        ├── Unauthenticated          not a valid token for this audience; ``reason`` is a short code
        ├── NotAllowed               a valid service account token, but ``allow`` does not name it
        └── ReviewUnavailable        no answer could be had (API server down, slow, 5xx, or it refused
                                     the verifier's own credentials); never cached, worth a retry

A receiver maps them to HTTP in one place (``audience_token.answers``, for every adapter): Unauthenticated → 401,
NotAllowed → 403, ReviewUnavailable → 503. Messages say what to do and never contain a token.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from audience_token.identity import Identity

# Unauthenticated.reason values: stable, short, for logs, metrics and clients to branch on.
MALFORMED: Final = "malformed"
"""The value cannot be a JWT at all (empty, too long, not three base64url parts, not ASCII)."""
WRONG_AUDIENCE: Final = "wrong_audience"
"""A real token, but minted for another audience; the message names the audience expected."""
EXPIRED_OR_REVOKED: Final = "expired_or_revoked"
"""Past its ``exp``, or its Pod/ServiceAccount/Secret was deleted; the caller must send a fresh token."""
NOT_A_SERVICE_ACCOUNT: Final = "not_a_service_account"
"""Authenticated, but as a person, a node or another kind of user, not ``system:serviceaccount:NS:NAME``."""
INVALID: Final = "invalid"
"""Not issued by this cluster: unknown signature or issuer (or the API server gave no more detail)."""

REASONS: Final = frozenset({MALFORMED, WRONG_AUDIENCE, EXPIRED_OR_REVOKED, NOT_A_SERVICE_ACCOUNT, INVALID})


class AudienceTokenError(Exception):
    """The root of audience_token's errors."""


class ConfigError(AudienceTokenError, ValueError):
    """A setting has a value that cannot work; the message names the setting and what to write."""


class TokenFileError(AudienceTokenError):
    """No token could ever be read; the message names the path, the variable and what to check."""


class VerificationError(AudienceTokenError):
    """A token was not accepted. ``message`` is safe to show the caller: it never holds the token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(VerificationError):
    """Not a valid token for this audience. ``reason`` is one of ``REASONS``."""

    def __init__(self, message: str, *, reason: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown Unauthenticated reason {reason!r}; use one of {sorted(REASONS)}")
        super().__init__(message)
        self.reason = reason


class NotAllowed(VerificationError):
    """A valid token for this audience, from a service account that ``allow`` does not name."""

    def __init__(self, message: str, *, identity: Identity) -> None:
        super().__init__(message)
        self.identity = identity


class ReviewUnavailable(VerificationError):
    """No verdict could be had; retrying later may work. ``retry_after`` is a hint in seconds; ``cause``
    a short fixed code for metrics (``timeout``, ``connection``, ``http_503``, ``bad_answer``, ...)."""

    def __init__(self, message: str, *, retry_after: int = 1, cause: str = "unavailable") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.cause = cause


def log_defect(doing: str, error: BaseException) -> None:
    """Log a defect met while ``doing``: the exception's class and where it was raised, at ERROR.

    Never its message or traceback text, which may quote a token or key material.
    """
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ is not None else []
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    logging.getLogger("audience_token").error(
        "%s failed unexpectedly: %s%s (a defect: please report it)", doing, type(error).__name__, where
    )


def unexpected(error: BaseException) -> ReviewUnavailable:
    """A defect met while verifying a token, as a ReviewUnavailable (a 503, never a 500 or a traceback).

    Logs it (``log_defect``); the caller's message says only that verification failed.
    """
    log_defect("verifying a token", error)
    return ReviewUnavailable("verifying the token failed unexpectedly on the receiver; try again later", cause="defect")
