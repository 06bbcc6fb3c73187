"""The chart against the real API server: every rendered object accepted (server-side dry run, strict
field validation, the real cert-manager and Prometheus Operator CRDs), and a real ``helm install``,
``upgrade`` and ``uninstall``: certificates kept, the webhook fail-closed, and removed first."""

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ADMIN_TOKEN, ApiError, ControlPlane
from tests.manifests.chart import CHART, CI_VALUES, helm, template
from tests.tools import REPO

pytestmark = pytest.mark.e2e

CRDS = REPO / ".tools" / "crds"
CRD_FILES = (
    "cert-manager.io_certificates.yaml",
    "cert-manager.io_issuers.yaml",
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
WEBHOOK_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> None:
    """cert-manager's and the Prometheus Operator's CRDs (from their Go modules, `make tools`), established."""
    missing = [name for name in CRD_FILES if not (CRDS / name).exists()]
    if missing:
        message = f"CRDs missing in {CRDS} ({', '.join(missing)}): run `make tools`"
        if os.environ.get("REQUIRE_TEST_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    for name in CRD_FILES:
        # Server-side: the Issuer CRD is larger than client-side apply's last-applied annotation allows.
        applied = control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS / name))
        assert applied.returncode == 0, applied.stderr
    names = [yaml.safe_load((CRDS / name).read_text())["metadata"]["name"] for name in CRD_FILES]
    waited = control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
    assert waited.returncode == 0, waited.stderr


def make_namespace(control_plane: ControlPlane, *, labels: dict[str, str]) -> str:
    name = "chart-" + uuid.uuid4().hex[:8]
    control_plane.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name, "labels": labels}})
    return name


def label(path: Path | None) -> str:
    return "defaults" if path is None else path.name


@pytest.mark.parametrize("path", [None, *CI_VALUES], ids=label)
def test_the_api_server_accepts_every_object_the_chart_renders(
    control_plane: ControlPlane, crds: None, path: Path | None
) -> None:
    namespace = make_namespace(control_plane, labels=RESTRICTED)
    args = [] if path is None else ["--values", str(path)]
    objects = template(*args, release="dry-run", namespace=namespace)
    rest = [o for o in objects if o["kind"] != "Namespace"]  # created above, as `helm install` needs it first
    result = control_plane.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-f", "-", stdin=yaml.safe_dump_all(rest)
    )
    assert result.returncode == 0, result.stderr
    for obj in rest:
        assert f"/{obj['metadata']['name']} created (server dry run)" in result.stdout, obj["kind"]
    assert result.stdout.count("created (server dry run)") == len(rest)


def test_a_misspelt_field_in_a_custom_resource_is_refused_so_the_dry_runs_are_strict(
    control_plane: ControlPlane, crds: None
) -> None:
    namespace = make_namespace(control_plane, labels=RESTRICTED)
    objects = template("--values", str(CHART / "ci" / "monitoring-values.yaml"), release="typo", namespace=namespace)
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["portt"] = monitor["spec"]["endpoints"][0].pop("port")
    result = control_plane.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(monitor)
    )
    assert result.returncode != 0
    assert 'unknown field "spec.endpoints[0].portt"' in result.stderr


def test_the_charts_namespace_and_the_webhooks_own_pod_pass_pod_security_restricted(
    control_plane: ControlPlane,
) -> None:
    name = "chart-" + uuid.uuid4().hex[:8]
    objects = template("--values", str(CHART / "ci" / "namespace-values.yaml"), release="psa", namespace=name)
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    created = control_plane.kubectl("create", "-f", "-", stdin=yaml.safe_dump(namespace))
    assert created.returncode == 0, created.stderr
    account = next(o for o in objects if o["kind"] == "ServiceAccount")
    assert control_plane.kubectl("create", "-f", "-", stdin=yaml.safe_dump(account)).returncode == 0
    template_spec = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-check", **template_spec["metadata"]}}
    pod["spec"] = template_spec["spec"]
    result = control_plane.kubectl("create", "--dry-run=server", "-n", name, "-f", "-", stdin=yaml.safe_dump(pod))
    assert result.returncode == 0, result.stderr
    assert "violate" not in result.stderr


@dataclass
class Installed:
    release: str
    namespace: str
    apps: str
    """A namespace only this release's webhook covers (the session's registered webhook skips it)."""
    kubeconfig: Path

    @property
    def name(self) -> str:
        return f"{self.release}-token-projector"

    def helm(self, *args: str) -> str:
        result = helm(*args, "--namespace", self.namespace, "--kubeconfig", str(self.kubeconfig))
        assert result.returncode == 0, result.stderr
        return result.stdout

    def values(self, *, mode: str = "helm") -> list[str]:
        return [
            "--set",
            f"certificates.mode={mode}",
            # Leave every other test's namespaces alone: cover only the one labelled for this test.
            "--set",
            f"webhook.namespaceSelector.matchLabels.chart-e2e={self.release}",
            "--set",
            "webhook.optOutLabel=example.com/chart-e2e-opt-out",
        ]


def secret(control_plane: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    data: dict[str, str] = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")["data"]
    return data


def ca_bundle(control_plane: ControlPlane, name: str) -> str:
    configuration = control_plane.request("GET", f"{WEBHOOK_PATH}/{name}")
    bundle: str = configuration["webhooks"][0]["clientConfig"]["caBundle"]
    return bundle


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, crds: None) -> Iterator[Installed]:
    release = "e2e" + uuid.uuid4().hex[:6]
    namespace = make_namespace(control_plane, labels=RESTRICTED)
    # token-projector.io/opt-out keeps the session's registered webhook out; chart-e2e brings this one in.
    apps = make_namespace(control_plane, labels={"token-projector.io/opt-out": "true", "chart-e2e": release})
    control_plane.request("POST", f"/api/v1/namespaces/{apps}/serviceaccounts", body={"metadata": {"name": "app"}})
    state = Installed(release, namespace, apps, control_plane.kubeconfig())
    # No --wait: nothing runs Pods here, so the Deployment never becomes ready.
    state.helm("install", release, str(CHART), *state.values())
    try:
        yield state
    finally:
        helm(
            "uninstall", release, "--namespace", namespace, "--kubeconfig", str(state.kubeconfig), "--ignore-not-found"
        )


