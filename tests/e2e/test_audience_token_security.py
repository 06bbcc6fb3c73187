"""The API-server behaviours issue 25's fixes rest on, proven against the real kube-apiserver.

- Item 10: for its own audience (``--api-audiences``, here the issuer), kube-apiserver vouches for a
  legacy Secret token and for an ordinary API token (audience-agnostic authenticators), so a receiver
  with that audience would accept every credential of the cluster: TokenReviewer refuses it when built.
- Item 8: a token of a deleted Pod is refused with ``status.error`` "service account token has been
  invalidated", the same words kube-apiserver uses when it cannot get the Pod at all (an etcd timeout;
  pkg/serviceaccount/claims.go): such a refusal is not cached, while one the token's own claims decide is.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from audience_token import ConfigError, ReviewerSettings, TokenReviewer, Unauthenticated
from tests.e2e.conftest import ISSUER, ControlPlane, Registered
from tests.e2e.legacy_tokens import account_uid, create_token_secret, signed_token
from tests.e2e.pods import annotated
from tests.e2e.reviewer_support import ReviewerAccount, reviewer_identity
from tests.e2e.tokens import kubelet_token, request_token, review

pytestmark = pytest.mark.e2e

AUDIENCE = "secret-store"


@pytest.fixture(scope="module")
def receiver(control_plane: ControlPlane) -> ReviewerAccount:
    return reviewer_identity(control_plane, bound=True)


@pytest.fixture(scope="module")
def legacy_token(control_plane: ControlPlane) -> str:
    """A legacy Secret token of ServiceAccount ``app``, signed as the tokens controller signed them."""
    namespace = control_plane.namespace()
    secret = "app-token-legacy"
    token = signed_token(
        control_plane,
        namespace=namespace,
        account="app",
        account_uid=account_uid(control_plane, namespace, "app"),
        secret=secret,
    )
    create_token_secret(control_plane, namespace=namespace, name=secret, account="app", token=token)
    return token


def test_the_api_server_vouches_for_a_legacy_token_for_its_own_audience_only(
    control_plane: ControlPlane, legacy_token: str
) -> None:
    own = review(control_plane, legacy_token, audience=ISSUER)
    assert own["authenticated"] is True
    assert ISSUER in own["audiences"], "a receiver checking status.audiences would be satisfied"
    assert own["user"]["username"].startswith("system:serviceaccount:")
    assert review(control_plane, legacy_token, audience=AUDIENCE).get("authenticated") is not True


def test_the_api_server_vouches_for_an_ordinary_api_token_for_its_own_audience(control_plane: ControlPlane) -> None:
    namespace = control_plane.namespace()
    api_token = request_token(control_plane, namespace, "app")  # no audience: the API server's own
    own = review(control_plane, api_token, audience=ISSUER)
    assert own["authenticated"] is True
    assert ISSUER in own["audiences"]


def test_a_reviewer_for_the_api_servers_audience_is_refused_when_built(receiver: ReviewerAccount) -> None:
    with pytest.raises(ConfigError, match="the Kubernetes API's own"):
        TokenReviewer(ISSUER, allow="*/*", kubeconfig=receiver.kubeconfig)


async def test_a_legacy_token_is_refused_for_a_services_audience(receiver: ReviewerAccount, legacy_token: str) -> None:
    async with TokenReviewer(AUDIENCE, allow="*/*", kubeconfig=receiver.kubeconfig) as reviewer:
        with pytest.raises(Unauthenticated) as refused:
            await reviewer.verify(legacy_token)
    assert refused.value.reason == "wrong_audience"


async def test_a_deleted_pods_token_is_refused_with_an_error_and_that_refusal_is_not_cached(
    registered: Registered, receiver: ReviewerAccount, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    pod: dict[str, Any] = control_plane.create_pod(namespace, annotated(audience=AUDIENCE))
    token = kubelet_token(control_plane, pod)
    control_plane.request(
        "DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}?gracePeriodSeconds=0"
    )
    # What the API server says about it: the very words it also uses when it cannot get the Pod.
    # (It may see the deletion a moment late; an acceptance it caches lasts at most 10 s.)
    deadline = time.monotonic() + 25
    while (status := review(control_plane, token, audience=AUDIENCE)).get("authenticated") is True:
        assert time.monotonic() < deadline, "a token bound to a deleted Pod must stop working"
        await asyncio.sleep(0.5)
    assert "service account token has been invalidated" in status.get("error", "")
    settings = ReviewerSettings(failure_ttl=60)
    async with TokenReviewer(AUDIENCE, allow="*/*", kubeconfig=receiver.kubeconfig, settings=settings) as reviewer:
        for _ in range(2):
            with pytest.raises(Unauthenticated, match="has been invalidated") as refused:
                await reviewer.verify(token)
            assert refused.value.reason == "expired_or_revoked"
        assert reviewer.reviews_sent == 2, "a refusal that carries status.error is asked again"
        assert reviewer.cached == 0


async def test_a_refusal_the_tokens_own_audience_decides_is_cached(
    registered: Registered, receiver: ReviewerAccount, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    pod: dict[str, Any] = control_plane.create_pod(namespace, annotated(audience="data-store"))
    token = kubelet_token(control_plane, pod)
    async with TokenReviewer(AUDIENCE, allow="*/*", kubeconfig=receiver.kubeconfig) as reviewer:
        for _ in range(3):
            with pytest.raises(Unauthenticated) as refused:
                await reviewer.verify(token)
            assert refused.value.reason == "wrong_audience"
        assert reviewer.reviews_sent == 1
