"""A Dockerfile's image built without an engine: its build stage run as written, its final stage's files kept.

``build_image(dockerfile, workspace=...)`` reads the Dockerfile (``image_dockerfile``), and for each
stage the final stage copies from, runs that stage's ``WORKDIR``/``COPY``/``RUN``/``USER`` steps in
order, as root, in a sandbox root (``image_sandbox``) whose base is the host's Debian with Debian's
``python3.X`` at ``/usr/local/bin/python``, as in the python image. Paths are the image's own
(``/src``, ``/opt/token-projector``), so shebangs and ``pyvenv.cfg`` say what they say in the image.
What the final stage's ``COPY --from`` takes is copied out (``cp -a``: modes and times kept, so the
compiled byte-code stays valid) into ``workspace``; the returned ``Image`` mounts it read-only at
the same paths. The build's network is the host's: ``pip`` reaches PyPI as on this machine.
"""

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.install.image_dockerfile import (
    BaseEnv,
    Copy,
    Stage,
    Unsupported,
    dockerignore,
    ignored,
    parse_copy,
    resolve,
    stages,
)
from tests.install.image_sandbox import Mount, Process, Sandbox, assemble, launch, q, unshare
from tests.tools import require

BASE_IMAGES = BaseEnv(
    {
        # docker-library/python: FROM debian:<suite>-slim (PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:
        # /sbin:/bin), then ENV PATH /usr/local/bin:$PATH and ENV LANG C.UTF-8. (GPG_KEY, PYTHON_VERSION and
        # PYTHON_SHA256 are left out: only the python image's own build reads them.)
        "python": {
            "PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
        }
    }
)
"""The environment of each base image this helper has a stand-in for."""
BUILD_TIMEOUT_SECONDS = 900


@dataclass(frozen=True, kw_only=True)
class Image:
    """What the final stage is: its files (read-only mounts at their image paths), environment, user, entrypoint."""

    layers: tuple[Mount, ...]
    env: Mapping[str, str]
    user: str
    workdir: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    python: str


