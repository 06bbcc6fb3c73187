"""The verifying proxy's injection through the real kube-apiserver: what it stores, refuses and re-invokes.

The webhook is registered by ``token-projector register`` (so its matchConditions are compiled by the
real API server's CEL), and every Pod here is created for real: the API server's validation, its
defaulting, the ServiceAccount admission plugin and PodSecurity at the restricted level all see the
patched Pod after the webhook.
"""

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import ApiError, ControlPlane, Registered, wait_until
from tests.e2e.pods import pod
from tests.e2e.test_pods import sidecar_injector  # noqa: F401 - a fixture this module uses too
from tests.e2e.tokens import request_token
from tests.tools import REPO

pytestmark = pytest.mark.e2e

PROXY = "token-projector-proxy"
API_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
PROTECT = {
    "token-projector.io/protect-port": "http",
    "token-projector.io/protect-audience": "secret-store",
    "token-projector.io/protect-allow": "api/api",
}
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(autouse=True, scope="module")
def _no_protected_pods_left(control_plane: ControlPlane) -> Iterator[None]:
    """Delete this module's protected Pods at its end: other modules audit every namespace of the one cluster."""
    yield
    for stored in control_plane.request("GET", "/api/v1/pods")["items"]:
        if PROTECT.keys() & (stored["metadata"].get("annotations") or {}).keys():
            metadata = stored["metadata"]
            control_plane.request("DELETE", f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}")


def protected(name: str = "secret-store", **kw: Any) -> dict[str, Any]:
    """A receiver whose app listens on a named port, restricted as PodSecurity's strictest level wants."""
    annotations = {**PROTECT, **kw.pop("annotations", {})}
    made = pod(name, annotations=annotations, **kw)
    made["spec"]["containers"][0].update(
        ports=[{"name": "http", "containerPort": 8080}], securityContext=dict(RESTRICTED)
    )
    return made


def proxies(stored: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in stored["spec"].get("initContainers", []) if c["name"] == PROXY]


