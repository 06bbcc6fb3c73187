"""TokenReviewer warns about callers that keep a token past the kubelet's refresh point, and still accepts them."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from audience_token import TokenReviewer, metrics
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_api import FakeApiServer, fake_token


def reviewer_at(fake_api: FakeApiServer, clock: Clock, ahead: float) -> TokenReviewer:
    """A reviewer whose wall clock is ``ahead`` seconds after now: tokens issued now look that old to it."""
    return TokenReviewer(
        "secret-store",
        allow="api/*",
        credentials=fake_api.credentials(),
        clock=clock,
        wall_clock=lambda: time.time() + ahead,
    )


async def test_a_token_past_its_refresh_point_is_accepted_with_one_warning_naming_the_caller(
    fake_api: FakeApiServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    token = fake_token(expires_in=3600, pod=("api-7d4b9", "uid-1"))
    registry = CollectorRegistry()
    async with reviewer_at(fake_api, clock, ahead=0.8 * 3600 + 180) as reviewer:
        metrics.register(reviewer, registry=registry)
        with caplog.at_level(logging.WARNING, logger="audience_token"):
            for _ in range(3):
                identity = await reviewer.verify(token)
                clock.now += 11  # past the cache: each verify is a review
    assert identity.namespace == "api"
    warnings = [r.getMessage() for r in caplog.records if "kubelet writes a new one" in r.getMessage()]
    assert len(warnings) == 1
    assert "api/api, Pod api-7d4b9" in warnings[0]
    for part in token.split("."):
        assert part not in caplog.text
    exposition = generate_latest(registry).decode()
    labels = 'audience="secret-store",namespace="api",service_account="api"'
    assert f"audience_token_stale_token_callers_total{{{labels}}} 1.0" in exposition


async def test_a_token_within_its_refresh_point_is_not_warned_about(
    fake_api: FakeApiServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with reviewer_at(fake_api, clock, ahead=0.8 * 3600) as reviewer:
        with caplog.at_level(logging.WARNING, logger="audience_token"):
            await reviewer.verify(fake_token(expires_in=3600))
    assert "kubelet writes a new one" not in caplog.text
    assert reviewer.counts.stale_tokens == {}
