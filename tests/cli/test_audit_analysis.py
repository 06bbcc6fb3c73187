"""What ``token-projector audit`` concludes from what it read: verdicts from the core, bookkeeping around them."""

import dataclasses
from typing import Any

from tests.helpers import annotated, container
from webhook.cli.audit import render
from webhook.core.audit import Inventory, Unread, analyse
from webhook.core.contract import Contract

SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT = Contract()


def stored_pod(name: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", None)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"containers": [container("app")], **spec}}


def legacy_spec(volume_source: str = "app-token-x7k2p") -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "volumes": [{"name": "t", "secret": {"secretName": volume_source}}],
        "containers": [container("app", volumeMounts=[{"name": "t", "mountPath": SA_PATH}])],
    }


def workload(
    name: str, spec: dict[str, Any], *, annotations: dict[str, str] | None = None, **meta: Any
) -> dict[str, Any]:
    template: dict[str, Any] = {"metadata": {"annotations": annotations} if annotations else {}, "spec": spec}
    return {"metadata": {"name": name, "namespace": "shop", **meta}, "spec": {"template": template}}


def inventory(**lists: list[dict[str, Any]]) -> Inventory:
    return Inventory(namespace=None, lists=lists, exempt_namespaces=frozenset({"kube-system"}))


def test_a_refused_pod_in_an_exempt_namespace_is_listed_but_not_counted() -> None:
    pods = [
        stored_pod("kept", annotations=annotated(), **legacy_spec()),
        stored_pod("system", "kube-system", annotations=annotated(), **legacy_spec()),
    ]
    report = analyse(inventory(pods=pods), DEFAULT)
    assert {(p["name"], p["exempt"], p["current"]["outcome"]) for p in report["pods"]} == {
        ("kept", False, "denied"),
        ("system", True, "denied"),
    }
    assert report["summary"]["refused"] == 1


def test_a_deployments_replicasets_and_a_cronjobs_jobs_are_judged_once_through_their_owner() -> None:
    owned = [{"kind": "Deployment", "name": "api", "controller": True}]
    report = analyse(
        inventory(
            deployments=[workload("api", legacy_spec(), annotations=annotated())],
            replicasets=[
                workload("api-7d9f", legacy_spec(), annotations=annotated(), ownerReferences=owned),
                workload("alone", legacy_spec(), annotations=annotated()),
            ],
        ),
        DEFAULT,
    )
    assert sorted((w["kind"], w["name"]) for w in report["workloads"]) == [
        ("Deployment", "api"),
        ("ReplicaSet", "alone"),
    ]


def test_strict_mode_reads_the_serviceaccounts_automount_setting_for_a_workload() -> None:
    strict = dataclasses.replace(DEFAULT, strict=True)
    spec = {"serviceAccountName": "quiet", "containers": [container("app")]}
    accounts = [
        {"metadata": {"name": "quiet", "namespace": "shop"}, "automountServiceAccountToken": False},
    ]
    quiet = analyse(
        inventory(deployments=[workload("api", spec, annotations=annotated())], serviceaccounts=accounts), strict
    )
    assert quiet["workloads"] == [], "no API token would be mounted: nothing to refuse"
    loud = analyse(inventory(deployments=[workload("api", spec, annotations=annotated())]), strict)
    assert loud["workloads"][0]["current"]["outcome"] == "denied"
    assert "kube-api-access" in loud["workloads"][0]["current"]["message"]


def test_every_way_a_pod_reads_a_secret_is_named_for_the_legacy_token_it_uses() -> None:
    reader = stored_pod(
        "reader",
        volumes=[{"name": "p", "projected": {"sources": [{"secret": {"name": "app-token-x7k2p"}}]}}],
        containers=[
            container(
                "app",
                env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app-token-x7k2p", "key": "token"}}}],
                envFrom=[{"secretRef": {"name": "app-token-x7k2p"}}],
            )
        ],
    )
    secret = {
        "metadata": {
            "name": "app-token-x7k2p",
            "namespace": "shop",
            "creationTimestamp": "2021-03-04T05:06:07Z",
            "annotations": {"kubernetes.io/service-account.name": "app"},
            "labels": {"kubernetes.io/legacy-token-last-used": "2024-05-06"},
        }
    }
    report = analyse(inventory(pods=[reader], secrets=[secret]), DEFAULT)
    [row] = report["legacyTokenSecrets"]
    assert row == {
        "namespace": "shop",
        "name": "app-token-x7k2p",
        "serviceAccount": "app",
        "created": "2021-03-04T05:06:07Z",
        "lastUsed": "2024-05-06",
        "invalidSince": None,
        "usedBy": [
            "Pod reader (projected volume p)",
            "Pod reader (env TOKEN of container app)",
            "Pod reader (envFrom of container app)",
        ],
    }


def test_the_table_says_what_could_not_be_read_and_where() -> None:
    unread = Unread(
        resource="secrets", namespace=None, status=403, message='secrets is forbidden: User "x" cannot list'
    )
    report = analyse(Inventory(namespace=None, lists={"pods": []}, unread=[unread]), DEFAULT)
    table = render(report)
    assert "LEGACY TOKEN SECRETS (0) - NOT READ, see below" in table
    assert "NOT READ (1); see manifests/audit/ for the exact RBAC (list, and create on subjectaccessreviews)" in table
    assert 'secrets   cluster-wide  secrets is forbidden: User "x" cannot list' in table
    assert report["summary"]["notRead"] == 1
