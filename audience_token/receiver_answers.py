"""What a receiver answers, in every framework: the verdict on a request's ``Authorization`` as plain data.

Each adapter (aiohttp, ASGI, FastAPI, WSGI, Django) turns an ``Answer`` into its own response type and
nothing more, so that every one of them answers byte for byte the same, following RFC 6750:

====================================  ======  ==========================================================
what the request brings               status  ``WWW-Authenticate`` / headers
====================================  ======  ==========================================================
no ``Authorization``, another scheme  401     ``Bearer realm="AUDIENCE"``
several ``Authorization`` headers     401     ``Bearer realm="AUDIENCE", error="invalid_request"``
a token refused (``Unauthenticated``) 401     ``Bearer realm="AUDIENCE", error="invalid_token"``
a caller not allowed (``NotAllowed``) 403     ``Bearer realm="AUDIENCE", error="insufficient_scope"``
no verdict (``ReviewUnavailable``)    503     ``Retry-After: N``
====================================  ======  ==========================================================

The body is ``{"error", "reason", "message"}`` as JSON; none echoes the header. Which paths are left open
is decided here too (``OpenPaths``), on the path as it was sent, so that no encoding of a protected
path can pass for an open one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from audience_token.errors import NotAllowed, ReviewUnavailable, Unauthenticated, VerificationError

log = logging.getLogger("audience_token")

CONTENT_TYPE: Final = "application/json; charset=utf-8"
"""The bodies' media type, as aiohttp's ``json_response`` writes it."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A refusal as plain data: the status, the headers besides ``Content-Type``, and the JSON body."""

    status: int
    error: str
    reason: str
    message: str
    headers: tuple[tuple[str, str], ...]

    @property
    def body(self) -> bytes:
        """The JSON body, as aiohttp's ``json_response`` encodes it (``json.dumps`` defaults, UTF-8)."""
        return json.dumps({"error": self.error, "reason": self.reason, "message": self.message}).encode()

    def all_headers(self) -> list[tuple[str, str]]:
        """Every header of the answer, ``Content-Type`` and ``Content-Length`` included."""
        return [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(self.body))), *self.headers]


def realm_of(audience: str) -> str:
    """``audience`` as an RFC 7230 quoted-string's content: visible ASCII, ``"`` and ``\\`` escaped."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in audience)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"')


class Answers:
    """The answers of a receiver for ``audience``: worded once, here, for every adapter."""

    def __init__(self, audience: str) -> None:
        self.audience = audience
        self.challenge = f'Bearer realm="{realm_of(audience)}"'
        self._wanted = f"send 'Authorization: Bearer <token>' with a service account token for audience {audience!r}"

    def token_of(self, values: Sequence[str]) -> str | Answer:
        """The bearer token among a request's ``Authorization`` values (in order), or the refusal to send."""
        if len(values) > 1:
            return self._refuse(
                401,
                "invalid_request",
                "malformed",
                f"several Authorization headers: {self._wanted}",
                ("WWW-Authenticate", f'{self.challenge}, error="invalid_request"'),
            )
        scheme, _, credentials = values[0].strip().partition(" ") if values else ("", "", "")
        if scheme.lower() != "bearer":
            missing = "no Authorization header" if not values else "the Authorization header is not a Bearer token"
            return self._refuse(
                401, "unauthorized", "missing", f"{missing}: {self._wanted}", ("WWW-Authenticate", self.challenge)
            )
        return credentials.strip()

    def refusal(self, refused: VerificationError) -> Answer:
        """The answer to a verifier's refusal: 401, 403 or 503."""
        if isinstance(refused, Unauthenticated):
            header = ("WWW-Authenticate", f'{self.challenge}, error="invalid_token"')
            return self._refuse(401, "invalid_token", refused.reason, refused.message, header)
        if isinstance(refused, NotAllowed):
            header = ("WWW-Authenticate", f'{self.challenge}, error="insufficient_scope"')
            return self._refuse(403, "insufficient_scope", "not_allowed", refused.message, header)
        retry_after = refused.retry_after if isinstance(refused, ReviewUnavailable) else 1
        header = ("Retry-After", str(retry_after))
        return self._refuse(503, "temporarily_unavailable", "review_unavailable", refused.message, header)

    def not_allowed_here(self, caller: str, where: str) -> Answer:
        """403 for a caller the verifier accepts but a route's own, narrower rule does not name."""
        return self._refuse(
            403,
            "insufficient_scope",
            "not_allowed",
            f"service account {caller} is authenticated but not allowed to call {where}: the route's own allow "
            "list does not name it",
            ("WWW-Authenticate", f'{self.challenge}, error="insufficient_scope"'),
        )

    @staticmethod
    def _refuse(status: int, error: str, reason: str, message: str, header: tuple[str, str]) -> Answer:
        log.debug("refused %s %s: %s (%s)", status, error, reason, message)
        return Answer(status, error, reason, message, (header,))


class OpenPaths:
    """Exact paths let through without a token, decided on the path as sent *and* as decoded.

    A path is open only when the path the server decoded is listed and the raw path, when the server
    gives it, is exactly the same text: ``/healthz%2Fready`` or ``/%68ealthz`` are never open, whatever
    a router later makes of them. (An open path that a client sends percent-encoded therefore asks for a
    token; no client encodes a plain ``/healthz``.)
    """

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, str):
            paths = (paths,)
        listed = frozenset(paths)
        for path in listed:
            if not isinstance(path, str) or not path.startswith("/") or "%" in path or "?" in path:
                raise ValueError(f"open path {path!r} must be an exact path such as '/healthz' (no '%', no '?')")
        self.paths = listed

    def __bool__(self) -> bool:
        return bool(self.paths)

    def admits(self, path: str, raw: bytes | str | None) -> bool:
        """Whether ``path`` (decoded) is open, given ``raw`` (the request target's path as sent, if known)."""
        if path not in self.paths:
            return False
        if raw is None:
            return True
        if isinstance(raw, bytes):
            raw = raw.decode("latin-1")
        return raw.partition("?")[0] == path