def test_a_pod_with_only_the_protect_annotations_is_sent_patched_and_stored_under_the_restricted_standard(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    stored = control_plane.create_pod(namespace, protected())
    [proxy] = proxies(stored)
    assert proxy["restartPolicy"] == "Always", "the API server keeps a native sidecar's restartPolicy"
    assert proxy["image"] == "token-projector:0.2.0"
    assert proxy["args"][:3] == ["--upstream=http://127.0.0.1:8080", "--audience=secret-store", "--allow=api/api"]
    assert [(p["name"], p["containerPort"]) for p in proxy["ports"]] == [("token-proxy", 8443), ("proxy-probes", 8444)]
    assert proxy["readinessProbe"]["httpGet"]["port"] == "proxy-probes"
    # Its TokenReview credential: the Pod's own API token volume, mounted once, at the path the library reads.
    api_mounts = [m for m in proxy["volumeMounts"] if m["mountPath"] == API_PATH]
    assert len(api_mounts) == 1
    assert api_mounts[0]["name"].startswith("kube-api-access-")
    assert not any(m["name"] == "audience-token" for m in proxy["volumeMounts"])
    assert stored["spec"]["containers"][0]["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_with_an_audience_token_too_the_app_gets_it_and_the_proxy_does_not(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    stored = control_plane.create_pod(namespace, protected(annotations={"token-projector.io/audience": "data-store"}))
    [proxy] = proxies(stored)
    assert any(m["name"] == "audience-token" for m in stored["spec"]["containers"][0]["volumeMounts"])
    assert not any(m["name"] == "audience-token" for m in proxy["volumeMounts"])
    assert "env" not in proxy


def test_a_later_webhooks_container_on_reinvocation_leaves_one_proxy(
    sidecar_injector: str,  # noqa: F811 - the fixture imported above
    control_plane: ControlPlane,
) -> None:
    stored = control_plane.create_pod(sidecar_injector, protected())
    assert [c["name"] for c in stored["spec"]["containers"]] == ["app", "injected-sidecar"]
    assert len(proxies(stored)) == 1


@pytest.mark.parametrize(
    ("annotations", "said"),
    [
        ({"token-projector.io/protect-port": "metrics"}, "a port no container of the Pod declares (declared: http"),
        (
            {"token-projector.io/protect-allow": " , "},
            "annotation token-projector.io/protect-allow is ' , ', no caller",
        ),
        (
            {"token-projector.io/protect-audience": "https://kubernetes.default.svc"},
            "an audience of the Kubernetes API server itself",
        ),
    ],
)
def test_what_cannot_work_is_refused_and_the_api_server_passes_our_message_on(
    registered: Registered, control_plane: ControlPlane, annotations: dict[str, str], said: str
) -> None:
    namespace = control_plane.namespace()
    with pytest.raises(ApiError) as raised:
        control_plane.create_pod(namespace, protected(annotations=annotations))
    assert raised.value.status == 422
    assert said in raised.value.message


def test_a_missing_allow_list_is_refused_even_when_it_is_the_only_protect_annotation_missing(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    made = protected()
    del made["metadata"]["annotations"]["token-projector.io/protect-allow"]
    with pytest.raises(ApiError) as raised:
        control_plane.create_pod(namespace, made)
    assert "without token-projector.io/protect-allow" in raised.value.message


def test_a_pod_that_does_not_mount_its_token_is_refused_with_the_fix(
    registered: Registered, control_plane: ControlPlane
) -> None:
    namespace = control_plane.namespace()
    with pytest.raises(ApiError) as raised:
        control_plane.create_pod(namespace, protected(automountServiceAccountToken=False))
    assert raised.value.status == 422
    assert "set automountServiceAccountToken: true in the Pod spec" in raised.value.message


def test_a_port_clash_with_the_proxy_is_refused(registered: Registered, control_plane: ControlPlane) -> None:
    namespace = control_plane.namespace()
    made = protected()
    made["spec"]["containers"][0]["ports"].append({"name": "admin", "containerPort": 8444})
    with pytest.raises(ApiError) as raised:
        control_plane.create_pod(namespace, made)
    assert "the proxy listens on port 8444 (this cluster's --proxy-probe-port)" in raised.value.message


def audit(plane: ControlPlane, namespace: str, *, token: str | None = None) -> dict[str, Any]:
    kubeconfig = plane.kubeconfig(token=token, name="auditor") if token else plane.kubeconfig()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "audit",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert "Traceback" not in result.stderr, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def kubectl_apply(plane: ControlPlane, text: str) -> None:
    result = plane.kubectl("apply", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr


def test_audit_asks_the_api_server_which_protected_accounts_may_not_review_tokens(
    registered: Registered, control_plane: ControlPlane
) -> None:
    plane = control_plane
    namespace = plane.namespace()
    plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": "bound"}})
    kubectl_apply(plane, (REPO / "manifests" / "audience-token" / "clusterrole.yaml").read_text())
    plane.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        body={
            "metadata": {"name": f"{namespace}-bound-token-reviewer"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "audience-token-reviewer",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "bound", "namespace": namespace}],
        },
    )
    plane.create_pod(namespace, protected("unbound"))
    bound = protected("bound")
    bound["spec"]["serviceAccountName"] = "bound"
    plane.create_pod(namespace, bound)
    plane.create_pod(namespace, pod("plain"))  # not protected: its account is not asked about

    expected = [{"namespace": namespace, "serviceAccount": "app", "protected": ["Pod unbound"]}]
    wait_until(lambda: audit(plane, namespace)["protectedWithoutTokenReview"] == expected, what="the audit's answer")

    # The shipped cluster-wide RBAC lets the audit ask (create on subjectaccessreviews, nothing more).
    with contextlib.suppress(ApiError):
        plane.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "token-projector"}})
    kubectl_apply(plane, (REPO / "manifests" / "audit" / "cluster-wide.yaml").read_text())
    token = request_token(plane, "token-projector", "token-projector-audit", seconds=3600)
    wait_until(
        lambda: audit(plane, namespace, token=token)["protectedWithoutTokenReview"] == expected,
        what="the shipped audit RBAC to take effect",
    )
    assert audit(plane, namespace, token=token)["notRead"] == []


def test_an_auditor_who_may_not_ask_is_told_so_and_gets_the_rest_of_the_report(
    registered: Registered, control_plane: ControlPlane
) -> None:
    plane = control_plane
    namespace = plane.namespace()
    plane.create_pod(namespace, protected())
    plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": "lister"}})
    plane.request(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        body={"metadata": {"name": "lister"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
    )
    plane.request(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        body={
            "metadata": {"name": "lister"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lister"},
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": namespace}],
        },
    )
    token = request_token(plane, namespace, "lister", seconds=3600)

    def unread() -> dict[str, Any]:
        return {u["resource"]: u for u in audit(plane, namespace, token=token)["notRead"]}

    wait_until(lambda: "pods" not in unread(), what="the binding to take effect")
    refused = unread()["subjectaccessreviews.authorization.k8s.io"]
    assert refused["status"] == 403
    assert 'cannot create resource "subjectaccessreviews"' in refused["message"]
