"""The example's image (examples/api-and-data-store/Dockerfile) run as its Deployments run it, without an engine.

The same helpers as tests/install/test_image_runtime.py (docs/image.md): the venv is built by the
Dockerfile's own build stage at its own path (``image_build``), then each service runs with every
setting of its Deployment's container (``image_pod``): UID/GID 65532, fsGroup, no new privileges, no
capabilities, read-only root, in a private mount and network namespace (``image_sandbox``).

Two stand-ins, named: the Dockerfile's context is the repository's root (it installs ``audience_token/``),
so the build gets a context folder holding the Dockerfile and links to the two folders it copies from;
and the Pods' projected volumes, which ``image_pod`` does not reproduce, are Secret volumes (the same
kubelet atomic-writer layout, read-only): the api's is the one ``token-projector review --patched``
adds to its Deployment, the data store's stands in for its automounted ``kube-api-access`` volume. The
network namespace holds nothing else, so the api's data store and the data store's API server are
unreachable: what each does then is part of what is tested here. The e2e test runs them together.
"""

import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.install.image_build import Image, build_image
from tests.install.image_pod import PodSpec, assert_unprivileged, secret_volumes, start
from tests.install.image_sandbox import Container
from tests.tls_material import make_certs
from tests.tools import REPO

EXAMPLE = REPO / "examples" / "api-and-data-store"
DOCKERFILE = EXAMPLE / "Dockerfile"
MANIFESTS = EXAMPLE / "manifests"
CONTEXT_ENTRIES = ("audience_token", "examples", ".dockerignore")
"""What the Dockerfile's COPY lines read from the repository's root (a COPY of anything else fails loudly)."""
IN_CLUSTER = "/var/run/secrets/kubernetes.io/serviceaccount"
API_SERVER_PORT = 6443
"""KUBERNETES_SERVICE_PORT as the kubelet sets it; nothing listens on it in the container's network."""


def jwt_shaped(claims: dict[str, Any]) -> str:
    """A well-formed but unsigned JWT: a verifier must ask the API server about it (no signature is checked here)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.{part({'s': 'x' * 40})}"


def token_for(audience: str, *, expires_in: int) -> str:
    now = int(time.time())
    return jwt_shaped({"aud": [audience], "exp": now + expires_in, "iat": now, "sub": "system:serviceaccount:api:api"})


@dataclass
class Run:
    """What one container's life looked like from outside."""

    spec: PodSpec
    writable: list[str] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    returncode: int | None = None
    changed: list[str] = field(default_factory=list)
    log: str = ""
    secrets: list[str] = field(default_factory=list)
    """Every token the container was given or sent: none may appear in its log."""


def call(container: Container, port: int, path: str, *, token: str | None = None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.sock = container.connect(port)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}
    finally:
        connection.close()


def answers_200(container: Container, port: int, path: str) -> bool:
    try:
        return call(container, port, path)[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="api-and-data-store-image-"))
    os.chmod(folder, 0o755)  # noqa: S103 -- the image's files are world-readable, as in the image; nothing secret
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def image(workspace: Path) -> Image:
    # `docker build -f examples/api-and-data-store/Dockerfile .`: the root is the context.
    context = workspace / "context"
    context.mkdir()
    shutil.copy(DOCKERFILE, context / "Dockerfile")
    for name in CONTEXT_ENTRIES:
        (context / name).symlink_to(REPO / name)
    return build_image(context / "Dockerfile", workspace=workspace / "image")


def spec_of(manifest: Path, *, patched: bool, workspace: Path) -> PodSpec:
    """The Deployment's Pod spec; ``patched``: as token-projector's ``review --patched`` says the webhook makes it."""
    if patched:
        command = [sys.executable, "-m", "webhook", "review", str(manifest), "-o", "yaml", "--patched"]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        manifest = workspace / manifest.name
        manifest.write_text(result.stdout)
    return PodSpec.from_manifest(manifest)


def as_secret_volumes(spec: PodSpec, *, extra: dict[str, str] | None = None) -> PodSpec:
    """``spec`` with each projected volume replaced by a Secret volume of the same name and mode (see docstring)."""
    pod = json.loads(json.dumps(spec.pod))
    container = json.loads(json.dumps(spec.container))
    for volume in pod.get("volumes", []):
        if "projected" in volume:
            volume["secret"] = {"defaultMode": volume.pop("projected").get("defaultMode", 0o644)}
    for name, path in (extra or {}).items():
        pod.setdefault("volumes", []).append({"name": name, "secret": {"defaultMode": 0o644}})
        container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path, "readOnly": True})
    pod["containers"] = [container]
    return PodSpec(container=container, pod=pod)


def live(container: Container, run: Run, *, probe: Callable[[], bool]) -> None:
    """Start, wait for the probe, read the process's status (the rest of the run is the caller's)."""
    run.writable = container.writable_mounts()
    container.start()
    container.wait_until(probe, timeout=30, what="ready")
    run.status = container.proc_status()


def stop(container: Container, run: Run, before: dict[str, tuple[object, ...]]) -> None:
    container.signal(signal.SIGTERM)
    run.returncode = container.wait(timeout=run.spec.pod.get("terminationGracePeriodSeconds", 30))
    after = container.snapshot(run.writable)
    run.changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    run.log = container.log


