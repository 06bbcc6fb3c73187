"""The outbound proxy: the Pod's current token added for one origin, never for another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from audience_token.errors import ConfigError
from audience_token.proxy import outbound_proxy
from audience_token.token_file import TokenFile
from tests.proxy.support import Running, exchange, headers_of, proxy_serving

FIRST, SECOND = "first.token.value", "second.token.value"


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(FIRST)
    return path


@pytest.fixture
async def outbound(token_path: Path, app_url: str) -> AsyncIterator[Running]:
    app = outbound_proxy(TokenFile(token_path, check_every=0), target=app_url)
    async with proxy_serving(app) as running:
        yield running


async def fetch(url: str, **kwargs: object) -> tuple[int, dict[str, object] | bytes, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False, **kwargs) as response:  # type: ignore[arg-type]
        body = await response.read()
    try:
        return response.status, json.loads(body), response
    except ValueError:
        return response.status, body, response


async def test_each_request_carries_the_pods_current_token_and_none_of_the_callers(
    outbound: Running, token_path: Path, app_url: str
) -> None:
    _, echoed, _ = await fetch(f"{outbound.url}/echo", headers={"Authorization": "Bearer the-callers-own"})
    assert isinstance(echoed, dict)
    assert headers_of(echoed, "Authorization") == [f"Bearer {FIRST}"]
    assert headers_of(echoed, "Host") == [app_url.removeprefix("http://")]
    await asyncio.to_thread(token_path.write_text, SECOND)  # the kubelet's rotation, as the file sees it
    _, echoed, _ = await fetch(f"{outbound.url}/echo")
    assert isinstance(echoed, dict)
    assert headers_of(echoed, "Authorization") == [f"Bearer {SECOND}"]


async def test_a_redirect_comes_back_to_the_caller_unfollowed(outbound: Running) -> None:
    status, _, response = await fetch(f"{outbound.url}/redirect")
    assert status == 302
    assert response.headers["Location"] == "http://elsewhere.invalid/steal"


@pytest.mark.parametrize("target", ["http://elsewhere.invalid/steal", "http://127.0.0.1:1/x"])
async def test_a_request_for_another_origin_is_refused_and_gets_no_token(outbound: Running, target: str) -> None:
    raw = f"GET {target} HTTP/1.1\r\nHost: elsewhere.invalid\r\nConnection: close\r\n\r\n"
    answer = await exchange(outbound.port, raw.encode())
    assert answer.startswith(b"HTTP/1.1 421 "), answer[:100]
    assert FIRST.encode() not in answer


async def test_without_a_readable_token_the_answer_is_a_503_naming_the_file(tmp_path: Path, app_url: str) -> None:
    missing = tmp_path / "absent"
    async with proxy_serving(outbound_proxy(TokenFile(missing), target=app_url)) as running:
        status, body, _ = await fetch(f"{running.url}/echo")
    assert status == 503
    assert isinstance(body, dict)
    assert body["reason"] == "no_token"
    assert str(missing) in str(body["message"])


@pytest.mark.parametrize("target", ["ftp://x", "https://a.example/path", "http://user@a.example", "a.example:80"])
def test_a_target_that_is_not_an_origin_is_refused_when_configured(target: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="target"):
        outbound_proxy(TokenFile(tmp_path / "token"), target=target)


@pytest.mark.parametrize("target", ["http://secret-store.team.svc:8080", "http://10.0.0.5", "http://example.com:443"])
def test_a_plain_http_target_off_loopback_is_refused_as_the_token_would_cross_a_network(
    target: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"must be https:// \(plain http is accepted for a loopback address only\)"):
        outbound_proxy(TokenFile(tmp_path / "token"), target=target)


@pytest.mark.parametrize("target", ["https://secret-store.team.svc:8443", "http://127.0.0.1:8080", "http://[::1]:8080"])
def test_an_https_target_or_plain_http_to_loopback_is_accepted(target: str, tmp_path: Path) -> None:
    outbound_proxy(TokenFile(tmp_path / "token"), target=target)
