"""The verifying proxy in front of a plain HTTP app, on real sockets; verdicts from the fake API server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from audience_token import protect
from audience_token.answers import NO_VERDICT
from audience_token.proxy import ProxyLimits, reverse_proxy
from tests.audience_token.fake_api import FakeApiServer, fake_token
from tests.proxy.conftest import reviewer_of
from tests.proxy.support import Running, exchange, headers_of, proxy_serving, serving
from tests.tls_material import free_port

CALLER = fake_token("api", "api", pod=("api-7d4b9", "0f6c1e1a-1111-4a7e-9d4c-2b5f0a9d0001"))


def bearer(token: str = CALLER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(url: str, headers: Any = None, method: str = "GET", **kwargs: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers, **kwargs) as response:
        body = await response.read()
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = body
    return response.status, response.headers, parsed


async def test_an_allowed_caller_reaches_the_app_with_its_identity_and_without_its_token(proxy: Running) -> None:
    status, _, echoed = await get(f"{proxy.url}/echo/a?b=c", bearer())
    assert status == 200
    assert echoed["path"] == "/echo/a?b=c"
    assert headers_of(echoed, "X-Remote-User") == ["system:serviceaccount:api:api"]
    assert headers_of(echoed, "X-Remote-Group") == [
        "system:serviceaccounts",
        "system:serviceaccounts:api",
        "system:authenticated",
    ], "one header per group"
    assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fpod-name") == ["api-7d4b9"]
    assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fpod-uid") == [
        "0f6c1e1a-1111-4a7e-9d4c-2b5f0a9d0001"
    ]
    assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fcredential-id") == ["JTI=fake"]
    assert headers_of(echoed, "Authorization") == []
    assert CALLER not in json.dumps(echoed)
    assert headers_of(echoed, "X-Forwarded-For") == ["127.0.0.1"]


async def test_a_request_body_and_the_answer_pass_unchanged(proxy: Running) -> None:
    status, headers, echoed = await get(f"{proxy.url}/echo", bearer(), method="PUT", data=b"payload \x00\xff")
    assert status == 200
    assert (echoed["method"], echoed["body"]) == ("PUT", "payload \x00\xff")
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(headers["Content-Length"]) == len(json.dumps(echoed))


@pytest.mark.parametrize(
    "forged",
    [
        {"X-Remote-User": "system:serviceaccount:kube-system:admin"},
        {"x-remote-user": "admin", "X-REMOTE-GROUP": "system:masters"},
        {"X_Remote_User": "admin"},
        {"X-Remote-Extra-Authentication.kubernetes.io%2Fpod-name": "forged"},
        {"X-Remote-Extra-Scopes": "all", "X-Remote-Uid": "0"},
        {"Connection": "X-Remote-User", "X-Remote-User": "admin"},
    ],
)
async def test_identity_headers_sent_by_the_client_never_reach_the_app(proxy: Running, forged: dict[str, str]) -> None:
    status, _, echoed = await get(f"{proxy.url}/echo", {**bearer(), **forged})
    assert status == 200
    names = [name.lower().replace("_", "-") for name, _ in echoed["headers"]]
    assert [n for n in names if n.startswith("x-remote-") and "authentication.kubernetes.io" not in n] == [
        "x-remote-user",
        "x-remote-group",
        "x-remote-group",
        "x-remote-group",
    ]
    assert headers_of(echoed, "X-Remote-User") == ["system:serviceaccount:api:api"]
    assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fpod-name") == ["api-7d4b9"]
    assert "forged" not in json.dumps(echoed)
    assert "admin" not in json.dumps(echoed)


async def test_with_another_prefix_the_default_x_remote_headers_are_stripped_too(
    fake_api: FakeApiServer, app_url: str
) -> None:
    app = reverse_proxy(reviewer_of(fake_api), upstream=app_url, limits=ProxyLimits(identity_prefix="X-Caller-"))
    async with proxy_serving(app) as proxy:
        _, _, echoed = await get(f"{proxy.url}/echo", {**bearer(), "X-Remote-User": "admin", "X-Caller-User": "x"})
    assert headers_of(echoed, "X-Caller-User") == ["system:serviceaccount:api:api"]
    assert headers_of(echoed, "X-Remote-User") == []


# --- refusals: exactly the library middleware's answers --------------------------------------------------


@pytest.fixture
async def middleware_url(fake_api: FakeApiServer) -> AsyncIterator[str]:
    """The same verifier protecting an aiohttp app with the library's middleware: the answers to match."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    protect(app, reviewer_of(fake_api))
    async with serving(app) as url:
        yield url


