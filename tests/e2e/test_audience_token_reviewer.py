"""audience_token.TokenReviewer against the real kube-apiserver, with tokens bound to webhook-made Pods.

Each token is requested as the kubelet requests it for the volume token-projector added to the Pod
(TokenRequest, the volume's audience, bound to the Pod). The receiver uses its own ServiceAccount token
in a kubeconfig, with RBAC from manifests/audience-token, as it would in a cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from audience_token import (
    Credentials,
    NotAllowed,
    ReviewerSettings,
    ReviewUnavailable,
    TokenReviewer,
    Unauthenticated,
    identity_of,
    protect,
)
from tests.e2e.conftest import ControlPlane, Registered
from tests.e2e.reviewer_support import (
    Forwarder,
    ReviewerAccount,
    annotated_caller,
    reviewer_identity,
    tokenreviews_served,
)
from tests.e2e.tokens import kubelet_token, request_token, token_bound_to
from tests.tls_material import free_port

pytestmark = pytest.mark.e2e

AUDIENCE = "secret-store"


@pytest.fixture(scope="module")
def receiver(control_plane: ControlPlane) -> ReviewerAccount:
    """The receiving service's own ServiceAccount, bound to the shipped ClusterRole."""
    return reviewer_identity(control_plane, bound=True)


@pytest.fixture
def caller_pod(registered: Registered, control_plane: ControlPlane) -> dict[str, Any]:
    """A caller Pod (ServiceAccount ``app``) annotated for the secret store, as the API server stored it."""
    return annotated_caller(control_plane, audience=AUDIENCE)


def reviewer_for(receiver: ReviewerAccount, *, allow: str = "*/app", **settings: Any) -> TokenReviewer:
    return TokenReviewer(AUDIENCE, allow=allow, kubeconfig=receiver.kubeconfig, settings=ReviewerSettings(**settings))


