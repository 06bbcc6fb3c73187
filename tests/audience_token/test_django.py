"""Django's middleware from settings.AUDIENCE_TOKEN: sync and async views, under gunicorn (WSGI) and uvicorn (ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

import aiohttp
import pytest
from yarl import URL

from audience_token import ConfigError
from tests.audience_token.fake_api import OWN_TOKEN, FakeApiServer, fake_token
from tests.audience_token.receiver_apps import environment
from tests.audience_token.servers import gunicorn_serving, in_a_thread, uvicorn_child_serving

AUDIENCE = "secret-store"
SITE = "tests.audience_token.django_site"


def serving(kind: str, env: dict[str, str]) -> AbstractContextManager[str]:
    env = {**env, "DJANGO_SETTINGS_MODULE": SITE}
    if kind == "gunicorn-wsgi":
        return gunicorn_serving(f"{SITE}:wsgi()", env=env, worker="gthread", threads=4)
    return uvicorn_child_serving(f"{SITE}:asgi", env=env)


@pytest.fixture(params=["gunicorn-wsgi", "uvicorn-asgi"])
async def url(request: pytest.FixtureRequest, fake_api: FakeApiServer) -> AsyncIterator[str]:
    env = environment(
        audience=AUDIENCE, allow="api/*,ops/*", server=fake_api.url, ca=str(fake_api.material.ca), own_token=OWN_TOKEN
    )
    async with in_a_thread(serving(request.param, env)) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(namespace: str = "api", name: str = "api", **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake_token(namespace, name, **claims)}"}  # type: ignore[arg-type]


@pytest.mark.parametrize("view", ["/", "/async"])
async def test_sync_and_async_views_get_the_caller_as_request_caller(
    url: str, http: aiohttp.ClientSession, view: str
) -> None:
    async with http.get(url + view, headers=bearer(pod=("api-1", "u1"))) as response:
        assert response.status == 200
        body = await response.json()
        assert (body["caller"], body["pod"]) == ("api/api (pod api/api-1)", "api-1")


@pytest.mark.parametrize(
    ("headers", "status", "challenge"),
    [
        ({}, 401, 'Bearer realm="secret-store"'),
        ({"Authorization": "Bearer x.y"}, 401, 'Bearer realm="secret-store", error="invalid_token"'),
        (bearer("billing", "billing"), 403, 'Bearer realm="secret-store", error="insufficient_scope"'),
    ],
    ids=["no token", "malformed", "another account"],
)
async def test_refusals_are_the_answers_of_every_adapter(
    url: str, http: aiohttp.ClientSession, headers: dict[str, str], status: int, challenge: str
) -> None:
    async with http.get(url + "/async", headers=headers) as response:
        assert response.status == status
        assert response.headers["WWW-Authenticate"] == challenge
        assert response.headers["Content-Type"] == "application/json"  # as the aiohttp middleware sends it
        assert set(await response.json()) == {"error", "reason", "message"}


async def test_the_api_server_down_is_503(url: str, http: aiohttp.ClientSession, fake_api: FakeApiServer) -> None:
    fake_api.fault = "503"
    async with http.get(url + "/", headers=bearer()) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "7"


async def test_an_open_path_passes_but_no_encoded_spelling_of_it_does(
    url: str, http: aiohttp.ClientSession, fake_api: FakeApiServer
) -> None:
    async with http.get(url + "/healthz/ready") as response:
        assert (response.status, await response.json()) == (200, {"caller": "None"})
    for path in ("/healthz%2Fready", "/%68ealthz/ready"):
        async with http.get(URL(url + path, encoded=True)) as response:
            assert response.status == 401, path
    assert fake_api.reviews == 0


async def test_a_route_rule_from_settings_admits_only_the_group_it_names(url: str, http: aiohttp.ClientSession) -> None:
    async with http.delete(url + "/secrets/db", headers=bearer("ops", "janitor")) as response:
        assert response.status == 200
    async with http.delete(url + "/secrets/db", headers=bearer("api", "api")) as response:
        assert response.status == 403


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"audience": "a"}, "'allow' is required"),
        ({"audience": "a", "allow": ["api/*"], "audiences": "b"}, "unknown keys \\['audiences'\\]"),
        ({"audience": "a", "allow": ["api/*"], "mode": "jwks"}, "'mode' must be one of"),
        ({"audience": "a", "allow": ["api/*"], "issuer": "https://x"}, "for mode 'offline' only"),
        ({"audience": "a", "allow": []}, "allow is empty"),
    ],
)
def test_a_settings_mistake_is_a_config_error_naming_it(config: dict[str, object], says: str) -> None:
    from audience_token.django import verifier_from

    with pytest.raises(ConfigError, match=says):
        verifier_from(config)


def test_mode_offline_builds_the_offline_verifier_with_the_issuer() -> None:
    from audience_token.django import verifier_from
    from audience_token.offline import OfflineVerifier

    verifier = verifier_from({"audience": "a", "allow": ["api/*"], "mode": "offline", "issuer": "https://issuer.test"})
    assert isinstance(verifier, OfflineVerifier)
    assert verifier.issuer == "https://issuer.test"


def test_the_cache_ttls_of_mode_tokenreview_come_from_the_settings(fake_api: FakeApiServer) -> None:
    from audience_token.django import verifier_from
    from audience_token.reviewer import TokenReviewer

    config = {"audience": "a", "allow": "api/*", "credentials": fake_api.credentials(), "success_ttl": 2}
    verifier = verifier_from(config)
    assert isinstance(verifier, TokenReviewer)
    assert (verifier.settings.success_ttl, verifier.settings.failure_ttl) == (2.0, 10.0)


@pytest.mark.parametrize("path", ["/admin/users", "/admin"])
async def test_a_get_route_rule_refuses_head_too_and_covers_the_bare_prefix(
    url: str, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(url + path, headers=bearer("api", "api")) as response:
        assert response.status == 403
    async with http.head(url + path, headers=bearer("api", "api")) as response:
        assert response.status == 403, "Django answers HEAD with the GET view: the GET rule must govern it"
    async with http.head(url + path, headers=bearer("ops", "janitor")) as response:
        assert response.status == 200


def test_a_new_settings_dict_never_gets_the_verifier_of_a_freed_one_at_the_same_id() -> None:
    from audience_token import django

    for n in range(40):
        config = {"audience": f"audience-{n}", "allow": ["api/*"], "mode": "offline", "issuer": "https://issuer.test"}
        assert django._shared(config).audience == f"audience-{n}"
        assert django._shared(config) is django._shared(config), "one verifier per settings dict"
        del config  # freed: CPython readily gives the next dict the same id


async def test_behind_a_mount_prefix_an_open_path_listed_without_it_opens_nothing(
    fake_api: FakeApiServer, http: aiohttp.ClientSession
) -> None:
    """Keys are request.path (SCRIPT_NAME included), as documented; Django routes on path_info."""
    env = environment(
        audience=AUDIENCE, allow="api/*,ops/*", server=fake_api.url, ca=str(fake_api.material.ca), own_token=OWN_TOKEN
    )
    async with in_a_thread(serving("gunicorn-wsgi", {**env, "SCRIPT_NAME": "/store"})) as url:
        async with http.get(url + "/store/healthz/ready") as response:
            assert response.status == 401, "the site lists '/healthz/ready', not '/store/healthz/ready'"
        async with http.get(url + "/store/", headers=bearer()) as response:
            assert response.status == 200
            assert (await response.json())["caller"].startswith("api/api")
