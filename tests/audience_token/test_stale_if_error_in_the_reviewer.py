"""TokenReviewer with stale_if_error: recent verdicts answer while the (fake) API server fails, within their windows."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest

from audience_token import NotAllowed, ReviewerSettings, ReviewUnavailable, TokenReviewer, Unauthenticated
from audience_token.stale_if_error import StaleIfError
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_api import FakeApiServer, fake_token


class Wall:
    """A wall clock that runs with time.time() but can be moved ahead by hand (the fake checks exp on real time)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
def wall() -> Wall:
    return Wall()


def make(fake_api: FakeApiServer, clock: Clock, wall: Wall, **stale: float) -> TokenReviewer:
    settings = ReviewerSettings(success_ttl=10, failure_ttl=10, stale_if_error=StaleIfError(**stale))
    return TokenReviewer(
        "secret-store",
        allow="api/*",
        credentials=fake_api.credentials(),
        settings=settings,
        clock=clock,
        wall_clock=wall,
    )


@pytest.fixture
async def stale_reviewer(fake_api: FakeApiServer, clock: Clock, wall: Wall) -> AsyncIterator[TokenReviewer]:
    async with make(fake_api, clock, wall, accepted_for=300, refused_for=60) as reviewer:
        yield reviewer


async def test_by_default_an_outage_is_503_once_the_cache_entry_expires(
    reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    token = fake_token()
    await reviewer.verify(token)
    fake_api.fault = "503"
    clock.now += 11
    with pytest.raises(ReviewUnavailable):
        await reviewer.verify(token)


async def test_a_token_accepted_within_the_window_stays_accepted_in_an_outage(
    stale_reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    token = fake_token()
    accepted = await stale_reviewer.verify(token)
    fake_api.fault = "503"
    clock.now += 299
    with caplog.at_level(logging.WARNING, logger="audience_token"):
        assert await stale_reviewer.verify(token) == accepted
    assert "stale_if_error" in caplog.text
    assert token.split(".")[1] not in caplog.text
    assert stale_reviewer.counts.served_stale == {"accepted": 1}
    clock.now += 2  # past the window (and the second it kept the answer)
    with pytest.raises(ReviewUnavailable):
        await stale_reviewer.verify(token)


async def test_an_outage_costs_one_review_attempt_per_token_per_second_not_one_per_request(
    stale_reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    token = fake_token()
    await stale_reviewer.verify(token)
    fake_api.fault = "503"
    clock.now += 20
    reviews = fake_api.reviews
    for _ in range(10):
        await stale_reviewer.verify(token)
    assert fake_api.reviews == reviews + 1
    clock.now += 1
    await stale_reviewer.verify(token)
    assert fake_api.reviews == reviews + 2


async def test_the_window_never_reaches_past_the_tokens_exp(
    stale_reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock, wall: Wall
) -> None:
    token = fake_token(expires_in=100)
    await stale_reviewer.verify(token)
    fake_api.fault = "503"
    clock.now += 99
    wall.ahead += 99
    await stale_reviewer.verify(token)
    clock.now += 2
    wall.ahead += 2
    with pytest.raises(ReviewUnavailable):
        await stale_reviewer.verify(token)


async def test_a_refusal_within_its_window_stays_a_refusal_in_an_outage(
    stale_reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    stranger = fake_token("billing", "billing")
    with pytest.raises(NotAllowed):
        await stale_reviewer.verify(stranger)
    fake_api.fault = "503"
    clock.now += 59
    with pytest.raises(NotAllowed):
        await stale_reviewer.verify(stranger)
    clock.now += 2
    with pytest.raises(ReviewUnavailable):
        await stale_reviewer.verify(stranger)


async def test_refusals_are_not_kept_when_their_window_is_zero(
    fake_api: FakeApiServer, clock: Clock, wall: Wall
) -> None:
    async with make(fake_api, clock, wall, accepted_for=300) as reviewer:
        stranger = fake_token("billing", "billing")
        with pytest.raises(NotAllowed):
            await reviewer.verify(stranger)
        fake_api.fault = "503"
        clock.now += 11
        with pytest.raises(ReviewUnavailable):
            await reviewer.verify(stranger)


async def test_a_token_never_accepted_is_503_in_an_outage(
    stale_reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    fake_api.fault = "503"
    with pytest.raises(ReviewUnavailable):
        await stale_reviewer.verify(fake_token())


async def test_a_refusal_resting_on_the_api_servers_error_forgets_the_kept_acceptance(
    stale_reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    """Accepted, then refused with a status.error (not kept, not cached), then an outage: 503, not the old yes."""
    token = fake_token()
    await stale_reviewer.verify(token)
    clock.now += 11  # past the cache entry, well within the 300 s window
    fake_api.answer = {"authenticated": False, "error": "the token's service account was deleted"}
    with pytest.raises(Unauthenticated):
        await stale_reviewer.verify(token)
    fake_api.answer = None
    fake_api.fault = "503"
    clock.now += 1
    with pytest.raises(ReviewUnavailable):
        await stale_reviewer.verify(token)
    assert stale_reviewer.counts.served_stale == {}


@pytest.mark.parametrize("fault", ["401", "403"])
async def test_the_window_never_answers_when_the_reviewers_own_credentials_are_refused(
    stale_reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock, fault: str
) -> None:
    """A lost RBAC binding or a refused own token is an operator's error: 503 at once, not old verdicts."""
    accepted, refused = fake_token(), fake_token(audiences=("data-store",))
    await stale_reviewer.verify(accepted)
    with pytest.raises(Unauthenticated):
        await stale_reviewer.verify(refused)
    fake_api.fault = fault
    clock.now += 11  # past the cache entries, within both windows
    for token in (accepted, refused):
        with pytest.raises(ReviewUnavailable):
            await stale_reviewer.verify(token)
    assert stale_reviewer.counts.served_stale == {}
    fake_api.fault = "503"  # an outage proper: the window answers again
    clock.now += 2
    assert await stale_reviewer.verify(accepted)