def need(ok: bool, message: str) -> None:
    """Skip (or fail, under REQUIRE_TEST_TOOLS=1 as in CI) when the machine cannot build or run the image."""
    if ok:
        return
    if os.environ.get("REQUIRE_TEST_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require_sandbox() -> None:
    need(os.geteuid() == 0, "building and running the image needs root (mount namespaces); CI runs as root")
    for tool in ("unshare", "mount", "setpriv"):
        require(tool, hint="apt-get install -y util-linux mount")
    require("ip", hint="apt-get install -y iproute2")


def stand_in_python(base: str) -> str:
    """``3.X`` for a ``python:3.X.Y-...-<suite>`` base, after checking this host's Debian can stand in for it."""
    match = re.fullmatch(r"python:(3\.\d+)(?:\.\d+)?(?:-slim)?-(\w+)", base)
    if not match:
        raise Unsupported(f"the base image {base} (expected python:3.X.Y[-slim]-<debian suite>)")
    version, suite = match.groups()
    release = Path("/etc/os-release").read_text()
    need(f"VERSION_CODENAME={suite}\n" in release, f"the base image is Debian {suite}; this host is not")
    interpreter = f"/usr/bin/python{version}"
    need(
        Path(interpreter).exists()
        and subprocess.run([interpreter, "-c", "import ensurepip, venv"], capture_output=True, check=False).returncode
        == 0,
        f"Debian's python{version} with venv stands in for the base image's Python: "
        f"apt-get install -y python{version}-venv",
    )
    return version


def build_image(dockerfile: Path, *, workspace: Path) -> Image:
    """Build ``dockerfile`` (its context is its folder) under ``workspace``; see the module docstring."""
    require_sandbox()
    all_stages = stages(dockerfile.read_text(), base_env=BASE_IMAGES)
    final = all_stages[-1]
    python = stand_in_python(final.base)
    if any(keyword == "RUN" for keyword, _ in final.steps):
        raise Unsupported("RUN in the final stage (its userland is the host's: nothing may be installed in it)")
    layers: list[Mount] = []
    outputs: dict[str, list[tuple[str, Path]]] = {}  # per build stage: (path in it, host folder to copy it to)
    for index, copy in enumerate(final.copies):
        destination = resolve(final.workdir, copy.destination)
        if copy.from_stage is None:
            layer = workspace / "layers" / str(index)
            _stage_copy(dockerfile.parent, copy, into=layer, destination=destination)
            layers.append(Mount(target=destination, source=layer / destination.lstrip("/")))
            continue
        if copy.from_stage not in {stage.name for stage in all_stages}:
            raise Unsupported(f"COPY --from={copy.from_stage} (not a stage of this Dockerfile)")
        for number, source in enumerate(copy.sources):
            layer = workspace / "layers" / f"{index}-{number}"
            outputs.setdefault(copy.from_stage, []).append((source, layer))
            target = destination if len(copy.sources) == 1 else f"{destination.rstrip('/')}/{Path(source).name}"
            layers.append(Mount(target=target, source=layer))
    for stage in all_stages:
        if stage.name in outputs:
            _run_stage(
                stage,
                context=dockerfile.parent,
                workspace=workspace / f"build-{stage.name}",
                outputs=outputs[stage.name],
            )
    return Image(
        layers=tuple(layers),
        env=final.env,
        user=final.user,
        workdir=final.workdir,
        entrypoint=final.entrypoint,
        cmd=final.cmd,
        python=python,
    )


def _run_stage(stage: Stage, *, context: Path, workspace: Path, outputs: list[tuple[str, Path]]) -> None:
    """Run ``stage``'s steps in a fresh sandbox, then copy each (path in it, host folder) of ``outputs`` out."""
    sandbox = Sandbox(workspace=workspace, python=stand_in_python(stage.base))
    script = assemble(sandbox)
    workdir, uid, gid = "/", 0, 0
    for number, (keyword, rest) in enumerate(stage.steps):
        if keyword == "WORKDIR":
            workdir = resolve(workdir, rest)
            script.append(q("mkdir", "-p", sandbox.root / workdir.lstrip("/")))
        elif keyword == "COPY":
            copy = _copy(rest)
            staged = workspace / f"copy-{number}"
            _stage_copy(context, copy, into=staged, destination=resolve(workdir, copy.destination))
            script.append(f"cp -a {q(staged)}/. {q(sandbox.root)}/")
        elif keyword == "USER":
            uid, gid = _numeric_user(rest)
        elif keyword == "RUN":
            if rest.startswith("--"):
                raise Unsupported(f"RUN {rest.split()[0]} (BuildKit flags)")
            # The exec form as written, the shell form through Docker's default SHELL.
            argv = tuple(json.loads(rest)) if rest.startswith("[") else ("/bin/sh", "-c", rest)
            env = {**stage.env, "HOME": stage.env.get("HOME", "/root" if uid == 0 else "/")}
            script.append(launch(sandbox, Process(argv=argv, env=env, workdir=workdir, uid=uid, gid=gid)))
    for source, layer in outputs:
        layer.parent.mkdir(parents=True, exist_ok=True)
        script.append(q("cp", "-a", sandbox.root / source.lstrip("/"), layer))
    result = subprocess.run(
        unshare(sandbox, script), capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False
    )
    assert result.returncode == 0, f"the build stage failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def _copy(rest: str) -> Copy:
    copy = parse_copy(rest)
    if copy.from_stage is not None:
        raise Unsupported("COPY --from inside a build stage")
    return copy


def _stage_copy(context: Path, copy: Copy, *, into: Path, destination: str) -> None:
    """Lay out what ``COPY`` puts in the image under ``into`` (as if ``into`` were /), as Docker copies it."""
    patterns = dockerignore(context)
    many = len(copy.sources) > 1 or destination.endswith("/")
    for source in copy.sources:
        path = context / source
        if not path.exists() or ignored(source.rstrip("/"), patterns):
            raise Unsupported(f"COPY {source}: not in the build context (or excluded by its .dockerignore)")
        target = into / destination.lstrip("/")
        if path.is_dir():  # a folder's contents are copied, not the folder itself
            shutil.copytree(path, target, dirs_exist_ok=True, ignore=_ignore(context, patterns))
        else:
            target = target / path.name if many else target
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _ignore(context: Path, patterns: list[str]) -> Callable[[str, list[str]], set[str]]:
    def ignore(folder: str, names: list[str]) -> set[str]:
        relative = os.path.relpath(folder, context)
        prefix = "" if relative == "." else relative + "/"
        return {name for name in names if ignored(prefix + name, patterns)}

    return ignore


def _numeric_user(user: str) -> tuple[int, int]:
    name, _, group = user.partition(":")
    if not name.isdigit() or (group and not group.isdigit()):
        raise Unsupported(f"USER {user} (only numeric UID[:GID])")
    return int(name), int(group or 0)
