"""charts/token-projector: lint-clean, schema-valid, strict about its values, in step with manifests/ and the code."""

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helpers import fixture
from tests.manifests.chart import (
    CHART,
    CUSTOM_KINDS,
    NAMESPACE,
    RELEASE,
    VALUES_FILES,
    helm,
    label,
    of_kind,
    one,
    template,
    template_error,
    values_args,
    values_file,
)
from tests.manifests.conftest import Render, by_kind
from webhook import __version__
from webhook.core.contract import Contract
from webhook.core.wire import Json
from webhook.install import deployment
from webhook.install.registration import webhook_configuration

KUBERNETES_VERSION = "1.37.0"


def webhook_of(objects: list[Json]) -> Json:
    webhooks: list[Json] = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert len(webhooks) == 1
    webhook = copy.deepcopy(webhooks[0])
    webhook["clientConfig"].pop("caBundle", None)  # Helm, cainjector or register fills it in
    return webhook


def container_of(objects: list[Json]) -> Json:
    containers: list[Json] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def security_relevant(deployment_object: Json) -> Json:
    """What a reviewer of a fail-closed, restricted webhook checks in its Deployment."""
    spec = deployment_object["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    return {
        "replicas": spec["replicas"],
        "strategy": spec["strategy"],
        "pod securityContext": pod["securityContext"],
        "automountServiceAccountToken": pod["automountServiceAccountToken"],
        "priorityClassName": pod["priorityClassName"],
        "terminationGracePeriodSeconds": pod["terminationGracePeriodSeconds"],
        "topologySpreadConstraints": [
            {k: v for k, v in c.items() if k != "labelSelector"} for c in pod["topologySpreadConstraints"]
        ],
        "container securityContext": container["securityContext"],
        "image": container["image"],
        "args": container["args"],
        "env": container["env"],
        "ports": container["ports"],
        "readinessProbe": container["readinessProbe"],
        "livenessProbe": container["livenessProbe"],
        "resources": container["resources"],
        "volumeMounts": container["volumeMounts"],
        "volumes": pod["volumes"],
    }


@pytest.mark.parametrize("path", VALUES_FILES, ids=label)
def test_helm_lint_strict_passes_for_the_default_values_and_every_ci_values_file(path: Path | None) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("path", VALUES_FILES, ids=label)
def test_every_rendered_object_is_valid_against_the_kubernetes_schema_in_strict_mode(path: Path | None) -> None:
    objects = template(*values_args(path), "--namespace", "platform-system")
    assert objects
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue  # from CRDs: tests/e2e/test_chart_dry_run.py has the real API server check them
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    for obj in objects:
        if obj["kind"] not in ("Namespace", "MutatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "platform-system", obj["metadata"]["name"]


def test_the_default_render_calls_the_webhook_exactly_as_the_kustomize_base_does(render: Render) -> None:
    chart, base = template(), render("base")
    assert webhook_of(chart) == webhook_of(base)
    assert one(chart, "MutatingWebhookConfiguration")["metadata"]["name"] == deployment.CONFIGURATION_NAME


def test_the_default_render_runs_the_deployment_exactly_as_the_kustomize_base_does(render: Render) -> None:
    chart, base = one(template(), "Deployment"), by_kind(render("base"), "Deployment")
    assert security_relevant(chart) == security_relevant(base)


def test_the_service_the_budget_the_account_and_the_namespace_are_the_kustomize_bases(render: Render) -> None:
    chart, base = template(*values_file("namespace")), render("base")
    assert one(chart, "Service")["spec"]["ports"] == by_kind(base, "Service")["spec"]["ports"]
    assert one(chart, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert one(chart, "ServiceAccount")["automountServiceAccountToken"] is False
    labels = one(chart, "Namespace")["metadata"]["labels"]
    assert by_kind(base, "Namespace")["metadata"]["labels"].items() <= labels.items()


@pytest.mark.parametrize(
    ("values", "contract"),
    [
        ([], Contract()),
        (values_file("contract"), Contract(annotation_prefix="tokens.example.com")),
        (values_file("legacy-scope-all"), Contract(legacy_token_scope="all")),
    ],
    ids=["defaults", "contract", "legacy-scope-all"],
)
def test_the_charts_webhook_is_what_register_builds_for_the_same_contract(
    values: list[str], contract: Contract
) -> None:
    objects = template(*values, release="prod", namespace="platform")
    built = webhook_configuration(
        ca_bundle="",
        contract=contract,
        service="prod-token-projector",
        namespace="platform",
        name="prod-token-projector",
    )["webhooks"][0]
    built["clientConfig"].pop("caBundle")
    built["timeoutSeconds"] = webhook_of(objects)["timeoutSeconds"]  # a chart value; register keeps 5
    assert webhook_of(objects) == built


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replicaz=2", "replicaz"),
        ("webhook.timeoutSecond=3", "timeoutSecond"),
        ("contract.legacyTokenScope=everything", "legacyTokenScope"),
        ("certificates.mode=vault", "mode"),
        ("webhook.timeoutSeconds=60", "timeoutSeconds"),
    ],
)
def test_a_typo_or_a_bad_value_is_refused_naming_the_value(setting: str, named: str) -> None:
    error = template_error("--set", setting)
    assert "values don't meet the specifications of the schema" in error
    assert named in error


