"""ServiceAccount opt-in against the real kube-apiserver: a race, a change, a deletion, a broken watch, 10,000 of them.

token-projector runs as ``serve --service-account-opt-in``, reading ServiceAccounts with a real token
of its own ServiceAccount, bound to the component's own ClusterRole (get, list, watch), through a TCP
proxy the tests control, so that the watch can be broken as a network breaks it.
"""

import asyncio
import base64
import contextlib
import gc
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tests.e2e.conftest import ApiError, ControlPlane, Webhook, wait_until
from tests.e2e.pods import pod, token_volumes
from tests.e2e.tcp_proxy import TcpProxy
from tests.serve_command import serve_command
from tests.tls_material import free_port
from tests.tools import REPO
from webhook.core.contract import Contract
from webhook.server.service_accounts import ServiceAccountCache
from webhook.server.settings import ServerSettings

pytestmark = pytest.mark.e2e

LABEL = "token-projector.io/service-accounts"
AUDIENCE = "token-projector.io/audience"
RBAC = REPO / "manifests" / "components" / "service-account-opt-in" / "rbac.yaml"
MEMORY_ACCOUNTS = 10_000
MEMORY_BOUND_BYTES = 8 * 1024 * 1024
PEAK_BOUND_BYTES = 48 * 1024 * 1024
"""The cache's memory for 10,000 ServiceAccounts must stay under this (measured: docs/serviceaccount-opt-in.md)."""


@dataclass
class OptInWebhook:
    webhook: Webhook
    proxy: TcpProxy
    token_file: Path
    ca_file: Path

    @property
    def log(self) -> str:
        return (self.webhook.workdir / "token-projector.log").read_text(errors="replace")


def grant_reader(control_plane: ControlPlane, work: Path) -> Path:
    """A ServiceAccount bound to the component's ClusterRole, and a real token of it in a file."""
    namespace = "tp-" + uuid.uuid4().hex[:8]
    control_plane.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    control_plane.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": "token-projector"}}
    )
    role, binding = yaml.safe_load_all(RBAC.read_text())
    role["metadata"]["name"] = binding["metadata"]["name"] = binding["roleRef"]["name"] = namespace + "-reader"
    binding["subjects"][0]["namespace"] = namespace
    control_plane.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", body=role)
    control_plane.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body=binding)
    answer = control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/token-projector/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    )
    token_file = work / "kube-token"
    token_file.write_text(answer["status"]["token"])
    token_file.chmod(0o600)
    return token_file


@pytest.fixture(scope="module")
def opt_in(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OptInWebhook]:
    work = tmp_path_factory.mktemp("service-account-opt-in")
    certs = work / "certs"
    subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out-dir", str(certs), "--ip", "127.0.0.1"],
        check=True,
        capture_output=True,
    )
    token_file = grant_reader(control_plane, work)
    api = urlparse(control_plane.url)
    proxy = TcpProxy((api.hostname or "127.0.0.1", api.port or 443))
    webhook = Webhook(free_port(), free_port(), certs, work)
    command = serve_command(
        port=webhook.port, probe_port=webhook.probe_port, cert_file=certs / "tls.crt", key_file=certs / "tls.key"
    )
    command += [
        "--service-account-opt-in",
        "--kube-api-url",
        f"https://127.0.0.1:{proxy.port}",
        "--kube-token-file",
        str(token_file),
        "--kube-ca-file",
        str(control_plane.workdir / "apiserver.crt"),
        "--log-level",
        "debug",
    ]
    log = (work / "token-projector.log").open("wb")
    webhook.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    name = "token-projector-sa-" + uuid.uuid4().hex[:6]
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{webhook.probe_port}/readyz", timeout=2).status == 200,
            what="token-projector with ServiceAccount opt-in",
            process=webhook.process,
            log=work / "token-projector.log",
        )
        ca_bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
        control_plane.request(
            "POST",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            body={
                "metadata": {"name": name},
                "webhooks": [
                    {
                        "name": "service-account.token-projector.io",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "reinvocationPolicy": "IfNeeded",
                        "timeoutSeconds": 5,
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{webhook.port}/mutate/service-accounts",
                            "caBundle": ca_bundle,
                        },
                        "rules": [
                            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
                        ],
                        "namespaceSelector": {"matchLabels": {LABEL: "enabled"}},
                    }
                ],
            },
        )
        time.sleep(1)  # the API server's webhook configuration informer picks it up
        yield OptInWebhook(webhook, proxy, token_file, control_plane.workdir / "apiserver.crt")
    finally:
        with contextlib.suppress(ApiError):
            control_plane.request(
                "DELETE", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
            )
        webhook.stop()
        proxy.close()
        log.close()


