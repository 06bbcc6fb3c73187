"""A pure ASGI middleware that lets in only callers with a valid token for this service.

Starlette, FastAPI, Litestar, Quart, an MCP server on Starlette: any ASGI 3 application, with no
framework imported here::

    app = AudienceTokenMiddleware(app, TokenReviewer("secret-store", allow="api/*"), open_paths={"/healthz"})

The verified caller is in ``scope["state"]["audience_token.identity"]`` (Starlette: ``request.state``),
read with ``identity_of(request)``. HTTP requests and WebSocket handshakes get the answers of
``audience_token.answers`` (401/403/503, ``WWW-Authenticate``, a JSON body); a refused handshake is
refused before it is accepted, with that same HTTP answer where the server offers the
``websocket.http.response`` extension, else with ``websocket.close`` (the server answers 403). The
verifier's client is closed when the lifespan ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final

from audience_token.answers import Gate, HttpRefusal, OpenPaths, Verifier
from audience_token.errors import VerificationError, unexpected
from audience_token.identity import Identity
from audience_token.rules import CallerRule, RouteRules

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDENTITY_KEY: Final = "audience_token.identity"
"""Where the verified caller is kept in ``scope["state"]``."""
_AUTHORIZATION: Final = b"authorization"
_HTTP_RESPONSE: Final = "websocket.http.response"
_POLICY_VIOLATION: Final = 1008


def identity_of(scope_or_request: Mapping[str, Any] | Any) -> Identity:
    """The verified caller of an ASGI scope or a framework request (anything with ``.scope``).

    LookupError on a path the middleware left open, or when the app is not behind it.
    """
    scope = getattr(scope_or_request, "scope", scope_or_request)
    # dict first: an isinstance against the Mapping ABC costs a microsecond per request.
    state = scope.get("state") if isinstance(scope, dict | Mapping) else None
    identity = state.get(IDENTITY_KEY) if isinstance(state, dict | Mapping) else None
    if not isinstance(identity, Identity):
        path = scope.get("path") if isinstance(scope, Mapping) else None
        raise LookupError(
            f"no verified caller on {path!r}: the path is in open_paths, or the app is not behind "
            "audience_token.asgi.AudienceTokenMiddleware"
        )
    return identity


class AudienceTokenMiddleware:
    """Verifies the bearer token of every HTTP request and WebSocket handshake except ``open_paths``.

    ``rules``: narrower callers per route (``audience_token.rules.RouteRules``), e.g.
    ``{"DELETE /secrets/*": ["system:serviceaccounts:ops"]}``.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        open_paths: Iterable[str] = (),
        rules: RouteRules | Mapping[str, CallerRule | str | Iterable[str]] | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.gate = Gate(verifier)
        self.open_paths = OpenPaths(open_paths)
        self.rules = rules if isinstance(rules, RouteRules) else RouteRules(rules)
        self._any_open, self._any_rules = bool(self.open_paths), bool(self.rules)
        self._token_of, self._lookup, self._verify = self.gate.token_of, self.gate.lookup, self.gate.verify

    def __repr__(self) -> str:
        return f"AudienceTokenMiddleware({self.verifier!r}, open_paths={sorted(self.open_paths.paths)!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._closing(send))
            return
        if kind not in ("http", "websocket") or (
            self._any_open and self.open_paths.admits(scope.get("path", ""), scope.get("raw_path"))
        ):
            await self.app(scope, receive, send)
            return
        verdict = await self.verdict(scope)
        if self._any_rules and isinstance(verdict, Identity):
            # A WebSocket handshake is a GET; the path as decoded, which is what routers match.
            route = self.rules.refuses(verdict, scope.get("method", "GET"), scope.get("path", ""))
            if route is not None:
                verdict = self.gate.route_refusal(verdict, route)
        if isinstance(verdict, Identity):
            state = scope.get("state")
            scope = dict(scope)
            scope["state"] = {**state, IDENTITY_KEY: verdict} if state else {IDENTITY_KEY: verdict}
            await self.app(scope, receive, send)
        elif kind == "http":
            await _send_http(verdict, send, head=scope.get("method") == "HEAD")
        else:
            await self._refuse_handshake(verdict, scope, receive, send)

    async def verdict(self, scope: Scope) -> Identity | HttpRefusal:
        """The caller of ``scope``, or the answer that refuses it."""
        values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == _AUTHORIZATION]
        token = self._token_of(values)
        if isinstance(token, HttpRefusal):
            return token
        try:
            identity = self._lookup(token)
            return identity if identity is not None else await self._verify(token)
        except VerificationError as refused:
            return self.gate.refusal(refused)
        except Exception as error:  # a defect in a verifier (of one's own): the library's 503, never a 500
            return self.gate.refusal(unexpected(error))

    def _closing(self, send: Send) -> Send:
        async def send_after_closing(message: Message) -> None:
            kind = message.get("type")
            if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await self.verifier.close()
                except Exception as error:  # the server still hears the end of the shutdown
                    if kind == "lifespan.shutdown.complete":
                        failed = f"closing the token verifier failed: {type(error).__name__}"
                        message = {"type": "lifespan.shutdown.failed", "message": failed}
            await send(message)

        return send_after_closing

    @staticmethod
    async def _refuse_handshake(answer: HttpRefusal, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message.get("type") != "websocket.connect":
            return  # the client went away before its handshake was read: nothing to answer
        if _HTTP_RESPONSE in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": answer.status, "headers": _raw(answer)})
            await send({"type": "websocket.http.response.body", "body": answer.body})
        else:
            # Close reasons are limited to 123 bytes.
            reason = f"{answer.status} {answer.error}: {answer.message}".encode()[:123].decode("utf-8", "ignore")
            await send({"type": "websocket.close", "code": _POLICY_VIOLATION, "reason": reason})


def _raw(answer: HttpRefusal) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.all_headers()]


async def _send_http(answer: HttpRefusal, send: Send, *, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": _raw(answer)})
    # HEAD: the headers only (uvicorn drops a HEAD body itself; not every server does).
    await send({"type": "http.response.body", "body": b"" if head else answer.body})
