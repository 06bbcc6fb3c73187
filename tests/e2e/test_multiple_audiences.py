"""Several audiences in one Pod, against the real kube-apiserver with token-projector registered.

The Pod is created through the API server, which calls the webhook and stores what it patched. No
kubelet runs here, so each token is requested the way the kubelet requests it for a projected
source (pkg/volume/projected/projected.go): for the Pod's ServiceAccount, with the source's one
audience and expiration, bound to the Pod. Each must pass a TokenReview for its own audience only.
"""

from typing import Any

import pytest

from tests.e2e.conftest import ApiError, ControlPlane, Registered
from tests.e2e.pods import TOKEN_MOUNT, annotated, token_volumes
from tests.e2e.tokens import claims_of, kubelet_token, review

pytestmark = pytest.mark.e2e

PATH_ENV = {"name": "SERVICE_ACCOUNT_TOKEN_PATH", "value": "/var/run/secrets/token-projector.io/tokens/token"}
DIR_ENV = {"name": "SERVICE_ACCOUNT_TOKEN_DIR", "value": "/var/run/secrets/token-projector.io/tokens"}


def source(audience: str, path: str) -> dict[str, Any]:
    return {"serviceAccountToken": {"audience": audience, "expirationSeconds": 3600, "path": path}}


def authenticated(control_plane: ControlPlane, token: str, *, audience: str) -> bool:
    status = review(control_plane, token, audience=audience)
    return status.get("authenticated") is True and status.get("audiences") == [audience]


@pytest.fixture
def stored_pod(registered: Registered, control_plane: ControlPlane) -> tuple[str, dict[str, Any]]:
    """A Pod asking for data-store and secret-store tokens, as the API server stored it: (namespace, Pod)."""
    namespace = control_plane.namespace()
    return namespace, control_plane.create_pod(namespace, annotated(audience="data-store, secret-store"))


def test_a_pod_with_two_audiences_is_stored_with_a_source_per_audience_and_both_variables(
    stored_pod: tuple[str, dict[str, Any]],
) -> None:
    _, stored = stored_pod
    assert token_volumes(stored) == [
        {
            "name": "audience-token",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    source("data-store", "token"),
                    source("data-store", "data-store"),
                    source("secret-store", "secret-store"),
                ],
            },
        }
    ]
    container = stored["spec"]["containers"][0]
    assert [m for m in container["volumeMounts"] if m["name"] == "audience-token"] == [TOKEN_MOUNT]
    assert container["env"] == [PATH_ENV, DIR_ENV]


def test_each_sources_token_passes_a_review_for_its_own_audience_and_fails_one_for_the_other(
    stored_pod: tuple[str, dict[str, Any]], control_plane: ControlPlane
) -> None:
    _, stored = stored_pod
    tokens = {
        s["serviceAccountToken"]["audience"]: kubelet_token(control_plane, stored, source=s["serviceAccountToken"])
        for s in token_volumes(stored)[0]["projected"]["sources"]
    }
    assert set(tokens) == {"data-store", "secret-store"}
    for audience, other in (("data-store", "secret-store"), ("secret-store", "data-store")):
        assert claims_of(tokens[audience])["aud"] == [audience], "one audience per token: no replay to the other"
        assert authenticated(control_plane, tokens[audience], audience=audience)
        assert not authenticated(control_plane, tokens[audience], audience=other)


def test_the_api_server_accepts_the_file_of_an_audience_that_is_a_url(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    audience = "https://secret-store.example.com:8200/v1"
    stored = control_plane.create_pod(namespace, annotated(audience=f"data-store, {audience}"))
    sources = [s["serviceAccountToken"] for s in token_volumes(stored)[0]["projected"]["sources"]]
    assert sources[-1] == {
        "audience": audience,
        "expirationSeconds": 3600,
        "path": "https%3A%2F%2Fsecret-store.example.com%3A8200%2Fv1",
    }
    token = kubelet_token(control_plane, stored, source=sources[-1])
    assert authenticated(control_plane, token, audience=audience)
    assert not authenticated(control_plane, token, audience="data-store")


def test_a_list_naming_an_audience_twice_is_refused_with_our_message(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    with pytest.raises(ApiError) as raised:
        control_plane.create_pod(namespace, annotated(audience="data-store, secret-store, data-store"))
    assert raised.value.status == 422
    assert "annotation token-projector.io/audience is 'data-store, secret-store, data-store'" in raised.value.message
    assert "'data-store' is listed twice" in raised.value.message
