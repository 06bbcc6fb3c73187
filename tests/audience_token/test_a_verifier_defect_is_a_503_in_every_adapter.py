"""A verifier that raises something other than a refusal gets the library's 503 in every adapter, never a 500.

A closed loop racing ``close()``, a cancelled review, a bug in a verifier of one's own: each adapter
answers ``errors.unexpected`` (503, ``Retry-After``; the log names the class, never the message).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from audience_token import Identity, ReviewUnavailable
from audience_token.asgi import AudienceTokenMiddleware as AsgiMiddleware
from audience_token.middleware import token_middleware
from audience_token.sync import SyncVerifier
from audience_token.wsgi import AudienceTokenMiddleware as WsgiMiddleware
from tests.audience_token.servers import in_a_thread, uvicorn_serving, werkzeug_serving

SECRET = "secret-in-the-message"
DEFECTS: list[BaseException] = [
    RuntimeError(f"Event loop is closed {SECRET}"),
    concurrent.futures.CancelledError(SECRET),
    KeyError(SECRET),
]


class Broken:
    """A verifier of one's own with a bug: ``verify`` (or ``lookup``) raises ``defect``."""

    audience = "secret-store"

    def __init__(self, defect: BaseException, *, in_lookup: bool = False) -> None:
        self.defect, self.in_lookup = defect, in_lookup

    def lookup(self, token: str) -> Identity | None:
        if self.in_lookup:
            raise self.defect
        return None

    async def verify(self, token: str) -> Identity:
        raise self.defect

    async def close(self) -> None:
        pass


class CancelledOnItsLoop(Broken):
    """A review cancelled on the private loop (as when ``close()`` races it)."""

    def __init__(self) -> None:
        super().__init__(RuntimeError())

    async def verify(self, token: str) -> Identity:
        raise asyncio.CancelledError


BEARER = {"Authorization": "Bearer a.b.c"}


def assert_a_logged_503(status: int, body: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    assert status == 503
    assert body["error"] == "temporarily_unavailable"
    assert "unexpectedly" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in str(body)


@pytest.mark.parametrize("in_lookup", [False, True])
@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: type(d).__name__)
async def test_sync_verifier_turns_a_defect_into_review_unavailable_from_threads_and_loops(
    defect: BaseException, in_lookup: bool
) -> None:
    sync = SyncVerifier(Broken(defect, in_lookup=in_lookup), timeout=2)
    try:
        with pytest.raises(ReviewUnavailable):
            await asyncio.to_thread(sync.verify, "a.b.c")
        with pytest.raises(ReviewUnavailable):
            await sync.averify("a.b.c")
    finally:
        await asyncio.to_thread(sync.close)


async def test_a_review_cancelled_on_the_private_loop_is_review_unavailable_not_a_cancellation() -> None:
    sync = SyncVerifier(CancelledOnItsLoop(), timeout=2)
    try:
        with pytest.raises(ReviewUnavailable):
            await sync.averify("a.b.c")
        with pytest.raises(ReviewUnavailable):
            await asyncio.to_thread(sync.verify, "a.b.c")
    finally:
        await asyncio.to_thread(sync.close)


async def test_a_cancelled_caller_of_averify_is_still_cancelled() -> None:
    class Slow(Broken):
        async def verify(self, token: str) -> Identity:
            await asyncio.sleep(30)
            raise AssertionError("unreachable")

    sync = SyncVerifier(Slow(RuntimeError()), timeout=20)
    try:
        task = asyncio.create_task(sync.averify("a.b.c"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await asyncio.to_thread(sync.close)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: type(d).__name__)
async def test_the_asgi_middleware_under_uvicorn_answers_503(
    defect: BaseException, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raise AssertionError("a refused request reached the app")

    async with (
        uvicorn_serving(AsgiMiddleware(app, Broken(defect))) as url,
        http.get(url + "/x", headers=BEARER) as response,
    ):
        assert response.headers["Retry-After"]
        assert_a_logged_503(response.status, await response.json(), caplog)


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: type(d).__name__)
async def test_the_wsgi_middleware_under_werkzeug_answers_503(
    defect: BaseException, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise AssertionError("a refused request reached the app")

    middleware = WsgiMiddleware(app, Broken(defect))
    try:
        async with (
            in_a_thread(werkzeug_serving(middleware)) as url,
            http.get(url + "/x", headers=BEARER) as response,
        ):
            assert_a_logged_503(response.status, await response.json(), caplog)
    finally:
        await asyncio.to_thread(middleware.verifier.close)


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: type(d).__name__)
async def test_the_aiohttp_middleware_answers_503(
    defect: BaseException, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise AssertionError("a refused request reached the handler")

    app = web.Application(middlewares=[token_middleware(Broken(defect))])
    app.router.add_get("/x", handler)
    async with TestServer(app) as server, http.get(server.make_url("/x"), headers=BEARER) as response:
        assert_a_logged_503(response.status, await response.json(), caplog)
