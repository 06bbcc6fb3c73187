"""The node tests' fixtures: one real node per session, the webhook's image registered on it, the example's Pods.

The node tests run first in the session and ``test_rotation.py`` runs last (``pytest_collection_modifyitems``):
the example's Pods start with the session's first node test, with tokens of the shortest lifetime the API
server allows (600 s), and the rotation test, at the end, waits for the kubelet's refresh at 80% of it while
the rest of the suite runs in between.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ControlPlane
from tests.e2e.tokens import claims_of
from tests.node.node import Node, start_node
from tests.node.workloads import (
    EXAMPLE,
    READ_TOKEN,
    TOKEN_PROJECTOR,
    digest,
    on_loopback,
    set_env,
    template,
)
from tests.tls_material import free_port
from tests.tools import REPO

HERE = Path(__file__).parent
LAST = HERE / "test_rotation.py"
ROTATION_SECONDS = 600
"""The API server's shortest token lifetime: the kubelet refreshes the file at 80% of it, about 480 s."""
WATCH_SECONDS = 60
"""How often the api's token is read while the session runs: far less than a token's ≈ 480 s, so none is missed."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Node tests first (the rotation's wait starts with them), the rotation test last, the rest in between."""
    here = [item for item in items if HERE in Path(item.path).parents]
    last = [item for item in here if Path(item.path) == LAST]
    first = [item for item in here if Path(item.path) != LAST]
    rest = [item for item in items if HERE not in Path(item.path).parents]
    items[:] = first + rest + last


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    started = start_node(tmp_path_factory.mktemp("node"))
    try:
        yield started
    finally:
        left = started.stop()
        assert not left, f"the host was not fully restored: {left}"


