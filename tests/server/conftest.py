"""A real token-projector admission app on a real TLS socket, and a client that verifies it."""

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.tls_material import cert_and_key, client_context, make_certs
from webhook.core.contract import Contract
from webhook.core.review import review_body
from webhook.server.app import Lifecycle, ReviewBody, make_admission_app, make_probe_app, runner_options
from webhook.server.metrics import Metrics
from webhook.server.settings import ServerSettings
from webhook.server.tls import CertificateReloader


@dataclass
class Webhook:
    url: str
    session: aiohttp.ClientSession
    metrics: Metrics
    lifecycle: Lifecycle
    reloader: CertificateReloader
    certs: Path
    probes: TestServer

    async def post(self, body: bytes, *, content_type: str = "application/json", **kw: Any) -> aiohttp.ClientResponse:
        return await self.session.post(f"{self.url}/mutate", data=body, headers={"Content-Type": content_type}, **kw)

    async def probe(self, path: str) -> tuple[int, str]:
        async with self.session.get(f"http://127.0.0.1:{self.probes.port}{path}") as response:
            return response.status, await response.text()


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def client_ssl(certs: Path) -> ssl.SSLContext:
    return client_context(certs)


StartWebhook = Callable[..., Awaitable[Webhook]]


@pytest.fixture
async def start_webhook(
    certs: Path, client_ssl: ssl.SSLContext, aiohttp_server: Callable[..., Any]
) -> AsyncIterator[StartWebhook]:
    """Start the admission app on a real TLS socket; ``review=`` passes in a fake of the review."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session:

        async def start(*, review: ReviewBody = review_body) -> Webhook:
            cert_file, key_file = cert_and_key(certs)
            settings = ServerSettings(
                cert_file=cert_file,
                key_file=key_file,
                cert_reload_seconds=0.05,
                max_body_bytes=64 * 1024,
                read_timeout_seconds=1.0,
                keepalive_timeout_seconds=1.0,
            )
            reloader = CertificateReloader(cert_file, key_file)
            metrics, lifecycle = Metrics(), Lifecycle(ready=True)
            app = make_admission_app(
                settings, Contract(), reloader=reloader, metrics=metrics, lifecycle=lifecycle, review=review
            )
            options = runner_options(settings)
            options.pop("handle_signals")  # the test server sets its own
            server: TestServer = await aiohttp_server(app, ssl=reloader.listening_context, host="127.0.0.1", **options)
            probes: TestServer = await aiohttp_server(
                make_probe_app(metrics=metrics, lifecycle=lifecycle), host="127.0.0.1"
            )
            return Webhook(f"https://localhost:{server.port}", session, metrics, lifecycle, reloader, certs, probes)

        yield start


@pytest.fixture
async def webhook(start_webhook: StartWebhook) -> Webhook:
    return await start_webhook()
