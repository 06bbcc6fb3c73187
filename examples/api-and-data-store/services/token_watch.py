"""The api's look at its token file on a timer, as the article's ticker does, logging each rotation it finds.

``TokenFile`` already sends a rotated token as soon as the kubelet writes it; this loop makes the
rotation visible in the log even while no request comes in ("re-read the rotated service account
token ..."), and reads the file at least that often. It keeps a SHA-256 digest of the last token to
tell a new one from the old, never the token itself, and logs only the file's path and the new
token's expiry (read unverified from its payload: for the log, never to trust it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
from datetime import UTC, datetime

from audience_token import TokenFile

log = logging.getLogger("services.api")


def expiry_of(token: str) -> str:
    """When ``token`` says it expires, as an ISO time in UTC, or ``unknown``; nothing else of it is shown."""
    parts = token.split(".")
    if len(parts) != 3:
        return "unknown"
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        moment = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
    except (binascii.Error, ValueError, TypeError, KeyError, OverflowError, OSError):
        return "unknown"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


async def watch_rotation(token_file: TokenFile, *, every: float) -> None:
    """Read ``token_file`` every ``every`` seconds, forever; the first read raises TokenFileError if none works."""
    token = token_file.read()
    last = _digest(token)
    log.info(
        "sending the service account token from %s (it expires %s); looking for a rotated one every %g s",
        token_file.path,
        expiry_of(token),
        every,
    )
    while True:
        await asyncio.sleep(every)
        # After one good read TokenFile never raises: it keeps the last good token and logs the problem.
        token = token_file.read()
        digest = _digest(token)
        if digest != last:
            last = digest
            log.info(
                "re-read the rotated service account token from %s (the new one expires %s)",
                token_file.path,
                expiry_of(token),
            )
