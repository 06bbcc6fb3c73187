"""What a receiver answers, whatever its web framework: the bearer token of a request, or the refusal.

Every server adapter (aiohttp's middleware, and any other) does the same four things: let an open
path through, take the one ``Authorization: Bearer`` value, ask the verifier, and turn a refusal into
HTTP, following RFC 6750 (Bearer tokens):

====================================  ======  ==========================================================
what the request brings               status  ``WWW-Authenticate`` / headers
====================================  ======  ==========================================================
no ``Authorization``, another scheme  401     ``Bearer realm="AUDIENCE"``
several ``Authorization`` headers     401     ``Bearer realm="AUDIENCE", error="invalid_request"``
a token refused (``Unauthenticated``) 401     ``Bearer realm="AUDIENCE", error="invalid_token"``
a caller not allowed (``NotAllowed``) 403     ``Bearer realm="AUDIENCE", error="insufficient_scope"``
no verdict (``ReviewUnavailable``)    503     ``Retry-After: N``
====================================  ======  ==========================================================

Each refusal has a small JSON body ``{"error", "reason", "message"}``; none echoes the header, and a
503's message is the same for every cause (:data:`NO_VERDICT`): the cause is logged, not sent. This
module is all of that, as data (:class:`HttpRefusal`), so that an adapter only reads its framework's
request and writes its framework's response. No web framework is imported here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from audience_token.errors import ConfigError, NotAllowed, ReviewUnavailable, Unauthenticated, VerificationError
from audience_token.identity import Identity

log = logging.getLogger("audience_token")

AUTHORIZATION: Final = "Authorization"
WWW_AUTHENTICATE: Final = "WWW-Authenticate"
RETRY_AFTER: Final = "Retry-After"
NO_VERDICT: Final = (
    "the token could not be checked right now: the receiver got no verdict (its log says why); retry later"
)
"""The body's message of every 503: the reason, which names the receiver's internals, goes to the log only."""


class Verifier(Protocol):
    """What a server adapter needs of a verifier (TokenReviewer, OfflineVerifier, or one of your own).

    A verifier may also have ``lookup(token) -> Identity | None``: the verdict it already holds for
    ``token``, without awaiting (None: not known, ``verify`` decides). An adapter calls it first when
    present, which saves a coroutine per request on a cache hit (``TokenReviewer`` has one).
    """

    @property
    def audience(self) -> str: ...

    async def verify(self, token: str) -> Identity: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpRefusal:
    """One refusal as HTTP: the status, the headers and the JSON body to send."""

    status: int
    headers: tuple[tuple[str, str], ...]
    error: str
    reason: str
    message: str

    @property
    def body(self) -> bytes:
        return json.dumps({"error": self.error, "reason": self.reason, "message": self.message}).encode()

    @property
    def content_type(self) -> str:
        return "application/json"

    def all_headers(self) -> list[tuple[str, str]]:
        """Every header, ``Content-Type`` and ``Content-Length`` first: what an adapter writes itself."""
        return [("Content-Type", self.content_type), ("Content-Length", str(len(self.body))), *self.headers]


def _unknown(token: str) -> Identity | None:
    """The ``lookup`` of a verifier that has none: every verdict is ``verify``'s to make."""
    return None