def test_helm_install_registers_the_webhook_with_the_ca_it_generated(
    control_plane: ControlPlane, installed: Installed
) -> None:
    ca = secret(control_plane, installed.namespace, f"{installed.name}-ca")
    tls = secret(control_plane, installed.namespace, f"{installed.name}-tls")
    assert ca_bundle(control_plane, installed.name) == ca["tls.crt"] == tls["ca.crt"]


def test_with_no_ready_replica_annotated_pods_are_refused_and_the_api_server_counts_the_failed_call(
    control_plane: ControlPlane, installed: Installed
) -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "annotated", "annotations": {"token-projector.io/audience": "data-store"}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
    }
    with pytest.raises(ApiError) as refused:
        control_plane.create_pod(installed.apps, pod)
    assert 'failed calling webhook "audience-token.token-projector.io"' in refused.value.message
    assert installed.name in refused.value.message
    plain = {**pod, "metadata": {"name": "plain"}}
    assert control_plane.create_pod(installed.apps, plain)["metadata"]["name"] == "plain"  # matchConditions
    # The series TokenProjectorCallsFailing reads, as this API server exports it.
    metrics = api_text(control_plane, "/metrics")
    assert any(
        line.startswith("apiserver_admission_webhook_rejection_count{")
        and 'error_type="calling_webhook_error"' in line
        and 'name="audience-token.token-projector.io"' in line
        for line in metrics.splitlines()
    )


def test_helm_upgrade_keeps_the_generated_ca_and_certificate_and_auto_mode_keeps_them_too(
    control_plane: ControlPlane, installed: Installed
) -> None:
    before_ca = secret(control_plane, installed.namespace, f"{installed.name}-ca")
    before_tls = secret(control_plane, installed.namespace, f"{installed.name}-tls")
    bundle = ca_bundle(control_plane, installed.name)
    installed.helm("upgrade", installed.release, str(CHART), *installed.values(), "--set", "replicas=3")
    assert secret(control_plane, installed.namespace, f"{installed.name}-tls") == before_tls
    # auto, with cert-manager's API now served (the CRDs): a release with Helm-made certificates keeps them.
    installed.helm("upgrade", installed.release, str(CHART), *installed.values(mode="auto"))
    assert secret(control_plane, installed.namespace, f"{installed.name}-tls") == before_tls
    assert secret(control_plane, installed.namespace, f"{installed.name}-ca") == before_ca
    assert ca_bundle(control_plane, installed.name) == bundle
    certificates = control_plane.request(
        "GET", f"/apis/cert-manager.io/v1/namespaces/{installed.namespace}/certificates"
    )
    assert certificates["items"] == []


def test_an_upgrade_near_expiry_renews_the_serving_certificate_from_the_same_ca(
    control_plane: ControlPlane, installed: Installed
) -> None:
    before = secret(control_plane, installed.namespace, f"{installed.name}-tls")
    bundle = ca_bundle(control_plane, installed.name)
    # renewBeforeDays above the certificate's 365 days: this upgrade is "within renewBeforeDays of expiry".
    installed.helm(
        "upgrade", installed.release, str(CHART), *installed.values(), "--set", "certificates.helm.renewBeforeDays=400"
    )
    after = secret(control_plane, installed.namespace, f"{installed.name}-tls")
    assert after["tls.crt"] != before["tls.crt"]
    assert after["ca.crt"] == before["ca.crt"]
    assert ca_bundle(control_plane, installed.name) == bundle, "the API server's trust is unchanged"


def test_helm_uninstall_removes_the_webhook_configuration_before_the_deployment(
    control_plane: ControlPlane, installed: Installed
) -> None:
    since = control_plane.request("GET", "/api/v1/namespaces?limit=1")["metadata"]["resourceVersion"]
    installed.helm("uninstall", installed.release)
    webhook = deleted_at(control_plane, f"{WEBHOOK_PATH}?fieldSelector=metadata.name={installed.name}", since)
    deployment = deleted_at(
        control_plane,
        f"/apis/apps/v1/namespaces/{installed.namespace}/deployments?fieldSelector=metadata.name={installed.name}",
        since,
    )
    # One etcd: resourceVersions are its revisions, so they order the two deletions.
    assert webhook < deployment
    with pytest.raises(ApiError) as gone:
        control_plane.request("GET", f"{WEBHOOK_PATH}/{installed.name}")
    assert gone.value.status == 404


def api_text(control_plane: ControlPlane, path: str) -> str:
    request = urllib.request.Request(control_plane.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, context=control_plane.context, timeout=30) as response:
        text: str = response.read().decode()
        return text


def deleted_at(control_plane: ControlPlane, path: str, since: str) -> int:
    """The resourceVersion of the DELETED event of the one object ``path`` lists, replayed from ``since``."""
    events = api_text(control_plane, f"{path}&watch=1&resourceVersion={since}&timeoutSeconds=2")
    deletions = [json.loads(line) for line in events.splitlines() if line.strip()]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in deletions if e["type"] == "DELETED"]
    assert len(versions) == 1, deletions
    return versions[0]
