"""``token-projector audit`` against the real kube-apiserver: what it reports, cannot read, and never prints.

The cluster is set up as a security team finds one: legacy token Secrets (made as the tokens
controller made them, see ``tests/e2e/legacy_tokens.py``; one of them really used, so the API server
itself labels it), Pods mounting them, annotated Pods created before the webhook was installed
and after, workloads the webhook would refuse, and a namespace that opted out.
"""

import base64
import contextlib
import datetime
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ApiError, ControlPlane, Registered, register, wait_until
from tests.e2e.legacy_tokens import account_uid, create_token_secret, fake_token, signed_token
from tests.e2e.pods import annotated, pod, token_volumes
from tests.e2e.tokens import request_token
from tests.tools import REPO

pytestmark = pytest.mark.e2e

SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
CONFIGURATION = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
RUN_AUDIT = "import sys\nfrom webhook.cli import main\nsys.exit(main(sys.argv[1:]))\n"
"""``python -m webhook`` as a ``-c`` program, so a test can put a prelude before it."""


@dataclass
class Cluster:
    plane: ControlPlane
    apps: str
    opted_out: str
    tokens: list[str]
    printed: list[str] = field(default_factory=list)
    """Everything any audit run printed, searched for token values at the end."""

    def audit(self, *args: str, token: str | None = None, name: str = "admin") -> subprocess.CompletedProcess[str]:
        kubeconfig = self.plane.kubeconfig(token=token, name=name) if token else self.plane.kubeconfig()
        result = subprocess.run(
            [sys.executable, "-c", RUN_AUDIT, "audit", "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO,
        )
        self.printed += [result.stdout, result.stderr]
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def report(self, *args: str, token: str | None = None, name: str = "admin") -> tuple[int, dict[str, Any]]:
        result = self.audit("-o", "json", *args, token=token, name=name)
        return result.returncode, json.loads(result.stdout)


def legacy_volume(secret: str) -> dict[str, Any]:
    return {"name": secret, "secret": {"secretName": secret}}


def legacy_pod(name: str, secret: str, **kw: Any) -> dict[str, Any]:
    made = (annotated if kw.pop("opted_in", False) else pod)(
        name, automountServiceAccountToken=False, volumes=[legacy_volume(secret)], **kw
    )
    made["spec"]["containers"][0]["volumeMounts"] = [{"name": secret, "mountPath": SA_PATH}]
    return made


def deployment(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {**template["metadata"], "labels": {"app": name}}, "spec": template["spec"]},
        },
    }


def _mutated_in_dry_run(plane: ControlPlane, namespace: str) -> bool:
    probe = plane.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", body=annotated("probe"))
    return bool(token_volumes(probe))


@contextlib.contextmanager
def webhook_away(registered: Registered, plane: ControlPlane, namespace: str) -> Iterator[None]:
    """No webhook registered, as before token-projector was installed; registered again afterwards."""
    plane.request("DELETE", f"{CONFIGURATION}/token-projector")
    try:
        wait_until(lambda: not _mutated_in_dry_run(plane, namespace), what="the webhook to be unregistered")
        yield
    finally:
        args = ("--url", registered.webhook.url, "--ca-file", str(registered.webhook.certs / "ca.crt"))
        assert register(plane, *args).returncode == 0
        wait_until(lambda: _mutated_in_dry_run(plane, namespace), what="the webhook to be registered again")


