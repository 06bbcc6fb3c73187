"""Proofs 3 to 6: what the real API server stores, refuses and re-invokes, with token-projector registered."""

import base64
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ApiError, ControlPlane, Registered, wait_until
from tests.e2e.pods import TOKEN_ENV, TOKEN_MOUNT, TOKEN_VOLUME, annotated, pod, token_volumes
from tests.tls_material import free_port

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent


def test_an_annotated_pod_is_stored_with_exactly_the_volume_mounts_and_env_var(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    sidecar = {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}
    stored = control_plane.create_pod(namespace, annotated(initContainers=[sidecar]))
    assert token_volumes(stored) == [TOKEN_VOLUME]
    for container in stored["spec"]["containers"] + stored["spec"]["initContainers"]:
        assert [m for m in container["volumeMounts"] if m["name"] == "audience-token"] == [TOKEN_MOUNT]
        assert container["env"] == [TOKEN_ENV]
    assert stored["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    # The ServiceAccount admission plugin's API token is there too, untouched.
    assert any(v["name"].startswith("kube-api-access-") for v in stored["spec"]["volumes"])


def test_a_pod_from_generate_name_is_patched_and_named_by_the_api_server(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    stored = control_plane.create_pod(namespace, annotated(None, generate_name="worker-"))
    assert stored["metadata"]["name"].startswith("worker-")
    assert token_volumes(stored) == [TOKEN_VOLUME]


def test_a_pod_without_the_annotation_is_stored_untouched(registered: Registered, control_plane: ControlPlane) -> None:
    namespace = control_plane.namespace()
    stored = control_plane.create_pod(namespace, pod())
    assert token_volumes(stored) == []
    assert "env" not in stored["spec"]["containers"][0]


def test_a_legacy_token_pod_is_refused_and_kubectl_shows_our_message(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    legacy = annotated(
        automountServiceAccountToken=False,
        volumes=[{"name": "app-token-x7k2p", "secret": {"secretName": "app-token-x7k2p"}}],
    )
    legacy["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "app-token-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    ]
    result = control_plane.kubectl("create", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(legacy))
    assert result.returncode != 0
    assert 'admission webhook "audience-token.token-projector.io" denied the request' in result.stderr
    assert "Pod uses a legacy service account token: volume 'app-token-x7k2p'" in result.stderr
    assert "automountServiceAccountToken: false" in result.stderr
    with pytest.raises(ApiError) as raised:
        control_plane.create_pod(namespace, legacy)
    assert raised.value.status == 403


def test_an_invalid_annotation_is_refused_with_our_message(registered: Registered, control_plane: ControlPlane) -> None:
    namespace = control_plane.namespace()
    with pytest.raises(ApiError) as raised:
        control_plane.create_pod(namespace, annotated(annotations={"token-projector.io/expiration-seconds": "60"}))
    assert raised.value.status == 422
    assert "annotation token-projector.io/expiration-seconds is 60" in raised.value.message


def test_a_namespace_that_opted_out_is_not_touched(registered: Registered, control_plane: ControlPlane) -> None:
    namespace = control_plane.namespace(labels={"token-projector.io/opt-out": "true"})
    stored = control_plane.create_pod(namespace, annotated())
    assert token_volumes(stored) == []


def test_with_the_webhook_down_annotated_pods_are_refused_and_others_are_created(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    registered.webhook.stop()
    try:
        with pytest.raises(ApiError) as raised:
            control_plane.create_pod(namespace, annotated())
        assert raised.value.status == 500
        assert 'failed calling webhook "audience-token.token-projector.io"' in raised.value.message
        stored = control_plane.create_pod(namespace, pod("plain"))
        assert stored["metadata"]["name"] == "plain"
    finally:
        registered.webhook.start()
    assert token_volumes(control_plane.create_pod(namespace, annotated("after-restart"))) == [TOKEN_VOLUME]


@pytest.fixture
def sidecar_injector(registered: Registered, control_plane: ControlPlane, tmp_path: Path) -> Any:
    """A second, independent mutating webhook that adds a container, called after token-projector."""
    port = free_port()
    certs = registered.webhook.certs
    process = subprocess.Popen(
        [sys.executable, str(HERE / "sidecar_injector.py"), str(port), str(certs / "tls.crt"), str(certs / "tls.key")],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "injector.log").open("wb"),
    )
    namespace = control_plane.namespace(labels={"e2e-sidecar-injection": "on"})
    name = "zz-e2e-sidecar-injector"  # sorts after token-projector, so it is called after it
    control_plane.request(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        body={
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "sidecar.e2e.token-projector.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "Never",
                    "timeoutSeconds": 5,
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/inject",
                        "caBundle": base64.b64encode((certs / "ca.crt").read_bytes()).decode(),
                    },
                    "rules": [
                        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
                    ],
                    "namespaceSelector": {"matchLabels": {"e2e-sidecar-injection": "on"}},
                }
            ],
        },
    )
    wait_until(lambda: process.poll() is None and _listening(port), what="the sidecar injector")
    time.sleep(1)  # let the API server's webhook informer see the new configuration
    yield namespace
    control_plane.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
    process.terminate()
    process.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_sidecar_added_by_a_later_webhook_gets_the_token_on_reinvocation_without_duplicates(
    sidecar_injector: str, control_plane: ControlPlane
) -> None:
    stored = control_plane.create_pod(sidecar_injector, annotated())
    names = [c["name"] for c in stored["spec"]["containers"]]
    assert names == ["app", "injected-sidecar"]
    assert token_volumes(stored) == [TOKEN_VOLUME]
    for container in stored["spec"]["containers"]:
        assert [m for m in container["volumeMounts"] if m["name"] == "audience-token"] == [TOKEN_MOUNT]
        assert [e for e in container["env"] if e["name"] == "SERVICE_ACCOUNT_TOKEN_PATH"] == [TOKEN_ENV]
        paths = [m["mountPath"] for m in container["volumeMounts"]]
        assert len(paths) == len(set(paths))
