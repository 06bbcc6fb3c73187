"""The caller's side for aiohttp: send the Pod's current token on every request of a ClientSession.

``ClientSession(middlewares=(bearer_auth(TokenFile()),))`` adds ``Authorization: Bearer <token>`` to
each request, read through :class:`~audience_token.token_file.TokenFile` so a rotated token is sent as
soon as the kubelet writes it. A 401 from the receiver marks the file stale: the next request reads
it again (the answer itself is returned as it is; the request is not retried, since its body may
already be spent). ``TokenFile.read()`` runs in the event loop: it answers from memory and looks at
the file (one ``stat``) at most once a second, which costs less than handing it to a thread.

aiohttp calls a client middleware again for every hop of a redirect, and aiohttp's own rule drops
``Authorization`` only when one hop leaves the origin of the hop before it: after ``A → B/1 → B/2``
the last hop is "same origin" again. So this middleware remembers the *home* origin of a redirect
chain (the origin of the request the caller made) and adds the token to a hop only when the hop goes
back there. It fails closed: the next request counts as the hop when it goes to the origin the
redirect named, whatever its path and query, and gets the token only if that origin is home. So
after a redirect that is not followed (``allow_redirects=False``), the next request of the task to
the redirect's origin goes without the token (the one after it has it again); one to any other
origin is not a hop.

Once the answer has arrived the token is taken out of the request's headers again, so that the
``request_info`` of the response, and of a ``ClientResponseError`` raised for it
(``raise_for_status``), does not carry it: aiohttp's ``repr`` of that error prints the request headers.
An ``Authorization`` header the caller set itself is left alone, and shows there: log such errors
with ``str()``, never ``repr()``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple

from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse, hdrs
from yarl import URL

from audience_token.token_file import TokenFile

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Hop(NamedTuple):
    """A redirect just answered, in this task: the origin it leads to, and the origin its chain started from."""

    origin: URL
    home: URL


# aiohttp follows redirects inside one call of session.request(), in the caller's task, so the next
# middleware call in this context is that hop, if it is for the origin the redirect named.
_pending_hop: ContextVar[_Hop | None] = ContextVar("audience_token_pending_hop", default=None)


def bearer_auth(token_file: TokenFile) -> ClientMiddlewareType:
    """An aiohttp client middleware that sends ``token_file``'s current token as a Bearer token.

    A request that already carries an ``Authorization`` header (set by the caller, or ``auth=``) is
    left as it is. The token goes only to the origin of the request the caller made: never to a
    redirect's target on another origin, nor further down a redirect chain that left it.
    """

    async def middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        hop = _pending_hop.get()
        if hop is not None:
            _pending_hop.set(None)
        origin = request.url.origin()
        # Fail closed: whatever its URL (a middleware before this one may have changed it), a request
        # to the origin the redirect named is taken as that hop, and gets the token only if it is home.
        home = hop.home if hop is not None and origin == hop.origin else origin
        ours = hdrs.AUTHORIZATION not in request.headers and request.auth is None and origin == home
        if ours:
            request.headers[hdrs.AUTHORIZATION] = "Bearer " + token_file.read()
        try:
            response = await handler(request)
        finally:
            if ours:
                request.headers.popall(hdrs.AUTHORIZATION, None)
        if ours and response.status == 401:
            token_file.invalidate()
        if response.status in _REDIRECTS:
            _remember_redirect(request.url, home, response)
        return response

    return middleware


def _remember_redirect(url: URL, home: URL, response: ClientResponse) -> None:
    location = response.headers.get(hdrs.LOCATION) or response.headers.get(hdrs.URI)
    if not location:
        return
    try:
        target = url.join(URL(location)).origin()
    except ValueError:
        # aiohttp refuses such a Location itself (InvalidUrlRedirectClientError): no hop follows.
        return
    _pending_hop.set(_Hop(target, home))