def test_every_contract_setting_is_a_chart_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    chart_keys = set(schema["properties"]["contract"]["properties"])
    camel = {
        "".join([p[0], *(w.title() for w in p[1:])]) for p in (f.name.split("_") for f in dataclasses.fields(Contract))
    }
    assert chart_keys == camel
    assert set(yaml.safe_load((CHART / "values.yaml").read_text())["contract"]) == camel


def test_the_charts_own_defaults_are_the_servers_and_the_installs() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["webhook"]["timeoutSeconds"] == deployment.TIMEOUT_SECONDS
    assert values["webhook"]["optOutLabel"] == deployment.OPT_OUT_LABEL
    assert values["certificates"]["helm"]["caValidityDays"] == deployment.CA_VALIDITY_DAYS
    assert values["certificates"]["helm"]["validityDays"] == deployment.SERVING_VALIDITY_DAYS
    assert all(value is None for value in values["contract"].values()), "null leaves the server's default"
    condition = one(template(), "MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"][0]["expression"]
    assert f"['{Contract().annotation('audience')}', '{Contract().annotation('protect-port')}', " in condition


def contract_args(objects: list[Json]) -> list[str]:
    args: list[str] = container_of(objects)["args"]
    assert args[:2] == ["--log-level", "info"]
    return args[2:]


def test_contract_values_are_flags_that_the_real_command_applies(tmp_path: Path) -> None:
    args = contract_args(template(*values_file("contract")))
    review = fixture("deployment-pod-annotated.json")
    pod = review["request"]["object"]
    annotations = pod["metadata"]["annotations"]
    annotations["tokens.example.com/audience"] = annotations.pop("token-projector.io/audience")
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if not v["name"].startswith("kube-api-access")]
    for container in pod["spec"]["containers"]:
        container["volumeMounts"] = [m for m in container["volumeMounts"] if not m["name"].startswith("kube-api-")]
    (tmp_path / "review.json").write_text(json.dumps(review))
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "review", str(tmp_path / "review.json"), "--patch", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    patch = json.loads(result.stdout)
    volume = next(op["value"] for op in patch if op["path"] == "/spec/volumes/-")
    assert volume["name"] == "data-store-token"
    assert volume["projected"]["sources"][0]["serviceAccountToken"] == {
        "audience": "data-store",
        "expirationSeconds": 1800,
        "path": "jwt",
    }
    values = [op["value"] for op in patch]
    assert {"name": "data-store-token", "mountPath": "/var/run/secrets/example", "readOnly": True} in values
    assert {"name": "EXAMPLE_TOKEN_FILE", "value": "/var/run/secrets/example/jwt"} in values


def test_a_large_number_from_a_values_file_is_a_whole_number_flag(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("contract:\n  maxExpirationSeconds: 1000000\n  maxAudiences: 12\n")
    args = contract_args(template("--values", str(values)))
    assert args == ["--max-audiences", "12", "--max-expiration-seconds", "1000000"]


def test_contract_strict_is_the_strict_flag_and_refuses_an_automounted_api_token(tmp_path: Path) -> None:
    args = contract_args(template(*values_file("contract")))
    assert args[-1] == "--strict"
    review = fixture("deployment-pod-annotated.json")
    annotations = review["request"]["object"]["metadata"]["annotations"]
    annotations["tokens.example.com/audience"] = annotations.pop("token-projector.io/audience")
    (tmp_path / "review.json").write_text(json.dumps(review))
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "review", str(tmp_path / "review.json"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr  # denied, not bad input (2)
    assert "kube-api-access" in result.stderr


def test_legacy_scope_all_sends_every_pod_and_tells_the_server(render: Render) -> None:
    objects = template(*values_file("legacy-scope-all"))
    assert "matchConditions" not in webhook_of(objects)
    args = contract_args(objects)
    assert args[args.index("--legacy-token-scope") + 1] == "all"
    plain = webhook_of(template())
    del plain["matchConditions"]
    assert webhook_of(objects) == plain


def test_without_match_conditions_nothing_else_changes() -> None:
    plain, older = webhook_of(template()), webhook_of(template(*values_file("no-match-conditions")))
    del plain["matchConditions"]
    assert older == plain


def test_excluded_and_opted_out_namespaces_and_a_narrower_selector_are_in_the_namespace_selector() -> None:
    selector = webhook_of(template(*values_file("namespaces")))["namespaceSelector"]
    assert selector["matchLabels"] == {"example.com/audience-tokens": "enabled"}
    assert selector["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", NAMESPACE, "legacy-apps", "batch"],
        },
        {"key": "example.com/no-audience-tokens", "operator": "NotIn", "values": ["true"]},
    ]