def realm(audience: str) -> str:
    """``audience`` as a quoted-string's content: visible ASCII, with '"' and '\\' escaped."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in audience)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"')


class Gate:
    """One receiver's rules for a request, framework-neutral: open paths, the bearer value, the refusals.

    ``open_paths`` are exact paths compared with the path the framework routes on (aiohttp's
    ``rel_url.path_safe``: an encoded ``/`` stays ``%2F``), so an encoded slash cannot make a
    protected path look open. ``lookup`` and ``verify`` are the verifier's, bound once.
    """

    def __init__(self, verifier: Verifier, *, open_paths: Iterable[str] = ()) -> None:
        self.audience = verifier.audience
        self.open_paths = frozenset(open_paths)
        self.verify = verifier.verify
        self.lookup: Callable[[str], Identity | None] = getattr(verifier, "lookup", _unknown)
        self.challenge = f'Bearer realm="{realm(verifier.audience)}"'
        self._wanted = (
            f"send 'Authorization: Bearer <token>' with a service account token for audience {verifier.audience!r}"
        )

    def token_of(self, values: Sequence[str]) -> str | HttpRefusal:
        """The bearer value among a request's ``Authorization`` header values, or the refusal to send."""
        if len(values) == 1:
            scheme, _, credentials = values[0].strip().partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
        if len(values) > 1:
            headers = ((WWW_AUTHENTICATE, f'{self.challenge}, error="invalid_request"'),)
            return self._refuse(
                401, "invalid_request", "malformed", f"several Authorization headers: {self._wanted}", headers
            )
        missing = "no Authorization header" if not values else "the Authorization header is not a Bearer token"
        return self._refuse(
            401, "unauthorized", "missing", f"{missing}: {self._wanted}", ((WWW_AUTHENTICATE, self.challenge),)
        )

    def refusal(self, refused: VerificationError) -> HttpRefusal:
        """The HTTP answer to a verifier's refusal."""
        if isinstance(refused, Unauthenticated):
            headers = ((WWW_AUTHENTICATE, f'{self.challenge}, error="invalid_token"'),)
            return self._refuse(401, "invalid_token", refused.reason, refused.message, headers)
        if isinstance(refused, NotAllowed):
            headers = ((WWW_AUTHENTICATE, f'{self.challenge}, error="insufficient_scope"'),)
            return self._refuse(403, "insufficient_scope", "not_allowed", refused.message, headers)
        # Why there is no verdict (the API server's address, the receiver's own credentials and RBAC, the API
        # server's words) is the operator's to read, in this log; the client learns only to retry.
        log.warning("answering 503, no verdict on the token: %s", refused.message)
        retry_after = refused.retry_after if isinstance(refused, ReviewUnavailable) else 1
        headers = ((RETRY_AFTER, str(retry_after)),)
        return self._refuse(503, "temporarily_unavailable", "review_unavailable", NO_VERDICT, headers)

    def route_refusal(self, identity: Identity, route: str) -> HttpRefusal:
        """403 for a caller the verifier accepts but ``route``'s own, narrower rule does not name.

        ``route`` is the rule's key or the framework's route template, never the path the client sent.
        """
        headers = ((WWW_AUTHENTICATE, f'{self.challenge}, error="insufficient_scope"'),)
        message = (
            f"service account {identity.namespace}/{identity.service_account} is authenticated but not allowed to "
            f"call {route}: the route's own allow list does not name it"
        )
        return self._refuse(403, "insufficient_scope", "not_allowed", message, headers)

    @staticmethod
    def _refuse(
        status: int, error: str, reason: str, message: str, headers: tuple[tuple[str, str], ...]
    ) -> HttpRefusal:
        log.debug("refused %s %s: %s (%s)", status, error, reason, message)
        return HttpRefusal(status, headers, error, reason, message)


class OpenPaths:
    """Exact paths let through without a token, decided on the path as sent *and* as decoded.

    For adapters whose server gives both (ASGI's ``raw_path``, WSGI's ``RAW_URI``/``REQUEST_URI``) and
    whose router matches the decoded one: a path is open only when the decoded path is listed and the
    raw path, when known, is exactly the same text, so ``/healthz%2Fready`` or ``/%68ealthz`` are never
    open, whatever a router makes of them. (An open path a client sends percent-encoded asks for a
    token; no client encodes a plain ``/healthz``.) aiohttp's middleware compares ``path_safe`` instead.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, str):
            paths = (paths,)
        listed = frozenset(paths)
        for path in listed:
            if not isinstance(path, str) or not path.startswith("/") or "%" in path or "?" in path:
                raise ConfigError(f"open path {path!r} must be an exact path such as '/healthz' (no '%', no '?')")
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
