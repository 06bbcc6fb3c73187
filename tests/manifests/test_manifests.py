"""manifests/: valid against the Kubernetes schema, renderable, safe by construction, and in step with the code."""

from pathlib import Path

import kubernetes_validate
import pytest

from tests.manifests.conftest import MANIFESTS, Render, by_kind, source_documents, with_components
from webhook.cli.options import load
from webhook.core.contract import PROTECT_KEYS, Contract
from webhook.core.wire import Json
from webhook.install.certs import CertRequest
from webhook.install.deployment import NAMESPACE, OPT_OUT_LABEL, SERVICE_NAME, WEBHOOK_NAME
from webhook.install.registration import webhook_configuration
from webhook.server.settings import ServerSettings

KUBERNETES_VERSION = "1.37.0"
CRD_API_VERSIONS = {
    "Issuer": "cert-manager.io/v1",
    "Certificate": "cert-manager.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
"""Kinds from CRDs, not in the Kubernetes schema: tests/e2e/test_chart_dry_run.py dry-runs them against their CRDs."""
OVERLAYS = ["overlays/cert-manager", "overlays/self-managed"]


def validate(obj: Json) -> None:
    if obj["kind"] in CRD_API_VERSIONS:
        assert obj["apiVersion"] == CRD_API_VERSIONS[obj["kind"]]
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("path", "obj"), source_documents(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_every_manifest_is_valid_against_the_kubernetes_schema_in_strict_mode(path: Path, obj: Json) -> None:
    validate(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_to_valid_objects_in_the_webhooks_namespace(render: Render, overlay: str) -> None:
    objects = render(overlay)
    for obj in objects:
        validate(obj)
        if obj["kind"] not in ("Namespace", "MutatingWebhookConfiguration"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    kinds = sorted(o["kind"] for o in objects)
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"} <= set(kinds)


def webhook_of(objects: list[Json]) -> Json:
    webhooks: list[Json] = by_kind(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert len(webhooks) == 1
    return webhooks[0]


def test_the_webhook_is_called_only_for_pod_creates_fails_closed_and_is_reinvoked(render: Render) -> None:
    webhook = webhook_of(render("overlays/cert-manager"))
    assert webhook["name"] == WEBHOOK_NAME
    assert webhook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert webhook["sideEffects"] == "None"
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["timeoutSeconds"] < 10
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["clientConfig"]["service"] == {
        "name": SERVICE_NAME,
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": 443,
    }


def test_kube_system_and_the_webhooks_own_namespace_are_never_sent_and_namespaces_can_opt_out(render: Render) -> None:
    expressions = webhook_of(render("overlays/cert-manager"))["namespaceSelector"]["matchExpressions"]
    assert {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", NAMESPACE],
    } in expressions
    assert {"key": OPT_OUT_LABEL, "operator": "NotIn", "values": ["true"]} in expressions


def test_only_pods_with_the_audience_annotation_or_a_protect_annotation_are_sent(render: Render) -> None:
    conditions = webhook_of(render("overlays/cert-manager"))["matchConditions"]
    keys = ", ".join(f"'{Contract().annotation(key)}'" for key in ("audience", *PROTECT_KEYS))
    assert conditions == [
        {
            "name": "has-opt-in-annotation",
            "expression": f"has(object.metadata.annotations) && [{keys}].exists(k, k in object.metadata.annotations)",
        }
    ]


def test_the_manifests_webhook_is_exactly_what_register_builds(render: Render) -> None:
    manifest = by_kind(render("overlays/cert-manager"), "MutatingWebhookConfiguration")
    built = webhook_configuration(ca_bundle="", contract=Contract())
    for obj in (manifest, built):
        obj["webhooks"][0]["clientConfig"].pop("caBundle", None)  # cainjector or register fills it in
    assert manifest["webhooks"] == built["webhooks"]
    assert manifest["metadata"]["name"] == built["metadata"]["name"]


def test_the_legacy_scope_all_component_sends_every_pod_and_sets_the_scope(render: Render, rendered_tree: Path) -> None:
    objects = render(with_components(rendered_tree, "overlays/cert-manager", "legacy-scope-all"))
    assert "matchConditions" not in webhook_of(objects)
    env = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TOKEN_PROJECTOR_LEGACY_TOKEN_SCOPE", "value": "all"} in env
    assert (
        "matchConditions"
        not in webhook_configuration(ca_bundle="", contract=Contract(legacy_token_scope="all"))["webhooks"][0]
    )


def test_the_older_clusters_component_drops_match_conditions_only(render: Render, rendered_tree: Path) -> None:
    plain = webhook_of(render("overlays/cert-manager"))
    older = webhook_of(render(with_components(rendered_tree, "overlays/cert-manager", "no-match-conditions")))
    del plain["matchConditions"]
    assert older == plain


def test_the_older_clusters_component_tells_the_server_there_are_no_native_sidecars(
    render: Render, rendered_tree: Path
) -> None:
    objects = render(with_components(rendered_tree, "overlays/cert-manager", "no-match-conditions"))
    env = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TOKEN_PROJECTOR_NATIVE_SIDECARS", "value": "false"} in env
    assert load(Contract, environ={entry["name"]: entry["value"] for entry in env}).native_sidecars is False


def test_the_deployment_runs_hardened_and_non_root_with_no_api_credential(render: Render) -> None:
    spec = by_kind(render("overlays/cert-manager"), "Deployment")["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_the_grace_period_outlasts_the_drain_and_the_shutdown_timeout() -> None:
    docs = [d for _, d in source_documents() if d["kind"] == "Deployment"]
    grace = docs[0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    settings = ServerSettings()
    assert grace > settings.drain_seconds + settings.shutdown_timeout_seconds


def test_probes_and_ports_match_the_servers_defaults(render: Render) -> None:
    objects = render("overlays/cert-manager")
    container = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": ServerSettings().port, "http-probes": ServerSettings().probe_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-probes"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-probes"}
    service = by_kind(objects, "Service")
    assert {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"} in service["spec"]["ports"]


def test_the_webhooks_own_namespace_enforces_the_restricted_pod_security_standard(render: Render) -> None:
    labels = by_kind(render("overlays/cert-manager"), "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_service_account_gets_no_token_and_the_pdb_keeps_one_replica(render: Render) -> None:
    objects = render("overlays/cert-manager")
    assert by_kind(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert by_kind(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_cert_manager_issues_the_secret_the_deployment_mounts_for_the_service_names(render: Render) -> None:
    objects = render("overlays/cert-manager")
    certificates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Certificate"}
    serving = certificates["token-projector-serving"]["spec"]
    volumes = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": serving["secretName"], "defaultMode": 0o440}} in volumes
    assert serving["dnsNames"] == CertRequest(out_dir=Path()).all_dns_names()
    assert serving["usages"] == ["server auth"]
    annotation = by_kind(objects, "MutatingWebhookConfiguration")["metadata"]["annotations"]
    namespace, name = annotation["cert-manager.io/inject-ca-from"].split("/")
    assert (namespace, name) == (NAMESPACE, "token-projector-ca")
    assert certificates[name]["spec"]["isCA"] is True
    issuer = next(o for o in objects if o["kind"] == "Issuer" and o["metadata"]["name"] == serving["issuerRef"]["name"])
    assert issuer["spec"]["ca"]["secretName"] == certificates[name]["spec"]["secretName"]


def test_the_self_managed_overlay_ships_the_tls_secret_and_leaves_the_webhook_to_register(render: Render) -> None:
    objects = render("overlays/self-managed")
    assert all(o["kind"] != "MutatingWebhookConfiguration" for o in objects)
    secret = by_kind(objects, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "token-projector-tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key"}


def test_generated_certificates_in_the_self_managed_overlay_are_ignored_by_git() -> None:
    ignore = (MANIFESTS / "overlays" / "self-managed" / "certs" / ".gitignore").read_text()
    assert "*" in ignore.splitlines()
