"""An aiohttp server middleware that lets in only callers with a valid token for this service.

It is the one place where verification outcomes become HTTP, following RFC 6750 (Bearer tokens):

====================================  ======  ==========================================================
what the request brings               status  ``WWW-Authenticate`` / headers
====================================  ======  ==========================================================
no ``Authorization``, another scheme  401     ``Bearer realm="AUDIENCE"``
several ``Authorization`` headers     401     ``Bearer realm="AUDIENCE", error="invalid_request"``
a token refused (``Unauthenticated``) 401     ``Bearer realm="AUDIENCE", error="invalid_token"``
a caller not allowed (``NotAllowed``) 403     ``Bearer realm="AUDIENCE", error="insufficient_scope"``
no verdict (``ReviewUnavailable``)    503     ``Retry-After: N``
====================================  ======  ==========================================================

Each answer has a small JSON body ``{"error", "reason", "message"}``; none echoes the header.

``open_paths`` are compared with the path the router matches on (``rel_url.path_safe``, where an
encoded ``/`` stays ``%2F``), so ``/healthz%2Fready`` is not the open ``/healthz/ready`` and cannot
reach a catch-all protected route without a token.

Before any middleware runs, aiohttp's HTTP parser refuses a malformed request (a control byte or a
folded line in a header, a header line over 8190 bytes) with a 400 and logs the parser's message at
ERROR on ``aiohttp.server``; that message quotes the offending line, ``Authorization`` included.
``protect()`` installs :class:`ParserMessageRedaction` on that logger, which keeps the record and
replaces the quoted bytes. The 400 answer itself also quotes the line, to the client that sent it on
the same connection: aiohttp writes it in ``RequestHandler.handle_error``, which runs without the
application's middlewares and response signals, and no public setting changes it (aiohttp 3.14). The
handler behind it reads the caller with ``identity_of(request)`` (or ``request[IDENTITY]``). Works with
any verifier that has an ``audience`` and ``async verify(token) -> Identity`` (TokenReviewer, and the
offline verifier).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, LooseHeaders, Middleware

from audience_token.errors import NotAllowed, ReviewUnavailable, Unauthenticated
from audience_token.identity import Identity

log = logging.getLogger("audience_token")

IDENTITY: Final = web.RequestKey("audience_token.identity", Identity)
"""Where the middleware puts the verified caller on the request: ``request[IDENTITY]``."""


class Verifier(Protocol):
    """What the middleware needs of a verifier.

    A verifier may also have ``lookup(token) -> Identity | None``: the verdict it already holds for
    ``token``, without awaiting (None: not known, ``verify`` decides). The middleware calls it first
    when present, which saves a coroutine per request on a cache hit (``TokenReviewer`` has one).
    """

    @property
    def audience(self) -> str: ...

    async def verify(self, token: str) -> Identity: ...

    async def close(self) -> None: ...


def identity_of(request: web.Request) -> Identity:
    """The verified caller of ``request``; LookupError on a route the middleware left open."""
    try:
        return request[IDENTITY]
    except KeyError:
        raise LookupError(
            f"no verified caller on {request.path!r}: the route is in open_paths, or the app is not protected"
        ) from None


_AUTHORIZATION: Final = hdrs.AUTHORIZATION


def _unknown(token: str) -> Identity | None:
    """The ``lookup`` of a verifier that has none: every verdict is ``verify``'s to make."""
    return None


def _realm(audience: str) -> str:
    # A header value must be visible ASCII; a quoted-string escapes '"' and '\'.
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in audience)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"')