def create(plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    kind = obj.get("kind", "Pod")
    path = (
        f"/apis/apps/v1/namespaces/{namespace}/deployments"
        if kind == "Deployment"
        else f"/api/v1/namespaces/{namespace}/pods"
    )
    plane.request("POST", path, body=obj)


@pytest.fixture(scope="module")
def cluster(registered: Registered, control_plane: ControlPlane) -> Cluster:
    plane = control_plane
    apps = plane.namespace()
    used = signed_token(
        plane, namespace=apps, account="app", account_uid=account_uid(plane, apps, "app"), secret="app-token-x7k2p"
    )
    unused = fake_token()
    create_token_secret(plane, namespace=apps, name="app-token-x7k2p", account="app", token=used)
    create_token_secret(
        plane,
        namespace=apps,
        name="app-token-old00",
        account="app",
        token=unused,
        labels={"kubernetes.io/legacy-token-invalid-since": "2024-01-01"},
    )
    # The tokens controller also listed its Secret in the ServiceAccount's .secrets.
    account = plane.request("GET", f"/api/v1/namespaces/{apps}/serviceaccounts/app")
    plane.request(
        "PUT",
        f"/api/v1/namespaces/{apps}/serviceaccounts/app",
        body={**account, "secrets": [{"name": "app-token-x7k2p"}]},
    )

    with webhook_away(registered, plane, apps):
        create(plane, apps, annotated("early-bird"))
        create(plane, apps, legacy_pod("early-legacy", "app-token-old00", opted_in=True))
    create(plane, apps, annotated("on-time"))
    create(plane, apps, legacy_pod("plain-legacy", "app-token-x7k2p"))  # not annotated: never sent to the webhook
    create(plane, apps, deployment("refused", legacy_pod("x", "app-token-x7k2p", opted_in=True)))
    create(plane, apps, deployment("plain", legacy_pod("x", "app-token-x7k2p")))
    create(plane, apps, deployment("fine", annotated("x")))

    # Using a legacy token makes the API server label its Secret (LegacyServiceAccountTokenTracking).
    with contextlib.suppress(ApiError):  # authenticated, then forbidden: the ServiceAccount has no RBAC
        plane.request("GET", f"/api/v1/namespaces/{apps}/pods", token=used)
    wait_until(
        lambda: (
            "kubernetes.io/legacy-token-last-used"
            in plane.request("GET", f"/api/v1/namespaces/{apps}/secrets/app-token-x7k2p")["metadata"].get("labels", {})
        ),
        what="the API server to label the used legacy token",
    )

    opted_out = plane.namespace(labels={"token-projector.io/opt-out": "true"})
    create_token_secret(plane, namespace=opted_out, name="app-token-aaaaa", account="app", token=fake_token())
    create(plane, opted_out, legacy_pod("exempt-legacy", "app-token-aaaaa", opted_in=True))
    return Cluster(plane, apps, opted_out, [used, unused])


def rows_in(rows: list[dict[str, Any]], namespace: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows if row["namespace"] == namespace}


def test_legacy_token_secrets_are_listed_with_their_account_tracking_and_users(cluster: Cluster) -> None:
    code, report = cluster.report()
    secrets = rows_in(report["legacyTokenSecrets"], cluster.apps)
    assert set(secrets) == {"app-token-x7k2p", "app-token-old00"}
    used = secrets["app-token-x7k2p"]
    assert used["serviceAccount"] == "app"
    assert used["lastUsed"] == datetime.datetime.now(datetime.UTC).date().isoformat()
    assert used["invalidSince"] is None
    assert used["created"].startswith(str(datetime.datetime.now(datetime.UTC).year))
    assert sorted(used["usedBy"]) == [
        "Deployment plain (volume app-token-x7k2p)",
        "Deployment refused (volume app-token-x7k2p)",
        "Pod plain-legacy (volume app-token-x7k2p)",
    ]
    old = secrets["app-token-old00"]
    assert (old["lastUsed"], old["invalidSince"]) == (None, "2024-01-01")
    assert old["usedBy"] == ["Pod early-legacy (volume app-token-old00)"]
    # The API server records since when it tracks legacy tokens, in a ConfigMap of kube-system.
    since = cluster.plane.request(
        "GET", "/api/v1/namespaces/kube-system/configmaps/kube-apiserver-legacy-service-account-token-tracking"
    )["data"]["since"]
    assert report["trackingSince"] == since
    assert report["notRead"] == []
    assert code == 1, "something would be refused"


def test_pods_and_workloads_are_judged_now_and_with_scope_all_with_the_webhooks_message(cluster: Cluster) -> None:
    _, report = cluster.report()
    pods = rows_in(report["pods"], cluster.apps)
    assert set(pods) == {"plain-legacy", "early-legacy"}
    assert pods["plain-legacy"]["current"]["outcome"] == "unchanged", "not annotated: the webhook is not even called"
    assert pods["plain-legacy"]["scopeAll"]["outcome"] == "denied"
    assert pods["early-legacy"]["current"]["outcome"] == "denied"
    assert pods["early-legacy"]["current"]["message"].startswith(
        "Pod uses a legacy service account token: volume 'app-token-old00' (Secret 'app-token-old00', mounted at "
        f"{SA_PATH} in container 'app')"
    )
    workloads = rows_in(report["workloads"], cluster.apps)
    assert set(workloads) == {"refused", "plain"}
    assert (workloads["refused"]["current"]["outcome"], workloads["plain"]["current"]["outcome"]) == (
        "denied",
        "unchanged",
    )
    assert workloads["plain"]["scopeAll"]["outcome"] == "denied"
    # The opted-out namespace's Pod is listed, but the webhook never sees it: it does not count.
    exempt = rows_in(report["pods"], cluster.opted_out)["exempt-legacy"]
    assert exempt["exempt"] is True
    assert exempt["current"]["outcome"] == "denied"


def test_the_refusal_is_the_one_the_real_webhook_gives(cluster: Cluster) -> None:
    _, report = cluster.report("--namespace", cluster.apps)
    refused = rows_in(report["workloads"], cluster.apps)["refused"]["current"]["message"]
    template = deployment("refused", legacy_pod("x", "app-token-x7k2p", opted_in=True))["spec"]["template"]
    with pytest.raises(ApiError) as raised:
        cluster.plane.create_pod(
            cluster.apps,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "refused-", **template["metadata"]},
                "spec": template["spec"],
            },
        )
    assert raised.value.message.endswith(refused)


