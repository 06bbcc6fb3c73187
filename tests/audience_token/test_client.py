"""``bearer_auth``: a real ClientSession against real aiohttp servers on loopback sockets."""

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, ClientResponseError, ClientSession, hdrs, web
from aiohttp.test_utils import TestServer

from audience_token.client import bearer_auth
from audience_token.errors import TokenFileError
from audience_token.token_file import TokenFile
from tests.audience_token.conftest import Clock
from tests.audience_token.kubelet_volume import ProjectedVolume

MakeServer = Callable[[web.Application], Awaitable[TestServer]]


def fake_token() -> str:
    return ".".join(secrets.token_urlsafe(24) for _ in range(3))


class Receiver:
    """Records the Authorization header of every request; answers 401 to the tokens in ``refuse``."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self.refuse: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.handle)
        app.router.add_get("/here", self.redirect_here)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        self.seen.append(header)
        if header is not None and header.removeprefix("Bearer ") in self.refuse:
            return web.Response(status=401)
        return web.Response(text="ok")

    async def redirect_here(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/")


@pytest.fixture
def first() -> str:
    return fake_token()


@pytest.fixture
def volume(tmp_path: Path, first: str) -> ProjectedVolume:
    return ProjectedVolume.create(tmp_path / "tokens", {"token": first})


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


async def test_every_request_of_the_session_carries_the_current_token(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    server = await aiohttp_server(receiver.app())
    clock = Clock(0.0)
    tokens = TokenFile(volume.path("token"), clock=clock)
    second = fake_token()
    async with ClientSession(middlewares=(bearer_auth(tokens),)) as session:
        for _ in range(2):
            async with session.get(server.make_url("/")) as response:
                assert response.status == 200
        volume.rotate({"token": second})
        clock.now += 1
        async with session.get(server.make_url("/")) as response:
            assert response.status == 200
    assert receiver.seen == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]


async def test_a_401_makes_the_next_request_read_the_file_again(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    server = await aiohttp_server(receiver.app())
    # A clock that never moves: only the 401 can make the file be read again.
    tokens = TokenFile(volume.path("token"), clock=Clock(0.0))
    second = fake_token()
    async with ClientSession(middlewares=(bearer_auth(tokens),)) as session:
        async with session.get(server.make_url("/")) as response:
            assert response.status == 200
        volume.rotate({"token": second})
        async with session.get(server.make_url("/")) as response:
            assert response.status == 200, "the first token is still sent from memory"
        receiver.seen.clear()
        receiver.refuse.add(first)
        async with session.get(server.make_url("/")) as response:
            assert response.status == 401
        async with session.get(server.make_url("/")) as response:
            assert response.status == 200
    assert receiver.seen == [f"Bearer {first}", f"Bearer {second}"]


async def test_an_authorization_the_caller_set_is_left_alone(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume
) -> None:
    server = await aiohttp_server(receiver.app())
    async with (
        ClientSession(middlewares=(bearer_auth(TokenFile(volume.path("token"))),)) as session,
        session.get(server.make_url("/"), headers={"Authorization": "Bearer other"}),
    ):
        pass
    assert receiver.seen == ["Bearer other"]


async def test_a_same_origin_redirect_keeps_the_token(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    server = await aiohttp_server(receiver.app())
    async with (
        ClientSession(middlewares=(bearer_auth(TokenFile(volume.path("token"))),)) as session,
        session.get(server.make_url("/here")) as response,
    ):
        assert response.status == 200
    assert receiver.seen == [f"Bearer {first}"]


async def test_the_token_never_follows_a_redirect_to_another_origin(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    elsewhere = Receiver()
    other = await aiohttp_server(elsewhere.app())

    async def leave(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(other.make_url("/")))

    app = receiver.app()
    app.router.add_get("/leave", leave)
    server = await aiohttp_server(app)
    assert server.make_url("/").origin() != other.make_url("/").origin()
    async with ClientSession(middlewares=(bearer_auth(TokenFile(volume.path("token"))),)) as session:
        async with session.get(server.make_url("/leave")) as response:
            assert response.status == 200
        # The next request of the same task to that origin is the caller's own: it gets the token.
        async with session.get(other.make_url("/")) as response:
            assert response.status == 200
    assert elsewhere.seen == [None, f"Bearer {first}"]


async def test_without_a_token_the_request_is_not_sent_and_the_error_says_what_to_check(
    aiohttp_server: MakeServer, receiver: Receiver, tmp_path: Path
) -> None:
    server = await aiohttp_server(receiver.app())
    async with ClientSession(middlewares=(bearer_auth(TokenFile(tmp_path / "missing")),)) as session:
        with pytest.raises(TokenFileError, match=r"token-projector\.io/audience"):
            await session.get(server.make_url("/"))
    assert receiver.seen == []


async def test_headers_work_with_any_client(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    server = await aiohttp_server(receiver.app())
    tokens = TokenFile(volume.path("token"))
    async with ClientSession() as session, session.get(server.make_url("/"), headers=tokens.headers()):
        pass
    assert receiver.seen == [f"Bearer {first}"]


async def test_the_token_never_reaches_further_hops_of_a_chain_that_left_its_origin(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    # A → 302 → B/1 → 302 → B/2: before the fix B/2 got the token, B/1 → B/2 being "same origin".
    elsewhere = Receiver()
    other_app = elsewhere.app()

    async def hop(request: web.Request) -> web.Response:
        elsewhere.seen.append(request.headers.get("Authorization"))
        raise web.HTTPFound("/")

    other_app.router.add_get("/1", hop)
    other = await aiohttp_server(other_app)

    async def leave(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(other.make_url("/1")))

    app = receiver.app()
    app.router.add_get("/leave", leave)
    server = await aiohttp_server(app)
    async with (
        ClientSession(middlewares=(bearer_auth(TokenFile(volume.path("token"))),)) as session,
        session.get(server.make_url("/leave")) as response,
    ):
        assert response.status == 200
    assert elsewhere.seen == [None, None]


async def test_a_chain_that_comes_back_home_carries_the_token_again(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    home = await aiohttp_server(receiver.app())
    elsewhere = Receiver()
    other_app = elsewhere.app()

    async def back(request: web.Request) -> web.Response:
        elsewhere.seen.append(request.headers.get("Authorization"))
        raise web.HTTPFound(str(home.make_url("/")))

    other_app.router.add_get("/back", back)
    other = await aiohttp_server(other_app)
    async with (
        ClientSession(middlewares=(bearer_auth(TokenFile(volume.path("token"))),)) as session,
        session.get(other.make_url("/back")) as response,
    ):
        assert response.status == 200
    # The caller asked for B: B is home, the token went there; then to A, another origin: none.
    assert elsewhere.seen == [f"Bearer {first}"]
    assert receiver.seen == [None]


async def test_a_hop_whose_url_another_middleware_changed_gets_no_token_on_an_origin_that_is_not_home(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume
) -> None:
    # A → 302 → B/1, with a middleware before ours that adds a query to every request: the hop is
    # B/1?trace=1, not the URL the redirect named. Before the fix it was then taken for a request of
    # the caller's own, B for its home, and B got the token.
    seen: list[tuple[str | None, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), request.query_string))
        return web.Response(text="ok")

    other_app = web.Application()
    other_app.router.add_get("/1", record)
    other = await aiohttp_server(other_app)

    async def leave(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(other.make_url("/1")))

    async def traced(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        request.url = request.url.update_query(trace="1")
        return await handler(request)

    app = receiver.app()
    app.router.add_get("/leave", leave)
    server = await aiohttp_server(app)
    middlewares = (traced, bearer_auth(TokenFile(volume.path("token"))))
    async with ClientSession(middlewares=middlewares) as session, session.get(server.make_url("/leave")) as response:
        assert response.status == 200
    assert seen == [(None, "trace=1")]


async def test_a_redirect_not_followed_fails_closed_for_one_request_to_its_origin_only(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    # The middleware cannot tell a hop aiohttp follows from the caller's next request to the same
    # origin: that one request goes without the token (fail closed); the next has it again, and a
    # request to any other origin (here, home) is not taken for the hop.
    elsewhere = Receiver()
    other = await aiohttp_server(elsewhere.app())

    async def leave(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(other.make_url("/here")))

    app = receiver.app()
    app.router.add_get("/leave", leave)
    server = await aiohttp_server(app)
    async with ClientSession(middlewares=(bearer_auth(TokenFile(volume.path("token"))),)) as session:
        async with session.get(server.make_url("/leave"), allow_redirects=False) as response:
            assert response.status == 302
        async with session.get(other.make_url("/")) as response:
            assert response.status == 200
        async with session.get(other.make_url("/")) as response:
            assert response.status == 200
        async with session.get(server.make_url("/leave"), allow_redirects=False) as response:
            assert response.status == 302
        async with session.get(server.make_url("/")) as response:
            assert response.status == 200
    assert elsewhere.seen == [None, f"Bearer {first}"]
    assert receiver.seen == [f"Bearer {first}"]


async def test_an_error_raised_for_the_answer_does_not_carry_the_token(
    aiohttp_server: MakeServer, receiver: Receiver, volume: ProjectedVolume, first: str
) -> None:
    # aiohttp's repr of ClientResponseError prints the request's headers; before the fix they held the token.
    server = await aiohttp_server(receiver.app())
    receiver.refuse.add(first)
    tokens = TokenFile(volume.path("token"))
    async with ClientSession(middlewares=(bearer_auth(tokens),), raise_for_status=True) as session:
        with pytest.raises(ClientResponseError) as raised:
            await session.get(server.make_url("/"))
    assert receiver.seen == [f"Bearer {first}"], "the token was sent"
    assert raised.value.status == 401
    assert first not in repr(raised.value)
    assert first not in str(raised.value)
    assert hdrs.AUTHORIZATION not in raised.value.request_info.headers
