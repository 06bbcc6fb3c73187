"""The ASGI (uvicorn) and WSGI (Flask under gunicorn gthread) receivers against the real kube-apiserver.

Tokens are those the kubelet would write for the volume token-projector added to a webhook-made Pod.
Each receiver reviews with its own ServiceAccount (RBAC from manifests/audience-token), through a
loopback forwarder the test can cut to stop the API server for the receiver alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from audience_token import Credentials, ReviewerSettings, TokenReviewer
from audience_token.asgi import AudienceTokenMiddleware, identity_of
from tests.audience_token.receiver_apps import environment
from tests.audience_token.servers import gunicorn_serving, in_a_thread, uvicorn_serving
from tests.e2e.conftest import ControlPlane, Registered
from tests.e2e.reviewer_support import Forwarder, ReviewerAccount, annotated_caller, reviewer_identity
from tests.e2e.tokens import kubelet_token, request_token, token_bound_to

pytestmark = pytest.mark.e2e

AUDIENCE = "secret-store"
SUCCESS_TTL = 2.0


@dataclasses.dataclass
class Receiver:
    url: str
    forwarder: Forwarder


@pytest.fixture(scope="module")
def receiver_account(control_plane: ControlPlane) -> ReviewerAccount:
    return reviewer_identity(control_plane, bound=True)


@pytest.fixture
def caller_pod(registered: Registered, control_plane: ControlPlane) -> dict[str, Any]:
    return annotated_caller(control_plane, audience=AUDIENCE)


async def whoami(request: Request) -> JSONResponse:
    caller = identity_of(request)
    return JSONResponse({"caller": str(caller), "pod": caller.pod_name})


@asynccontextmanager
async def asgi_receiver(account: ReviewerAccount, server: str, allow: str) -> AsyncIterator[str]:
    credentials = dataclasses.replace(Credentials.from_kubeconfig(account.kubeconfig), server=server)
    settings = ReviewerSettings(success_ttl=SUCCESS_TTL, timeout=2)
    reviewer = TokenReviewer(AUDIENCE, allow=allow, credentials=credentials, settings=settings)
    async with uvicorn_serving(AudienceTokenMiddleware(Starlette(routes=[Route("/", whoami)]), reviewer)) as url:
        yield url


@asynccontextmanager
async def wsgi_receiver(account: ReviewerAccount, server: str, allow: str) -> AsyncIterator[str]:
    env = environment(
        audience=AUDIENCE, allow=allow, kubeconfig=str(account.kubeconfig), server=server, success_ttl=SUCCESS_TTL
    )
    app = "tests.audience_token.receiver_apps:flask_app()"
    async with in_a_thread(gunicorn_serving(app, env=env, worker="gthread", threads=4)) as url:
        yield url


@pytest.fixture(params=["asgi", "wsgi"])
async def receiver(
    request: pytest.FixtureRequest,
    receiver_account: ReviewerAccount,
    caller_pod: dict[str, Any],
    control_plane: ControlPlane,
) -> AsyncIterator[Receiver]:
    api = urlsplit(control_plane.url)
    assert api.hostname
    assert api.port
    forwarder = await Forwarder(api.hostname, api.port).start()
    allow = f"{caller_pod['metadata']['namespace']}/app"
    serving: AbstractAsyncContextManager[str] = (asgi_receiver if request.param == "asgi" else wsgi_receiver)(
        receiver_account, f"https://127.0.0.1:{forwarder.port}", allow
    )
    try:
        async with serving as url:
            yield Receiver(url, forwarder)
    finally:
        await forwarder.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.get(url + "/", headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_the_allowed_callers_pod_token_is_accepted_with_its_identity(
    receiver: Receiver, http: aiohttp.ClientSession, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    status, body, _ = await get(http, receiver.url, kubelet_token(control_plane, caller_pod))
    assert status == 200
    namespace, pod = caller_pod["metadata"]["namespace"], caller_pod["metadata"]["name"]
    assert body == {"caller": f"{namespace}/app (pod {namespace}/{pod})", "pod": pod}


async def test_a_token_for_another_audience_is_refused_401(
    receiver: Receiver, http: aiohttp.ClientSession, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    token = token_bound_to(control_plane, caller_pod, audience="data-store", seconds=3600)
    status, body, headers = await get(http, receiver.url, token)
    assert (status, body["reason"]) == (401, "wrong_audience")
    assert headers["WWW-Authenticate"] == 'Bearer realm="secret-store", error="invalid_token"'


async def test_another_account_is_refused_403(
    receiver: Receiver, http: aiohttp.ClientSession, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    namespace = caller_pod["metadata"]["namespace"]
    control_plane.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": "other"}}
    )
    token = request_token(control_plane, namespace, "other", audience=AUDIENCE, seconds=3600)
    status, body, _ = await get(http, receiver.url, token)
    assert (status, body["reason"]) == (403, "not_allowed")
    assert f"{namespace}/other" in body["message"]


async def test_a_deleted_pods_token_is_refused_once_the_cache_ttl_has_passed(
    receiver: Receiver, http: aiohttp.ClientSession, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    token = kubelet_token(control_plane, caller_pod)
    assert (await get(http, receiver.url, token))[0] == 200
    namespace, name = caller_pod["metadata"]["namespace"], caller_pod["metadata"]["name"]
    control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")
    deleted_at = time.monotonic()
    while True:  # our TTL (2 s), then the API server's own success cache (10 s) may vouch a little longer
        await asyncio.sleep(0.5)
        status, body, _ = await get(http, receiver.url, token)
        if status != 200:
            break
        assert time.monotonic() - deleted_at < 25, "a token bound to a deleted Pod must stop working"
    assert (status, body["reason"]) == (401, "expired_or_revoked")


async def test_with_the_api_server_unreachable_an_unseen_token_gets_503(
    receiver: Receiver, http: aiohttp.ClientSession, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    unseen = kubelet_token(control_plane, caller_pod)
    await receiver.forwarder.close()
    status, body, headers = await get(http, receiver.url, unseen)
    assert (status, body["reason"]) == (503, "review_unavailable")
    assert headers["Retry-After"].isdigit()
