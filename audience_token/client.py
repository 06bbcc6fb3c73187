"""The caller's side for aiohttp: send the Pod's current token on every request of a ClientSession.

``ClientSession(middlewares=(bearer_auth(TokenFile()),))`` adds ``Authorization: Bearer <token>`` to
each request, read through :class:`~audience_token.token_file.TokenFile` so a rotated token is sent as
soon as the kubelet writes it. A 401 from the receiver marks the file stale: the next request reads
it again (the answer itself is returned as it is; the request is not retried, since its body may
already be spent). ``TokenFile.read()`` runs in the event loop: it answers from memory and looks at
the file (one ``stat``) at most once a second, which costs less than handing it to a thread.

aiohttp calls a client middleware again for every hop of a redirect, and aiohttp's own rule drops
``Authorization`` when a redirect leaves the origin. A middleware that added the header blindly
would put it back and hand the token to whatever host a redirect names, so this one remembers
where a redirect it saw leads and does not add the token to that hop when its origin differs.
"""

from __future__ import annotations

from contextvars import ContextVar

from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse, hdrs
from yarl import URL

from audience_token.token_file import TokenFile

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Where a cross-origin redirect just pointed, per task: aiohttp follows redirects inside one call of
# session.request(), in the caller's task, so the next middleware call in this context is that hop.
_cross_origin_hop: ContextVar[URL | None] = ContextVar("audience_token_cross_origin_hop", default=None)
"""The origin (scheme, host, port) that hop goes to."""


def bearer_auth(token_file: TokenFile) -> ClientMiddlewareType:
    """An aiohttp client middleware that sends ``token_file``'s current token as a Bearer token.

    A request that already carries an ``Authorization`` header (set by the caller, or ``auth=``) is
    left as it is. The token never follows a redirect to another origin.
    """

    async def middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        hop = _cross_origin_hop.get()
        if hop is not None:
            _cross_origin_hop.set(None)
        ours = (
            hdrs.AUTHORIZATION not in request.headers
            and not (hop is not None and request.url.origin() == hop)
            and request.auth is None
        )
        if ours:
            request.headers[hdrs.AUTHORIZATION] = "Bearer " + token_file.read()
        response = await handler(request)
        if ours and response.status == 401:
            token_file.invalidate()
        if response.status in _REDIRECTS:
            _remember_cross_origin_redirect(request.url, response)
        return response

    return middleware


def _remember_cross_origin_redirect(url: URL, response: ClientResponse) -> None:
    location = response.headers.get(hdrs.LOCATION) or response.headers.get(hdrs.URI)
    if not location:
        return
    try:
        target = url.join(URL(location)).origin()
        leaves = target != url.origin()
    except ValueError:
        # aiohttp refuses such a Location itself (InvalidUrlRedirectClientError): no hop follows.
        return
    if leaves:
        _cross_origin_hop.set(target)
