"""The caller's token: read the projected file the way the kubelet rotates it, never a stale copy.

The kubelet writes a projected service account token with an *atomic writer*: the files live in a
timestamped directory (``..2026_12_01_10_00_00.123456789``), a ``..data`` symlink points at it and
the visible ``token`` is a symlink to ``..data/token``. At 80% of the token's life it writes a new
timestamped directory and renames a fresh ``..data`` over the old one, so a reader sees the old
token or the new one, never half of either. An application that read the file once at start-up
keeps sending the old token, which dies at ``exp``; one that keeps the file open keeps reading
the deleted old directory. :class:`TokenFile` opens the path afresh whenever the file changed
(the ``stat`` of the resolved path: device, inode, mtime, size) and at least every
:data:`MAX_AGE_SECONDS`, and keeps the last good token when a re-read fails: the rules of
:class:`~audience_token.token_read.RotatingToken`, the one reader of such files, which the verifier's
own token goes through as well. This module adds where the file is (the variables token-projector
sets) and what to say when no token could ever be read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from audience_token.errors import TokenFileError
from audience_token.identity import AUDIENCE_ANNOTATION
from audience_token.token_read import MAX_TOKEN_BYTES, RotatingToken, Unreadable, read_token

__all__ = ["DIR_ENV_VAR", "ENV_VAR", "MAX_TOKEN_BYTES", "TokenFile", "Unreadable", "audience_file_name", "read_token"]

ENV_VAR: Final = "SERVICE_ACCOUNT_TOKEN_PATH"
"""The variable token-projector sets in every container of an annotated Pod (its ``env_var`` setting)."""

DIR_ENV_VAR: Final = "SERVICE_ACCOUNT_TOKEN_DIR"
"""Set (to the mount path) only in Pods that list several audiences: each audience's token is a file there."""

_KEPT: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.")


def audience_file_name(audience: str) -> str:
    """The file of ``audience``'s token in ``$SERVICE_ACCOUNT_TOKEN_DIR``: the webhook's rule, restated.

    The library never imports the webhook, so the rule (``webhook.core.contract.audience_file_name``)
    is written here again and a test holds the two equal: percent-encoding of the UTF-8 bytes, where
    lower-case letters, digits, ``-``, ``_`` and ``.`` stay (but a leading or trailing ``.``).
    """
    data = audience.encode("utf-8", "surrogatepass")
    last = len(data) - 1
    return "".join(
        chr(byte) if byte in _KEPT and not (byte == 0x2E and i in (0, last)) else f"%{byte:02X}"
        for i, byte in enumerate(data)
    )


MAX_AGE_SECONDS: Final = 60.0
"""A token is read from disk again at least this often, even if the file looks unchanged."""

CHECK_EVERY_SECONDS: Final = 1.0
"""How often ``read()`` looks at the file's ``stat``; in between it answers from memory.

A rotated token is noticed within this long. The kubelet rotates at 80% of the token's life and the
old token stays valid until its ``exp``, so a second's delay costs nothing, and a hot request path
does not pay a ``stat`` per request.
"""


log = logging.getLogger("audience_token.token_file")


class TokenFile:
    """The current token from a projected service account token file.

    ``TokenFile()`` reads the path from ``$SERVICE_ACCOUNT_TOKEN_PATH`` once, here, at construction
    (token-projector sets it in every container of an annotated Pod); ``TokenFile(path)`` uses
    ``path``. ``TokenFile(audience="secret-store")`` finds that audience's token in a Pod that lists
    several: ``$SERVICE_ACCOUNT_TOKEN_DIR/<audience_file_name(audience)>``; in a Pod with one audience
    (no ``$SERVICE_ACCOUNT_TOKEN_DIR``) it is the one token at ``$SERVICE_ACCOUNT_TOKEN_PATH``.
    ``read()`` returns the current token; ``headers()`` returns the ``Authorization`` header for any
    HTTP client. Safe to share between threads and tasks.

    ``clock`` (monotonic seconds) is there for tests; ``max_age`` and ``check_every`` are in seconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        audience: str | None = None,
        max_age: float = MAX_AGE_SECONDS,
        check_every: float = CHECK_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = "the path given to TokenFile"
        if audience is not None:
            if path is not None:
                raise TokenFileError("give TokenFile a path or an audience, not both")
            if not audience:
                raise TokenFileError("TokenFile(audience=...) needs the audience's name, e.g. 'secret-store'")
            directory = os.environ.get(DIR_ENV_VAR, "")
            if directory:  # a Pod with several audiences: each has its own file there
                path, self._source = os.path.join(directory, audience_file_name(audience)), f"${DIR_ENV_VAR}"
        if path is None:
            from_env = os.environ.get(ENV_VAR, "")
            if not from_env:
                raise TokenFileError(
                    f"${ENV_VAR} is not set and no path was given: token-projector sets it in the containers "
                    f"of Pods annotated {AUDIENCE_ANNOTATION}; is this Pod annotated, and was it created after "
                    "the webhook was registered? Or pass TokenFile(path)."
                )
            path, self._source = from_env, f"${ENV_VAR}"
        self.path = Path(path)
        self._file = RotatingToken(
            self.path,
            describe="the token file",
            missing=self._never_read,
            max_age=max_age,
            check_every=check_every,
            clock=clock,
            log=log,
        )

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    def read(self) -> str:
        """The current token; raises :class:`TokenFileError` if no token could ever be read."""
        return self._file.read()

    def headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for any HTTP client."""
        return {"Authorization": "Bearer " + self._file.read()}

    def invalidate(self) -> None:
        """Make the next ``read()`` open the file again, as after a 401 from the receiver."""
        self._file.invalidate()

    def _never_read(self, why: str) -> TokenFileError:
        return TokenFileError(
            f"no token could be read from {self.path} ({self._source}): {why}. Check that the Pod is "
            f"annotated {AUDIENCE_ANNOTATION}, that the projected volume is mounted at that path in this "
            f"container, and that ${ENV_VAR} names the file token-projector mounted."
        )
