"""FastAPI's Caller dependency under uvicorn: the identity, a narrower per-route allow, OpenAPI's bearer scheme.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations at definition.
"""

from collections.abc import AsyncIterator
from typing import Annotated

import aiohttp
import pytest
from fastapi import Depends, FastAPI

from audience_token import Identity, ReviewerSettings, TokenReviewer
from audience_token.fastapi import Caller
from tests.audience_token.fake_api import FakeApiServer, fake_token
from tests.audience_token.servers import uvicorn_serving

AUDIENCE = "secret-store"


@pytest.fixture
async def reviewer(fake_api: FakeApiServer) -> AsyncIterator[TokenReviewer]:
    async with TokenReviewer(
        AUDIENCE, allow=["api/*", "ops/*"], credentials=fake_api.credentials(), settings=ReviewerSettings(timeout=1)
    ) as reviewer:
        yield reviewer


@pytest.fixture
async def url(reviewer: TokenReviewer) -> AsyncIterator[str]:
    app = FastAPI()
    caller = Caller(reviewer)

    @app.get("/secrets/{name}")
    async def read(name: str, who: Annotated[Identity, Depends(caller)]) -> dict[str, str | None]:
        return {"name": name, "caller": str(who), "pod": who.pod_name}

    @app.delete("/secrets/{name}", dependencies=[Depends(Caller(reviewer, allow="system:serviceaccounts:ops"))])
    async def delete(name: str) -> dict[str, str]:
        return {"deleted": name}

    writer = Caller(reviewer, allow="api/writer")

    # Annotations evaluated where the route is defined, so that the closure's `writer` is found.
    @app.put("/secrets/{name}")
    async def write(name: str, who: Annotated[Identity, Depends(writer)]) -> str:
        return str(who)

    async with uvicorn_serving(app) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(namespace: str = "api", name: str = "api", **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake_token(namespace, name, **claims)}"}  # type: ignore[arg-type]


async def test_the_route_receives_the_callers_identity(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(url + "/secrets/db", headers=bearer(pod=("api-1", "u1"))) as response:
        assert response.status == 200
        assert await response.json() == {"name": "db", "caller": "api/api (pod api/api-1)", "pod": "api-1"}


@pytest.mark.parametrize(
    ("headers", "status", "challenge"),
    [
        ({}, 401, 'Bearer realm="secret-store"'),
        ({"Authorization": "Bearer not-a-jwt"}, 401, 'Bearer realm="secret-store", error="invalid_token"'),
        (bearer("billing", "billing"), 403, 'Bearer realm="secret-store", error="insufficient_scope"'),
    ],
    ids=["no token", "malformed", "not allowed by the verifier"],
)
async def test_a_refusal_has_the_status_and_challenge_of_every_adapter_in_fastapis_detail(
    url: str, http: aiohttp.ClientSession, fake_api: FakeApiServer, headers: dict[str, str], status: int, challenge: str
) -> None:
    async with http.get(url + "/secrets/db", headers=headers) as response:
        assert response.status == status
        assert response.headers["WWW-Authenticate"] == challenge
        detail = (await response.json())["detail"]
        assert set(detail) == {"error", "reason", "message"}
    assert fake_api.reviews == (1 if status == 403 else 0)


async def test_the_api_server_down_is_503_with_retry_after(
    url: str, http: aiohttp.ClientSession, fake_api: FakeApiServer
) -> None:
    fake_api.fault = "503"
    async with http.get(url + "/secrets/db", headers=bearer()) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "7"
        assert (await response.json())["detail"]["reason"] == "review_unavailable"


async def test_a_routes_own_allow_by_group_admits_its_namespace_only(url: str, http: aiohttp.ClientSession) -> None:
    async with http.delete(url + "/secrets/db", headers=bearer("ops", "janitor")) as response:
        assert response.status == 200
    async with http.delete(url + "/secrets/db", headers=bearer("api", "api")) as response:
        assert response.status == 403
        message = (await response.json())["detail"]["message"]
        assert message.startswith("service account api/api is authenticated but not allowed to call DELETE")
        assert "/secrets/{name}" in message


async def test_a_routes_own_allow_by_name_is_narrower_than_the_verifiers(url: str, http: aiohttp.ClientSession) -> None:
    async with http.put(url + "/secrets/db", headers=bearer("api", "writer")) as response:
        assert response.status == 200
    async with http.put(url + "/secrets/db", headers=bearer("api", "reader")) as response:
        assert response.status == 403


async def test_openapi_shows_an_http_bearer_scheme_on_protected_routes(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(url + "/openapi.json") as response:
        document = await response.json()
    scheme = document["components"]["securitySchemes"]["ServiceAccountToken"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    for method in ("get", "delete", "put"):
        assert document["paths"]["/secrets/{name}"][method]["security"] == [{"ServiceAccountToken": []}]
