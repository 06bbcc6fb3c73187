"""The caller's side for httpx: send the Pod's current token on every request of a Client or AsyncClient.

``httpx.Client(auth=BearerAuth(TokenFile()))`` (or ``AsyncClient``, or ``auth=`` on one request) adds
``Authorization: Bearer <token>``, read through :class:`~audience_token.token_file.TokenFile`, so a
token the kubelet rotated is sent within a second of the swap.

A 401 from the receiver makes it read the file again at once; when the token there differs from the
one just refused (the kubelet rotated it), the request is sent once more with the new token. When it
is the same token, the 401 is returned as it is: the receiver already refused that token, and asking
again would cost it another TokenReview for the same answer. A request whose body was streamed (and
so cannot be sent twice) is not retried either; the next request sends the new token.

Redirects: the token goes only to the origin (scheme, host, port) of the request it was attached to,
for the whole chain. With ``follow_redirects=True`` httpx copies each hop's headers from the hop before,
dropping ``Authorization`` when the origin changes, so A → B/1 → B/2 reaches neither B/1 nor B/2 with
it and a same-origin redirect keeps it. One hop httpx keeps it on: ``http://host`` (port 80) →
``https://host`` (port 443), the same host upgraded; the token had crossed to that host in clear
text already. When the caller follows redirects itself (``client.send(response.next_request)``), this
auth sees each hop and sends the token only to the home origin, that upgrade included.

Event loop: both flows read the token in the calling thread or loop, with no thread hand-off.
``TokenFile.read()`` answers from memory and looks at the file (one ``stat``) at most once a second;
a re-read is one ``open``/``read`` of a kilobyte on the kubelet's tmpfs, after a rotation or a 401.
Each costs far less than handing the work to a thread would.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Final

import httpx

from audience_token.origin import Origin, origin_of
from audience_token.token_file import TokenFile

_HOME: Final = "audience_token.home"
"""The request extension that carries the home origin; httpx copies extensions onto redirect hops."""

_AUTHORIZATION: Final = "Authorization"


class BearerAuth(httpx.Auth):
    """An ``httpx.Auth`` sending ``token_file``'s current token as a Bearer token, to one origin only.

    A request that already carries an ``Authorization`` header is left as it is.
    """

    def __init__(self, token_file: TokenFile) -> None:
        self.token_file = token_file

    def __repr__(self) -> str:
        return f"BearerAuth({self.token_file!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # httpx's default sync_auth_flow and async_auth_flow both drive this generator: it does no
        # network I/O of its own, and its file I/O is what the module docstring describes.
        here = origin_of(str(request.url))
        home = request.extensions.get(_HOME)
        if home is None:
            if _AUTHORIZATION in request.headers:
                yield request  # the caller's own credentials
                return
            home = request.extensions[_HOME] = _Home(here)
        if not isinstance(home, _Home) or here is None or here != home.origin:
            # A hop of a chain that began elsewhere, followed by the caller: never our token.
            request.headers.pop(_AUTHORIZATION, None)
            yield request
            return
        sent = self.token_file.read()
        request.headers[_AUTHORIZATION] = "Bearer " + sent
        response = yield request
        if response.status_code != 401 or not _refused_at(response, home.origin):
            return
        self.token_file.invalidate()
        fresh = self.token_file.read()
        if fresh == sent or not _replayable(request):
            return
        request.headers[_AUTHORIZATION] = "Bearer " + fresh
        yield request


class _Home:
    """The origin a chain's token belongs to; an object of ours, so no caller's extension is mistaken for it."""

    __slots__ = ("origin",)

    def __init__(self, origin: Origin | None) -> None:
        self.origin = origin

    def __repr__(self) -> str:
        return f"_Home({self.origin!r})"


def _refused_at(response: httpx.Response, home: Origin | None) -> bool:
    """Whether the 401 came from the home origin, to a request that carried the token."""
    last = response.request
    return _AUTHORIZATION in last.headers and origin_of(str(last.url)) == home


def _replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 -- raises for a streamed body, which cannot be sent twice
    except httpx.RequestNotRead:
        return False
    return True
