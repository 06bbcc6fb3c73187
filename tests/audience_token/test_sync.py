"""SyncVerifier: a TokenReviewer from plain threads and from other event loops, with one flight and bounded waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from audience_token import (
    Identity,
    NotAllowed,
    ReviewerSettings,
    ReviewUnavailable,
    TokenReviewer,
    Unauthenticated,
)
from audience_token.sync import SyncVerifier
from tests.audience_token.fake_api import FakeApiServer, fake_token


@pytest.fixture
async def verifier(fake_api: FakeApiServer) -> AsyncIterator[SyncVerifier]:
    reviewer = TokenReviewer(
        "secret-store", allow="api/*", credentials=fake_api.credentials(), settings=ReviewerSettings(timeout=1)
    )
    sync = SyncVerifier(reviewer, timeout=3)
    yield sync
    await asyncio.to_thread(sync.close)


async def in_threads(count: int, work: object) -> list[object]:
    """``work()`` on ``count`` threads released together; the test's loop (and the FakeApiServer) keeps running."""
    barrier = threading.Barrier(count)

    def run() -> object:
        barrier.wait()
        try:
            return work()  # type: ignore[operator]
        except Exception as error:
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(await asyncio.gather(*(asyncio.wrap_future(pool.submit(run)) for _ in range(count))))


async def test_fifty_threads_with_one_uncached_token_cost_exactly_one_token_review(
    verifier: SyncVerifier, fake_api: FakeApiServer
) -> None:
    fake_api.delay = 0.3
    token = fake_token(pod=("api-1", "u1"))
    results = await in_threads(50, lambda: verifier.verify(token))
    assert all(isinstance(r, Identity) and str(r) == "api/api (pod api/api-1)" for r in results)
    assert fake_api.reviews == 1


async def test_each_thread_gets_its_own_refusal_object(verifier: SyncVerifier, fake_api: FakeApiServer) -> None:
    fake_api.delay = 0.2
    token = fake_token("billing", "billing")
    results = await in_threads(10, lambda: verifier.verify(token))
    assert all(isinstance(r, NotAllowed) for r in results)
    assert len({id(r) for r in results}) == 10
    assert fake_api.reviews == 1


async def test_a_cached_verdict_is_answered_on_the_calling_thread_without_the_loop(verifier: SyncVerifier) -> None:
    token = fake_token()
    await asyncio.to_thread(verifier.verify, token)
    loop_thread = verifier._thread
    assert loop_thread is not None
    seen: list[str] = []

    def on_a_thread() -> Identity | None:
        seen.append(threading.current_thread().name)
        return verifier.lookup(token)

    assert isinstance(await asyncio.to_thread(on_a_thread), Identity)
    assert seen != [loop_thread.name]


async def test_a_malformed_token_is_refused_without_a_review(verifier: SyncVerifier, fake_api: FakeApiServer) -> None:
    for value in ("", "abc", "x" * 20_000, "é.é.é"):
        with pytest.raises(Unauthenticated):
            await asyncio.to_thread(verifier.verify, value)
    assert fake_api.reviews == 0


async def test_a_hanging_api_server_is_a_review_unavailable_within_the_bound(
    fake_api: FakeApiServer,
) -> None:
    fake_api.fault = "hang"
    reviewer = TokenReviewer(
        "secret-store", allow="api/*", credentials=fake_api.credentials(), settings=ReviewerSettings(timeout=5)
    )
    sync = SyncVerifier(reviewer, timeout=0.3)
    try:
        with pytest.raises(ReviewUnavailable, match=r"within 0\.3 s"):
            await asyncio.to_thread(sync.verify, fake_token())
    finally:
        await asyncio.to_thread(sync.close)


async def test_averify_serves_a_coroutine_on_another_event_loop(verifier: SyncVerifier) -> None:
    token = fake_token()

    def another_loop() -> Identity:
        return asyncio.run(verifier.averify(token))

    identity = await asyncio.to_thread(another_loop)
    assert identity.service_account == "api"
    assert verifier.lookup(token) == identity


async def test_close_stops_the_loop_thread_and_a_later_verify_starts_a_new_one(verifier: SyncVerifier) -> None:
    await asyncio.to_thread(verifier.verify, fake_token())
    first = verifier._thread
    await asyncio.to_thread(verifier.close)
    assert first is not None
    assert not first.is_alive()
    await asyncio.to_thread(verifier.verify, fake_token(nonce="after"))
    assert verifier._thread is not None
    assert verifier._thread.is_alive()


def test_the_default_wait_covers_a_review_and_its_one_retry() -> None:
    class Slow:
        audience = "a"

        class settings:  # noqa: N801 - the shape of ReviewerSettings
            timeout = 4.0

        async def verify(self, token: str) -> Identity:
            raise AssertionError

        async def close(self) -> None:
            pass

    assert SyncVerifier(Slow()).timeout == 9.0
