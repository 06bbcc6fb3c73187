"""Where a token may go: the origin (scheme, host, port) of the request a caller's auth was attached to.

A caller's token belongs to the service it called. HTTP clients drop ``Authorization`` when a
redirect changes the host, but each keeps it on one more case: httpx and requests both let it follow
a same-host upgrade from ``http://host`` (port 80) to ``https://host`` (port 443), and each compares a
hop with the hop before it rather than with where the chain began. The callers' adapters
(``audience_token.httpx``, ``audience_token.requests``) compare every hop with this one *home* origin
instead, so a token goes to exactly one scheme, host and port. Framework-neutral: no client import.
"""

from __future__ import annotations

from typing import Final, TypeAlias
from urllib.parse import urlsplit

Origin: TypeAlias = tuple[str, str, int]
"""(scheme, host, port), lower-cased, with the scheme's default port filled in."""

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def origin_of(url: str) -> Origin | None:
    """The origin of an absolute ``url``; None when it has none (then no token goes there)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port out of range or not a number, a bracket left open
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    if not scheme or not host or port is None:
        return None
    return scheme, host, port
