"""Fixtures for the receiver's tests: real TLS material, a running FakeApiServer, a reviewer on a hand clock."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from audience_token import TokenReviewer
from tests.audience_token.fake_api import FakeApiServer
from tests.audience_token.tls import Material, make_material


class Clock:
    """A hand-moved monotonic clock, so that TTL tests wait for nothing."""

    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(Path(tmp_path_factory.mktemp("audience-token-tls")))


@pytest.fixture
async def fake_api(material: Material) -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(material).running() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def reviewer(fake_api: FakeApiServer, clock: Clock) -> AsyncIterator[TokenReviewer]:
    """A reviewer for audience 'secret-store' allowing 'api/*', asking the FakeApiServer."""
    async with TokenReviewer("secret-store", allow=["api/*"], credentials=fake_api.credentials(), clock=clock) as r:
        yield r
