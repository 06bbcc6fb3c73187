"""What both services' ``main`` share: logging, serving an app until SIGTERM, and exit status 2 on bad settings.

A setting that cannot work (a bad variable, an unusable kubeconfig, no token file) ends the process at
start with one line on stderr naming it, not a traceback: a Pod in CrashLoopBackOff then shows the
fix in ``kubectl logs``.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

from aiohttp import web

SHUTDOWN_SECONDS: Final = 5.0
"""Time given to requests in flight after SIGTERM; well inside a Pod's default 30 s grace period."""
BAD_SETTINGS: Final = 2


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def refuse_to_start(service: str, problem: Exception) -> int:
    """Say why ``service`` cannot start, in one line, and give the exit status for bad settings."""
    print(f"{service}: cannot start: {problem}", file=sys.stderr)
    return BAD_SETTINGS


def serve(app: web.Application, *, address: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; errors raised while the app starts reach the caller."""
    web.run_app(app, host=address, port=port, shutdown_timeout=SHUTDOWN_SECONDS, print=None)
