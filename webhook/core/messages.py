"""Quoting client values in messages: bounded in length, depth and time, whatever the value is.

Denials and ``InvalidReview`` messages quote what the client sent, because the person reading them
needs to see what was wrong. A client can send anything JSON allows: a string of megabytes, or a
value nested a thousand levels deep, whose plain ``repr`` would exhaust the recursion limit (and
turn a bad request into an HTTP 500). So strings are quoted and cut, and any other value is
described by a bounded ``reprlib`` walk that never descends more than a few levels.
"""

import reprlib

from webhook.errors import Denied

SHOWN_CHARACTERS = 100
"""Client-supplied values are quoted in messages up to this length, so no body can flood a log line."""


def _bounded_repr() -> reprlib.Repr:
    """At most three levels and a few items per level: its cost is bounded, not proportional to the value."""
    bounded = reprlib.Repr()
    bounded.maxlevel, bounded.maxdict, bounded.maxlist = 3, 4, 4
    bounded.maxstring, bounded.maxother = SHOWN_CHARACTERS, 40
    return bounded


_BOUNDED = _bounded_repr()


def shown(value: object) -> str:
    """``value`` quoted for a message, cut to ``SHOWN_CHARACTERS``."""
    if isinstance(value, str):
        text = repr(value)
        total = f" ({len(text)} characters)"
    else:
        # JSON numbers are at most 64-bit integers or floats (orjson's limit), so their repr is short.
        text, total = _BOUNDED.repr(value), ""
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}...{total}"


def kind_of(value: object) -> str:
    """The JSON type of ``value``, as a message names it: ``an object``, ``a list``, ``null``..."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), "a number")


_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def invalid(message: str) -> Denied:
    """A denial for a Pod whose own fields (annotations, mounts, names) are unusable."""
    return Denied(message, code=422, reason="Invalid")
