"""``token-projector audit``: the protected workloads whose ServiceAccount the API server says may not review tokens."""

import dataclasses
from typing import Any

from tests.cli.test_audit_analysis import DEFAULT, inventory, stored_pod, workload
from tests.helpers import container
from webhook.cli.audit import render
from webhook.core.audit import Unread, analyse, protected_accounts

PROTECT = {
    "token-projector.io/protect-port": "http",
    "token-projector.io/protect-audience": "secret-store",
    "token-projector.io/protect-allow": "api/api",
}


def spec(account: str) -> dict[str, Any]:
    return {"serviceAccountName": account, "containers": [container("app")]}


def test_the_accounts_asked_about_are_those_of_protected_pods_and_workloads_only() -> None:
    lists = {
        "pods": [stored_pod("store-1", annotations=PROTECT, **spec("store")), stored_pod("plain", **spec("other"))],
        "deployments": [
            workload("store", spec("store"), annotations=PROTECT),
            workload("web", {"containers": [container("app")]}, annotations={"token-projector.io/protect-port": "x"}),
            workload("plain", spec("plain")),
        ],
    }
    assert protected_accounts(lists, DEFAULT) == {
        ("shop", "store"): ["Pod store-1", "Deployment store"],
        ("shop", "default"): ["Deployment web"],
    }


def test_an_account_the_api_server_refused_is_reported_with_what_it_protects_and_the_fix() -> None:
    pods = [stored_pod("store-1", annotations=PROTECT, **spec("store")), stored_pod("ok-1", annotations=PROTECT)]
    found = dataclasses.replace(
        inventory(pods=pods), token_reviewers={("shop", "store"): False, ("shop", "default"): True}
    )
    report = analyse(found, DEFAULT)
    assert report["protectedWithoutTokenReview"] == [
        {"namespace": "shop", "serviceAccount": "store", "protected": ["Pod store-1"]}
    ]
    assert report["summary"]["protectedWithoutTokenReview"] == 1
    table = render(report)
    assert "PROTECTED WORKLOADS WHOSE SERVICEACCOUNT MAY NOT CREATE TOKENREVIEWS (1)" in table
    assert "audience-token-reviewer ClusterRole" in table
    assert "shop/store" in table


def test_an_account_not_asked_about_is_not_reported_and_a_refused_question_is_said() -> None:
    unread = Unread(
        resource="subjectaccessreviews.authorization.k8s.io", namespace=None, status=403, message="forbidden"
    )
    found = dataclasses.replace(
        inventory(pods=[stored_pod("store-1", annotations=PROTECT, **spec("store"))]), unread=[unread]
    )
    report = analyse(found, DEFAULT)
    assert report["protectedWithoutTokenReview"] == []
    assert "MAY NOT CREATE TOKENREVIEWS (0); " in render(report)
    assert "NOT READ, see below" in render(report).split("MAY NOT CREATE TOKENREVIEWS")[1].split("\n")[0]