REFUSED = {
    "no Authorization": {},
    "another scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    "an empty bearer": {"Authorization": "Bearer "},
    "not a JWT": {"Authorization": "Bearer not-a-token"},
    "another audience": bearer(fake_token(audiences=("data-store",))),
    "a revoked token": bearer(fake_token(valid=False)),
    "another account": bearer(fake_token("web", "frontend")),
    "a person": bearer(fake_token(subject="alice@example.com")),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_refused_caller_gets_the_middlewares_answer_and_the_app_is_not_called(
    proxy: Running, middleware_url: str, case: str
) -> None:
    headers = REFUSED[case]
    status, answer_headers, body = await get(f"{proxy.url}/echo", headers)
    expected_status, expected_headers, expected_body = await get(f"{middleware_url}/echo", headers)
    assert status in (401, 403)
    assert (status, body) == (expected_status, expected_body)
    assert answer_headers.get("WWW-Authenticate") == expected_headers.get("WWW-Authenticate")
    assert answer_headers["Content-Type"].startswith("application/json")
    assert "method" not in body, "the app never answered"


async def test_several_authorization_headers_are_refused_as_the_middleware_refuses_them(
    proxy: Running, middleware_url: str
) -> None:
    headers = [("Authorization", f"Bearer {CALLER}"), ("Authorization", f"Bearer {CALLER}")]
    status, answer_headers, body = await get(f"{proxy.url}/echo", headers)
    assert (status, body) == (await get(f"{middleware_url}/echo", headers))[::2]
    assert answer_headers["WWW-Authenticate"] == 'Bearer realm="secret-store", error="invalid_request"'


@pytest.mark.parametrize("fault", ["503", "500", "garbage", "403"])
async def test_no_verdict_from_the_api_server_is_a_503_with_retry_after_as_in_the_middleware(
    fake_api: FakeApiServer, proxy: Running, middleware_url: str, fault: str
) -> None:
    fake_api.fault = fault
    status, headers, body = await get(f"{proxy.url}/echo", bearer(fake_token(nonce=fault)))
    expected_status, expected_headers, expected_body = await get(
        f"{middleware_url}/echo", bearer(fake_token(nonce=fault + "again"))
    )
    assert status == expected_status == 503
    assert body == expected_body
    assert headers["Retry-After"] == expected_headers["Retry-After"]
    assert body["error"] == "temporarily_unavailable"
    assert body["message"] == NO_VERDICT, "any network client reads it: no API server address, no RBAC text"
    assert fake_api.url not in json.dumps(body)


# --- open paths ----------------------------------------------------------------------------------------


async def test_an_open_path_is_forwarded_without_a_token_and_without_identity(proxy: Running) -> None:
    status, _, body = await get(f"{proxy.url}/healthz", {"X-Remote-User": "admin", **bearer("garbage")})
    assert (status, body) == (200, b"app ok")


@pytest.mark.parametrize("path", ["/healthz/", "/%68ealthz", "/healthz/../echo", "/HEALTHZ", "//healthz"])
async def test_only_the_exact_open_path_is_open(proxy: Running, path: str) -> None:
    answer = await exchange(proxy.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


# --- the app down or slow --------------------------------------------------------------------------------


async def test_an_app_that_is_not_listening_is_a_502_that_says_so(fake_api: FakeApiServer) -> None:
    upstream = f"http://127.0.0.1:{free_port()}"
    async with proxy_serving(reverse_proxy(reviewer_of(fake_api), upstream=upstream)) as proxy:
        status, _, body = await get(f"{proxy.url}/echo", bearer())
    assert status == 502
    assert body["error"] == "bad_gateway"
    assert body["reason"] == "upstream_unreachable"
    assert upstream in body["message"]
    assert "is the app running" in body["message"]


async def test_an_app_slower_than_the_upstream_timeout_is_a_504_that_says_so(proxy: Running) -> None:
    status, _, body = await get(f"{proxy.url}/slow?seconds=5", bearer())
    assert status == 504
    assert body["reason"] == "upstream_timeout"
    assert "did not answer within 1 s" in body["message"]


async def test_an_app_that_closes_without_answering_is_a_502(fake_api: FakeApiServer) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, proxy_serving(reverse_proxy(reviewer_of(fake_api), upstream=f"http://127.0.0.1:{port}")) as p:
        status, _, body = await get(f"{p.url}/echo", bearer())
    assert (status, body["reason"]) == (502, "upstream_closed")


@pytest.mark.parametrize(("method", "again"), [("POST", False), ("PATCH", False), ("GET", True), ("DELETE", True)])
async def test_only_an_idempotent_request_is_sent_again_after_the_app_hangs_up(
    fake_api: FakeApiServer, method: str, again: bool
) -> None:
    """A fake app (hanging up is the fault) that counts the requests it reads: a POST must never run twice."""
    heads: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, proxy_serving(reverse_proxy(reviewer_of(fake_api), upstream=f"http://127.0.0.1:{port}")) as p:
        status, _, body = await get(f"{p.url}/echo", bearer(), method=method)
    assert (status, body["reason"]) == (502, "upstream_closed")
    assert {head.split(b" ", 1)[0] for head in heads} == {method.encode()}
    assert (len(heads) > 1) is again, f"{method} was sent {len(heads)} times"


# --- WebSocket ------------------------------------------------------------------------------------------


async def test_a_websocket_is_echoed_through_the_proxy_after_verification(proxy: Running) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{proxy.url}/ws", headers=bearer()) as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=5)) == "echo: hello"
        payload = bytes(range(256)) * 4096  # 1 MiB, several frames' worth of bytes through the tunnel
        await ws.send_bytes(payload)
        assert (await ws.receive_bytes(timeout=10)) == payload
        await ws.close()


async def test_a_websocket_without_a_token_is_refused_before_it_reaches_the_app(proxy: Running) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{proxy.url}/ws")
    assert refused.value.status == 401


async def test_an_upgrade_the_app_refuses_is_a_502_naming_its_status(proxy: Running) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{proxy.url}/echo", headers=bearer())
    assert refused.value.status == 502


UPGRADE_ANSWERS_NOT_HTTP: dict[str, bytes] = {
    "a status of a superscript digit": "HTTP/1.1 1²1 Switching Protocols\r\n\r\n".encode("latin-1"),
    "a status of Arabic-Indic digits": "HTTP/1.1 ١٠١ Switching Protocols\r\n\r\n".encode(),
    "no status": b"HTTP/1.1\r\n\r\n",
    "not HTTP at all": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "a header with a bare LF": b"HTTP/1.1 101 Switching Protocols\r\nX-Split: a\nInjected: b\r\n\r\n",
    "a header with a bare CR": b"HTTP/1.1 101 Switching Protocols\r\nX-Split: a\rInjected: b\r\n\r\n",
    "a header line without a colon": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n",
    "a header name with a space": b"HTTP/1.1 101 Switching Protocols\r\nX Bad: a\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(UPGRADE_ANSWERS_NOT_HTTP))
async def test_an_upgrade_answer_that_is_not_http_is_a_502_upstream_invalid_not_a_500(
    fake_api: FakeApiServer, case: str
) -> None:
    """A fake upstream (a real server cannot be made to send these) answers the upgrade with garbage."""

    async def answer_badly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(UPGRADE_ANSWERS_NOT_HTTP[case])
        await writer.drain()
        await reader.read()  # hold the connection until the proxy closes it
        writer.close()

    server = await asyncio.start_server(answer_badly, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + CALLER.encode() + b"\r\n\r\n"
    )
    async with server, proxy_serving(reverse_proxy(reviewer_of(fake_api), upstream=f"http://127.0.0.1:{port}")) as p:
        answer = await exchange(p.port, raw)
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:300]
    assert b'"upstream_invalid"' in answer
    assert b"Injected" not in answer


# --- probes and metrics ---------------------------------------------------------------------------------


async def test_the_probe_port_reports_health_readiness_and_counts(proxy: Running) -> None:
    await get(f"{proxy.url}/echo", bearer())
    await get(f"{proxy.url}/echo")
    assert (await get(f"{proxy.probes}/healthz"))[0] == 200
    assert (await get(f"{proxy.probes}/readyz"))[0] == 200
    _, _, text = await get(f"{proxy.probes}/metrics")
    lines = text.decode().splitlines()
    assert 'token_projector_proxy_requests_total{mode="inbound",outcome="forwarded",code="200"} 1' in lines
    assert 'token_projector_proxy_requests_total{mode="inbound",outcome="refused",code="401"} 1' in lines
    assert (await get(f"{proxy.url}/metrics", bearer()))[::2] == (404, b"404: Not Found"), "the app's, not the proxy's"


async def test_a_client_that_leaves_before_the_answer_costs_no_error_in_the_log(
    proxy: Running, caplog: pytest.LogCaptureFixture
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"GET /slow?seconds=0.3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    await asyncio.sleep(0.5)  # the app answers to nobody
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert (await get(f"{proxy.url}/echo", bearer()))[0] == 200


async def test_a_client_that_stops_sending_its_body_gets_a_408(fake_api: FakeApiServer, app_url: str) -> None:
    limits = ProxyLimits(client_body_timeout=0.3)
    async with proxy_serving(reverse_proxy(reviewer_of(fake_api), upstream=app_url, limits=limits)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        head = f"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER}\r\nContent-Length: 100\r\n\r\n"
        writer.write(head.encode() + b"only ten b")
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"client_body_timeout"' in answer
    assert b"Connection: close" in answer, "the rest of the body must not be read as another request"
