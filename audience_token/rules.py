"""Which requests a receiver adapter lets through untouched, and narrower callers per route.

``OpenPaths``: exact paths left open, decided on the path as sent *and* as decoded, for adapters whose
framework gives both (ASGI's ``raw_path``, WSGI's ``RAW_URI``/``REQUEST_URI``).

Narrower rules than the verifier's ``allow``: per route, by method and path, by name or by group.

The verifier's ``allow`` says who may call the service at all; a route may then say who may call *it*.
A rule lists callers in either form:

- ``NAMESPACE/SERVICEACCOUNT`` patterns, as ``allow`` (``api/reports``, ``api/*``);
- service-account groups, as the API server reports them: ``system:serviceaccounts:NAMESPACE`` (every
  account of a namespace) or ``system:serviceaccounts`` (every service account).

``RouteRules`` maps ``"METHOD /path"`` keys to such lists; the path is exact, or a prefix ending in
``/*``; the method is ``*`` for any. The first key that matches decides; a request no key matches is
left to the verifier's ``allow`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from audience_token.answers import WWW_AUTHENTICATE, Gate, HttpRefusal
from audience_token.errors import ConfigError
from audience_token.identity import AllowPattern, Identity, is_namespace

SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
_METHODS = frozenset({"*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


@dataclass(frozen=True, slots=True)
class CallerRule:
    """The callers a route accepts: account patterns and service-account groups; never empty."""

    patterns: tuple[AllowPattern, ...]
    groups: frozenset[str]

    @classmethod
    def parse(cls, allow: CallerRule | str | Iterable[str]) -> CallerRule:
        if isinstance(allow, CallerRule):
            return allow
        items = [allow] if isinstance(allow, str) else list(allow)
        patterns, groups = [], set()
        for item in items:
            if isinstance(item, str) and item.startswith(SERVICE_ACCOUNTS_GROUP):
                namespace = item[len(SERVICE_ACCOUNTS_GROUP) :].removeprefix(":")
                if item != SERVICE_ACCOUNTS_GROUP and (
                    not item.startswith(SERVICE_ACCOUNTS_GROUP + ":") or not is_namespace(namespace)
                ):
                    raise ConfigError(
                        f"group {item[:80]!r} must be 'system:serviceaccounts' or 'system:serviceaccounts:NAMESPACE'"
                    )
                groups.add(item)
            else:
                patterns.append(AllowPattern.parse(item))
        if not patterns and not groups:
            raise ConfigError(
                "a route's allow is empty: name callers as NAMESPACE/SERVICEACCOUNT or system:serviceaccounts:NAMESPACE"
            )
        return cls(tuple(patterns), frozenset(groups))

    def allows(self, identity: Identity) -> bool:
        if any(p.matches(identity.namespace, identity.service_account) for p in self.patterns):
            return True
        return bool(self.groups) and not self.groups.isdisjoint(identity.groups)

    def __str__(self) -> str:
        return ", ".join([*(str(p) for p in self.patterns), *sorted(self.groups)])


@dataclass(frozen=True, slots=True)
class _Route:
    key: str
    method: str
    path: str
    prefix: bool
    rule: CallerRule

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method):
            return False
        return path.startswith(self.path) if self.prefix else path == self.path


class RouteRules:
    """``{"GET /reports/*": ["api/reports"], "* /admin": ["system:serviceaccounts:ops"]}``: first match decides."""

    def __init__(self, rules: Mapping[str, CallerRule | str | Iterable[str]] | None = None) -> None:
        self._routes: list[_Route] = []
        for key, allow in (rules or {}).items():
            method, _, path = key.strip().partition(" ")
            method, path = method.upper(), path.strip()
            if method not in _METHODS or not path.startswith("/") or "%" in path:
                raise ConfigError(
                    f"route rule {key[:80]!r} must read 'METHOD /path' or 'METHOD /prefix/*' (METHOD '*' for any)"
                )
            prefix = path.endswith("/*")
            rule = CallerRule.parse(allow)
            self._routes.append(_Route(f"{method} {path}", method, path[:-1] if prefix else path, prefix, rule))

    def __bool__(self) -> bool:
        return bool(self._routes)

    def rule_for(self, method: str, path: str) -> tuple[str, CallerRule] | None:
        """The first route matching ``method`` and (decoded) ``path``: its key and rule; None when none does."""
        for route in self._routes:
            if route.matches(method, path):
                return route.key, route.rule
        return None

    def refuses(self, identity: Identity, method: str, path: str) -> str | None:
        """The key of the route whose rule does not name ``identity`` (for the refusal); None when allowed."""
        found = self.rule_for(method, path)
        return found[0] if found is not None and not found[1].allows(identity) else None

    def allows(self, identity: Identity, method: str, path: str) -> bool:
        return self.refuses(identity, method, path) is None


def refusal_of_route(gate: Gate, identity: Identity, route: str) -> HttpRefusal:
    """403 for a caller the verifier accepts but ``route``'s own, narrower rule does not name.

    ``route`` is the rule's key or the framework's route template: never the path the client sent.
    """
    return HttpRefusal(
        403,
        ((WWW_AUTHENTICATE, f'{gate.challenge}, error="insufficient_scope"'),),
        "insufficient_scope",
        "not_allowed",
        f"service account {identity.namespace}/{identity.service_account} is authenticated but not allowed to "
        f"call {route}: the route's own allow list does not name it",
    )


class OpenPaths:
    """Exact paths let through without a token, decided on the path as sent *and* as decoded.

    A path is open only when the path the server decoded is listed and the raw path, when the server
    gives it, is exactly the same text: ``/healthz%2Fready`` or ``/%68ealthz`` are never open, whatever
    a router later makes of them. (An open path that a client sends percent-encoded therefore asks for a
    token; no client encodes a plain ``/healthz``.)
    """

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, str):
            paths = (paths,)
        listed = frozenset(paths)
        for path in listed:
            if not isinstance(path, str) or not path.startswith("/") or "%" in path or "?" in path:
                raise ConfigError(f"open path {path!r} must be an exact path such as '/healthz' (no '%', no '?')")
        self.paths = listed

    def __bool__(self) -> bool:
        return bool(self.paths)

    def admits(self, path: str, raw: bytes | str | None) -> bool:
        """Whether ``path`` (decoded) is open, given ``raw`` (the request target's path as sent, if known)."""
        if path not in self.paths:
            return False
        if raw is None:
            return True
        if isinstance(raw, bytes):
            raw = raw.decode("latin-1")
        return raw.partition("?")[0] == path


def response_headers(refusal: HttpRefusal) -> list[tuple[str, str]]:
    """Every header of a refusal, ``Content-Type`` and ``Content-Length`` first, as a server adapter sends them."""
    return [("Content-Type", refusal.content_type), ("Content-Length", str(len(refusal.body))), *refusal.headers]
