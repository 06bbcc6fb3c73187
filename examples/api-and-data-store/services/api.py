"""The api: ``GET /`` asks the data store who we are, with this Pod's audience token, and returns its answer.

As in the reference article, the api holds no secret of its own: token-projector gave its Pod a
projected token for audience ``data-store`` and named the file in ``SERVICE_ACCOUNT_TOKEN_PATH``.
``TokenFile`` reads it the way the kubelet rotates it and ``bearer_auth`` sends it on every call, so
a rotated token goes out within ``TOKEN_REFRESH_SECONDS`` without a restart (``token_watch`` logs it).

The data store's status and JSON body come back unchanged (its 401, 403 and 503 included, with
``Retry-After``), so ``curl`` on the api shows what the data store decided. Only when no answer
comes does the api speak for itself: 502 (data store unreachable) or 503 (no token to send).

    python -m services.api        # settings: see services.settings.ApiSettings
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import hdrs, web

from audience_token import TokenFile, TokenFileError, bearer_auth
from services.serving import configure_logging, refuse_to_start, serve
from services.settings import ApiSettings, SettingsError
from services.token_watch import watch_rotation

log = logging.getLogger("services.api")

MAX_ANSWER_BYTES: Final = 64 * 1024
"""The data store answers a few hundred bytes; more is not its answer, and is not passed on."""
REFUSALS: Final = frozenset({401, 403, 503})

SETTINGS = web.AppKey("settings", ApiSettings)
TOKEN_FILE = web.AppKey("token_file", TokenFile)
CLIENT = web.AppKey("client", aiohttp.ClientSession)


def make_app(settings: ApiSettings, *, token_file: TokenFile | None = None) -> web.Application:
    """The api's aiohttp app; the data store client and the token watch start and stop with it."""
    if token_file is None:
        token_file = TokenFile(settings.token_path, check_every=settings.token_refresh_seconds)
    app = web.Application()
    app[SETTINGS] = settings
    app[TOKEN_FILE] = token_file
    app.cleanup_ctx.append(_data_store_client)
    app.cleanup_ctx.append(_token_watch)
    app.router.add_get("/", ask_the_data_store)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _data_store_client(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=app[SETTINGS].timeout_seconds)
    async with aiohttp.ClientSession(middlewares=(bearer_auth(app[TOKEN_FILE]),), timeout=timeout) as session:
        app[CLIENT] = session
        yield


async def _token_watch(app: web.Application) -> AsyncIterator[None]:
    # Read once before serving: a Pod without its token stops here (TokenFileError), not at its first request.
    app[TOKEN_FILE].read()
    watch = asyncio.create_task(watch_rotation(app[TOKEN_FILE], every=app[SETTINGS].token_refresh_seconds))
    yield
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch


async def ask_the_data_store(request: web.Request) -> web.Response:
    url = request.app[SETTINGS].data_store_url + "/"
    try:
        async with request.app[CLIENT].get(url) as answer:
            body = await _bounded(answer)
            status, content_type = answer.status, answer.content_type
            retry_after = answer.headers.get(hdrs.RETRY_AFTER)
    except TokenFileError as error:
        log.error("no token to send to the data store: %s", error)
        return _own_answer(503, "no_token", str(error))
    except _TooLarge:
        return _own_answer(502, "bad_gateway", f"the data store at {url} sent more than {MAX_ANSWER_BYTES} bytes")
    except (aiohttp.ClientError, TimeoutError) as error:
        timed_out = isinstance(error, TimeoutError)
        why = "did not answer in time" if timed_out else f"could not be reached ({type(error).__name__})"
        log.warning("the data store at %s %s", url, why)
        return _own_answer(502, "data_store_unreachable", f"the data store at {url} {why}")
    if status in REFUSALS:
        _log_refusal(status, body)
    headers = {hdrs.RETRY_AFTER: retry_after} if retry_after else None
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)


def _log_refusal(status: int, body: bytes) -> None:
    # The data store's words never hold the token (audience_token's rule); the reason code says what to fix.
    try:
        said = json.loads(body)
    except ValueError:
        said = None
    if isinstance(said, dict):
        log.warning(
            "the data store refused our token: %s %s (%s): %s",
            status,
            said.get("error"),
            said.get("reason"),
            str(said.get("message"))[:300],
        )
    else:
        log.warning("the data store refused our token: %s", status)


class _TooLarge(Exception):
    pass


async def _bounded(answer: aiohttp.ClientResponse) -> bytes:
    chunks, size = [], 0
    async for chunk in answer.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _own_answer(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready once there is a token to send; the data store is not asked (its outage is its own probe's)."""
    try:
        request.app[TOKEN_FILE].read()
    except TokenFileError as error:
        return _own_answer(503, "no_token", str(error))
    return web.Response(text="ok\n")


def main() -> int:
    """``python -m services.api``: settings from the environment, then serve until SIGTERM."""
    try:
        settings = ApiSettings.from_environ(os.environ)
    except SettingsError as error:
        return refuse_to_start("api", error)
    configure_logging(settings.log_level)
    try:
        serve(make_app(settings), address=settings.address, port=settings.port)
    except TokenFileError as error:
        return refuse_to_start("api", error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
