"""A WSGI middleware that lets in only callers with a valid token for this service (Flask, any WSGI app).

::

    app.wsgi_app = AudienceTokenMiddleware(app.wsgi_app, TokenReviewer("secret-store", allow="api/*"))

The verified caller is ``environ["audience_token.identity"]``, read with ``identity_of(request)``.
Refusals are the answers of every adapter (``audience_token.answers``). The async verifier is wrapped in
a ``SyncVerifier`` (one private loop thread, one connection pool, one single flight across threads), so
it works under gunicorn's sync and gthread workers and Flask's development server. Build it in the
worker (gunicorn's default), not before a fork (``--preload``) if it has verified anything yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from audience_token.answers import Gate, HttpRefusal, OpenPaths, Verifier
from audience_token.errors import VerificationError
from audience_token.identity import Identity
from audience_token.rules import CallerRule, RouteRules
from audience_token.sync import SyncVerifier

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

IDENTITY_KEY: Final = "audience_token.identity"


def identity_of(environ_or_request: Mapping[str, Any] | Any) -> Identity:
    """The verified caller of a WSGI environ or a request that has ``.environ`` (Flask, Werkzeug)."""
    environ = getattr(environ_or_request, "environ", environ_or_request)
    # dict first: an isinstance against the Mapping ABC costs a microsecond per request.
    identity = environ.get(IDENTITY_KEY) if isinstance(environ, dict | Mapping) else None
    if not isinstance(identity, Identity):
        raise LookupError(
            "no verified caller on this request: its path is in open_paths, or the app is not behind "
            "audience_token.wsgi.AudienceTokenMiddleware"
        )
    return identity


def raw_path_of(environ: Mapping[str, Any]) -> str | None:
    """The request target's path as the client sent it, when the server says (gunicorn, Werkzeug, uWSGI)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str):
        return None
    return raw.partition("?")[0]


def authorization_values(header: str | None) -> list[str]:
    """The ``Authorization`` values of a request: WSGI servers join repeated headers with commas.

    A bearer token never holds a comma (base64url and dots), so a comma means several values.
    """
    if header is None:
        return []
    return header.split(",") if "," in header else [header]


class AudienceTokenMiddleware:
    """Verifies the bearer token of every request except ``open_paths``; ``rules``: per-route callers."""

    def __init__(
        self,
        app: WSGIApp,
        verifier: SyncVerifier | Verifier,
        *,
        open_paths: Iterable[str] = (),
        rules: RouteRules | Mapping[str, CallerRule | str | Iterable[str]] | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier if isinstance(verifier, SyncVerifier) else SyncVerifier(verifier)
        self.gate = Gate(self.verifier.verifier)
        self.open_paths = OpenPaths(open_paths)
        self.rules = rules if isinstance(rules, RouteRules) else RouteRules(rules)
        self._verify = self.verifier.verify
        self._lookup = self.verifier.lookup
        self._any_open, self._any_rules = bool(self.open_paths), bool(self.rules)

    def __repr__(self) -> str:
        return f"AudienceTokenMiddleware({self.verifier!r}, open_paths={sorted(self.open_paths.paths)!r})"

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if self._any_open and self.open_paths.admits(path, raw_path_of(environ)):
            return self.app(environ, start_response)
        verdict = self.verdict(environ.get("HTTP_AUTHORIZATION"))
        if self._any_rules and isinstance(verdict, Identity):
            route = self.rules.refuses(verdict, environ.get("REQUEST_METHOD", ""), path)
            if route is not None:
                verdict = self.gate.route_refusal(verdict, route)
        if isinstance(verdict, Identity):
            environ[IDENTITY_KEY] = verdict
            return self.app(environ, start_response)
        start_response(f"{verdict.status} {HTTPStatus(verdict.status).phrase}", verdict.all_headers())
        # HEAD: the headers only. Werkzeug's server writes whatever the app returns, and a body after a
        # HEAD answer would be read as the next response on the connection.
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [verdict.body]

    def verdict(self, authorization: str | None) -> Identity | HttpRefusal:
        """The caller for an ``Authorization`` header (as WSGI gives it), or the answer that refuses it."""
        token = self.gate.token_of(authorization_values(authorization))
        if isinstance(token, HttpRefusal):
            return token
        try:
            return self._lookup(token) or self._verify(token)
        except VerificationError as refused:
            return self.gate.refusal(refused)
