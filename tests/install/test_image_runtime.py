"""The image run as the cluster runs it: the Deployment's user, read-only root, only its Secret and /tmp mounted.

No Docker engine runs here. The image's venv is built by the Dockerfile's own build stage, at its
own path, with Debian's Python standing in for the python base image (``image_build``); then
``token-projector serve`` runs with every setting of ``manifests/base/deployment.yaml``'s container
(``image_pod``) in a private mount and network namespace whose root and every mount but the
emptyDir and the runtime's ``/dev`` are read-only (``image_sandbox``). One run goes through the
whole life of a replica: ready, a review, a kubelet-style certificate rotation, metrics, SIGTERM;
each test reads one behaviour from that run. See docs/image.md for what only a real engine proves.
"""

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.install.image_build import Image, build_image
from tests.install.image_pod import PodSpec, assert_unprivileged, secret_volumes, start
from tests.install.image_sandbox import Container
from tests.tools import REPO

DOCKERFILE = REPO / "Dockerfile"
MANIFEST = REPO / "manifests" / "base" / "deployment.yaml"
REVIEW = (REPO / "tests" / "fixtures" / "deployment-pod-annotated.json").read_bytes()
HOST = "localhost"
"""The name the test certificates carry and the client checks; the container's loopback answers for it."""


@dataclass
class Run:
    """What one replica's life looked like from outside."""

    spec: PodSpec
    image: Image
    writable: list[str] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    cmdline: list[str] = field(default_factory=list)
    key_file: os.stat_result | None = None
    """The TLS key as the container sees it."""
    review: tuple[int, dict[str, object]] = (0, {})
    served: list[bytes] = field(default_factory=list)
    """The certificate served before the rotation, then after it (DER)."""
    written: list[bytes] = field(default_factory=list)
    """The certificates written to the Secret: first, then rotated (DER)."""
    same_process_after_rotation: bool = False
    review_after_rotation: int = 0
    metrics: tuple[int, str, str] = (0, "", "")
    ready_while_draining: int = 0
    returncode: int | None = None
    changed: dict[str, tuple[object, object]] = field(default_factory=dict)
    log: str = ""


def make_certs(folder: Path) -> dict[str, bytes]:
    """A kubernetes.io/tls Secret's data (plus cert-manager's ca.crt), from ``token-projector certs``.

    Run again on the same folder it keeps the CA and issues a new serving pair, as a renewal does.
    """
    command = [sys.executable, "-m", "webhook", "certs", "--out-dir", str(folder), "--dns-name", HOST]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=60)
    return {name: (folder / name).read_bytes() for name in ("tls.crt", "tls.key", "ca.crt")}


def der(pem: bytes) -> bytes:
    first = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    assert first, "no certificate in the PEM"
    return ssl.PEM_cert_to_DER_cert(first.group().decode())


def call(
    container: Container, port: int, path: str, *, body: bytes | None = None, tls: ssl.SSLContext | None = None
) -> tuple[int, bytes, bytes]:
    """(status, body, served certificate or b"") of one request to the container's ``port``."""
    sock = container.connect(port)
    served = b""
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=HOST)
        served = sock.getpeercert(binary_form=True) or b""
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    connection.sock = sock
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request("POST" if body is not None else "GET", path, body, headers)
        response = connection.getresponse()
        return response.status, response.read(), served
    finally:
        connection.close()


