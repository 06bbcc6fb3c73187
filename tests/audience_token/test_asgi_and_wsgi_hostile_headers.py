"""The header fuzzer of test_hostile_headers, over the ASGI middleware under uvicorn and the WSGI one under gunicorn.

Requests are written byte for byte to the socket. Whatever the headers hold (sizes, binary, invalid
UTF-8, repeated headers, other schemes, near-JWT shapes, well-formed JWTs with hostile claim values):
never a 500, and never a TokenReview for a malformed token, counted at the FakeApiServer both servers
ask. gunicorn's log is checked for tracebacks when it stops (``servers.child_serving``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from audience_token import TokenReviewer
from audience_token.asgi import AudienceTokenMiddleware, identity_of
from tests.audience_token.fake_api import OWN_TOKEN, FakeApiServer, fake_token
from tests.audience_token.receiver_apps import environment
from tests.audience_token.servers import gunicorn_serving, uvicorn_serving
from tests.audience_token.test_hostile_headers import header_sets, hostile_claims, jwt_with, request_with, status_of
from tests.audience_token.tls import make_material

REFUSED_CLEANLY = (None, 400, 401, 413, 431)


@dataclass
class Servers:
    api: FakeApiServer
    ports: dict[str, int]


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(identity_of(request).service_account)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A FakeApiServer and uvicorn on one loop in a thread; gunicorn (gthread) in a child process."""
    material = make_material(Path(tmp_path_factory.mktemp("fuzz-receivers-tls")))
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with FakeApiServer(material).running() as api:
            reviewer = TokenReviewer("fuzz", allow="*/*", credentials=api.credentials())
            app = AudienceTokenMiddleware(Starlette(routes=[Route("/{tail:path}", hello)]), reviewer)
            async with uvicorn_serving(app) as url:
                stop = asyncio.Event()
                box.update(api=api, url=url, stop=stop, loop=asyncio.get_running_loop())
                ready.set()
                await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    api: FakeApiServer = box["api"]
    env = environment(audience="fuzz", allow="*/*", server=api.url, ca=str(material.ca), own_token=OWN_TOKEN)
    try:
        with gunicorn_serving(
            "tests.audience_token.receiver_apps:flask_app()", env=env, worker="gthread", threads=4
        ) as wsgi_url:
            ports = {"asgi": int(box["url"].rsplit(":", 1)[1]), "wsgi": int(wsgi_url.rsplit(":", 1)[1])}
            yield Servers(api, ports)
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=header_sets)
@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_malformed_authorization_headers_get_a_clean_refusal_never_a_500_nor_an_api_call(
    servers: Servers, adapter: str, headers: list[tuple[bytes, bytes]]
) -> None:
    before = servers.api.reviews
    status = status_of(servers.ports[adapter], request_with(headers))
    assert status in REFUSED_CLEANLY, status
    assert servers.api.reviews == before, "a malformed token never reaches the API server"


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    "value",
    [
        b"Bearer " + b"\x00" * 100,
        b"Bearer \xc3\x28\xa0\xa1",
        b"Bearer " + "é.é.é".encode(),
        b"Bearer " + b"a." * 4000,
        b"Bearer " + b"A" * 9000,
        b"Bearer " + b"A" * 100_000,
        b"Bearer\x0bx.y.z",
        b"Bearer a.b.c, Bearer a.b.c",
        b"Basic YWxpY2U6c2VjcmV0",
    ],
)
def test_named_hostile_values_are_refused_cleanly(servers: Servers, adapter: str, value: bytes) -> None:
    before = servers.api.reviews
    assert status_of(servers.ports[adapter], request_with([(b"Authorization", value)])) in REFUSED_CLEANLY
    assert servers.api.reviews == before


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_five_hundred_authorization_headers_are_refused_cleanly(servers: Servers, adapter: str) -> None:
    headers = [(b"Authorization", b"Bearer x.y.z")] * 500
    assert status_of(servers.ports[adapter], request_with(headers)) in REFUSED_CLEANLY


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_the_counter_the_fuzzer_relies_on_does_count_reviews(servers: Servers, adapter: str) -> None:
    before = servers.api.reviews
    token = fake_token(audiences=("fuzz",), nonce=f"counted-{adapter}")
    assert status_of(servers.ports[adapter], request_with([(b"Authorization", f"Bearer {token}".encode())])) == 200
    assert servers.api.reviews == before + 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=hostile_claims)
@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_no_hostile_claim_value_in_a_well_formed_token_gives_a_500(
    servers: Servers, adapter: str, claims: dict[str, Any]
) -> None:
    token = jwt_with(claims)
    status = status_of(servers.ports[adapter], request_with([(b"Authorization", f"Bearer {token}".encode())]))
    assert status in (200, 401, 403, 503), status


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_401_digit_time_claim_for_the_right_audience_is_401_not_500(
    servers: Servers, adapter: str, claim: str
) -> None:
    token = jwt_with({"aud": ["fuzz"], claim: 10**400})
    assert status_of(servers.ports[adapter], request_with([(b"Authorization", f"Bearer {token}".encode())])) == 401
