"""The ASGI middleware under uvicorn on a real socket: the aiohttp middleware's answers, WebSockets, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from yarl import URL

from audience_token import Identity, ReviewerSettings, TokenReviewer, protect
from audience_token.answers import HttpRefusal
from audience_token.asgi import IDENTITY_KEY, AudienceTokenMiddleware, Message, identity_of
from tests.audience_token.fake_api import FakeApiServer, fake_token
from tests.audience_token.servers import answer_of, uvicorn_serving

AUDIENCE = 'store "prod"'


async def whoami(request: Request) -> JSONResponse:
    caller = identity_of(request)
    assert request.state._state[IDENTITY_KEY] is caller
    return JSONResponse({"caller": str(caller), "pod": caller.pod_name})


async def healthz(request: Request) -> PlainTextResponse:
    with pytest.raises(LookupError, match="open_paths"):
        identity_of(request)
    return PlainTextResponse("ok")


async def anything(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"protected {identity_of(request)}")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(str(identity_of(websocket)))
    await websocket.close()


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", whoami),
            Route("/healthz/ready", healthz),
            WebSocketRoute("/ws", echo),
            Route("/{rest:path}", anything, methods=["GET", "POST"]),
        ]
    )


class Recording:
    """A TokenReviewer that notes when it is closed (the lifespan's job)."""

    def __init__(self, reviewer: TokenReviewer) -> None:
        self.reviewer = reviewer
        self.audience = reviewer.audience
        self.lookup = reviewer.lookup
        self.closed = 0

    async def verify(self, token: str) -> Identity:
        return await self.reviewer.verify(token)

    async def close(self) -> None:
        self.closed += 1
        await self.reviewer.close()


@pytest.fixture
async def reviewer(fake_api: FakeApiServer) -> AsyncIterator[TokenReviewer]:
    async with TokenReviewer(
        AUDIENCE, allow="api/*", credentials=fake_api.credentials(), settings=ReviewerSettings(timeout=1)
    ) as reviewer:
        yield reviewer


@pytest.fixture
async def recording(reviewer: TokenReviewer) -> Recording:
    return Recording(reviewer)


@pytest.fixture
async def asgi_url(recording: Recording) -> AsyncIterator[str]:
    app = AudienceTokenMiddleware(
        starlette_app(), recording, open_paths={"/healthz/ready"}, rules={"GET /admin/*": "api/reports"}
    )
    async with uvicorn_serving(app) as url:
        yield url
    assert recording.closed == 1, "the lifespan's end closes the verifier"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_allowed_caller_reaches_the_starlette_handler_with_its_identity(
    asgi_url: str, http: aiohttp.ClientSession
) -> None:
    token = fake_token(audiences=(AUDIENCE,), pod=("api-1", "u1"))
    async with http.get(asgi_url + "/", headers=bearer(token)) as response:
        assert response.status == 200
        assert await response.json() == {"caller": "api/api (pod api/api-1)", "pod": "api-1"}


async def test_an_open_path_passes_without_a_token_and_has_no_identity(
    asgi_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(asgi_url + "/healthz/ready") as response:
        assert response.status == 200
        assert await response.text() == "ok"


@pytest.mark.parametrize(
    "path", ["/healthz%2Fready", "/healthz%2fready", "/healthz%252Fready", "/%68ealthz/ready", "/healthz/ready/"]
)
async def test_an_encoded_spelling_of_an_open_path_still_needs_a_token(
    asgi_url: str, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(URL(asgi_url + path + "?dump=all", encoded=True)) as response:
        assert response.status == 401


REFUSALS: list[tuple[str, dict[str, str], str | None]] = [
    ("no header", {}, None),
    ("another scheme", {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, None),
    ("an empty bearer", {"Authorization": "Bearer "}, None),
    ("not a JWT", {"Authorization": "Bearer abc"}, None),
    ("a revoked token", bearer(fake_token(audiences=(AUDIENCE,), valid=False)), None),
    ("another audience", bearer(fake_token(audiences=("elsewhere",))), None),
    ("another account", bearer(fake_token("billing", "billing", audiences=(AUDIENCE,))), None),
    ("the API server down", bearer(fake_token(audiences=(AUDIENCE,), nonce="503")), "503"),
    ("the reviewer's RBAC missing", bearer(fake_token(audiences=(AUDIENCE,), nonce="403")), "403"),
]


async def unreachable(request: web.Request) -> web.Response:
    raise AssertionError("every request here is refused")


@pytest.mark.parametrize(("case", "headers", "fault"), REFUSALS, ids=[case for case, _, _ in REFUSALS])
async def test_every_refusal_is_answered_exactly_as_the_aiohttp_middleware_answers_it(
    recording: Recording,
    reviewer: TokenReviewer,
    fake_api: FakeApiServer,
    http: aiohttp.ClientSession,
    case: str,
    headers: dict[str, str],
    fault: str | None,
) -> None:
    fake_api.fault = fault
    aiohttp_app = web.Application()
    aiohttp_app.router.add_get("/", unreachable)
    protect(aiohttp_app, reviewer)
    answers = []
    async with (
        TestServer(aiohttp_app, host="127.0.0.1") as aiohttp_server,
        uvicorn_serving(AudienceTokenMiddleware(starlette_app(), recording)) as asgi_url,
    ):
        for base in (str(aiohttp_server.make_url("")), asgi_url):
            async with http.get(base.rstrip("/") + "/", headers=headers) as response:
                answers.append(await answer_of(response))
    aiohttp_answer, asgi_answer = answers
    assert asgi_answer == aiohttp_answer
    assert asgi_answer[0] in (401, 403, 503)


async def test_several_authorization_headers_are_refused_as_the_aiohttp_middleware_does(
    asgi_url: str, http: aiohttp.ClientSession, fake_api: FakeApiServer
) -> None:
    token = fake_token(audiences=(AUDIENCE,))
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    async with http.get(asgi_url + "/", headers=headers) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="store \\"prod\\"", error="invalid_request"'
        assert (await response.json())["reason"] == "malformed"
    assert fake_api.reviews == 0


async def test_a_websocket_handshake_of_an_allowed_caller_is_accepted_with_its_identity(
    asgi_url: str, http: aiohttp.ClientSession
) -> None:
    token = fake_token(audiences=(AUDIENCE,), pod=("api-1", "u1"))
    async with http.ws_connect(asgi_url.replace("http", "ws") + "/ws", headers=bearer(token)) as ws:
        assert await ws.receive_str() == "api/api (pod api/api-1)"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (bearer(fake_token("billing", "billing", audiences=(AUDIENCE,))), 403)],
    ids=["no token", "another account"],
)
async def test_a_refused_websocket_handshake_gets_the_http_answer_before_any_accept(
    asgi_url: str, http: aiohttp.ClientSession, headers: dict[str, str], status: int
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(asgi_url.replace("http", "ws") + "/ws", headers=headers)
    assert refused.value.status == status
    assert refused.value.headers is not None
    assert refused.value.headers["WWW-Authenticate"].startswith('Bearer realm="store \\"prod\\""')


async def test_without_the_http_response_extension_a_refused_handshake_is_closed_before_accept(
    reviewer: TokenReviewer,
) -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "headers": [], "extensions": {}}
    await AudienceTokenMiddleware(app, reviewer)(scope, receive, send)
    assert reached == []
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008
    assert sent[0]["reason"].startswith("401 unauthorized: no Authorization header")
    assert len(sent[0]["reason"].encode()) <= 123


async def test_the_identity_goes_into_a_copy_of_the_scope_state_not_the_servers_own(reviewer: TokenReviewer) -> None:
    token = fake_token(audiences=(AUDIENCE,))
    seen: list[Identity] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(identity_of(scope))
        assert scope["state"]["from-lifespan"] == 1

    shared_state = {"from-lifespan": 1}
    headers = [(b"authorization", f"Bearer {token}".encode())]
    scope: dict[str, Any] = {"type": "http", "path": "/", "headers": headers, "state": shared_state}
    await AudienceTokenMiddleware(app, reviewer)(scope, _never, _never)
    assert [str(i) for i in seen] == ["api/api (pod api/api-7d4b9)"]
    assert shared_state == {"from-lifespan": 1}


async def _never(*_: Any) -> Any:
    raise AssertionError("not called")


def test_identity_of_an_unprotected_scope_is_a_lookup_error_naming_the_path() -> None:
    with pytest.raises(LookupError, match="'/x'"):
        identity_of({"type": "http", "path": "/x"})


async def test_a_refused_request_with_a_body_leaves_the_connection_usable_for_the_next(asgi_url: str) -> None:
    # The refusal reads no body (an unauthenticated client's upload costs nothing); uvicorn then finds the next
    # request on the kept-alive connection.
    token = fake_token(audiences=(AUDIENCE,))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one_connection:
        for _ in range(2):
            async with one_connection.post(asgi_url + "/upload", data=b"x" * 300_000) as response:
                assert response.status == 401
        async with one_connection.post(asgi_url + "/upload", data=b"y" * 1000, headers=bearer(token)) as response:
            assert response.status == 200
            assert (await response.text()).startswith("protected api/api")


@pytest.mark.parametrize("path", ["/admin/users", "/admin"])
async def test_a_get_route_rule_refuses_head_too_and_covers_the_bare_prefix(
    asgi_url: str, http: aiohttp.ClientSession, path: str
) -> None:
    token = fake_token("api", "api", audiences=(AUDIENCE,))
    async with http.get(asgi_url + path, headers=bearer(token)) as response:
        assert response.status == 403
    async with http.head(asgi_url + path, headers=bearer(token)) as response:
        assert response.status == 403, "Starlette answers HEAD with the GET handler: the GET rule must govern it"
    async with http.get(asgi_url + "/other", headers=bearer(token)) as response:
        assert response.status == 200


@pytest.mark.parametrize("defect", [RuntimeError("Event loop is closed"), OSError("socket")])
async def test_a_verifier_whose_close_raises_still_ends_the_lifespan_reporting_shutdown_failed(
    defect: Exception,
) -> None:
    class ClosingFails:
        audience = AUDIENCE

        async def verify(self, token: str) -> Identity:
            raise AssertionError("not asked")

        async def close(self) -> None:
            raise defect

    app = AudienceTokenMiddleware(starlette_app(), ClosingFails())
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    # The server's side of the lifespan protocol, as uvicorn plays it.
    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert sent[1]["message"] == f"closing the token verifier failed: {type(defect).__name__}"


async def test_a_refused_head_request_is_answered_with_headers_and_no_body(reviewer: TokenReviewer) -> None:
    """As the server sees it (uvicorn would drop a HEAD body itself; a server that does not would desync)."""
    app = AudienceTokenMiddleware(starlette_app(), reviewer)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "HEAD", "path": "/x", "raw_path": b"/x", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 401
    refusal = app.gate.token_of([])
    assert isinstance(refusal, HttpRefusal)
    assert (b"content-length", str(len(refusal.body)).encode()) in sent[0]["headers"], "the GET answer's length"
    assert sent[1] == {"type": "http.response.body", "body": b""}