def test_placement_values_reach_the_pods_without_moving_the_selector() -> None:
    objects = template(*values_file("placement"))
    workload = one(objects, "Deployment", "audience-webhook")
    pod = workload["spec"]["template"]["spec"]
    container = container_of(objects)
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "token-projector", "app.kubernetes.io/instance": RELEASE}
    assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    assert container["image"] == "registry.example.com/security/token-projector@sha256:" + "0123456789abcdef" * 4
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {"memory": "384Mi"}
    # The verifying proxy the webhook injects runs the image this release runs, mirror and digest included.
    assert container["args"] == [
        "--log-level",
        "warning",
        "--proxy-image",
        container["image"],
        "--cert-reload-seconds",
        "5",
    ]
    assert workload["spec"]["replicas"] == 3
    assert pod["priorityClassName"] == "platform-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert "nodeAffinity" in pod["affinity"]
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    assert all(c["labelSelector"] == {"matchLabels": selector} for c in pod["topologySpreadConstraints"])
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert one(objects, "Service", "audience-webhook")["spec"]["selector"] == selector


def test_common_labels_and_annotations_are_on_every_object() -> None:
    for obj in template(*values_file("placement")):
        assert obj["metadata"]["labels"]["team"] == "platform", obj["kind"]
        assert obj["metadata"]["annotations"]["example.com/owner"] == "platform@example.com", obj["kind"]


def test_a_budget_that_would_block_every_node_drain_is_refused_naming_both_values() -> None:
    error = template_error("--set", "replicas=1")
    assert "podDisruptionBudget.minAvailable (1) must be below replicas (1)" in error


def test_no_object_is_a_helm_hook_so_each_one_is_upgraded_and_uninstalled_with_the_release() -> None:
    for path in VALUES_FILES:
        for obj in template(*values_args(path)):
            annotations = obj["metadata"].get("annotations") or {}
            assert not [k for k in annotations if k.startswith("helm.sh/hook")], (label(path), obj["kind"])


@pytest.mark.parametrize("path", VALUES_FILES, ids=label)
def test_helm_applies_the_webhook_configuration_after_the_deployment_and_service_it_calls(path: Path | None) -> None:
    # helm template prints objects in the order helm install and upgrade apply them: by kind, with the
    # webhook configurations last among Kubernetes' own kinds, and kinds from CRDs after all of those.
    kinds = [obj["kind"] for obj in template(*values_args(path))]
    if "MutatingWebhookConfiguration" not in kinds:
        return
    position = kinds.index("MutatingWebhookConfiguration")
    assert set(kinds[:position]) >= {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}
    assert set(kinds[position + 1 :]) <= CUSTOM_KINDS, "only kinds from CRDs come after it"


def test_the_webhook_configuration_can_be_left_for_a_second_step_of_a_first_install() -> None:
    objects = template(*values_file("webhook-disabled"))
    assert not of_kind(objects, "MutatingWebhookConfiguration")
    assert one(objects, "Deployment")


def test_the_namespace_is_rendered_only_when_asked_with_the_restricted_pod_security_labels() -> None:
    assert not of_kind(template(), "Namespace")
    namespace = one(template(*values_file("namespace")), "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["metadata"]["labels"]["example.com/team"] == "platform"


def test_an_api_server_without_match_conditions_is_refused_naming_the_value_that_fits_it() -> None:
    error = template_error("--kube-version", "1.27.3")
    assert "Kubernetes v1.27.3 has no matchConditions (1.28+): set webhook.matchConditions=false" in error
    older = template("--kube-version", "1.27.3", *values_file("no-match-conditions"))
    assert "matchConditions" not in webhook_of(older)
    assert webhook_of(template("--kube-version", "1.28.0"))["matchConditions"]


def test_the_proxy_image_default_is_the_image_the_chart_and_the_kustomize_base_run(render: Render) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert Contract().proxy_image == f"token-projector:{app_version}" == f"token-projector:{__version__}"
    assert by_kind(render("base"), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        Contract().proxy_image
    )
    assert "--proxy-image" not in contract_args(template())
    mirrored = contract_args(template("--set", "image.repository=registry.example.com/tp", "--set", "image.tag=1.2"))
    assert mirrored == ["--proxy-image", "registry.example.com/tp:1.2"]
    chosen = contract_args(template("--set", "contract.proxyImage=registry.example.com/proxy:9"))
    assert chosen == ["--proxy-image", "registry.example.com/proxy:9"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--kube-version", "1.28.4"], ["--no-native-sidecars"]),
        (["--kube-version", "1.29.0"], []),
        (["--kube-version", "1.28.4", "--set", "contract.nativeSidecars=true"], ["--native-sidecars"]),
        (["--kube-version", "1.33.0", "--set", "contract.nativeSidecars=false"], ["--no-native-sidecars"]),
    ],
)
def test_native_sidecars_follow_the_clusters_version_unless_set(args: list[str], flag: list[str]) -> None:
    assert contract_args(template(*args)) == flag
