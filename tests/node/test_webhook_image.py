"""token-projector's own image, run by the kubelet as its Deployment says, called by the API server over TLS.

The Pod is the Deployment's template (``manifests/base/deployment.yaml``) with only the changes a one-node
loopback cluster needs (``workloads.on_loopback``); the API server calls it through the registration
``token-projector register --url https://127.0.0.1:PORT/mutate`` makes (no Service proxy runs here).
"""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest

from tests.node.conftest import WebhookPod
from tests.node.node import Node
from tests.node.workloads import sleeper

pytestmark = pytest.mark.e2e

INSIDE = """
import errno, json, os, stat
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w"):
            pass
    except OSError as error:
        return errno.errorcode[error.errno]
    os.remove(os.path.join(path, ".probe"))
    return "yes"
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
key = os.stat(os.environ["TOKEN_PROJECTOR_KEY_FILE"])
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": status["CapEff"].strip(),
    "root": writable("/"), "venv": writable("/opt/token-projector"), "tmp": writable("/tmp"),
    "key": [oct(stat.S_IMODE(key.st_mode)), key.st_uid, key.st_gid],
}))
"""


def test_the_webhook_image_runs_as_uid_65532_on_a_read_only_root_with_its_secret_through_fsgroup(
    node: Node, webhook: WebhookPod
) -> None:
    seen = json.loads(node.read_in(webhook.namespace, "token-projector", "token-projector", INSIDE))

    assert (seen["uid"], seen["gid"], seen["groups"]) == (65532, 65532, [65532])
    assert (seen["no_new_privs"], int(seen["cap_eff"], 16)) == ("1", 0)
    assert (seen["root"], seen["venv"], seen["tmp"]) == ("EROFS", "EROFS", "yes")
    assert seen["key"] == ["0o440", 0, 65532], "the TLS key: the Secret's defaultMode, group-owned by the fsGroup"


def test_the_webhook_image_serves_mutate_over_tls_with_its_secrets_certificate(webhook: WebhookPod) -> None:
    context = ssl.create_default_context(cafile=str(webhook.certs / "ca.crt"))
    request = urllib.request.Request(
        f"https://127.0.0.1:{webhook.port}/mutate", data=b"{}", headers={"Content-Type": "application/json"}
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=context, timeout=10)

    assert refused.value.code == 400, "a body that is no AdmissionReview gets a 400, over verified TLS"


def test_the_api_server_calls_the_webhook_image_registered_by_url(node: Node, webhook: WebhookPod) -> None:
    namespace = node.namespace()
    before = reviews(webhook)

    stored = node.control_plane.create_pod(
        namespace,
        sleeper("admitted", audience="data-store", security={"runAsUser": 65532}, containers=[{"name": "app"}]),
    )

    assert "created" in webhook.registered.stdout + webhook.registered.stderr
    assert [v["name"] for v in stored["spec"]["volumes"]] == ["audience-token"]
    assert reviews(webhook) > before


def reviews(webhook: WebhookPod) -> float:
    """The webhook's own count of the admission reviews it answered (its /metrics on the probe port)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{webhook.probe_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("token_projector_webhook_requests_total")
    )