def status_or_zero(container: Container, port: int, path: str) -> int:
    try:
        return call(container, port, path)[0]
    except OSError:
        return 0


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="token-projector-image-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def run(workspace: Path) -> Iterator[Run]:
    spec = PodSpec.from_manifest(MANIFEST)
    image = build_image(DOCKERFILE, workspace=workspace / "image")
    observed = Run(spec=spec, image=image)
    volumes = secret_volumes(spec, workspace / "volumes")
    (tls_volume,) = volumes.values()
    first = make_certs(workspace / "certs")
    tls_volume.write(first)
    client = ssl.create_default_context(cafile=str(workspace / "certs" / "ca.crt"))
    https = spec.port("https")
    probe = spec.container["readinessProbe"]["httpGet"]
    probes = spec.port(probe["port"])
    container = start(image, spec, workspace=workspace / "run", secrets=volumes)
    try:
        observed.writable = container.writable_mounts()
        before = container.snapshot(observed.writable)
        container.start()

        def readiness() -> int:
            return status_or_zero(container, probes, probe["path"])

        container.wait_until(lambda: readiness() == 200, timeout=30, what="ready")
        observed.status = container.proc_status()
        raw_env = Path(f"/proc/{container.pid}/environ").read_bytes().split(b"\0")
        observed.environ = dict(item.decode().split("=", 1) for item in raw_env if item)
        observed.cmdline = Path(f"/proc/{container.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        observed.key_file = container.host_path(observed.environ["TOKEN_PROJECTOR_KEY_FILE"]).stat()

        code, body, served = call(container, https, "/mutate", body=REVIEW, tls=client)
        observed.review = (code, json.loads(body))
        observed.served.append(served)

        rotated = make_certs(workspace / "certs")
        observed.written = [der(first["tls.crt"]), der(rotated["tls.crt"])]
        tls_volume.write(rotated)
        container.wait_until(
            lambda: call(container, https, "/readyz", tls=client)[2] == observed.written[1],
            timeout=30,
            what="the rotated certificate served",
        )
        observed.served.append(call(container, https, "/readyz", tls=client)[2])
        observed.same_process_after_rotation = Path(f"/proc/{container.pid}").exists() and container.returncode is None
        observed.review_after_rotation = call(container, https, "/mutate", body=REVIEW, tls=client)[0]

        code, body, _ = call(container, probes, "/metrics")
        observed.metrics = (code, body.decode(), "")

        container.signal(signal.SIGTERM)
        period = spec.container["readinessProbe"].get("periodSeconds", 10)
        container.wait_until(lambda: readiness() != 200, timeout=period, what="readiness off after SIGTERM")
        observed.ready_while_draining = readiness()
        observed.returncode = container.wait(timeout=spec.pod.get("terminationGracePeriodSeconds", 30))
        after = container.snapshot(observed.writable)
        observed.changed = {
            path: (before.get(path), after.get(path))
            for path in before.keys() | after.keys()
            if before.get(path) != after.get(path)
        }
        observed.log = container.log
        yield observed
    finally:
        container.close()


def test_the_venv_is_built_at_the_images_path_on_the_base_images_python(run: Run) -> None:
    (layer,) = run.image.layers  # the final stage's one COPY --from=build
    assert layer.source is not None
    # Built at the image's own path: the console script's shebang is valid in the image.
    assert (layer.source / "bin" / "token-projector").read_text().startswith(f"#!{layer.target}/bin/python\n")
    assert "home = /usr/local/bin\n" in (layer.source / "pyvenv.cfg").read_text()
    assert not (layer.source / "bin" / "pip").exists(), "the build stage removes pip"


def test_only_the_emptydir_and_the_runtimes_dev_are_writable_in_the_container(run: Run) -> None:
    assert run.spec.security("readOnlyRootFilesystem") is True
    assert sorted(run.writable) == sorted(["/dev", "/dev/shm", *run.spec.empty_dirs()])


def test_it_runs_as_the_deployments_user_with_no_privileges_and_the_images_environment_only(run: Run) -> None:
    assert_unprivileged(run.spec, run.status)
    names = {item["name"] for item in run.spec.container["env"]}
    assert set(run.environ) == set(run.image.env) | names | {"HOME"}
    assert run.environ["HOME"] == "/", "UID 65532 has no passwd entry: runc sets HOME=/"
    assert run.cmdline[1] == f"{run.image.layers[0].target}/bin/{run.image.entrypoint[0]}"
    assert run.cmdline[2:] == [*run.image.entrypoint[1:], *run.spec.container["args"]]


def test_the_tls_key_is_mounted_with_the_secrets_mode_and_the_pods_fs_group(run: Run) -> None:
    assert run.key_file is not None
    tls = next(volume for volume in run.spec.pod["volumes"] if "secret" in volume)
    assert stat.S_IMODE(run.key_file.st_mode) == tls["secret"]["defaultMode"]
    assert run.key_file.st_uid == 0
    assert run.key_file.st_gid == run.spec.security("fsGroup")


def test_a_review_over_https_on_the_container_port_is_answered_with_a_patch(run: Run) -> None:
    code, answer = run.review
    assert code == 200
    response = answer["response"]
    assert isinstance(response, dict)
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert response["patch"]


def test_a_kubelet_style_secret_rotation_is_served_without_a_restart(run: Run) -> None:
    assert run.served == run.written, "first the Secret's first certificate, then the rotated one"
    assert run.same_process_after_rotation
    assert run.review_after_rotation == 200
    assert '"certificate reloaded"' in run.log


def test_metrics_are_scraped_on_the_probe_port_counting_the_reviews_and_the_reload(run: Run) -> None:
    code, text, _ = run.metrics
    assert code == 200
    requests = [line for line in text.splitlines() if line.startswith("token_projector_webhook_requests_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in requests) == 2
    assert 'token_projector_tls_certificate_reloads_total{result="success"} 1.0' in text


def test_sigterm_turns_readiness_off_drains_and_exits_0_within_the_grace_period(run: Run) -> None:
    assert run.ready_while_draining == 503
    assert run.returncode == 0, run.log[-3000:]
    messages = [json.loads(line)["msg"] for line in run.log.splitlines() if line.startswith("{")]
    assert messages[-2:] == ["draining", "stopped"]
    assert "Traceback" not in run.log


def test_nothing_is_written_anywhere_but_the_emptydir(run: Run) -> None:
    outside = {
        path: change
        for path, change in run.changed.items()
        if not any(path == mount or path.startswith(mount.rstrip("/") + "/") for mount in run.spec.empty_dirs())
    }
    paths = sorted(outside)
    assert not paths, f"{len(paths)} paths written outside {run.spec.empty_dirs()}, first: {paths[:20]}"
