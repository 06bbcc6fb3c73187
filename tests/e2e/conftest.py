"""The real control plane on loopback: etcd and kube-apiserver, and token-projector registered with it.

Binaries come from ``tests/e2e/build.sh`` (``make e2e-deps``: built from the official Go modules, cached
outside git) or from ``$KUBEBUILDER_ASSETS``. Without them the e2e tests skip, or fail under
``REQUIRE_TEST_TOOLS=1`` (CI). Everything started here is stopped at the end of the session.
"""

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.serve_command import serve_command
from tests.tls_material import free_port
from tests.tools import REPO, missing

HERE = Path(__file__).parent
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_TOKEN = "e2e-admin-" + uuid.uuid4().hex
NOBODY_TOKEN = "e2e-nobody-" + uuid.uuid4().hex
"""A user the API server knows but RBAC grants nothing."""

pytestmark = pytest.mark.e2e


def binaries() -> Path:
    """The folder with etcd, kube-apiserver and kubectl, or skip/fail saying how to get them."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    candidates = [Path(assets)] if assets else []
    where = subprocess.run([str(HERE / "build.sh"), "--where"], capture_output=True, text=True, check=False)
    candidates.append(Path(where.stdout.strip()))
    for folder in candidates:
        if all((folder / name).exists() for name in ("etcd", "kube-apiserver", "kubectl")):
            return folder
    return missing("the e2e control plane is not built: run `make e2e-deps` (needs Go; or set KUBEBUILDER_ASSETS)")


def wait_until(
    check: Any,
    *,
    what: str,
    timeout: float = 60,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log and log.exists() else ""
            raise AssertionError(f"{what}: the process exited with {process.returncode}\n{tail}")
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class ApiError(Exception):
    status: int
    body: dict[str, Any]

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


@dataclass
class ControlPlane:
    url: str
    bin: Path
    workdir: Path
    context: ssl.SSLContext
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def request(self, method: str, path: str, *, body: object = None, token: str = ADMIN_TOKEN) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, json.loads(error.read() or b"{}")) from None

    def kubeconfig(self, *, token: str = ADMIN_TOKEN, name: str = "admin") -> Path:
        path = self.workdir / f"kubeconfig-{name}"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "e2e",
                    "clusters": [
                        {
                            "name": "e2e",
                            "cluster": {
                                "server": self.url,
                                "certificate-authority": str(self.workdir / "apiserver.crt"),
                            },
                        }
                    ],
                    "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": name}}],
                    "users": [{"name": name, "user": {"token": token}}],
                }
            )
        )
        return path

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig()), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def namespace(self, *, labels: dict[str, str] | None = None) -> str:
        """A fresh namespace with a ServiceAccount ``app`` (no controller-manager runs here to make ``default``)."""
        name = "e2e-" + uuid.uuid4().hex[:8]
        self.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name, "labels": labels or {}}})
        self.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", body={"metadata": {"name": "app"}})
        return name

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod)


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    folder = binaries()
    work = tmp_path_factory.mktemp("control-plane")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        client_port, peer_port = free_port(), free_port()
        etcd = _start(
            [
                str(folder / "etcd"),
                "--name",
                "e2e",
                "--data-dir",
                str(work / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"e2e=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
            work / "etcd.log",
        )
        processes.append(etcd)
        wait_until(
            lambda: b"true" in urllib.request.urlopen(f"http://127.0.0.1:{client_port}/health", timeout=2).read(),
            what="etcd",
            process=etcd,
        )

        key = ec.generate_private_key(ec.SECP256R1())
        (work / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (work / "sa.pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        (work / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n{NOBODY_TOKEN},nobody,nobody\n')
        port = free_port()
        apiserver = _start(
            [
                str(folder / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{client_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={work / 'apiserver-certs'}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--api-audiences={ISSUER}",
                f"--service-account-key-file={work / 'sa.pub'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                # The reconciler would publish 127.0.0.1 as the kubernetes Service's endpoint; it refuses
                # loopback, and nothing in these tests reaches the API server through that Service.
                "--endpoint-reconciler-type=none",
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,Priority,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                "--allow-privileged=false",
            ],
            work / "kube-apiserver.log",
        )
        processes.append(apiserver)
        serving_cert = work / "apiserver-certs" / "apiserver.crt"
        wait_until(
            serving_cert.exists,
            what="kube-apiserver's serving certificate",
            process=apiserver,
            log=work / "kube-apiserver.log",
        )
        shutil.copy(serving_cert, work / "apiserver.crt")
        context = ssl.create_default_context(cafile=str(work / "apiserver.crt"))
        plane = ControlPlane(f"https://127.0.0.1:{port}", folder, work, context, processes)

        def ready() -> bool:
            try:
                return plane.request("GET", "/api/v1/namespaces/default") is not None
            except ApiError:
                return False

        wait_until(ready, what="kube-apiserver", process=apiserver, timeout=120, log=work / "kube-apiserver.log")
        yield plane
    finally:
        for process in reversed(processes):
            _stop(process)


@dataclass
class Webhook:
    """token-projector serve on loopback, as a developer runs it next to a cluster."""

    port: int
    probe_port: int
    certs: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def start(self) -> None:
        self.process = _start(
            serve_command(
                port=self.port,
                probe_port=self.probe_port,
                cert_file=self.certs / "tls.crt",
                key_file=self.certs / "tls.key",
            ),
            self.workdir / "token-projector.log",
        )
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=2).status == 200,
            what="token-projector",
            process=self.process,
        )

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@dataclass
class Registered:
    webhook: Webhook
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


def register(control_plane: ControlPlane, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    kubeconfig = control_plane.kubeconfig(token=token, name="admin" if token == ADMIN_TOKEN else "other")
    return subprocess.run(
        [sys.executable, "-m", "webhook", "register", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


@pytest.fixture(scope="session")
def registered(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    work = tmp_path_factory.mktemp("token-projector")
    certs = work / "certs"
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out-dir", str(certs), "--ip", "127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    webhook = Webhook(free_port(), free_port(), certs, work)
    webhook.start()
    try:
        args = ("--url", webhook.url, "--ca-file", str(certs / "ca.crt"))
        first = register(control_plane, *args)
        second = register(control_plane, *args)
        yield Registered(webhook, first, second)
    finally:
        webhook.stop()
