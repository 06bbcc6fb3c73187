"""Hostile requests at the verifying proxy, on a raw socket: a clear 4xx each, never a 500, nothing forged through."""

from __future__ import annotations

import base64
import json

import pytest

from audience_token.identity import Identity
from audience_token.proxy import reverse_proxy
from tests.audience_token.fake_api import fake_token
from tests.proxy.support import Running, exchange, proxy_serving

CALLER = fake_token()


HOSTILE: dict[str, bytes] = {
    "a header line of 20 kB": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "a 100 kB bearer": b"GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 100_000 + b"\r\n\r\n",
    "a bearer that is not ASCII": "GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tökén\r\n\r\n".encode(),
    "a NUL in a header": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "a folded header": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Remote-User: a\r\n admin\r\n\r\n",
    "no Host": b"GET /echo HTTP/1.1\r\n\r\n",
    "both Content-Length and chunked": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two Content-Lengths": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "a bad chunk size": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "CONNECT": b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
    "a request line of garbage": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    "a path that is not ASCII": "GET /échо HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "an upgrade to something else": b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_request_gets_a_4xx_and_the_proxy_keeps_serving(proxy: Running, case: str) -> None:
    answer = await exchange(proxy.port, HOSTILE[case])
    status = int(answer.split(b" ", 2)[1]) if answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else None
    assert status is not None, f"no HTTP answer: {answer[:100]!r}"
    assert 400 <= status < 500, answer[:300]
    assert b"Traceback" not in answer
    assert b"system:serviceaccount" not in answer, "nothing reached the app as a caller"
    healthy = await exchange(
        proxy.port, f"GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER}\r\n\r\n".encode()
    )
    assert healthy.startswith(b"HTTP/1.1 200 ")


async def test_a_parser_400_quotes_the_offending_line_back_to_its_sender_only_as_docs_proxy_md_says(
    proxy: Running, caplog: pytest.LogCaptureFixture
) -> None:
    raw = b"GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-part\x00x\r\n\r\n"
    answer = await exchange(proxy.port, raw)
    assert answer.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), answer[:200]
    assert b"text/plain" in answer
    assert b"secret-part" in answer, "aiohttp echoes the line: docs/proxy.md says so; change it if this changes"
    assert not any("secret-part" in record.getMessage() for record in caplog.records), "the log is redacted"


async def test_an_absolute_url_for_another_host_still_goes_only_to_the_app(proxy: Running) -> None:
    raw = "GET http://elsewhere.invalid/echo?x=1 HTTP/1.1\r\nHost: elsewhere.invalid\r\n"
    raw += f"Authorization: Bearer {CALLER}\r\n"
    answer = await exchange(proxy.port, (raw + "Connection: close\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 200 ")
    echoed = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert echoed["path"] == "/echo?x=1"


@pytest.mark.parametrize("value", ["é".encode(), b"\xff\xfe", b"caf\xc3\xa9 \xe2\x82\xac"])
async def test_a_websocket_upgrade_with_bytes_outside_ascii_in_a_header_still_reaches_the_app(
    proxy: Running, value: bytes
) -> None:
    raw = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + CALLER.encode() + b"\r\n"
        b"X-Name: " + value + b"\r\n\r\n"
    )
    answer = await exchange(proxy.port, raw)
    assert answer.startswith(b"HTTP/1.1 101 "), answer[:200]


def _with_claims(claims: bytes) -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part(b'{"alg":"RS256","kid":"fake"}')
    return f"{header}.{part(claims)}.{part(b'signature-filler' * 8)}"


@pytest.mark.parametrize("exp", [b"9" * 400, b"-" + b"9" * 400, b"1e400"])
async def test_a_token_whose_exp_is_out_of_any_range_is_a_401_not_a_500(proxy: Running, exp: bytes) -> None:
    claims = (
        b'{"aud":["secret-store"],"iat":1,"iss":"https://kubernetes.default.svc.cluster.local",'
        b'"sub":"system:serviceaccount:api:api","kubernetes.io":{"namespace":"api"},'
        b'"fake":{"valid":false,"nonce":""},"exp":' + exp + b"}"
    )
    token = _with_claims(claims)
    answer = await exchange(
        proxy.port, f"GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert b'error="invalid_token"' in answer
    assert token.encode() not in answer


class _DefectiveVerifier:
    """A verifier of one's own with a bug: its verify() raises what no refusal is."""

    audience = "secret-store"

    async def verify(self, token: str) -> Identity:
        raise ValueError("a bug in the verifier, not the caller's fault")

    async def close(self) -> None:
        return None


async def test_a_defect_in_the_verifier_is_a_503_not_a_401_blaming_the_caller(
    app_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with proxy_serving(reverse_proxy(_DefectiveVerifier(), upstream=app_url)) as running:
        answer = await exchange(
            running.port, f"GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER}\r\n\r\n".encode()
        )
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:300]
    assert b'"temporarily_unavailable"' in answer
    assert b"Retry-After: " in answer
    assert b"invalid_token" not in answer
    assert CALLER.encode() not in answer
    assert any("failed unexpectedly: ValueError" in r.getMessage() for r in caplog.records)
