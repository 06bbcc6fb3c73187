"""Who may read the token the kubelet writes, as the real kubelet decides it (pkg/volume/projected).

With ``fsGroup``, the file is ``0640``, group the fsGroup (``test_tokens``). Without it, the kubelet looks at the
containers' users: when every container runs as the same user, the file is ``0600`` and that user's; when they
run as different users, no single owner fits, and the file keeps the volume's ``defaultMode``, which the webhook
sets to ``420`` (``0644``): every container can read it, whatever its user.
"""

from __future__ import annotations

import json

import pytest

from tests.node.conftest import WebhookPod
from tests.node.node import Node
from tests.node.workloads import TRY_TOKEN, sleeper

pytestmark = pytest.mark.e2e


def test_containers_running_as_different_users_without_fsgroup_can_each_read_the_token(
    node: Node, webhook: WebhookPod
) -> None:
    namespace = node.namespace()
    containers = [
        {"name": "first", "securityContext": {"runAsUser": 1001, "runAsGroup": 1001}},
        {"name": "second", "securityContext": {"runAsUser": 2002, "runAsGroup": 2002}},
    ]
    node.run_pod(
        namespace, sleeper("mixed", audience="data-store", security={"runAsNonRoot": True}, containers=containers)
    )

    seen = {name: json.loads(node.read_in(namespace, "mixed", name, TRY_TOKEN)) for name in ("first", "second")}

    assert {name: (s["uid"], s["readable"]) for name, s in seen.items()} == {
        "first": (1001, True),
        "second": (2002, True),
    }
    assert {(s["mode"], s["owner"], s["group"]) for s in seen.values()} == {("0o644", 0, 0)}


def test_containers_running_as_one_user_without_fsgroup_get_a_token_only_that_user_can_read(
    node: Node, webhook: WebhookPod
) -> None:
    namespace = node.namespace()
    containers = [{"name": "first"}, {"name": "second"}]
    security = {"runAsNonRoot": True, "runAsUser": 1001, "runAsGroup": 1001}
    node.run_pod(namespace, sleeper("same", audience="data-store", security=security, containers=containers))

    seen = json.loads(node.read_in(namespace, "same", "second", TRY_TOKEN))

    assert (seen["readable"], seen["mode"], seen["owner"]) == (True, "0o600", 1001)