async def test_the_right_audience_from_an_allowed_account_gives_the_identity_of_the_pod(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    namespace = caller_pod["metadata"]["namespace"]
    account = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/app")
    async with reviewer_for(receiver, allow=f"{namespace}/app") as reviewer:
        identity = await reviewer.verify(kubelet_token(control_plane, caller_pod))
    assert (identity.namespace, identity.service_account) == (namespace, "app")
    assert identity.username == f"system:serviceaccount:{namespace}:app"
    assert identity.uid == account["metadata"]["uid"]
    assert identity.pod_name == caller_pod["metadata"]["name"]
    assert identity.pod_uid == caller_pod["metadata"]["uid"]
    assert identity.credential_id, "the API server reports the token's JTI"


async def test_a_token_for_another_audience_is_refused_naming_the_audience(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    token = token_bound_to(control_plane, caller_pod, audience="data-store", seconds=3600)
    async with reviewer_for(receiver) as reviewer:
        with pytest.raises(Unauthenticated) as refused:
            await reviewer.verify(token)
    assert refused.value.reason == "wrong_audience"
    assert "'secret-store'" in refused.value.message
    assert "'data-store'" in refused.value.message
    assert token not in str(refused.value)


async def test_a_token_with_a_forged_signature_is_refused_as_not_issued_by_this_cluster(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    header, payload, signature = kubelet_token(control_plane, caller_pod).split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    async with reviewer_for(receiver) as reviewer:
        with pytest.raises(Unauthenticated, match="not issued by this cluster") as refused:
            await reviewer.verify(forged)
    assert refused.value.reason == "invalid"
    assert signature[::-1] not in str(refused.value)


async def test_a_kubernetes_api_credential_is_not_accepted_by_a_service(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    namespace = caller_pod["metadata"]["namespace"]
    api_token = request_token(control_plane, namespace, "app")
    async with reviewer_for(receiver) as reviewer:
        with pytest.raises(Unauthenticated) as refused:
            await reviewer.verify(api_token)
    assert refused.value.reason == "wrong_audience"


async def test_an_account_not_in_allow_is_not_allowed_with_its_identity(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    async with reviewer_for(receiver, allow="secret-store/*") as reviewer:
        with pytest.raises(NotAllowed) as refused:
            await reviewer.verify(kubelet_token(control_plane, caller_pod))
    assert refused.value.identity.namespace == caller_pod["metadata"]["namespace"]
    assert refused.value.identity.pod_name == caller_pod["metadata"]["name"]


async def test_a_token_bound_to_a_deleted_pod_is_refused_once_its_cache_entry_is_older_than_the_ttl(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    token = kubelet_token(control_plane, caller_pod)
    namespace, name = caller_pod["metadata"]["namespace"], caller_pod["metadata"]["name"]
    async with reviewer_for(receiver, success_ttl=2) as reviewer:
        await reviewer.verify(token)
        control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")
        deleted_at = time.monotonic()
        await reviewer.verify(token)  # inside the TTL: the cached acceptance, without asking
        assert reviewer.reviews_sent == 1
        # Past our TTL, the API server is asked again; its own success cache (10 s) may still vouch for
        # the token a little while, and then it is refused for good.
        reason = None
        while reason is None:
            await asyncio.sleep(0.5)
            try:
                await reviewer.verify(token)
            except Unauthenticated as refused:
                reason = refused.reason
            assert time.monotonic() - deleted_at < 25, "a token bound to a deleted Pod must stop working"
        assert reason == "expired_or_revoked"
        assert reviewer.reviews_sent >= 2


async def test_a_reviewer_without_create_tokenreviews_is_unavailable_naming_the_permission(
    control_plane: ControlPlane, caller_pod: dict[str, Any], receiver: ReviewerAccount
) -> None:
    unbound = reviewer_identity(control_plane, bound=False)
    token = kubelet_token(control_plane, caller_pod)
    async with reviewer_for(unbound) as reviewer:
        with pytest.raises(ReviewUnavailable) as unavailable:
            await reviewer.verify(token)
        with pytest.raises(ReviewUnavailable):
            await reviewer.verify(token)
        assert reviewer.reviews_sent == 2, "unavailability is not cached"
    message = unavailable.value.message
    assert "`create` on `tokenreviews.authentication.k8s.io`" in message
    assert "audience-token-reviewer" in message
    assert f"system:serviceaccount:{unbound.namespace}:{unbound.name}" in message, "the API server's words"
    assert token not in message
    async with reviewer_for(receiver) as reviewer:  # bound to the shipped ClusterRole: the same token passes
        assert (await reviewer.verify(token)).pod_name == caller_pod["metadata"]["name"]


async def test_an_unreachable_api_server_makes_reviews_unavailable_and_accepts_nothing(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    # The shared control plane stays up: the reviewer talks to it through a forwarder we cut.
    api = urlsplit(control_plane.url)
    assert api.hostname
    assert api.port
    forwarder = await Forwarder(api.hostname, api.port).start()
    credentials = dataclasses.replace(
        Credentials.from_kubeconfig(receiver.kubeconfig), server=f"https://127.0.0.1:{forwarder.port}"
    )
    seen, unseen = kubelet_token(control_plane, caller_pod), kubelet_token(control_plane, caller_pod)
    settings = ReviewerSettings(success_ttl=1, timeout=2)
    async with TokenReviewer(AUDIENCE, allow="*/app", credentials=credentials, settings=settings) as reviewer:
        await reviewer.verify(seen)
        await forwarder.close()
        with pytest.raises(ReviewUnavailable, match=f"127.0.0.1:{forwarder.port}"):
            await reviewer.verify(unseen)
        await asyncio.sleep(1.1)
        with pytest.raises(ReviewUnavailable):
            await reviewer.verify(seen)  # its acceptance has expired; no stale answer stands in


async def test_ten_thousand_requests_from_fifty_callers_make_at_most_fifty_reviews(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    callers, per_caller = 50, 200
    tokens = [kubelet_token(control_plane, caller_pod) for _ in range(callers)]

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=identity_of(request).service_account)

    app = web.Application()
    app.router.add_get("/", hello)
    protect(app, reviewer_for(receiver))  # the default 10 s TTL: this run fits in one window
    async with serving(app) as url:
        before = tokenreviews_served(control_plane)
        connector = aiohttp.TCPConnector(limit=callers)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def caller(token: str) -> list[int]:
                statuses = []
                for _ in range(per_caller):
                    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                        await response.read()
                        statuses.append(response.status)
                return statuses

            started = time.monotonic()
            results = await asyncio.gather(*(caller(t) for t in tokens))
            elapsed = time.monotonic() - started
        reviews = tokenreviews_served(control_plane) - before
    assert [s for statuses in results for s in statuses] == [200] * (callers * per_caller)
    assert elapsed < 10, "the run fits in one TTL window, so the bound below is per window"
    # At most one per token per TTL window; and at least one, or the count at the API server is broken.
    assert reviews == callers, f"{reviews} TokenReviews for {callers * per_caller} requests with {callers} tokens"


class serving:  # noqa: N801 - used as a context manager, reads as one
    """An aiohttp app on a loopback port for the duration of an ``async with``; gives its URL."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app)

    async def __aenter__(self) -> str:
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/"

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()
