"""A fuzzer over the Authorization header of a protected app, on a real socket: never a 500, no API call.

Requests are written byte for byte to a socket (so nothing on the client side cleans them up): huge
values, binary, invalid UTF-8, many headers, repeated headers, other schemes, near-JWT shapes, CR/LF.
The app is protected by a TokenReviewer whose API server is a FakeApiServer counting every review.
Then well-formed tokens with hostile claim values (a 400-digit ``exp``, NaN, Infinity, wrong types).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_token import Identity, TokenReviewer, Unauthenticated, VerificationError, identity_of, protect
from audience_token.precheck import precheck
from tests.audience_token.fake_api import FakeApiServer, fake_token, outcome_of
from tests.audience_token.tls import make_material


@dataclass
class Protected:
    port: int
    reviewer: TokenReviewer
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    """The protected app and its FakeApiServer, on their own event loop in a thread, for sync fuzzing."""
    material = make_material(Path(tmp_path_factory.mktemp("fuzz-tls")))
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=identity_of(request).service_account)

    async def serve() -> None:
        async with FakeApiServer(material).running() as api:
            reviewer = TokenReviewer("fuzz", allow="*/*", credentials=api.credentials())
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", hello)
            protect(app, reviewer)
            runner = web.AppRunner(app)
            await runner.setup()
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            await web.TCPSite(runner, "127.0.0.1", port).start()
            stop = asyncio.Event()
            box["it"] = Protected(port, reviewer, asyncio.get_running_loop())
            box["stop"] = stop
            ready.set()
            await stop.wait()
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    it: Protected = box["it"]
    yield it
    it.loop.call_soon_threadsafe(box["stop"].set)
    thread.join(30)


def status_of(port: int, request: bytes) -> int | None:
    """The status line's code, or None when the server closed without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # The server may stop reading a request it has refused; its answer may still be there.
        with contextlib.suppress(OSError):
            conn.sendall(request)
        received = b""
        try:
            while b"\r\n" not in received:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                received += chunk
        except OSError:
            return None
    if not received.startswith(b"HTTP/1."):
        return None
    return int(received.split(b" ", 2)[1])


def request_with(headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"GET / HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
schemes = st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"Basic", b"Digest", b"Negotiate", b"", b"Bearer\t"])
near_jwt = st.lists(st.text(alphabet=B64URL + "=+/", max_size=60), min_size=0, max_size=5).map(
    lambda parts: ".".join(parts).encode()
)
values = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")),
    near_jwt,
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(min_value=1000, max_value=70_000).map(lambda n: b"A" * n),
    st.just(b"eyJhbGciOiJSUzI1NiJ9." + b"\xff\xfe" * 10 + b".sig"),
)
authorization = st.tuples(schemes, st.sampled_from([b" ", b"  ", b"\t", b""]), values).map(lambda t: t[0] + t[1] + t[2])
header_name = st.sampled_from([b"Authorization", b"authorization", b"AUTHORIZATION", b"X-Other", b"Authorization "])
# Mostly one to three headers, so that most requests reach the middleware rather than the HTTP parser.
header_sets = st.one_of(
    st.lists(st.tuples(st.just(b"Authorization"), authorization), min_size=1, max_size=1),
    st.lists(st.tuples(header_name, authorization), min_size=0, max_size=3),
    st.lists(st.tuples(header_name, authorization), min_size=4, max_size=150),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=header_sets)
def test_malformed_authorization_headers_get_a_clean_refusal_never_a_500_nor_an_api_call(
    protected: Protected, headers: list[tuple[bytes, bytes]]
) -> None:
    before = protected.reviewer.reviews_sent
    status = status_of(protected.port, request_with(headers))
    assert status != 500
    assert status in (None, 400, 401, 413, 431), status
    assert protected.reviewer.reviews_sent == before, "a malformed token never reaches the API server"


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
    ],
)
def test_named_hostile_values_are_refused_cleanly(protected: Protected, value: bytes) -> None:
    before = protected.reviewer.reviews_sent
    assert status_of(protected.port, request_with([(b"Authorization", value)])) in (None, 400, 401, 431)
    assert protected.reviewer.reviews_sent == before


