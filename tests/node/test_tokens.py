"""Annotated Pods admitted through the webhook's image get their tokens from the real kubelet.

Each container runs as the non-root user the restricted Pod Security profile asks for, on a read-only root, and
reads its token at the path its environment variables name; the claims bind the token to the Pod and the node,
and the API server accepts it for its audience only.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.tokens import claims_of, review
from tests.node.conftest import WebhookPod
from tests.node.node import NODE_NAME, Node
from tests.node.workloads import READ_ALL_TOKENS, READ_TOKEN, TRY_TOKEN, sleeper
from webhook.core.contract import Contract

pytestmark = pytest.mark.e2e

DEFAULTS = Contract()
"""The webhook's defaults: the image runs with them."""

RESTRICTED = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532}
LOCKED_DOWN = {
    "securityContext": {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
}


def assert_bound(token: str, *, pod: dict[str, object], node: Node, audience: str) -> None:
    claims = claims_of(token)
    metadata = pod["metadata"]
    assert isinstance(metadata, dict)
    stored_node = node.control_plane.request("GET", f"/api/v1/nodes/{NODE_NAME}")
    assert claims["aud"] == [audience]
    assert claims["sub"] == f"system:serviceaccount:{metadata['namespace']}:app"
    assert claims["kubernetes.io"]["pod"] == {"name": metadata["name"], "uid": metadata["uid"]}
    assert claims["kubernetes.io"]["node"] == {"name": NODE_NAME, "uid": stored_node["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3600, "the webhook's default expiration"


def test_a_pod_annotated_for_one_audience_reads_the_kubelets_token_at_the_path_its_env_var_names(
    node: Node, webhook: WebhookPod
) -> None:
    namespace = node.namespace()
    pod = node.run_pod(
        namespace,
        sleeper("one", audience="data-store", security=RESTRICTED, containers=[{"name": "app", **LOCKED_DOWN}]),
    )

    read = json.loads(node.read_in(namespace, "one", "app", READ_TOKEN))

    assert read["path"] == DEFAULTS.token_path, "the webhook's default mount path and file"
    assert (read["uid"], read["gid"]) == (65532, 65532)
    assert_bound(read["token"], pod=pod, node=node, audience="data-store")
    assert review(node.control_plane, read["token"], audience="data-store")["authenticated"] is True
    assert review(node.control_plane, read["token"], audience="secret-store").get("authenticated") is not True


def test_with_fsgroup_the_token_file_is_the_pods_users_and_readable_by_the_fsgroup_only(
    node: Node, webhook: WebhookPod
) -> None:
    namespace = node.namespace()
    node.run_pod(
        namespace, sleeper("grouped", audience="data-store", security=RESTRICTED, containers=[{"name": "app"}])
    )

    seen = json.loads(node.read_in(namespace, "grouped", "app", TRY_TOKEN))

    assert seen["readable"] is True
    assert (seen["mode"], seen["owner"], seen["group"]) == ("0o640", 65532, 65532)


def test_a_pod_annotated_for_several_audiences_gets_one_kubelet_written_token_per_audience(
    node: Node, webhook: WebhookPod
) -> None:
    namespace = node.namespace()
    pod = node.run_pod(
        namespace,
        sleeper(
            "several",
            audience="data-store, secret-store",
            security=RESTRICTED,
            containers=[{"name": "app", **LOCKED_DOWN}],
        ),
    )

    read = json.loads(node.read_in(namespace, "several", "app", READ_ALL_TOKENS))

    files = read["files"]
    assert sorted(files) == ["data-store", "secret-store", "token"]
    assert read["primary"] == DEFAULTS.token_path
    assert files["token"] == files["data-store"], "the primary's two files hold one token: the kubelet requests it once"
    for audience in ("data-store", "secret-store"):
        assert_bound(files[audience], pod=pod, node=node, audience=audience)
