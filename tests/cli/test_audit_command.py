"""``token-projector audit`` as a process: missing client, unreachable or misbehaving API server.

The real API server's answers are proven in ``tests/e2e/test_audit.py``. Here a ``FakeApiServer``
(plain HTTP on loopback) produces what a real one will not: a Secret list with the data it was
asked to leave out, a 500 for one resource, credentials refused.
"""

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.cli.kubeconfig import write_kubeconfig
from tests.tls_material import free_port
from tests.tools import REPO

RUN_AUDIT = "import sys\nfrom webhook.cli import main\nsys.exit(main(sys.argv[1:]))\n"
"""``python -m webhook`` as a ``-c`` program, so a test can put a prelude before it."""
TOKEN_VALUE = "FAKE-LEGACY-TOKEN-in-the-fake-servers-secret-data"
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class FakeApiServer:
    """A fake Kubernetes API: empty lists everywhere, unless ``answers`` says otherwise for a path."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}
        self.requests: list[tuple[str, dict[str, list[str]], str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                fake.requests.append((url.path, parse_qs(url.query), self.headers.get("Accept", "")))
                kind = "PartialObjectMetadataList" if url.path == "/api/v1/secrets" else "List"
                status, body = fake.answers.get(url.path, (200, {"kind": kind, "metadata": {}, "items": []}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def kubeconfig(tmp_path: Path, server: str) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", server, token="t")


def audit(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", prelude + RUN_AUDIT, "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def test_without_the_kubernetes_client_it_says_which_extra_to_install(tmp_path: Path) -> None:
    result = audit(
        "--kubeconfig",
        str(kubeconfig(tmp_path, "http://127.0.0.1:1")),
        prelude="import sys\nsys.modules['kubernetes'] = None\n",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "token-projector: configuration error: token-projector audit needs the Kubernetes client: "
        "pip install 'token-projector[audit]'"
    )


def test_an_unreachable_api_server_exits_2_naming_it(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    result = audit("--kubeconfig", str(kubeconfig(tmp_path, server)))
    assert result.returncode == 2
    assert f"token-projector: cannot reach the Kubernetes API at {server}" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_are_asked_for_as_metadata_of_token_secrets_only(fake: FakeApiServer, tmp_path: Path) -> None:
    result = audit("--kubeconfig", str(kubeconfig(tmp_path, fake.url)), "-o", "json")
    assert result.returncode == 0, result.stderr
    [(_, query, accept)] = [r for r in fake.requests if r[0] == "/api/v1/secrets"]
    assert accept == METADATA_ONLY
    assert query["fieldSelector"] == ["type=kubernetes.io/service-account-token"]
    assert {r[0] for r in fake.requests} >= {"/api/v1/pods", "/apis/apps/v1/deployments", "/apis/batch/v1/cronjobs"}


def test_a_server_that_sends_secret_data_anyway_has_it_dropped_unread(fake: FakeApiServer, tmp_path: Path) -> None:
    secret = {
        "metadata": {"name": "app-token-x7k2p", "namespace": "shop"},
        "type": "kubernetes.io/service-account-token",
        "data": {"token": TOKEN_VALUE},
    }
    fake.answers["/api/v1/secrets"] = (200, {"kind": "SecretList", "metadata": {}, "items": [secret]})
    result = audit("--kubeconfig", str(kubeconfig(tmp_path, fake.url)), "-o", "json")
    report = json.loads(result.stdout)
    assert report["legacyTokenSecrets"] == []
    [unread] = report["notRead"]
    assert unread["resource"] == "secrets"
    assert "did not answer with metadata only (got 'SecretList'); secrets were dropped unread" in unread["message"]
    assert TOKEN_VALUE not in result.stdout + result.stderr
    assert result.returncode == 2, "an incomplete audit is not a pass"


def test_one_failing_list_is_reported_and_the_rest_goes_on(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.answers["/api/v1/pods"] = (500, {"kind": "Status", "message": "etcdserver: request timed out"})
    legacy = {
        "metadata": {"name": "refused", "namespace": "shop"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"token-projector.io/audience": "data-store"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "volumes": [{"name": "t", "secret": {"secretName": "app-token-x7k2p"}}],
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "volumeMounts": [
                                {"name": "t", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
                            ],
                        }
                    ],
                },
            }
        },
    }
    fake.answers["/apis/apps/v1/deployments"] = (200, {"kind": "DeploymentList", "metadata": {}, "items": [legacy]})
    result = audit("--kubeconfig", str(kubeconfig(tmp_path, fake.url)))
    assert "token-projector: cannot list pods cluster-wide: etcdserver: request timed out" in result.stderr
    assert "PODS THE WEBHOOK WOULD REFUSE OR WARN ABOUT (0) - NOT READ, see below" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "shop/refused" in line)
    assert line.split()[:4] == ["Deployment", "shop/refused", "refused", "refused"]
    assert result.returncode == 1, "a refusal found outranks the incomplete read"


def test_refused_credentials_stop_the_audit_at_once(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.answers["/api/v1/secrets"] = (401, {"kind": "Status", "message": "Unauthorized"})
    result = audit("--kubeconfig", str(kubeconfig(tmp_path, fake.url)))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"token-projector: the Kubernetes API at {fake.url} refused the credentials: Unauthorized"
    )


def test_pages_are_followed_to_the_end(fake: FakeApiServer, tmp_path: Path) -> None:
    page = {
        "kind": "PodList",
        "metadata": {"continue": "next"},
        "items": [{"metadata": {"name": "a", "namespace": "n"}, "spec": {"containers": []}}],
    }
    fake.answers["/api/v1/pods"] = (200, page)
    # The fake answers every page alike: stop it from looping by answering the second page empty.
    original = fake.answers

    class Paged(dict[str, tuple[int, dict[str, Any]]]):
        def get(self, path: str, default: Any = None) -> Any:
            if path == "/api/v1/pods" and any(q.get("continue") for p, q, _ in fake.requests if p == path):
                return (200, {"kind": "PodList", "metadata": {}, "items": []})
            return original.get(path, default)

    fake.answers = Paged(original)
    result = audit("--kubeconfig", str(kubeconfig(tmp_path, fake.url)), "-o", "json")
    assert result.returncode == 0, result.stderr
    pages = [q for p, q, _ in fake.requests if p == "/api/v1/pods"]
    assert [q.get("continue") for q in pages] == [None, ["next"]]
    assert pages[0]["limit"] == ["500"]