def test_five_hundred_authorization_headers_are_refused_cleanly(protected: Protected) -> None:
    headers = [(b"Authorization", b"Bearer x.y.z")] * 500
    assert status_of(protected.port, request_with(headers)) in (None, 400, 401, 431)


def test_the_counter_the_fuzzer_relies_on_does_count_reviews(protected: Protected) -> None:
    before = protected.reviewer.reviews_sent
    token = fake_token(audiences=("fuzz",), nonce="counted")
    assert status_of(protected.port, request_with([(b"Authorization", f"Bearer {token}".encode())])) == 200
    assert protected.reviewer.reviews_sent == before + 1


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=400), near_jwt.map(bytes.decode), st.binary(max_size=200).map(repr)))
def test_verify_refuses_any_non_token_text_as_malformed_without_a_review(protected: Protected, value: str) -> None:
    # Straight at verify(), past the HTTP parser: the middleware passes whatever a header decodes to.
    before = protected.reviewer.reviews_sent
    future = asyncio.run_coroutine_threadsafe(protected.reviewer.verify(value), protected.loop)
    try:
        precheck(value)
    except Unauthenticated:
        with pytest.raises(Unauthenticated) as refused:
            future.result(10)
        assert refused.value.reason == "malformed"
        assert protected.reviewer.reviews_sent == before
    else:  # pragma: no cover - a well-formed token by chance: it goes to review, which may say anything
        with contextlib.suppress(Exception):
            future.result(10)


# Well-formed JWTs carrying hostile claim values: what a parser that trusts JSON numbers trips on.
hostile_numbers = st.one_of(
    st.integers(min_value=10**399, max_value=10**401),
    st.integers(min_value=-(10**401), max_value=-(10**399)),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 2**63, -(2**63), 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
hostile_values = st.one_of(
    hostile_numbers,
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
hostile_claims = st.fixed_dictionaries(
    {},
    optional={
        "exp": hostile_values,
        "nbf": hostile_values,
        "iat": hostile_values,
        "aud": st.one_of(st.just(["fuzz"]), st.just("fuzz"), hostile_values),
        "sub": st.one_of(st.just("system:serviceaccount:api:api"), hostile_values),
        "iss": st.one_of(st.just("kubernetes/serviceaccount"), hostile_values),
        "kubernetes.io": st.one_of(hostile_values, st.just({"namespace": "api", "serviceaccount": {"name": "api"}})),
        "fake": st.one_of(st.just({"valid": True}), hostile_values),
    },
)


def jwt_with(claims: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    # json.dumps writes NaN and Infinity, as Python's json.loads (and so a verifier) reads them.
    header = b64(json.dumps({"alg": "RS256", "kid": "fuzz"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.{b64(b'signature-filler-' * 8)}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=hostile_claims)
def test_no_hostile_claim_value_in_a_well_formed_token_gives_a_500(
    protected: Protected, claims: dict[str, Any]
) -> None:
    # Before the fix, {"aud": ["fuzz"], "exp": <401 digits>} raised OverflowError: a 500 and a traceback.
    token = jwt_with(claims)
    status = status_of(protected.port, request_with([(b"Authorization", f"Bearer {token}".encode())]))
    assert status in (200, 401, 403, 503), status


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=hostile_claims)
def test_verify_answers_hostile_claims_with_a_verdict(protected: Protected, claims: dict[str, Any]) -> None:
    future = asyncio.run_coroutine_threadsafe(outcome_of(protected.reviewer.verify(jwt_with(claims))), protected.loop)
    outcome = future.result(10)
    assert isinstance(outcome, Identity | VerificationError)
    assert "unexpectedly" not in getattr(outcome, "message", ""), outcome


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_401_digit_time_claim_for_the_right_audience_is_401_not_500(protected: Protected, claim: str) -> None:
    token = jwt_with({"aud": ["fuzz"], claim: 10**400})
    assert status_of(protected.port, request_with([(b"Authorization", f"Bearer {token}".encode())])) == 401
