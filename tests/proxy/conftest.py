"""Fixtures: the plain app on a real port, the fake API server for verdicts, the proxy in front of the app."""

from collections.abc import AsyncIterator

import pytest

from audience_token import TokenReviewer
from audience_token.proxy import ProxyLimits, reverse_proxy
from tests.audience_token.conftest import material  # noqa: F401 - the session's TLS material
from tests.audience_token.fake_api import FakeApiServer
from tests.audience_token.tls import Material
from tests.proxy.support import Running, plain_app, proxy_serving, serving


@pytest.fixture
async def fake_api(material: Material) -> AsyncIterator[FakeApiServer]:  # noqa: F811
    async with FakeApiServer(material).running() as server:
        yield server


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    async with serving(plain_app()) as url:
        yield url


def reviewer_of(fake_api: FakeApiServer, allow: str = "api/*") -> TokenReviewer:
    return TokenReviewer("secret-store", allow=[allow], credentials=fake_api.credentials())


@pytest.fixture
async def proxy(fake_api: FakeApiServer, app_url: str) -> AsyncIterator[Running]:
    """The proxy for audience 'secret-store', allowing 'api/*', in front of the plain app; /healthz open."""
    app = reverse_proxy(
        reviewer_of(fake_api), upstream=app_url, open_paths=["/healthz"], limits=ProxyLimits(upstream_timeout=1.0)
    )
    async with proxy_serving(app) as running:
        yield running
