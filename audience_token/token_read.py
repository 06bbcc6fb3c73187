"""Read one token from a file the kubelet rotates: open, read, close, and only visible ASCII.

Both sides read rotating token files: the caller its audience token (``TokenFile``), the verifier its
own service account token (``kube.BearerToken``). This is the one rule for what such a file may
hold: a token goes into an HTTP header, so anything but visible ASCII (a second line, a NUL, UTF-8)
means the file is not a token file, and nothing of it reaches the wire. A framework-neutral core
module: standard library only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

MAX_TOKEN_BYTES: Final = 64 * 1024
"""A larger file is not a token file: it is refused rather than read into a header."""

_VISIBLE_ASCII: Final = frozenset(range(0x21, 0x7F))


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
