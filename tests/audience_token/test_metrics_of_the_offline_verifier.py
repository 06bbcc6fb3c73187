"""OfflineVerifier counts its verdicts and warns about stale tokens, like TokenReviewer (against a FakeIssuer)."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from audience_token.errors import NotAllowed, Unauthenticated
from audience_token.kube import Credentials
from audience_token.offline import OfflineVerifier
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_issuer import ADMIN, FakeIssuer, claims, sign
from tests.tls_material import make_certs

MakeServer = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def issuer(tmp_path: Path, aiohttp_server: MakeServer) -> tuple[FakeIssuer, Credentials]:
    certs = make_certs(tmp_path / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs / "tls.crt"), str(certs / "tls.key"))
    fake = FakeIssuer()
    server = await aiohttp_server(fake.app(), ssl=context, host="127.0.0.1")
    fake.base_url = f"https://localhost:{server.port}"
    return fake, Credentials(server=fake.base_url, source="test", ca_file=str(certs / "ca.crt"), token=ADMIN)


async def test_each_answer_is_counted_by_outcome_and_reason(issuer: tuple[FakeIssuer, Credentials]) -> None:
    fake, credentials = issuer
    async with OfflineVerifier("secret-store", allow="api/*", credentials=credentials, clock=Clock()) as verifier:
        await verifier.verify(sign(fake.keys[0], claims()))
        with pytest.raises(NotAllowed):
            await verifier.verify(sign(fake.keys[0], claims(namespace="billing", account="billing")))
        with pytest.raises(Unauthenticated):
            await verifier.verify(sign(fake.keys[0], claims(audience="data-store")))
        with pytest.raises(Unauthenticated):
            await verifier.verify("garbage")
    assert verifier.counts.verdict_totals() == {
        ("accepted", ""): 1,
        ("not_allowed", "not_allowed"): 1,
        ("unauthenticated", "wrong_audience"): 1,
        ("unauthenticated", "malformed"): 1,
    }


async def test_a_token_past_its_refresh_point_is_accepted_and_warned_about(
    issuer: tuple[FakeIssuer, Credentials], caplog: pytest.LogCaptureFixture
) -> None:
    fake, credentials = issuer
    stale = sign(fake.keys[0], claims(lifetime=3600, issued=time.time() - 0.8 * 3600 - 180))
    async with OfflineVerifier("secret-store", allow="api/*", credentials=credentials, clock=Clock()) as verifier:
        with caplog.at_level(logging.WARNING, logger="audience_token"):
            identity = await verifier.verify(stale)
    assert identity.pod_name == "api-7d9f"
    assert "api/api, Pod api-7d9f" in caplog.text
    assert verifier.counts.stale_tokens == {("api", "api"): 1}


async def test_the_stale_token_watch_reads_the_verifiers_injected_wall_clock(
    issuer: tuple[FakeIssuer, Credentials], caplog: pytest.LogCaptureFixture
) -> None:
    fake, credentials = issuer
    fresh = sign(fake.keys[0], claims(lifetime=3600, issued=time.time()))
    later = time.time() + 0.8 * 3600 + 600  # past the refresh point and its grace, before the expiry
    async with OfflineVerifier(
        "secret-store", allow="api/*", credentials=credentials, clock=Clock(), wall_clock=lambda: later
    ) as verifier:
        with caplog.at_level(logging.WARNING, logger="audience_token"):
            await verifier.verify(fresh)
    assert verifier.counts.stale_tokens == {("api", "api"): 1}, "the watch read the system clock instead"
