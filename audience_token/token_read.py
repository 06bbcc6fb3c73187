"""The one reader of token files the kubelet rotates: when to read again, and what a token may be.

Both sides read rotating token files: the caller its audience token (``TokenFile``), the verifier its
own service account token (``kube.BearerToken``). :class:`RotatingToken` is how: it opens the path
afresh whenever the file changed (the ``stat`` of the resolved path: device, inode, mtime, size) and
at least every ``max_age`` seconds, looks at the ``stat`` at most every ``check_every`` seconds, and
keeps the last good token when a re-read fails. :func:`read_token` is what such a file may hold: a
token goes into an HTTP header, so anything but visible ASCII (a second line, a NUL, UTF-8) means
the file is not a token file, and nothing of it reaches the wire. Standard library only.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

MAX_TOKEN_BYTES: Final = 64 * 1024
"""A larger file is not a token file: it is refused rather than read into a header."""

_VISIBLE_ASCII: Final = frozenset(range(0x21, 0x7F))


class RotatingToken:
    """The current token of one file the kubelet rotates; safe to share between threads and tasks.

    ``missing(why)`` is the exception ``read()`` raises while no token was ever read (each side has
    its own: TokenFileError, ReviewUnavailable); ``describe`` names the file in the one warning
    logged when a re-read fails and the last good token is kept.
    """

    def __init__(
        self,
        path: Path,
        *,
        describe: str,
        missing: Callable[[str], Exception],
        max_age: float,
        check_every: float,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger,
    ) -> None:
        self.path = path
        self._describe = describe
        self._missing = missing
        self._max_age = max_age
        self._check_every = check_every
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._token: str | None = None
        self._signature: tuple[int, int, int, int] | None = None
        self._read_at = float("-inf")
        self._checked_at = float("-inf")
        self._stale = False
        self._warned = False

    def read(self) -> str:
        """The current token; ``missing(why)`` raised if no token could ever be read."""
        token = self._token
        if token is not None and not self._stale and self._clock() - self._checked_at < self._check_every:
            return token
        with self._lock:
            return self._refresh(self._clock())

    def invalidate(self) -> None:
        """Make the next ``read()`` open the file again (after a 401: the token may have been rotated)."""
        self._stale = True

    def _refresh(self, now: float) -> str:
        changed = True
        try:
            # stat() follows the symlinks: after the kubelet's swap the resolved file is a new inode
            # in a new directory even when the visible path is the same.
            info = os.stat(self.path)
            signature: tuple[int, int, int, int] | None = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
            changed = signature != self._signature
        except OSError:
            signature = None
        self._checked_at = now
        if self._token is not None and not self._stale and not changed and now - self._read_at < self._max_age:
            return self._token
        self._stale = False
        try:
            token = read_token(self.path)
        except Unreadable as problem:
            return self._keep_last_good(problem.why)
        self._token, self._signature, self._read_at = token, signature, now
        if self._warned:
            self._log.info("%s %s is readable again", self._describe, self.path)
        self._warned = False
        return token

    def _keep_last_good(self, why: str) -> str:
        if self._token is None:
            raise self._missing(why)
        if not self._warned:
            self._warned = True
            self._log.warning(
                "re-reading %s %s failed (%s); keeping the last good token", self._describe, self.path, why
            )
        return self._token


class Unreadable(Exception):
    """Why a token file gave no token this time (its ``why`` never holds the file's content)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def read_token(path: Path) -> str:
    """Open, read and close: the handle is never kept, so a swapped ``..data`` is always seen."""
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise Unreadable("it is not a regular file")
            raw = handle.read(MAX_TOKEN_BYTES + 1)
    except FileNotFoundError:
        raise Unreadable("the file does not exist") from None
    except PermissionError:
        raise Unreadable("permission denied") from None
    except IsADirectoryError:
        raise Unreadable("it is a directory") from None
    except OSError as error:
        raise Unreadable(error.strerror or type(error).__name__) from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise Unreadable(f"it is larger than {MAX_TOKEN_BYTES} bytes, so not a token")
    raw = raw.strip()
    if not raw:
        raise Unreadable("the file is empty")
    # The token goes into an HTTP header: anything but visible ASCII (a second line, a NUL, UTF-8)
    # means this is not a token file, and must not reach the wire.
    if not _VISIBLE_ASCII.issuperset(raw):
        raise Unreadable("it holds characters a token never has (spaces, control bytes or non-ASCII)")
    return raw.decode("ascii")
