"""FastAPI: the verified caller as a ``Security`` dependency, shown in OpenAPI as an HTTP bearer scheme.

::

    reviewer = TokenReviewer("secret-store", allow="api/*")
    caller = Caller(reviewer)

    @app.get("/secrets/{name}")
    async def read(name: str, who: Identity = Depends(caller)) -> dict[str, str]: ...

    @app.delete("/secrets/{name}", dependencies=[Depends(Caller(reviewer, allow="system:serviceaccounts:ops"))])
    async def delete(name: str) -> None: ...

``allow`` narrows the verifier's own for one route (names or service-account groups, see
``audience_token.rules``). A refusal has the status and headers of every other adapter (401/403/503,
``WWW-Authenticate``, ``Retry-After``), and FastAPI's usual body: ``{"detail": {"error", "reason",
"message"}}``. Close the verifier in the app's lifespan, or put ``audience_token.asgi`` in front instead.
"""

# No ``from __future__ import annotations``: FastAPI 0.115 (the extra's floor) reads ``Caller.__call__``'s annotations
# as objects (an instance has no ``__globals__`` to resolve strings in).
from collections.abc import Iterable

from fastapi import HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.requests import HTTPConnection
from fastapi.security.base import SecurityBase

from audience_token.answers import Gate, HttpRefusal, Verifier
from audience_token.errors import VerificationError
from audience_token.identity import Identity
from audience_token.rules import CallerRule

SCHEME_NAME = "ServiceAccountToken"
"""The name of the HTTP bearer scheme in the OpenAPI document."""


class Refused(HTTPException):
    """A request ``Caller`` refused: the answer of ``audience_token.answers``, as FastAPI raises it."""

    def __init__(self, answer: HttpRefusal) -> None:
        detail = {"error": answer.error, "reason": answer.reason, "message": answer.message}
        super().__init__(answer.status, detail=detail, headers=dict(answer.headers))
        self.answer = answer


class Caller(SecurityBase):
    """A dependency answering the request's verified caller; ``allow``: a narrower rule for its routes.

    It is its own security scheme (a ``SecurityBase``, as FastAPI's ``HTTPBearer``), so that OpenAPI shows
    it and FastAPI resolves one dependency per request, not two.
    """

    def __init__(self, verifier: Verifier, *, allow: CallerRule | str | Iterable[str] | None = None) -> None:
        self.model = HTTPBearerModel(
            description=f"A Kubernetes service account token for audience {verifier.audience!r} (audience_token)"
        )
        self.scheme_name = SCHEME_NAME
        self.verifier = verifier
        self.allow = CallerRule.parse(allow) if allow is not None else None
        self.gate = Gate(verifier)

    def __repr__(self) -> str:
        return f"Caller({self.verifier!r}, allow={str(self.allow) if self.allow else None!r})"

    async def __call__(self, request: HTTPConnection) -> Identity:
        gate = self.gate
        token = gate.token_of(request.headers.getlist("authorization"))
        if isinstance(token, HttpRefusal):
            raise Refused(token)
        try:
            identity = gate.lookup(token) or await gate.verify(token)
        except VerificationError as refused:
            raise Refused(gate.refusal(refused)) from None
        if self.allow is not None and not self.allow.allows(identity):
            route = getattr(request.scope.get("route"), "path", None)  # the template, never what the client sent
            method = request.scope.get("method", "GET")  # a WebSocket handshake is a GET
            where = f"{method} {route}" if isinstance(route, str) else "this route"
            raise Refused(gate.route_refusal(identity, where))
        return identity
