"""The caller's side for requests: send the Pod's current token, to one origin only.

``session.auth = BearerAuth(TokenFile())`` (or ``auth=`` on one call) adds ``Authorization: Bearer
<token>``, read through :class:`~audience_token.token_file.TokenFile`, so a token the kubelet rotated
is sent within a second of the swap. Safe to share between threads, as a ``Session`` often is.

A 401 from the receiver makes it read the file again at once; when the token there differs from the
one just refused (the kubelet rotated it), the request is sent once more with the new token, from a
response hook, as requests' own digest auth does. When it is the same token the 401 is returned as
it is (the receiver refused that very token; asking again costs it another TokenReview for the same
answer), and so it is for a body that cannot be sent twice (a file or a generator).

Redirects: requests drops ``Authorization`` on a hop to another host, and on a change of scheme or
port, but for one case: ``http://host`` (port 80) → ``https://host`` (port 443), which it lets keep
the header (``Session.should_strip_auth``). It also compares each hop with the one before, not with
where the chain began. This auth's response hook runs on every hop before requests builds the next
one: when a redirect leads away from the origin (scheme, host, port) the token was attached to, it
takes the token off the request the next hop is copied from. So the token goes to that one origin,
on the whole chain, that upgrade included, and ``response.next`` (``allow_redirects=False``) is
built without it as well.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urljoin

from requests import PreparedRequest, Response
from requests.auth import AuthBase

from audience_token.origin import Origin, origin_of
from audience_token.token_file import TokenFile

_AUTHORIZATION: Final = "Authorization"


class BearerAuth(AuthBase):
    """A ``requests`` auth sending ``token_file``'s current token as a Bearer token, to one origin only.

    A request that already carries an ``Authorization`` header is left as it is.
    """

    def __init__(self, token_file: TokenFile) -> None:
        self.token_file = token_file

    def __repr__(self) -> str:
        return f"BearerAuth({self.token_file!r})"

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        if _AUTHORIZATION in request.headers:
            return request  # the caller's own credentials
        home = origin_of(request.url or "")
        if home is None:
            return request
        sent = self.token_file.read()
        request.headers[_AUTHORIZATION] = "Bearer " + sent
        # requests copies the hooks onto every redirect hop: one _Chain per call sees them all.
        request.hooks["response"].append(_Chain(self.token_file, home, sent).on_response)
        return request


class _Chain:
    """One call's redirect chain: its home origin, the token last sent, whether it was retried."""

    __slots__ = ("home", "retried", "sent", "token_file")

    def __init__(self, token_file: TokenFile, home: Origin, sent: str) -> None:
        self.token_file = token_file
        self.home = home
        self.sent = sent
        self.retried = False

    def __repr__(self) -> str:
        return f"_Chain(home={self.home!r}, retried={self.retried})"

    def on_response(self, response: Response, **send_options: Any) -> Response:
        request = response.request
        if response.is_redirect:
            target = origin_of(urljoin(response.url, response.headers["location"]))
            if target != self.home:
                # requests builds the next hop from a copy of this request, after this hook.
                request.headers.pop(_AUTHORIZATION, None)
            return response
        if (
            response.status_code != 401
            or self.retried
            or _AUTHORIZATION not in request.headers
            or origin_of(request.url or "") != self.home
        ):
            return response
        self.token_file.invalidate()
        fresh = self.token_file.read()
        if fresh == self.sent or not (request.body is None or isinstance(request.body, bytes | str)):
            return response
        self.retried, self.sent = True, fresh
        response.content  # noqa: B018 -- read the 401's body, so that its connection goes back to the pool
        response.close()
        # In place, not on a copy: a redirect answered to the retry is built from this request.
        request.headers[_AUTHORIZATION] = "Bearer " + fresh
        retry: Response = response.connection.send(request, **send_options)
        retry.history.append(response)
        retry.request = request
        return self.on_response(retry, **send_options)