@dataclass
class WebhookPod:
    """token-projector from its image, as its Deployment runs it, registered with the API server by URL."""

    namespace: str
    pod: dict[str, Any]
    port: int
    probe_port: int
    certs: Path
    registered: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def webhook(node: Node, tmp_path_factory: pytest.TempPathFactory) -> WebhookPod:
    plane = node.control_plane
    certs = tmp_path_factory.mktemp("webhook-certs")
    made = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out-dir", str(certs), "--ip", "127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert made.returncode == 0, made.stderr
    namespace = node.namespace()
    deployment = REPO / "manifests" / "base" / "deployment.yaml"
    pod = template(deployment, "token-projector")
    secret = next(v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v)
    plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={
            "metadata": {"name": secret},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": (certs / "tls.crt").read_text(), "tls.key": (certs / "tls.key").read_text()},
        },
    )
    plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        body={"metadata": {"name": pod["spec"]["serviceAccountName"]}},
    )
    port, probe_port = free_port(), free_port()
    on_loopback(pod, "token-projector", image_name="token-projector", ports={"https": port, "http-probes": probe_port})
    set_env(
        pod["spec"]["containers"][0],
        TOKEN_PROJECTOR_ADDRESS="127.0.0.1",
        TOKEN_PROJECTOR_PORT=str(port),
        TOKEN_PROJECTOR_PROBE_PORT=str(probe_port),
    )
    stored = node.run_pod(namespace, pod)
    kubeconfig = plane.kubeconfig()
    registered = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "register",
            "--kubeconfig",
            str(kubeconfig),
            "--url",
            f"https://127.0.0.1:{port}/mutate",
            "--ca-file",
            str(certs / "ca.crt"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert registered.returncode == 0, registered.stderr
    return WebhookPod(namespace, stored, port, probe_port, certs, registered)


@dataclass
class Example:
    """The article's api and data store, both from the example's image, as Pods on the node."""

    node: Node
    api_namespace: str
    data_store_namespace: str
    data_store_port: int
    api: dict[str, Any]
    """The api Pod as stored, after it became Ready."""
    api_port: int
    started: float
    """``time.monotonic()`` when the api Pod was created: its first token is at most this old."""
    first_token: tuple[str, int]
    """The api's first token as ``token_seen`` tells it: (digest, ``iat``)."""
    issued: list[int] = field(default_factory=list)
    """The ``iat`` of each token the api has had, in order: ``token_seen`` records every new one it reads."""
    _recording: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def call(self, port: int | None = None) -> tuple[int, dict[str, Any]]:
        """``GET /`` on the api (or another api on ``port``): the data store's answer, passed through."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.api_port}/", timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def api_pod(self, name: str, *, audience: str, account: str) -> tuple[dict[str, Any], int]:
        """Another api Pod in the api's namespace, for ``audience`` and ServiceAccount ``account``: (stored, port)."""
        port = free_port()
        pod = template(EXAMPLE / "manifests" / "api.yaml", "api")
        pod["metadata"]["annotations"][f"{TOKEN_PROJECTOR}/audience"] = audience
        pod["metadata"]["annotations"][f"{TOKEN_PROJECTOR}/expiration-seconds"] = str(ROTATION_SECONDS)
        pod["spec"]["serviceAccountName"] = account
        on_loopback(pod, name, image_name="api-and-data-store", ports={"http": port})
        set_env(
            pod["spec"]["containers"][0],
            ADDRESS="127.0.0.1",
            PORT=str(port),
            DATA_STORE_URL=f"http://127.0.0.1:{self.data_store_port}",
        )
        return self.node.run_pod(self.api_namespace, pod), port

    def token_seen(self) -> tuple[str, int]:
        """The token the api's container reads now (``kubectl exec``, as its own user): its digest and ``iat``."""
        read = json.loads(self.node.read_in(self.api_namespace, self.api["metadata"]["name"], "api", READ_TOKEN))
        issued_at: int = claims_of(read["token"])["iat"]
        with self._recording:
            if not self.issued or self.issued[-1] != issued_at:
                self.issued.append(issued_at)
        return digest(read["token"]), issued_at

    def watch_tokens(self, stop: threading.Event) -> None:
        """Read the api's token every ``WATCH_SECONDS`` until ``stop``, so that ``issued`` holds every rotation."""
        while not stop.wait(WATCH_SECONDS):
            # A read that fails (a busy node) is retried at the next tick; a token missed altogether would join
            # two rotations into one interval, which the rotation test refuses: it can fail, never pass wrongly.
            with contextlib.suppress(Exception):
                self.token_seen()


@pytest.fixture(scope="session")
def example(node: Node, webhook: WebhookPod) -> Iterator[Example]:
    plane: ControlPlane = node.control_plane
    api_namespace, data_store_namespace = node.namespace(), node.namespace()
    for namespace, account in (
        (api_namespace, "api"),
        (api_namespace, "intruder"),
        (data_store_namespace, "data-store"),
    ):
        plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": account}})
    # The example's least-privilege ClusterRole (create tokenreviews) is in its kustomization; the built-in
    # system:auth-delegator grants the same verb (and subjectaccessreviews, unused here).
    plane.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        body={
            "metadata": {"name": f"data-store-{data_store_namespace}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "data-store", "namespace": data_store_namespace}],
        },
    )
    data_store_port = free_port()
    pod = template(EXAMPLE / "manifests" / "data-store.yaml", "data-store")
    on_loopback(pod, "data-store", image_name="api-and-data-store", ports={"http": data_store_port})
    api_server_port = plane.url.rsplit(":", 1)[1]
    set_env(
        pod["spec"]["containers"][0],
        ADDRESS="127.0.0.1",
        PORT=str(data_store_port),
        ALLOW=f"{api_namespace}/api",
        # in-cluster credentials, with the API server where the kubernetes Service would have it
        KUBERNETES_SERVICE_HOST="127.0.0.1",
        KUBERNETES_SERVICE_PORT=api_server_port,
    )
    node.run_pod(data_store_namespace, pod)
    example = Example(node, api_namespace, data_store_namespace, data_store_port, {}, 0, time.monotonic(), ("", 0))
    example.api, example.api_port = example.api_pod("api", audience="data-store", account="api")
    example.first_token = example.token_seen()
    stop = threading.Event()
    watcher = threading.Thread(target=example.watch_tokens, args=(stop,), name="api-token-watcher", daemon=True)
    watcher.start()
    try:
        yield example
    finally:
        stop.set()
        watcher.join(timeout=120)
