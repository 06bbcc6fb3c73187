"""How a value taken from a token or an API answer appears in a refusal: quoted, and cut short.

Both verifiers word refusals with what a token claims or what the API server reported (an audience,
an issuer, a subject, a username). Those values are chosen by whoever made the token, so they are
shown as ``repr`` (no newline or control character reaches a log line) and cut at 60 characters,
with the length said, so one huge claim cannot flood a message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

SHOWN_CHARS: Final = 60
SHOWN_ITEMS: Final = 5


def shown(value: object) -> str:
    """``repr(value)``, cut to :data:`SHOWN_CHARS` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def shown_list(values: Iterable[str]) -> str:
    """``[a, b, ...]``: the first :data:`SHOWN_ITEMS` values, each :func:`shown`."""
    items = list(values)
    listed = ", ".join(shown(v) for v in items[:SHOWN_ITEMS])
    return f"[{listed}{', ...' if len(items) > SHOWN_ITEMS else ''}]"
