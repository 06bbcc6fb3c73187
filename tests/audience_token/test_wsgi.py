"""The WSGI middleware behind Flask under gunicorn (sync and gthread workers) and Werkzeug's development server.

Each server runs on a real socket and asks the FakeApiServer of this test process, which counts reviews.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from audience_token import ReviewerSettings, TokenReviewer, protect
from tests.audience_token.fake_api import OWN_TOKEN, FakeApiServer, fake_token
from tests.audience_token.receiver_apps import environment, flask_app, reviewer
from tests.audience_token.servers import answer_of, gunicorn_serving, in_a_thread, werkzeug_serving

AUDIENCE = 'store "prod"'
ALLOW = "api/*,ops/*"
SERVERS = ["werkzeug", "gunicorn-sync", "gunicorn-gthread"]


@contextmanager
def serving(kind: str, env: dict[str, str]) -> Iterator[str]:
    if kind == "werkzeug":
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            app = flask_app()
        with werkzeug_serving(app) as url:
            yield url
        app.wsgi_app.verifier.close()
    else:
        worker = kind.removeprefix("gunicorn-")
        threads = 8 if worker == "gthread" else 1
        with gunicorn_serving(
            "tests.audience_token.receiver_apps:flask_app()", env=env, worker=worker, threads=threads
        ) as url:
            yield url


@pytest.fixture(params=SERVERS)
async def url(request: pytest.FixtureRequest, fake_api: FakeApiServer) -> AsyncIterator[str]:
    env = environment(
        audience=AUDIENCE, allow=ALLOW, server=fake_api.url, ca=str(fake_api.material.ca), own_token=OWN_TOKEN
    )
    async with in_a_thread(serving(request.param, env)) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_allowed_caller_reaches_the_flask_view_with_its_identity(
    url: str, http: aiohttp.ClientSession
) -> None:
    token = fake_token(audiences=(AUDIENCE,), pod=("api-1", "u1"))
    async with http.get(url + "/", headers=bearer(token)) as response:
        assert response.status == 200
        body = await response.json()
        assert (body["caller"], body["pod"]) == ("api/api (pod api/api-1)", "api-1")


REFUSALS: list[tuple[str, list[tuple[str, str]], str | None]] = [
    ("no header", [], None),
    ("another scheme", [("Authorization", "Basic YWxpY2U6c2VjcmV0")], None),
    ("not a JWT", [("Authorization", "Bearer abc")], None),
    ("two headers", [("Authorization", "Bearer a.b.c"), ("Authorization", "Bearer a.b.c")], None),
    ("a revoked token", list(bearer(fake_token(audiences=(AUDIENCE,), valid=False)).items()), None),
    ("another audience", list(bearer(fake_token(audiences=("elsewhere",))).items()), None),
    ("another account", list(bearer(fake_token("billing", "billing", audiences=(AUDIENCE,))).items()), None),
    ("the API server down", list(bearer(fake_token(audiences=(AUDIENCE,), nonce="503")).items()), "503"),
    ("the reviewer's RBAC missing", list(bearer(fake_token(audiences=(AUDIENCE,), nonce="403")).items()), "403"),
]


async def test_every_refusal_is_answered_exactly_as_the_aiohttp_middleware_answers_it(
    url: str, fake_api: FakeApiServer, http: aiohttp.ClientSession
) -> None:
    async with TokenReviewer(
        AUDIENCE, allow=ALLOW.split(","), credentials=fake_api.credentials(), settings=ReviewerSettings(timeout=2)
    ) as reviewer:
        aiohttp_app = web.Application()
        protect(aiohttp_app, reviewer)
        async with TestServer(aiohttp_app, host="127.0.0.1") as aiohttp_server:
            aiohttp_url = str(aiohttp_server.make_url("")).rstrip("/")
            for case, headers, fault in REFUSALS:
                fake_api.fault = fault
                answers = []
                for base in (aiohttp_url, url):
                    async with http.get(base + "/", headers=headers) as response:
                        answers.append(await answer_of(response))
                assert answers[1] == answers[0], case
                assert answers[1][0] in (401, 403, 503), case


async def test_an_open_path_passes_but_no_encoded_spelling_of_it_does(
    url: str, http: aiohttp.ClientSession, fake_api: FakeApiServer
) -> None:
    async with http.get(url + "/healthz/ready") as response:
        assert (response.status, await response.text()) == (200, "ok")
    for path in ("/healthz%2Fready", "/healthz%2fready", "/healthz%252Fready", "/%68ealthz/ready"):
        async with http.get(URL(url + path + "?dump=all", encoded=True)) as response:
            assert response.status == 401, path
    assert fake_api.reviews == 0


async def test_a_route_rule_admits_only_the_group_it_names(url: str, http: aiohttp.ClientSession) -> None:
    ops = fake_token("ops", "janitor", audiences=(AUDIENCE,))
    async with http.delete(url + "/secrets/db", headers=bearer(ops)) as response:
        assert response.status == 200
    api = fake_token("api", "api", audiences=(AUDIENCE,))
    async with http.delete(url + "/secrets/db", headers=bearer(api)) as response:
        assert response.status == 403
        assert "DELETE /secrets/*" in (await response.json())["message"]
    async with http.get(url + "/secrets/db", headers=bearer(api)) as response:
        assert response.status == 200


async def test_fifty_concurrent_requests_with_one_new_token_cost_one_token_review(
    url: str, http: aiohttp.ClientSession, fake_api: FakeApiServer
) -> None:
    fake_api.delay = 0.5
    token = fake_token(audiences=(AUDIENCE,))

    async def call() -> int:
        async with http.get(url + "/", headers=bearer(token)) as response:
            return response.status

    statuses = await asyncio.gather(*(call() for _ in range(50)))
    assert statuses == [200] * 50
    assert fake_api.reviews == 1


async def test_a_refused_request_with_a_body_leaves_the_connection_usable_for_the_next(
    url: str, fake_api: FakeApiServer
) -> None:
    # The refusal does not read the body (an unauthenticated client's upload costs nothing): the server drains
    # it and finds the next request on the kept-alive connection. (gunicorn drains at most 64 KiB, then closes the
    # connection instead: its rule, and the client's to retry.)
    token = fake_token(audiences=(AUDIENCE,))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one_connection:
        for _ in range(2):
            async with one_connection.post(url + "/upload", data=b"x" * 30_000) as response:
                assert response.status == 401
        async with one_connection.post(url + "/upload", data=b"y" * 1000, headers=bearer(token)) as response:
            assert response.status == 200
            assert (await response.text()).startswith("protected api/api")


@pytest.mark.parametrize("path", ["/admin/users", "/admin"])
async def test_a_get_route_rule_refuses_head_too_and_covers_the_bare_prefix(
    url: str, http: aiohttp.ClientSession, path: str
) -> None:
    api = fake_token("api", "api", audiences=(AUDIENCE,))
    async with http.get(url + path, headers=bearer(api)) as response:
        assert response.status == 403
    async with http.head(url + path, headers=bearer(api)) as response:
        assert response.status == 403, "Flask answers HEAD with the GET view: the GET rule must govern it"
    ops = fake_token("ops", "janitor", audiences=(AUDIENCE,))
    async with http.head(url + path, headers=bearer(ops)) as response:
        assert response.status == 200


async def test_behind_a_mount_prefix_rules_and_open_paths_are_keyed_by_the_full_path(
    fake_api: FakeApiServer, http: aiohttp.ClientSession
) -> None:
    """SCRIPT_NAME + PATH_INFO, as documented: a key without the prefix opens nothing."""
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from audience_token.wsgi import AudienceTokenMiddleware

    env = environment(
        audience=AUDIENCE, allow=ALLOW, server=fake_api.url, ca=str(fake_api.material.ca), own_token=OWN_TOKEN
    )
    inner = Flask("mounted")

    @inner.get("/<path:rest>")
    def anything(rest: str) -> str:
        return f"mounted {rest}"

    protected = AudienceTokenMiddleware(
        inner.wsgi_app,
        reviewer(env),
        open_paths={"/store/healthz", "/open"},
        rules={"GET /store/admin/*": ["system:serviceaccounts:ops"]},
    )
    site = DispatcherMiddleware(lambda environ, start_response: [], {"/store": protected})
    api = bearer(fake_token("api", "api", audiences=(AUDIENCE,)))
    ops = bearer(fake_token("ops", "janitor", audiences=(AUDIENCE,)))
    try:
        async with in_a_thread(werkzeug_serving(site)) as url:
            async with http.get(url + "/store/healthz") as response:
                assert response.status == 200
            async with http.get(url + "/store/open") as response:
                assert response.status == 401, "an open path written without the mount prefix opens nothing"
            for method in ("GET", "HEAD"):
                async with http.request(method, url + "/store/admin/users", headers=api) as response:
                    assert response.status == 403, method
                async with http.request(method, url + "/store/admin/users", headers=ops) as response:
                    assert response.status == 200, method
            async with http.get(url + "/store/reports", headers=api) as response:
                assert response.status == 200
    finally:
        await asyncio.to_thread(protected.verifier.close)
