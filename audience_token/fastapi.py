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

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from audience_token.receiver_answers import Answer, Answers
from audience_token.asgi import AsyncVerifier
from audience_token.errors import VerificationError
from audience_token.identity import Identity
from audience_token.rules import CallerRule

_SCHEME = HTTPBearer(
    auto_error=False,
    scheme_name="ServiceAccountToken",
    description="A Kubernetes service account token for this service's audience (audience_token).",
)


class Refused(HTTPException):
    """A request ``Caller`` refused: the answer of ``audience_token.receiver_answers``, as FastAPI raises it."""

    def __init__(self, answer: Answer) -> None:
        detail = {"error": answer.error, "reason": answer.reason, "message": answer.message}
        super().__init__(answer.status, detail=detail, headers=dict(answer.headers))
        self.answer = answer


def _unknown(token: str) -> Identity | None:
    return None


class Caller:
    """A dependency answering the request's verified caller; ``allow``: a narrower rule for its routes."""

    def __init__(self, verifier: AsyncVerifier, *, allow: CallerRule | str | Iterable[str] | None = None) -> None:
        self.verifier = verifier
        self.allow = CallerRule.parse(allow) if allow is not None else None
        self.answers = Answers(verifier.audience)
        self._lookup: Callable[[str], Identity | None] = getattr(verifier, "lookup", _unknown)

    def __repr__(self) -> str:
        return f"Caller({self.verifier!r}, allow={str(self.allow) if self.allow else None!r})"

    async def __call__(
        self, request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_SCHEME)]
    ) -> Identity:
        token = self.answers.token_of(request.headers.getlist("authorization"))
        if isinstance(token, Answer):
            raise Refused(token)
        try:
            identity = self._lookup(token) or await self.verifier.verify(token)
        except VerificationError as refused:
            raise Refused(self.answers.refusal(refused)) from None
        if self.allow is not None and not self.allow.allows(identity):
            route = getattr(request.scope.get("route"), "path", None)  # the template, never what the client sent
            where = f"{request.method} {route}" if isinstance(route, str) else "this route"
            raise Refused(self.answers.not_allowed_here(f"{identity.namespace}/{identity.service_account}", where))
        return identity
