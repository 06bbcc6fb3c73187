"""The aiohttp adapter on the receiving side: a server middleware that lets in only callers with a valid token.

A thin adapter over :mod:`audience_token.answers` (the open paths, the bearer value, every refusal as
HTTP with RFC 6750 challenges and a JSON body that never echoes the header): it reads aiohttp's
request, writes aiohttp's response, and puts the caller's :class:`Identity` on the request for the
handler, which reads it with ``identity_of(request)`` (or ``request[IDENTITY]``). Works with any
verifier that has an ``audience`` and ``async verify(token) -> Identity`` (TokenReviewer, and the
offline verifier).

``open_paths`` are compared with the path the router matches on (``rel_url.path_safe``, where an
encoded ``/`` stays ``%2F``), so ``/healthz%2Fready`` is not the open ``/healthz/ready`` and cannot
reach a catch-all protected route without a token.

Before any middleware runs, aiohttp's HTTP parser refuses a malformed request (a control byte or a
folded line in a header, a header line over 8190 bytes) with a 400 and logs the parser's message at
ERROR on ``aiohttp.server``; that message quotes the offending line, ``Authorization`` included.
``token_middleware()`` (and so ``protect()``) installs :class:`ParserMessageRedaction` on that
logger, which keeps the record and replaces the quoted bytes. The 400 answer itself also quotes the
line, to the client that sent it on the same connection: aiohttp writes it in
``RequestHandler.handle_error``, which runs without the application's middlewares and response
signals, and no public setting changes it (aiohttp 3.14).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from audience_token.answers import Gate, HttpRefusal, Verifier, realm
from audience_token.errors import VerificationError, unexpected
from audience_token.identity import Identity

__all__ = [
    "IDENTITY",
    "PARSER_MESSAGE_REDACTION",
    "ParserMessageRedaction",
    "Verifier",
    "identity_of",
    "protect",
    "token_middleware",
]

IDENTITY: Final = web.RequestKey("audience_token.identity", Identity)
"""Where the middleware puts the verified caller on the request: ``request[IDENTITY]``."""


def identity_of(request: web.Request) -> Identity:
    """The verified caller of ``request``; LookupError on a route the middleware left open."""
    try:
        return request[IDENTITY]
    except KeyError:
        raise LookupError(
            f"no verified caller on {request.path!r}: the route is in open_paths, or the app is not protected"
        ) from None


_AUTHORIZATION: Final = hdrs.AUTHORIZATION
_realm = realm  # the name this module had for it; adapters written before answers.py may use it


def _response(refusal: HttpRefusal) -> web.Response:
    return web.Response(
        body=refusal.body, status=refusal.status, headers=refusal.headers, content_type=refusal.content_type
    )


def token_middleware(verifier: Verifier, *, open_paths: Iterable[str] = ()) -> Middleware:
    """The middleware for ``verifier``; requests to ``open_paths`` (exact paths, e.g. ``/healthz``) pass.

    Also redacts the request bytes aiohttp's HTTP parser quotes when it logs a malformed request
    (:class:`ParserMessageRedaction`, added to the ``aiohttp.server`` logger once).
    """
    logging.getLogger("aiohttp.server").addFilter(PARSER_MESSAGE_REDACTION)
    gate = Gate(verifier, open_paths=open_paths)
    # Looked up once, not per request: these calls are most of what a request costs here.
    open_set, token_of, lookup, verify = gate.open_paths, gate.token_of, gate.lookup, gate.verify

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if open_set and request.rel_url.path_safe in open_set:
            return await handler(request)
        token = token_of(request.headers.getall(_AUTHORIZATION, ()))
        if type(token) is not str:
            assert isinstance(token, HttpRefusal)
            return _response(token)
        try:
            identity = lookup(token)
            if identity is None:
                identity = await verify(token)
        except VerificationError as refused:
            return _response(gate.refusal(refused))
        except Exception as error:  # a defect in a verifier (of one's own): the library's 503, never a 500
            return _response(gate.refusal(unexpected(error)))
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
"""The one filter ``token_middleware()`` adds to aiohttp's server logger (adding it twice is a no-op)."""


def protect(app: web.Application, verifier: Verifier, *, open_paths: Iterable[str] = ()) -> web.Application:
    """Put ``verifier``'s middleware in front of ``app`` and close the verifier when the app stops."""
    app.middlewares.append(token_middleware(verifier, open_paths=open_paths))

    async def close(_: web.Application) -> None:
        await verifier.close()

    app.on_cleanup.append(close)
    return app
