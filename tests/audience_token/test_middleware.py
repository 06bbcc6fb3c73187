"""The server middleware's answers: RFC 6750 challenges, small JSON bodies, the identity for the handler."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from audience_token import (
    IDENTITY,
    Identity,
    ReviewerSettings,
    TokenReviewer,
    Unauthenticated,
    identity_of,
    protect,
    token_middleware,
)
from audience_token.answers import NO_VERDICT
from tests.audience_token.fake_api import FakeApiServer, fake_token

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


async def whoami(request: web.Request) -> web.Response:
    caller = identity_of(request)
    assert request[IDENTITY] is caller
    return web.json_response({"caller": str(caller), "pod": caller.pod_name})


async def healthz(request: web.Request) -> web.Response:
    with pytest.raises(LookupError, match="open_paths"):
        identity_of(request)
    return web.Response(text="ok")


@pytest.fixture
async def reviewer(fake_api: FakeApiServer) -> AsyncIterator[TokenReviewer]:
    async with TokenReviewer(
        'store "prod"', allow="api/*", credentials=fake_api.credentials(), settings=ReviewerSettings(timeout=1)
    ) as reviewer:
        yield reviewer


@pytest.fixture
async def client(reviewer: TokenReviewer, aiohttp_client: MakeClient) -> Client:
    app = web.Application()
    app.router.add_get("/", whoami)
    app.router.add_get("/healthz", healthz)
    protect(app, reviewer, open_paths={"/healthz"})
    return await aiohttp_client(app)


REALM = 'Bearer realm="store \\"prod\\""'


async def test_an_allowed_caller_reaches_the_handler_with_its_identity(client: Client) -> None:
    token = fake_token(audiences=('store "prod"',), pod=("api-1", "u1"))
    response = await client.get("/", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    assert await response.json() == {"caller": "api/api (pod api/api-1)", "pod": "api-1"}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
async def test_the_scheme_is_case_insensitive(client: Client, scheme: str) -> None:
    token = fake_token(audiences=('store "prod"',))
    response = await client.get("/", headers={"Authorization": f"{scheme}  {token} "})
    assert response.status == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Token abc"}, {"Authorization": ""}],
)
async def test_no_bearer_token_is_401_with_the_realm_challenge(
    client: Client, fake_api: FakeApiServer, headers: dict[str, str]
) -> None:
    response = await client.get("/", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == REALM
    body = await response.json()
    assert body["error"] == "unauthorized"
    assert "Authorization: Bearer" in body["message"]
    assert "YWxpY2U6c2VjcmV0" not in await response.text()
    assert fake_api.reviews == 0


async def test_several_authorization_headers_are_401_invalid_request(client: Client) -> None:
    token = fake_token(audiences=('store "prod"',))
    response = await client.get(
        "/", headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == f'{REALM}, error="invalid_request"'


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer not-a-jwt", "Bearer a.b", "Bearer a b c"])
async def test_a_malformed_bearer_token_is_401_invalid_token_without_a_review(
    client: Client, fake_api: FakeApiServer, value: str
) -> None:
    response = await client.get("/", headers={"Authorization": value})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == f'{REALM}, error="invalid_token"'
    body = await response.json()
    assert body["reason"] == "malformed"
    assert fake_api.reviews == 0


async def test_a_refused_token_is_401_invalid_token_with_the_reason(client: Client) -> None:
    token = fake_token(audiences=("elsewhere",))
    response = await client.get("/", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == f'{REALM}, error="invalid_token"'
    body = await response.json()
    assert body == {"error": "invalid_token", "reason": "wrong_audience", "message": body["message"]}
    assert "'elsewhere'" in body["message"]
    assert token.split(".")[1] not in await response.text()


async def test_a_caller_not_allowed_is_403_insufficient_scope(client: Client) -> None:
    token = fake_token("data", "store", audiences=('store "prod"',))
    response = await client.get("/", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 403
    assert response.headers["WWW-Authenticate"] == f'{REALM}, error="insufficient_scope"'
    assert (await response.json())["error"] == "insufficient_scope"


@pytest.mark.parametrize("fault", ["500", "503", "hang", "garbage"])
async def test_no_verdict_is_503_with_retry_after(client: Client, fake_api: FakeApiServer, fault: str) -> None:
    fake_api.fault = fault
    response = await client.get("/", headers={"Authorization": f"Bearer {fake_token()}"})
    assert response.status == 503
    assert response.headers["Retry-After"] == ("7" if fault == "503" else "1")
    assert (await response.json())["error"] == "temporarily_unavailable"


@pytest.mark.parametrize("fault", ["403", "401", "500", "garbage"])
async def test_a_503_body_names_none_of_the_receivers_internals_which_go_to_its_log_instead(
    client: Client, fake_api: FakeApiServer, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.fault = fault
    with caplog.at_level(logging.WARNING, logger="audience_token"):
        response = await client.get("/", headers={"Authorization": f"Bearer {fake_token()}"})
    assert response.status == 503
    body = await response.json()
    assert body == {"error": "temporarily_unavailable", "reason": "review_unavailable", "message": NO_VERDICT}
    assert "retry later" in body["message"]
    for internal in (fake_api.url, "127.0.0.1", "FakeApiServer", "system:serviceaccount", "tokenreviews", "etcd"):
        assert internal not in await response.text(), internal
    logged = " ".join(record.getMessage() for record in caplog.records if record.name == "audience_token")
    assert "answering 503" in logged
    assert fake_api.url in logged or "FakeApiServer" in logged, "the operator still reads what failed, and how"


async def test_open_paths_need_no_token_and_others_stay_protected(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/healthz/")).status in (401, 404)
    assert (await client.get("/other")).status == 401


async def test_the_middleware_works_on_its_own_and_the_verifier_is_closed_by_protect(
    fake_api: FakeApiServer, aiohttp_client: MakeClient
) -> None:
    reviewer = TokenReviewer("x", allow="*/*", credentials=fake_api.credentials())
    app = web.Application(middlewares=[token_middleware(reviewer)])
    app.router.add_get("/", whoami)
    client = await aiohttp_client(app)
    assert (await client.get("/", headers={"Authorization": f"Bearer {fake_token(audiences=('x',))}"})).status == 200
    await reviewer.close()


async def test_a_cached_caller_is_let_in_without_awaiting_verify(
    reviewer: TokenReviewer, aiohttp_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified = []
    verify = reviewer.verify

    async def counted(token: str) -> Identity:
        verified.append(1)
        return await verify(token)

    monkeypatch.setattr(reviewer, "verify", counted)  # before the middleware is made: it binds verify once
    app = web.Application()
    app.router.add_get("/", whoami)
    client = await aiohttp_client(protect(app, reviewer))
    token = fake_token(audiences=('store "prod"',))
    for _ in range(3):
        assert (await client.get("/", headers={"Authorization": f"Bearer {token}"})).status == 200
    assert len(verified) == 1, "the first request verifies; the cached verdict lets the next two in"


class VerifierWithoutLookup:
    """A fake verifier with only what the Verifier protocol requires: no ``lookup`` fast path."""

    audience = "x"

    def __init__(self) -> None:
        self.calls = 0

    async def verify(self, token: str) -> Identity:
        self.calls += 1
        if token != "good":
            raise Unauthenticated("not the good token", reason="invalid")
        return Identity(namespace="api", service_account="api", uid="u")

    async def close(self) -> None:
        return None


async def test_a_verifier_without_lookup_is_asked_on_every_request(aiohttp_client: MakeClient) -> None:
    verifier = VerifierWithoutLookup()
    app = web.Application()
    app.router.add_get("/", whoami)
    client = await aiohttp_client(protect(app, verifier))
    for _ in range(2):
        assert (await client.get("/", headers={"Authorization": "Bearer good"})).status == 200
    assert (await client.get("/", headers={"Authorization": "Bearer bad"})).status == 401
    assert verifier.calls == 3


def test_a_realm_cannot_break_the_header() -> None:
    from audience_token.answers import realm

    assert realm('a"b\\c\r\nSet-Cookie: x=1é') == 'a\\"b\\\\c??Set-Cookie: x=1?'


async def catch_all(request: web.Request) -> web.Response:
    return web.Response(text="caller" if IDENTITY in request else "open")


@pytest.fixture
async def catch_all_client(reviewer: TokenReviewer, aiohttp_client: MakeClient) -> Client:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", catch_all)
    protect(app, reviewer, open_paths={"/healthz/ready"})
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    "path",
    ["/healthz%2Fready", "/healthz%2fready", "/healthz%252Fready", "/healthz%2Fready?dump=all", "/%68ealthz%2Fready"],
)
async def test_an_encoded_slash_does_not_make_a_protected_path_open(catch_all_client: Client, path: str) -> None:
    # The router matches on the path with %2F kept encoded; before the fix the middleware compared the
    # decoded path, so /healthz%2Fready reached the catch-all handler as the open /healthz/ready.
    url = URL(str(catch_all_client.make_url("/")).rstrip("/") + path, encoded=True)
    async with catch_all_client.session.get(url) as response:
        assert response.status == 401, path


@pytest.mark.parametrize("path", ["/healthz/ready", "/healthz/%72eady"])
async def test_the_open_path_is_open_however_its_plain_letters_are_written(catch_all_client: Client, path: str) -> None:
    url = URL(str(catch_all_client.make_url("/")).rstrip("/") + path, encoded=True)
    async with catch_all_client.session.get(url) as response:
        assert response.status == 200
        assert await response.text() == "open"


MARK = "SECRETPART"


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {MARK}\x01tail".encode(),
        f"Bearer {MARK}\r\n folded".encode(),
        f"Bearer {MARK}".encode() + b"A" * 9000,
        f"Bearer {MARK}\x7f".encode(),
    ],
    ids=["control byte", "folded line", "over 8190 bytes", "DEL"],
)
async def test_a_request_the_parser_refuses_is_logged_without_its_authorization_header(
    client: Client, caplog: pytest.LogCaptureFixture, value: bytes
) -> None:
    # aiohttp's parser logs the line it stopped at, token included, at ERROR before any middleware runs;
    # protect() redacts it. Before the fix the token was in the log record's exception text.
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records, "the refusal is still logged"
    assert all(r.levelno == logging.ERROR for r in records)
    assert "request bytes redacted" in caplog.text
    assert MARK not in caplog.text
    for record in records:
        assert record.exc_info is None
        assert MARK not in record.getMessage()


def test_the_bare_middleware_installs_the_parser_log_redaction_too(reviewer: TokenReviewer) -> None:
    from audience_token.middleware import PARSER_MESSAGE_REDACTION

    server_log = logging.getLogger("aiohttp.server")
    server_log.removeFilter(PARSER_MESSAGE_REDACTION)
    token_middleware(reviewer)
    token_middleware(reviewer)
    assert server_log.filters.count(PARSER_MESSAGE_REDACTION) == 1
