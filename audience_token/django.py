"""Django: a middleware configured from ``settings.AUDIENCE_TOKEN``; the verified caller is ``request.caller``.

::

    MIDDLEWARE = ["audience_token.django.AudienceTokenMiddleware", ...]
    AUDIENCE_TOKEN = {"audience": "secret-store", "allow": ["api/*"], "open_paths": ["/healthz"]}

Keys: ``audience`` and ``allow`` (required); ``open_paths``; ``mode``: ``"tokenreview"`` (default) or
``"offline"`` (extra ``offline``; ``issuer`` optional); ``kubeconfig`` and ``context`` for development
(in a Pod: none); ``routes``: per-route callers (``audience_token.rules``), e.g.
``{"DELETE /secrets/*": ["system:serviceaccounts:ops"]}``; ``timeout``: the longest wait for a verdict;
``success_ttl`` and ``failure_ttl``: the cache's (``ReviewerSettings``).

Sync and async: under WSGI it verifies on the request's thread, under ASGI without blocking the event
loop; either way through one ``SyncVerifier`` per process (one pool, one single flight). Refusals are
the answers of every adapter (``audience_token.answers``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from audience_token.answers import Gate, HttpRefusal, OpenPaths, Verifier
from audience_token.errors import ConfigError, VerificationError
from audience_token.identity import Identity
from audience_token.rules import RouteRules
from audience_token.sync import SyncVerifier
from audience_token.wsgi import authorization_values

MODES: Final = ("tokenreview", "offline")
KEYS: Final = frozenset(
    {
        "audience", "allow", "open_paths", "mode", "kubeconfig", "context", "issuer", "routes", "timeout",
        "credentials", "success_ttl", "failure_ttl",
    }
)  # fmt: skip

Response = HttpResponse
GetResponse = Callable[[HttpRequest], Any]


def verifier_from(config: Mapping[str, Any]) -> Verifier:
    """The verifier ``config`` (``settings.AUDIENCE_TOKEN``) describes; ConfigError naming what is wrong."""
    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise ConfigError(f"unknown keys {unknown}; the keys are {sorted(KEYS)}")
    for required in ("audience", "allow"):
        if required not in config:
            raise ConfigError(f"{required!r} is required (e.g. 'audience': 'secret-store', 'allow': ['api/*'])")
    mode = config.get("mode", "tokenreview")
    common: dict[str, Any] = {
        "allow": config["allow"],
        "kubeconfig": config.get("kubeconfig"),
        "context": config.get("context"),
        "credentials": config.get("credentials"),
    }
    if mode == "tokenreview":
        if "issuer" in config:
            raise ConfigError("'issuer' is for mode 'offline' only")
        from audience_token.reviewer import ReviewerSettings, TokenReviewer

        defaults = ReviewerSettings()
        settings = ReviewerSettings(
            success_ttl=float(config.get("success_ttl", defaults.success_ttl)),
            failure_ttl=float(config.get("failure_ttl", defaults.failure_ttl)),
        )
        return TokenReviewer(config["audience"], settings=settings, **common)
    if "success_ttl" in config or "failure_ttl" in config:
        raise ConfigError("'success_ttl' and 'failure_ttl' are for mode 'tokenreview' only")
    if mode == "offline":
        from audience_token.offline import OfflineVerifier

        return OfflineVerifier(config["audience"], issuer=config.get("issuer"), **common)
    raise ConfigError(f"'mode' must be one of {list(MODES)}, not {mode!r}")


class AudienceTokenMiddleware:
    """Verifies every request's bearer token except ``open_paths``; the caller goes to ``request.caller``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        config = getattr(settings, "AUDIENCE_TOKEN", None)
        if not isinstance(config, Mapping):
            raise ImproperlyConfigured(
                "settings.AUDIENCE_TOKEN must be a dict such as {'audience': 'secret-store', 'allow': ['api/*']}"
            )
        try:
            self.verifier = _shared(config)
            self.open_paths = OpenPaths(config.get("open_paths", ()))
            self.rules = RouteRules(config.get("routes"))
        except (ConfigError, ValueError) as error:
            raise ImproperlyConfigured(f"settings.AUDIENCE_TOKEN: {error}") from None
        self.gate = Gate(self.verifier.verifier)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        if self._is_open(request):
            return self.get_response(request)
        token = self.gate.token_of(authorization_values(request.META.get("HTTP_AUTHORIZATION")))
        if isinstance(token, HttpRefusal):
            return _response(token)
        try:
            identity = self.verifier.verify(token)
        except VerificationError as refused:
            return _response(self.gate.refusal(refused))
        return self._admitted(request, identity) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        if self._is_open(request):
            return await get_response(request)
        token = self.gate.token_of(authorization_values(request.META.get("HTTP_AUTHORIZATION")))
        if isinstance(token, HttpRefusal):
            return _response(token)
        try:
            identity = await self.verifier.averify(token)
        except VerificationError as refused:
            return _response(self.gate.refusal(refused))
        return self._admitted(request, identity) or await get_response(request)

    def _is_open(self, request: HttpRequest) -> bool:
        if not self.open_paths:
            return False
        scope = getattr(request, "scope", None)  # ASGI: the path as sent; WSGI: what the server says
        raw: bytes | str | None = scope.get("raw_path") if isinstance(scope, Mapping) else None
        if raw is None:
            raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
        return self.open_paths.admits(request.path, raw)

    def _admitted(self, request: HttpRequest, identity: Identity) -> HttpResponse | None:
        """None after putting ``identity`` on ``request``; a 403 when a route rule does not name it."""
        if self.rules:
            route = self.rules.refuses(identity, request.method or "", request.path)
            if route is not None:
                return _response(self.gate.route_refusal(identity, route))
        request.caller = identity  # type: ignore[attr-defined]
        return None


_VERIFIERS: dict[int, tuple[Mapping[str, Any], SyncVerifier]] = {}


def _shared(config: Mapping[str, Any]) -> SyncVerifier:
    """One SyncVerifier per settings dict and process: Django builds its middleware chain more than once.

    The dict is kept beside its verifier and compared by identity: an id alone may be reused by a new
    dict once the old one is freed, which would hand it another audience's verifier.
    """
    entry = _VERIFIERS.get(id(config))
    if entry is not None and entry[0] is config:
        return entry[1]
    timeout = config.get("timeout")
    verifier = SyncVerifier(verifier_from(config), timeout=float(timeout) if timeout is not None else None)
    _VERIFIERS[id(config)] = (config, verifier)
    return verifier


def _response(answer: HttpRefusal) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.all_headers()[1:]:
        response[name] = value
    return response
