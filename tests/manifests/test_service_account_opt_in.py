"""ServiceAccount opt-in as installed: a kustomize component and a Helm value, off by default, rendering alike."""

import copy
from pathlib import Path

from tests.manifests.chart import one, template, values_file
from tests.manifests.conftest import Render, by_kind, with_components
from webhook.core.contract import Contract
from webhook.core.service_accounts import SERVICE_ACCOUNTS_PATH
from webhook.core.wire import Json
from webhook.install.registration import webhook_configuration

LABEL = "token-projector.io/service-accounts"
RULES = [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "list", "watch"]}]


def webhooks_of(objects: list[Json]) -> list[Json]:
    webhooks: list[Json] = copy.deepcopy(one(objects, "MutatingWebhookConfiguration")["webhooks"])
    for webhook in webhooks:
        webhook["clientConfig"].pop("caBundle", None)  # Helm, cainjector or register fills it in
    return webhooks


def opted_in(render: Render, rendered_tree: Path) -> list[Json]:
    return render(with_components(rendered_tree, "overlays/cert-manager", "service-account-opt-in"))


def test_it_is_off_by_default_in_both_no_rbac_no_token_one_entry(render: Render) -> None:
    for objects in (template(), render("overlays/cert-manager")):
        assert not [o for o in objects if o["kind"].startswith("ClusterRole")]
        assert len(one(objects, "MutatingWebhookConfiguration")["webhooks"]) == 1
        assert one(objects, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_component_adds_an_entry_for_labelled_namespaces_and_leaves_them_out_of_the_first(
    render: Render, rendered_tree: Path
) -> None:
    first, second = webhooks_of(opted_in(render, rendered_tree))
    assert {"key": LABEL, "operator": "NotIn", "values": ["enabled"]} in first["namespaceSelector"]["matchExpressions"]
    assert second["name"] == "service-account.token-projector.io"
    assert second["clientConfig"]["service"]["path"] == "/mutate/service-accounts"
    assert second["namespaceSelector"]["matchLabels"] == {LABEL: "enabled"}
    assert "matchConditions" not in second, "a ServiceAccount's annotations are invisible to matchConditions"
    assert second["failurePolicy"] == "Fail"
    kube_system = second["namespaceSelector"]["matchExpressions"][0]
    assert kube_system["values"] == ["kube-system", "token-projector"]


def test_the_component_grants_exactly_get_list_watch_on_serviceaccounts_to_the_webhooks_account(
    render: Render, rendered_tree: Path
) -> None:
    objects = opted_in(render, rendered_tree)
    assert by_kind(objects, "ClusterRole")["rules"] == RULES
    binding = by_kind(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "token-projector", "namespace": "token-projector"}
    ]
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert {"name": "TOKEN_PROJECTOR_SERVICE_ACCOUNT_OPT_IN", "value": "true"} in pod["containers"][0]["env"]


def test_the_helm_value_renders_what_the_component_renders(render: Render, rendered_tree: Path) -> None:
    kustomized, chart = opted_in(render, rendered_tree), template(*values_file("service-account-opt-in"))
    assert webhooks_of(chart) == webhooks_of(kustomized)
    assert one(chart, "ClusterRole")["rules"] == by_kind(kustomized, "ClusterRole")["rules"]
    assert one(chart, "ClusterRoleBinding")["subjects"] == by_kind(kustomized, "ClusterRoleBinding")["subjects"]
    chart_pod = one(chart, "Deployment")["spec"]["template"]["spec"]
    kustomized_pod = by_kind(kustomized, "Deployment")["spec"]["template"]["spec"]
    assert chart_pod["automountServiceAccountToken"] is kustomized_pod["automountServiceAccountToken"] is True
    assert chart_pod["containers"][0]["env"] == kustomized_pod["containers"][0]["env"]


def test_register_with_service_account_opt_in_builds_what_the_component_renders(
    render: Render, rendered_tree: Path
) -> None:
    built = webhook_configuration(ca_bundle="", contract=Contract(), service_account_opt_in=True)
    for webhook in built["webhooks"]:
        webhook["clientConfig"].pop("caBundle")
    assert built["webhooks"] == webhooks_of(opted_in(render, rendered_tree))
    assert {w["clientConfig"]["service"]["path"] for w in built["webhooks"]} == {"/mutate", SERVICE_ACCOUNTS_PATH}


def test_register_with_a_url_calls_the_service_account_path_of_the_same_server() -> None:
    url = "https://10.0.0.5:8443/mutate"
    built = webhook_configuration(ca_bundle="", contract=Contract(), url=url, service_account_opt_in=True)
    assert [w["clientConfig"]["url"] for w in built["webhooks"]] == [
        url,
        "https://10.0.0.5:8443/mutate/service-accounts",
    ]