@pytest.fixture(scope="module")
def api_run(image: Image, workspace: Path) -> Iterator[Run]:
    spec = as_secret_volumes(spec_of(MANIFESTS / "api.yaml", patched=True, workspace=workspace))
    run = Run(spec=spec)
    volumes = secret_volumes(spec, workspace / "api-volumes")
    (token_volume,) = volumes.values()
    first, second = token_for("data-store", expires_in=3600), token_for("data-store", expires_in=3601)
    run.secrets = [first, second]
    token_volume.write({"token": first.encode()})
    port = spec.port("http")
    container = start(image, spec, workspace=workspace / "api-run", secrets=volumes)
    try:
        before = container.snapshot(container.writable_mounts())
        live(container, run, probe=lambda: answers_200(container, port, "/readyz"))
        run.answers["/"] = call(container, port, "/")
        token_volume.write({"token": second.encode()})
        container.wait_until(lambda: "re-read the rotated" in container.log, timeout=10, what="rotation logged")
        stop(container, run, before)
        yield run
    finally:
        container.close()


@pytest.fixture(scope="module")
def store_run(image: Image, workspace: Path) -> Iterator[Run]:
    spec = as_secret_volumes(
        spec_of(MANIFESTS / "data-store.yaml", patched=False, workspace=workspace),
        extra={"kube-api-access": IN_CLUSTER},
    )
    # The kubelet gives every container the API server's address (the kubernetes Service) in these variables.
    service_env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(API_SERVER_PORT)},
    ]
    spec = PodSpec(container={**spec.container, "env": [*spec.container.get("env", []), *service_env]}, pod=spec.pod)
    run = Run(spec=spec)
    volumes = secret_volumes(spec, workspace / "store-volumes")
    own = token_for("https://kubernetes.default.svc", expires_in=3607)
    ca = make_certs(workspace / "cluster-ca") / "ca.crt"
    volumes["kube-api-access"].write({"token": own.encode(), "ca.crt": ca.read_bytes(), "namespace": b"data-store"})
    caller = token_for("data-store", expires_in=3600)
    run.secrets = [own, caller]
    port = spec.port("http")
    container = start(image, spec, workspace=workspace / "store-run", secrets=volumes)
    try:
        before = container.snapshot(container.writable_mounts())
        live(container, run, probe=lambda: answers_200(container, port, "/healthz"))
        run.answers["no token"] = call(container, port, "/")
        run.answers["garbage"] = call(container, port, "/", token="not-a-token")
        run.answers["a token"] = call(container, port, "/", token=caller)
        stop(container, run, before)
        yield run
    finally:
        container.close()


def test_the_venv_holds_the_library_and_both_services_at_the_images_path_without_pip(image: Image) -> None:
    (layer,) = image.layers
    assert layer.source is not None
    assert layer.target == "/opt/api-and-data-store"
    packages = layer.source / "lib" / f"python{image.python}" / "site-packages"
    assert (packages / "audience_token" / "__init__.py").is_file()
    assert (packages / "services" / "api.py").is_file()
    assert (packages / "services" / "data_store.py").is_file()
    assert list((packages / "services" / "__pycache__").glob("api.*.pyc")), "byte-code compiled at build time"
    assert "home = /usr/local/bin\n" in (layer.source / "pyvenv.cfg").read_text()
    assert not (layer.source / "bin" / "pip").exists(), "the build stage removes pip"


@pytest.mark.parametrize("name", ["api_run", "store_run"])
def test_each_service_runs_as_its_deployments_user_without_privileges(
    request: pytest.FixtureRequest, name: str
) -> None:
    run: Run = request.getfixturevalue(name)
    assert_unprivileged(run.spec, run.status)


@pytest.mark.parametrize("name", ["api_run", "store_run"])
def test_each_service_writes_nothing_on_a_read_only_root_and_stops_on_sigterm_with_status_0(
    request: pytest.FixtureRequest, name: str
) -> None:
    run: Run = request.getfixturevalue(name)
    assert run.spec.security("readOnlyRootFilesystem") is True
    assert sorted(run.writable) == ["/dev", "/dev/shm"], "no emptyDir: nothing but the runtime's /dev is writable"
    assert run.changed == [], f"written: {run.changed}"
    assert run.returncode == 0, run.log[-3000:]
    assert "Traceback" not in run.log
    assert not [token for token in run.secrets if token in run.log or token.split(".")[-1] in run.log]


def test_the_api_reads_the_webhooks_token_file_and_answers_502_naming_the_unreachable_data_store(api_run: Run) -> None:
    env = {item["name"]: item["value"] for item in api_run.spec.container["env"]}
    assert env["SERVICE_ACCOUNT_TOKEN_PATH"] == "/var/run/secrets/token-projector.io/tokens/token", (
        "set by token-projector"
    )
    status, body = api_run.answers["/"]
    assert status == 502
    assert body["error"] == "data_store_unreachable"
    assert env["DATA_STORE_URL"] in body["message"]


def test_the_api_logs_the_kubelets_rotation_of_its_token_without_the_token(api_run: Run) -> None:
    lines = [line for line in api_run.log.splitlines() if "rotated service account token" in line]
    assert len(lines) == 1
    assert "/var/run/secrets/token-projector.io/tokens/token" in lines[0]


def test_the_data_store_refuses_garbage_without_asking_and_answers_503_without_its_api_server(store_run: Run) -> None:
    assert store_run.answers["no token"][0] == 401
    assert store_run.answers["garbage"][0] == 401
    assert store_run.answers["garbage"][1]["reason"] == "malformed"
    status, body = store_run.answers["a token"]
    assert status == 503, "a token it cannot have reviewed is never accepted"
    assert body["reason"] == "review_unavailable"
    assert f"https://127.0.0.1:{API_SERVER_PORT}" not in body["message"], "no client learns the API server's address"
    assert f"https://127.0.0.1:{API_SERVER_PORT}" in store_run.log, "the data store's log names it"
    assert "checking callers with TokenReviewer('data-store', allow='api/api', via='in-cluster')" in store_run.log