def test_opted_in_pods_say_whether_they_carry_their_token(cluster: Cluster) -> None:
    _, report = cluster.report()
    opted = rows_in(report["optedInPods"], cluster.apps)
    assert {name: row["hasToken"] for name, row in opted.items()} == {
        "early-bird": False,
        "early-legacy": False,
        "on-time": True,
    }
    assert opted["early-bird"]["current"]["outcome"] == "mutated", "re-created now, it would get its token"


def test_service_accounts_still_listing_token_secrets_are_named(cluster: Cluster) -> None:
    _, report = cluster.report()
    accounts = rows_in(report["serviceAccountsWithSecrets"], cluster.apps)
    assert accounts["app"]["legacyTokenSecrets"] == ["app-token-x7k2p"]


def test_scope_all_as_the_setting_makes_every_legacy_pod_a_refusal(cluster: Cluster) -> None:
    code, report = cluster.report("--namespace", cluster.apps, "--legacy-token-scope", "all")
    pods = rows_in(report["pods"], cluster.apps)
    assert pods["plain-legacy"]["current"]["outcome"] == "denied"
    assert "scopeAll" not in pods["plain-legacy"], "already the setting: judged once"
    assert report["summary"]["refused"] == 4
    assert code == 1


def test_the_table_names_each_finding(cluster: Cluster) -> None:
    result = cluster.audit("--namespace", cluster.apps)
    assert result.returncode == 1
    out = result.stdout
    for expected in (
        f"{cluster.apps}/app-token-x7k2p",
        "LEGACY TOKEN SECRETS (2)",
        "Pod plain-legacy (volume app-token-x7k2p)",
        f"Deployment  {cluster.apps}/refused",
        "missing (created before the webhook?)",
        "2 would be refused now, 4 with --legacy-token-scope all",
    ):
        assert expected in out, out


