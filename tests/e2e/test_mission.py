"""Proof 7, the mission end to end: the token a Pod is given is good for its audience, for its life only.

As in the reference article: a caller presents its service account token; the receiver asks the
TokenReview API whether it is valid *for the receiver's own audience*. The token here is requested the
way the kubelet requests it for the projected volume token-projector added: for the Pod's
ServiceAccount, with the volume's audience and expiration, bound to the Pod.
"""

import time
from typing import Any

import pytest

from tests.e2e.conftest import ControlPlane, Registered
from tests.e2e.pods import annotated
from tests.e2e.tokens import claims_of, first_source, kubelet_token, review

pytestmark = pytest.mark.e2e


@pytest.fixture
def stored_pod(registered: Registered, control_plane: ControlPlane) -> tuple[str, dict[str, Any]]:
    """A Pod asking for a 30-minute data-store token, as the API server stored it: (namespace, Pod)."""
    namespace = control_plane.namespace()
    annotations = {"token-projector.io/expiration-seconds": "1800"}
    return namespace, control_plane.create_pod(namespace, annotated(annotations=annotations))


def test_the_pods_token_is_accepted_for_its_audience_only_and_dies_with_the_pod(
    stored_pod: tuple[str, dict[str, Any]], control_plane: ControlPlane
) -> None:
    namespace, stored = stored_pod
    token = kubelet_token(control_plane, stored)

    accepted = review(control_plane, token, audience="data-store")
    assert accepted["authenticated"] is True
    assert accepted["audiences"] == ["data-store"]
    assert accepted["user"]["username"] == f"system:serviceaccount:{namespace}:app"
    assert accepted["user"]["extra"]["authentication.kubernetes.io/pod-name"] == [stored["metadata"]["name"]]

    other = review(control_plane, token, audience="secret-store")
    assert other.get("authenticated") is not True

    api = review(control_plane, token, audience="https://kubernetes.default.svc.cluster.local")
    assert api.get("authenticated") is not True, "the token is not a Kubernetes API credential"

    control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{stored['metadata']['name']}")
    # kube-apiserver caches a successful token authentication for 10 s (TokenSuccessCacheTTL), so the
    # bound token may outlive its Pod by that much, and no longer.
    deleted_at = time.monotonic()
    while review(control_plane, token, audience="data-store").get("authenticated") is True:
        assert time.monotonic() - deleted_at < 20, "a token bound to a deleted Pod must stop working"
        time.sleep(0.5)


def test_the_expiration_the_pod_asked_for_is_the_one_the_token_gets(
    stored_pod: tuple[str, dict[str, Any]], control_plane: ControlPlane
) -> None:
    _, stored = stored_pod
    assert first_source(stored)["expirationSeconds"] == 1800
    claims = claims_of(kubelet_token(control_plane, stored))
    assert claims["aud"] == ["data-store"]
    assert claims["exp"] - claims["iat"] == 1800
    assert claims["kubernetes.io"]["pod"]["uid"] == stored["metadata"]["uid"]