def labelled_namespace(control_plane: ControlPlane) -> str:
    return control_plane.namespace(labels={LABEL: "enabled"})


def create_account(control_plane: ControlPlane, namespace: str, name: str, annotations: dict[str, str]) -> None:
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        body={"metadata": {"name": name, "annotations": annotations}},
    )


def annotate(control_plane: ControlPlane, namespace: str, name: str, annotations: dict[str, str]) -> None:
    account = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
    account["metadata"]["annotations"] = annotations
    control_plane.request("PUT", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}", body=account)


def audiences_of_new_pod(control_plane: ControlPlane, namespace: str, account: str) -> list[str]:
    """The audiences of the token volume of a Pod created (dry run: nothing is stored) as ``account``."""
    stored = control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods?dryRun=All",
        body=pod(generate_name="app-", name=None, serviceAccountName=account),
    )
    return [
        source["serviceAccountToken"]["audience"]
        for volume in token_volumes(stored)
        for source in volume["projected"]["sources"]
    ]


def eventually(check: Any, expected: Any, *, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while (seen := check()) != expected:
        assert time.monotonic() < deadline, f"still {seen!r}, expected {expected!r}"
        time.sleep(0.2)


def test_a_pod_created_in_the_same_second_as_its_annotated_service_account_gets_its_token(
    opt_in: OptInWebhook, control_plane: ControlPlane
) -> None:
    namespace = labelled_namespace(control_plane)
    create_account(control_plane, namespace, "api", {AUDIENCE: "vault", "token-projector.io/expiration-seconds": "900"})
    stored = control_plane.create_pod(namespace, pod(serviceAccountName="api"))
    (volume,) = token_volumes(stored)
    assert volume["projected"]["sources"][0]["serviceAccountToken"] == {
        "audience": "vault",
        "expirationSeconds": 900,
        "path": "token",
    }


def test_a_pod_of_an_unannotated_account_and_a_namespace_without_the_label_are_left_alone(
    opt_in: OptInWebhook, control_plane: ControlPlane
) -> None:
    namespace = labelled_namespace(control_plane)
    assert audiences_of_new_pod(control_plane, namespace, "app") == []
    unlabelled = control_plane.namespace()
    create_account(control_plane, unlabelled, "api", {AUDIENCE: "vault"})
    assert audiences_of_new_pod(control_plane, unlabelled, "api") == []


def test_a_changed_annotation_reaches_the_next_pods(opt_in: OptInWebhook, control_plane: ControlPlane) -> None:
    namespace = labelled_namespace(control_plane)
    create_account(control_plane, namespace, "api", {AUDIENCE: "vault"})
    eventually(lambda: audiences_of_new_pod(control_plane, namespace, "api"), ["vault"])
    annotate(control_plane, namespace, "api", {AUDIENCE: "data-store"})
    eventually(lambda: audiences_of_new_pod(control_plane, namespace, "api"), ["data-store"])


def test_a_pod_created_right_after_its_cached_account_is_annotated_gets_the_token_or_is_refused(
    opt_in: OptInWebhook, control_plane: ControlPlane
) -> None:
    # No `eventually`: the Pod follows the annotation's PUT at once. The cache is behind the API server
    # by the watch's latency (docs/serviceaccount-opt-in.md says so); here, on a healthy watch, the event
    # must win against a whole Pod admission, every time, and a Pod is never admitted without its token.
    namespace = labelled_namespace(control_plane)
    for attempt in range(5):
        name = f"api-{attempt}"
        create_account(control_plane, namespace, name, {})
        eventually(lambda name=name: audiences_of_new_pod(control_plane, namespace, name), [])  # cached, unannotated
        annotate(control_plane, namespace, name, {AUDIENCE: "vault"})
        try:
            audiences: list[str] | str = audiences_of_new_pod(control_plane, namespace, name)
        except ApiError as refused:
            audiences = refused.message
        assert audiences == ["vault"] or f"ServiceAccount {namespace}/{name}" in audiences, (
            f"attempt {attempt}: {audiences!r} right after the annotation"
        )


def test_a_deleted_and_recreated_account_keeps_none_of_its_old_annotations(
    opt_in: OptInWebhook, control_plane: ControlPlane
) -> None:
    namespace = labelled_namespace(control_plane)
    create_account(control_plane, namespace, "api", {AUDIENCE: "vault"})
    eventually(lambda: audiences_of_new_pod(control_plane, namespace, "api"), ["vault"])
    control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/api")
    create_account(control_plane, namespace, "api", {})
    eventually(lambda: audiences_of_new_pod(control_plane, namespace, "api"), [])


def test_a_bad_value_on_the_account_is_refused_naming_the_account(
    opt_in: OptInWebhook, control_plane: ControlPlane
) -> None:
    namespace = labelled_namespace(control_plane)
    create_account(control_plane, namespace, "api", {AUDIENCE: "https://kubernetes.default.svc"})
    with pytest.raises(ApiError) as refused:
        control_plane.create_pod(namespace, pod(serviceAccountName="api"))
    assert f"annotation {AUDIENCE} from ServiceAccount {namespace}/api is" in refused.value.message


def test_a_broken_watch_refuses_what_it_cannot_read_and_resumes_with_what_changed_meanwhile(
    opt_in: OptInWebhook, control_plane: ControlPlane
) -> None:
    namespace = labelled_namespace(control_plane)
    create_account(control_plane, namespace, "api", {AUDIENCE: "vault"})
    eventually(lambda: audiences_of_new_pod(control_plane, namespace, "api"), ["vault"])
    with opt_in.proxy.down():
        annotate(control_plane, namespace, "api", {AUDIENCE: "data-store"})
        create_account(control_plane, namespace, "new", {AUDIENCE: "vault"})
        # Fail closed: an account the cache has not seen cannot be read now, and the Pod is refused.
        with pytest.raises(ApiError) as refused:
            control_plane.create_pod(namespace, pod(serviceAccountName="new"))
        assert f"token-projector could not read ServiceAccount {namespace}/new" in refused.value.message
        time.sleep(1)  # the cache backs off and retries against a closed door meanwhile
    # Back up: the cache resumes and sees both the change and the new account, without a restart.
    eventually(lambda: audiences_of_new_pod(control_plane, namespace, "api"), ["data-store"], within=45)
    assert audiences_of_new_pod(control_plane, namespace, "new") == ["vault"]
    assert "ServiceAccount cache" in opt_in.log
    assert "retrying in" in opt_in.log
    assert opt_in.token_file.read_text() not in opt_in.log, "the token is never logged"


def test_the_cache_of_10000_service_accounts_stays_under_its_memory_bound(
    opt_in: OptInWebhook, control_plane: ControlPlane, record_property: Any
) -> None:
    namespaces = [control_plane.namespace() for _ in range(10)]
    filler = "x" * 1024  # like kubectl's last-applied-configuration: the cache must not keep it

    def create(i: int) -> None:
        annotations = {"kubectl.kubernetes.io/last-applied-configuration": filler}
        if i % 2 == 0:
            annotations[AUDIENCE] = f"audience-{i}"
        create_account(control_plane, namespaces[i % 10], f"account-{i}", annotations)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(MEMORY_ACCOUNTS)))
    try:
        settings = ServerSettings(
            kube_api_url=control_plane.url,
            kube_token_file=str(opt_in.token_file),
            kube_ca_file=str(opt_in.ca_file),
            service_account_opt_in=True,
        )
        retained, peak, count = asyncio.run(measure_cache(settings))
        record_property("cache_bytes", retained)
        print(f"\n{count} ServiceAccounts: cache retains {retained / 2**20:.2f} MiB, list peak {peak / 2**20:.2f} MiB")
        assert count >= MEMORY_ACCOUNTS
        assert retained < MEMORY_BOUND_BYTES
        assert peak < PEAK_BOUND_BYTES, "the list is read in pages, each dropped once read"
    finally:
        for namespace in namespaces:
            control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts")


async def measure_cache(settings: ServerSettings) -> tuple[int, int, int]:
    """(bytes the synced cache retains, peak bytes while listing, accounts cached), by tracemalloc."""
    cache = ServiceAccountCache(settings, Contract())
    await cache.start()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.synced.wait(), 120)
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cache.close()
    return retained - before, peak - before, len(cache)
