"""The AdmissionReview as its bytes: decoded once, and asked first what the bytes answer faster.

Most of a review's cost is reading every env entry of every container to see whether the
container already sets the token's env var, and a Deployment's Pod easily has hundreds of
entries. A search of the raw body answers that question for all of them at once: a name whose
bytes occur nowhere in the body is set by no container. ``absent_names`` makes that claim only
when it is sure, so the review may skip the reading; when it is unsure it claims nothing, and
the review reads every entry as before. Either way the answer is the same (a property test
holds the two paths to that).
"""

import re
from collections.abc import Iterable

import orjson

from webhook.errors import InvalidReview

_WORD = re.compile(r"[A-Za-z0-9_]+")
"""The names ``absent_names`` can vouch for: env var names as token-projector accepts them."""

_ESCAPED_WORD_CHARACTER = re.compile(rb"\\u00(?:3[0-9]|4[1-9A-Fa-f]|5[0-9AaFf]|6[1-9A-Fa-f]|7[0-9Aa])")
"""JSON may spell any character as ``\\uXXXX``; these are the spellings of ``[A-Za-z0-9_]``.

With one of them in the body, a name could be there without its bytes. The API server never
writes them (Go's encoder escapes only quotes, backslashes, control characters, ``<``, ``>``,
``&`` and U+2028/9), so on real reviews this never costs the fast path.
"""


def decode(raw: bytes) -> object:
    """The JSON value of ``raw``; raises ``InvalidReview`` when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidReview(f"body is not valid JSON: {error}") from None


def absent_names(raw: bytes, names: Iterable[str]) -> frozenset[str]:
    """Those of ``names`` that are, for certain, no string in the JSON text ``raw``.

    A name is claimed only if it is made of ``[A-Za-z0-9_]`` and its bytes do not occur in
    ``raw``, and only if ``raw`` spells none of those characters as a ``\\u`` escape: then no
    JSON string in ``raw`` can decode to it.
    """
    # memchr first: most bodies have no backslash at all, and then the regex need not run.
    if b"\\" in raw and _ESCAPED_WORD_CHARACTER.search(raw):
        return frozenset()
    return frozenset(name for name in names if _WORD.fullmatch(name) and name.encode() not in raw)
