"""TokenReviewer counts what it answers, and audience_token.metrics shows it: through verify() and a real server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from audience_token import NotAllowed, ReviewUnavailable, TokenReviewer, Unauthenticated, metrics, protect
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_api import FakeApiServer, fake_token

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return scrape(registry).get((name, frozenset({"audience": "secret-store", **labels}.items())), 0.0)


@pytest.fixture
def registry(reviewer: TokenReviewer) -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics.register(reviewer, registry=registry)
    return registry


async def test_an_acceptance_is_a_miss_then_hits(reviewer: TokenReviewer, registry: CollectorRegistry) -> None:
    token = fake_token()
    for _ in range(3):
        await reviewer.verify(token)
    assert sample(registry, "audience_token_cache_lookups_total", result="miss") == 1
    assert sample(registry, "audience_token_cache_lookups_total", result="hit") == 2
    assert sample(registry, "audience_token_verdicts_total", outcome="accepted", reason="") == 3
    assert sample(registry, "audience_token_tokenreview_duration_seconds_count") == 1


async def test_refusals_are_counted_by_reason_cached_ones_as_hits(
    reviewer: TokenReviewer, registry: CollectorRegistry, fake_api: FakeApiServer
) -> None:
    expired = fake_token(expires_in=-30)  # refused on its own claims: a definite refusal, cached
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await reviewer.verify(expired)
    with pytest.raises(Unauthenticated):
        await reviewer.verify("not-a-token")
    with pytest.raises(NotAllowed):
        await reviewer.verify(fake_token("billing", "billing"))
    reasons = ("expired_or_revoked", "malformed")
    counts = [sample(registry, "audience_token_verdicts_total", outcome="unauthenticated", reason=r) for r in reasons]
    assert counts == [2, 1]
    assert sample(registry, "audience_token_verdicts_total", outcome="not_allowed", reason="not_allowed") == 1
    assert sample(registry, "audience_token_cache_lookups_total", result="hit") == 1
    assert fake_api.reviews == 2, "the malformed value cost no review"


@pytest.mark.parametrize(("fault", "error"), [("503", "http_503"), ("garbage", "bad_answer"), ("403", "http_403")])
async def test_a_review_without_a_verdict_is_counted_by_its_error(
    reviewer: TokenReviewer, registry: CollectorRegistry, fake_api: FakeApiServer, fault: str, error: str
) -> None:
    fake_api.fault = fault
    with pytest.raises(ReviewUnavailable):
        await reviewer.verify(fake_token())
    assert sample(registry, "audience_token_tokenreview_errors_total", error=error) == 1
    assert sample(registry, "audience_token_verdicts_total", outcome="unavailable", reason="review_unavailable") == 1


async def test_a_closed_port_is_counted_as_a_connection_error(fake_api: FakeApiServer, clock: Clock) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    credentials = fake_api.credentials(server=f"https://127.0.0.1:{port}")
    async with TokenReviewer("secret-store", allow="*/*", credentials=credentials, clock=clock) as closed:
        with pytest.raises(ReviewUnavailable):
            await closed.verify(fake_token())
        assert closed.counts.review_errors == {"connection": 1}


async def test_requests_through_the_aiohttp_middleware_are_counted(
    reviewer: TokenReviewer, registry: CollectorRegistry, aiohttp_client: MakeClient
) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    client = await aiohttp_client(protect(app, reviewer))
    token = fake_token()
    for _ in range(5):
        assert (await client.get("/", headers={"Authorization": f"Bearer {token}"})).status == 200
    assert (await client.get("/", headers={"Authorization": "Bearer nope"})).status == 401
    assert sample(registry, "audience_token_verdicts_total", outcome="accepted", reason="") == 5
    assert sample(registry, "audience_token_cache_lookups_total", result="hit") == 4
    assert sample(registry, "audience_token_verdicts_total", outcome="unauthenticated", reason="malformed") == 1
    assert token not in generate_latest(registry).decode()
