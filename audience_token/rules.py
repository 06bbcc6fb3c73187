"""Narrower rules than the verifier's ``allow``: per route, by method and path, by name or by group.

The verifier's ``allow`` says who may call the service at all; a route may then say who may call *it*.
A rule lists callers in either form:

- ``NAMESPACE/SERVICEACCOUNT`` patterns, as ``allow`` (``api/reports``, ``api/*``);
- service-account groups, as the API server reports them: ``system:serviceaccounts:NAMESPACE`` (every
  account of a namespace) or ``system:serviceaccounts`` (every service account).

``RouteRules`` maps ``"METHOD /path"`` keys to such lists; the path is exact, or a prefix ending in
``/*`` (``/admin/*`` covers ``/admin`` itself too); the method is ``*`` for any, and a ``GET`` rule
governs ``HEAD`` as well (frameworks answer HEAD with the GET handler). The first key that matches
decides; a request no key matches is left to the verifier's ``allow`` alone.

The path is the request's full path as the client sent it (decoded), mount prefix included: under WSGI
``SCRIPT_NAME + PATH_INFO``, under Django ``request.path``, under ASGI ``scope["path"]``. An app
mounted at ``/store`` writes ``"DELETE /store/secrets/*"``. (Keys compared with the full path cannot be
skipped by a mount prefix; a key written without the prefix matches nothing and is a no-op, not a bypass
of ``allow``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
        # A GET rule governs HEAD too: Starlette, Flask and Django answer HEAD with the GET handler.
        if self.method not in ("*", method) and not (self.method == "GET" and method == "HEAD"):
            return False
        if self.prefix:  # "/admin/*" covers "/admin" itself: a route at /admin must not skip the rule
            return path.startswith(self.path) or path == self.path[:-1]
        return path == self.path


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