def apply(plane: ControlPlane, text: str) -> None:
    result = plane.kubectl("apply", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr


def test_with_the_shipped_cluster_wide_rbac_everything_is_read(cluster: Cluster) -> None:
    plane = cluster.plane
    with contextlib.suppress(ApiError):
        plane.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "token-projector"}})
    apply(plane, (REPO / "manifests" / "audit" / "cluster-wide.yaml").read_text())
    token = request_token(plane, "token-projector", "token-projector-audit", seconds=3600)
    code, report = cluster.report(token=token, name="auditor")
    assert report["notRead"] == []
    assert set(rows_in(report["legacyTokenSecrets"], cluster.apps)) == {"app-token-x7k2p", "app-token-old00"}
    assert report["trackingSince"] is not None
    assert code == 1


def test_with_the_shipped_namespace_rbac_only_the_namespaces_list_is_missing(cluster: Cluster) -> None:
    plane = cluster.plane
    text = (
        (REPO / "manifests" / "audit" / "namespace.yaml")
        .read_text()
        .replace("team-a-auditors", "x")
        .replace("team-a", cluster.apps)
    )
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] == "RoleBinding":
            doc["subjects"] = [{"kind": "ServiceAccount", "name": "auditor", "namespace": cluster.apps}]
    plane.request("POST", f"/api/v1/namespaces/{cluster.apps}/serviceaccounts", body={"metadata": {"name": "auditor"}})
    apply(plane, yaml.safe_dump_all(docs))
    token = request_token(plane, cluster.apps, "auditor", seconds=3600)
    code, report = cluster.report("--namespace", cluster.apps, token=token, name="team")
    assert [u["resource"] for u in report["notRead"]] == ["namespaces"]
    assert 'cannot list resource "namespaces" in API group "" at the cluster scope' in report["notRead"][0]["message"]
    assert set(rows_in(report["legacyTokenSecrets"], cluster.apps)) == {"app-token-x7k2p", "app-token-old00"}
    assert code == 1


def test_a_user_allowed_some_lists_gets_the_rest_of_the_report_and_what_it_could_not_read(cluster: Cluster) -> None:
    plane = cluster.plane
    name = "partial-" + uuid.uuid4().hex[:6]
    plane.request("POST", f"/api/v1/namespaces/{cluster.apps}/serviceaccounts", body={"metadata": {"name": name}})
    plane.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        body={
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["", "apps"], "resources": ["pods", "deployments"], "verbs": ["list"]}],
        },
    )
    plane.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        body={
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": cluster.apps}],
        },
    )
    token = request_token(plane, cluster.apps, name, seconds=3600)
    wait_until(lambda: cluster.report(token=token, name=name)[1]["pods"] != [], what="the binding to take effect")
    result = cluster.audit("-o", "json", token=token, name=name)
    report = json.loads(result.stdout)
    unread = {u["resource"]: u for u in report["notRead"]}
    assert set(unread) == {
        "secrets",
        "serviceaccounts",
        "replicationcontrollers",
        "statefulsets.apps",
        "daemonsets.apps",
        "replicasets.apps",
        "jobs.batch",
        "cronjobs.batch",
        "namespaces",
        "configmaps",
    }
    assert (
        f'User "system:serviceaccount:{cluster.apps}:{name}" cannot list resource "secrets"'
        in unread["secrets"]["message"]
    )
    assert "cannot list secrets cluster-wide" in result.stderr
    # What it could read is reported all the same.
    assert rows_in(report["workloads"], cluster.apps)["refused"]["current"]["outcome"] == "denied"
    assert report["legacyTokenSecrets"] == []
    assert result.returncode == 1


def test_no_token_value_appears_in_any_output_or_log(cluster: Cluster, registered: Registered) -> None:
    cluster.audit()
    cluster.audit("-o", "json", "--legacy-token-scope", "all")
    printed = "\n".join(cluster.printed)
    logs = (registered.webhook.workdir / "token-projector.log").read_text(errors="replace")
    for token in cluster.tokens:
        for text in (printed, logs):
            assert token not in text
            assert base64.b64encode(token.encode()).decode() not in text
    assert "FAKE-LEGACY-TOKEN" not in printed + logs
