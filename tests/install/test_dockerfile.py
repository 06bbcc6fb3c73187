"""The Dockerfile, checked without a Docker engine: its form, and its install step and entrypoint for real.

No Docker engine runs here, so the image itself is not built in these tests. What is verified: the
Dockerfile's structure (pinned base, multi-stage, non-root, entrypoint), and that its build stage's
install commands, run as written in a fresh virtual environment from the files it copies, give a
``token-projector serve`` that starts and answers as a non-root user with the image's environment.
"""

import http.client
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.install.image_dockerfile import instructions as dockerfile_instructions
from tests.tls_material import free_port, make_certs
from tests.tools import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
NON_ROOT = 65532


def instructions() -> list[tuple[str, str]]:
    """The root Dockerfile's (INSTRUCTION, arguments) pairs, parsed as Docker parses them."""
    return dockerfile_instructions(DOCKERFILE)


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, rest))
    return out


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
    return env


def test_the_base_image_is_pinned_to_an_exact_python_release() -> None:
    base = next(rest for keyword, rest in instructions() if keyword == "ARG" and rest.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+\.\d+-slim-[a-z]+", base), base


def test_it_is_multi_stage_and_the_final_stage_only_copies_the_built_venv() -> None:
    build, final = stages()
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    assert [rest for keyword, rest in final if keyword == "COPY"] == [
        "--from=build /opt/token-projector /opt/token-projector"
    ]
    assert not [rest for keyword, rest in final if keyword == "RUN"], "nothing is installed in the final stage"


def test_it_runs_as_a_fixed_non_root_user_matching_the_deployment() -> None:
    final = stages()[-1]
    assert ("USER", f"{NON_ROOT}:{NON_ROOT}") in final
    deployment = yaml.safe_load((REPO / "manifests" / "base" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == NON_ROOT


def test_the_entrypoint_is_token_projector_serve_reading_certificates_from_the_mounted_path() -> None:
    final = stages()[-1]
    assert ("ENTRYPOINT", '["token-projector", "serve"]') in final
    env = env_of(final)
    deployment = yaml.safe_load((REPO / "manifests" / "base" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounted = {e["name"]: e["value"] for e in container["env"]}
    for name in ("TOKEN_PROJECTOR_CERT_FILE", "TOKEN_PROJECTOR_KEY_FILE"):
        assert env[name] == mounted[name]
        assert env[name].startswith(container["volumeMounts"][0]["mountPath"] + "/")


def test_no_caches_sources_or_build_tools_reach_the_image() -> None:
    build = stages()[0]
    assert env_of(build)["PIP_NO_CACHE_DIR"] == "1"
    run = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "apt-get" not in run
    assert "gcc" not in run
    assert {"tests", "certs", ".venv", ".git"} <= set((REPO / ".dockerignore").read_text().split())


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The build stage's RUN, as written, in a fresh folder standing in for /opt/token-projector."""
    root = Path(tempfile.mkdtemp(prefix="token-projector-image-"))
    os.chmod(root, 0o755)  # noqa: S103 -- world-readable like /opt in the image, nothing secret inside
    context = root / "src"
    context.mkdir()
    for keyword, rest in stages()[0]:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                path = REPO / source.rstrip("/")
                target = context / source.rstrip("/")
                shutil.copytree(path, target) if path.is_dir() else shutil.copy(path, target)
    venv = root / "opt-token-projector"
    run = next(rest for keyword, rest in stages()[0] if keyword == "RUN")
    command = run.replace("/opt/token-projector", str(venv)).replace("python -m venv", f"{sys.executable} -m venv")
    result = subprocess.run(
        ["bash", "-c", command], cwd=context, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield venv
    shutil.rmtree(root, ignore_errors=True)


def test_the_install_step_gives_the_console_script_and_removes_pip(installed: Path) -> None:
    assert (installed / "bin" / "token-projector").exists()
    assert not (installed / "bin" / "pip").exists()
    assert list(installed.rglob("webhook/core/__pycache__/review*.pyc")), "byte-code is compiled at build time"


def test_the_image_has_the_libraries_both_proxy_verification_modes_need(installed: Path) -> None:
    probe = "from audience_token.jwks import import_jwt; import audience_token.proxy; import_jwt()"
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_entrypoint_starts_and_becomes_ready_with_the_images_environment(installed: Path) -> None:
    # Run as the current user: this machine's Python lives under /root, which the image's UID cannot
    # reach (in the image it is /usr/local/bin/python); the USER line is checked structurally above.
    tls = installed.parent / "tls"
    make_certs(tls)
    env = {**env_of(stages()[-1]), "PATH": f"{installed}/bin:/usr/bin:/bin"}
    env["TOKEN_PROJECTOR_CERT_FILE"] = str(tls / "tls.crt")
    env["TOKEN_PROJECTOR_KEY_FILE"] = str(tls / "tls.key")
    probe_port = free_port()
    entrypoint = [
        "token-projector",
        "serve",
        "--address",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--probe-port",
        str(probe_port),
        "--drain-seconds",
        "0",
    ]
    process = subprocess.Popen(entrypoint, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", probe_port, timeout=2)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the entrypoint did not become ready"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert process.returncode == 0
