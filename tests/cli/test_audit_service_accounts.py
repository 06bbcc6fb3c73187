"""``token-projector audit`` on ServiceAccount opt-in and the Vault Agent: what it reports, and how to roll."""

from typing import Any

from tests.cli.test_audit_analysis import stored_pod
from tests.helpers import annotated
from webhook.cli.audit import render
from webhook.core.audit import Inventory, analyse
from webhook.core.contract import Contract

DEFAULT = Contract()
VOLUME = {"name": "audience-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault"}}]}}


def account(name: str, namespace: str = "shop", **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "annotations": annotations}}


def owned(pod: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    pod["metadata"]["ownerReferences"] = [{"kind": kind, "name": name, "controller": True}]
    return pod


def report_of(*, labelled: frozenset[str] | None, **lists: list[dict[str, Any]]) -> dict[str, Any]:
    inventory = Inventory(
        namespace=None, lists=lists, exempt_namespaces=frozenset({"kube-system"}), service_account_namespaces=labelled
    )
    return analyse(inventory, DEFAULT)


def test_annotated_service_accounts_are_reported_with_whether_their_namespace_is_labelled() -> None:
    report = report_of(
        labelled=frozenset({"shop"}),
        serviceaccounts=[
            account("api", **{"token-projector.io/audience": "vault", "unrelated": "x"}),
            account("plain"),
            account("web", "other", **{"token-projector.io/audience": "data-store"}),
        ],
    )
    assert report["annotatedServiceAccounts"] == [
        {
            "namespace": "shop",
            "name": "api",
            "annotations": {"token-projector.io/audience": "vault"},
            "namespaceOptedIn": True,
        },
        {
            "namespace": "other",
            "name": "web",
            "annotations": {"token-projector.io/audience": "data-store"},
            "namespaceOptedIn": False,
        },
    ]


def test_running_pods_without_their_service_accounts_token_are_listed_with_how_to_roll_them() -> None:
    pods = [
        owned(stored_pod("api-7d9f8b-x2k4q", serviceAccountName="api"), "ReplicaSet", "api-7d9f8b"),
        stored_pod("has-it", serviceAccountName="api", volumes=[VOLUME]),
        owned(stored_pod("db-0", serviceAccountName="api"), "StatefulSet", "db"),
        stored_pod("other-account", serviceAccountName="plain"),
        stored_pod("own-audience", serviceAccountName="api", annotations=annotated("data-store"), volumes=[VOLUME]),
    ]
    report = report_of(
        labelled=frozenset({"shop"}),
        serviceaccounts=[account("api", **{"token-projector.io/audience": "vault"}), account("plain")],
        pods=pods,
    )
    lacking = {p["name"]: p["roll"] for p in report["podsWithoutTheirServiceAccountsToken"]}
    assert lacking == {
        "api-7d9f8b-x2k4q": "kubectl -n shop rollout restart deployment/api",
        "db-0": "kubectl -n shop rollout restart statefulset/db",
    }
    assert report["summary"]["withoutServiceAccountsToken"] == 2
    text = render(report)
    assert "a ServiceAccount change reaches only new Pods: roll these" in text
    assert "kubectl -n shop rollout restart deployment/api" in text


def test_a_pod_naming_its_account_by_the_deprecated_service_account_field_is_matched_as_the_webhook_does() -> None:
    report = report_of(
        labelled=frozenset({"shop"}),
        serviceaccounts=[account("api", **{"token-projector.io/audience": "vault"})],
        pods=[stored_pod("api-1", serviceAccount="api")],
    )
    assert [p["name"] for p in report["podsWithoutTheirServiceAccountsToken"]] == ["api-1"]


def test_pods_of_a_namespace_without_the_label_are_not_said_to_lack_a_token() -> None:
    report = report_of(
        labelled=frozenset(),
        serviceaccounts=[account("api", **{"token-projector.io/audience": "vault"})],
        pods=[stored_pod("api-1", serviceAccountName="api")],
    )
    assert report["podsWithoutTheirServiceAccountsToken"] == []


def test_vault_agent_pods_that_would_send_the_api_token_are_reported() -> None:
    vault = {"vault.hashicorp.com/agent-inject": "true", "vault.hashicorp.com/role": "api"}
    pointed = {**vault, "vault.hashicorp.com/agent-service-account-token-volume-name": "audience-token"}
    report = report_of(
        labelled=None,
        pods=[
            stored_pod("sends-api-token", annotations=vault),
            stored_pod("recipe", annotations={**pointed, "token-projector.io/audience": "vault"}, volumes=[VOLUME]),
        ],
    )
    (row,) = report["vaultAgentPods"]
    assert row["name"] == "sends-api-token"
    assert "log in to Vault with the Pod's Kubernetes API token" in row["warnings"][0]
    assert "VAULT AGENT PODS TO FIX (1)" in render(report)