def token_middleware(verifier: Verifier, *, open_paths: Iterable[str] = ()) -> Middleware:
    """The middleware for ``verifier``; requests to ``open_paths`` (exact paths, e.g. ``/healthz``) pass."""
    realm = _realm(verifier.audience)
    challenge = f'Bearer realm="{realm}"'
    open_set = frozenset(open_paths)
    wanted = f"send 'Authorization: Bearer <token>' with a service account token for audience {verifier.audience!r}"
    # Looked up once, not per request: these two calls are most of what a request costs here.
    verify = verifier.verify
    lookup: Callable[[str], Identity | None] = getattr(verifier, "lookup", _unknown)

    def refuse(status: int, error: str, reason: str, message: str, headers: LooseHeaders) -> web.Response:
        log.debug("refused %s %s: %s (%s)", status, error, reason, message)
        return web.json_response({"error": error, "reason": reason, "message": message}, status=status, headers=headers)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if open_set and request.rel_url.path_safe in open_set:
            return await handler(request)
        values = request.headers.getall(_AUTHORIZATION, ())
        if len(values) > 1:
            headers = {hdrs.WWW_AUTHENTICATE: f'{challenge}, error="invalid_request"'}
            return refuse(401, "invalid_request", "malformed", f"several Authorization headers: {wanted}", headers)
        scheme, _, credentials = values[0].strip().partition(" ") if values else ("", "", "")
        if scheme.lower() != "bearer":
            missing = "no Authorization header" if not values else "the Authorization header is not a Bearer token"
            return refuse(401, "unauthorized", "missing", f"{missing}: {wanted}", {hdrs.WWW_AUTHENTICATE: challenge})
        try:
            token = credentials.strip()
            identity = lookup(token)
            if identity is None:
                identity = await verify(token)
        except Unauthenticated as refused:
            headers = {hdrs.WWW_AUTHENTICATE: f'{challenge}, error="invalid_token"'}
            return refuse(401, "invalid_token", refused.reason, refused.message, headers)
        except NotAllowed as refused:
            headers = {hdrs.WWW_AUTHENTICATE: f'{challenge}, error="insufficient_scope"'}
            return refuse(403, "insufficient_scope", "not_allowed", refused.message, headers)
        except ReviewUnavailable as unavailable:
            headers = {hdrs.RETRY_AFTER: str(unavailable.retry_after)}
            return refuse(503, "temporarily_unavailable", "review_unavailable", unavailable.message, headers)
        request[IDENTITY] = identity
        return await handler(request)

    return middleware


_QUOTED: Final = re.compile(r"""b?(['"]).*""", re.DOTALL)


class ParserMessageRedaction(logging.Filter):
    """Keeps aiohttp's "Error handling request" records, without the request bytes the parser quoted.

    aiohttp logs a refused request with the parser's exception attached, whose message quotes the
    header line it stopped at (``b'Authorization: Bearer ...'``). The record keeps its level and
    message; the exception becomes one line: its class and the parser's words up to the quote.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        if info and isinstance(info[1], HttpProcessingError):
            error = info[1]
            words = _QUOTED.sub("<redacted>", str(error.message).split("\n", 1)[0]).strip()
            said = f"{type(error).__name__}: {words} (request bytes redacted by audience_token)"
            record.msg, record.args = f"{record.getMessage()}: {said}", ()
            record.exc_info = None
            record.exc_text = None
        return True


PARSER_MESSAGE_REDACTION: Final = ParserMessageRedaction("audience_token")
"""The one filter ``protect()`` adds to aiohttp's server logger (adding it twice is a no-op)."""


def protect(app: web.Application, verifier: Verifier, *, open_paths: Iterable[str] = ()) -> web.Application:
    """Put ``verifier``'s middleware in front of ``app`` and close the verifier when the app stops.

    Also redacts the request bytes aiohttp's HTTP parser quotes when it logs a malformed request
    (:class:`ParserMessageRedaction`, on the ``aiohttp.server`` logger).
    """
    logging.getLogger("aiohttp.server").addFilter(PARSER_MESSAGE_REDACTION)
    app.middlewares.append(token_middleware(verifier, open_paths=open_paths))

    async def close(_: web.Application) -> None:
        await verifier.close()

    app.on_cleanup.append(close)
    return app
