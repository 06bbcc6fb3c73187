"""The callers' adapters against the oldest httpx and requests that their extras allow.

``audience_token/pyproject.toml`` says ``httpx>=X`` and ``requests>=Y``; this holds the library to it.
Each oldest release is installed from PyPI (as CI has it) with ``pip install --no-deps --target`` into
a folder put first on ``PYTHONPATH``: it shadows the test venv's current release while everything else
(pytest, the servers, httpcore, urllib3) stays, and the adapter's own test module runs against it in a
subprocess, which first says which release it imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).parents[2]
FLOOR = re.compile(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)")


def oldest(extra: str) -> tuple[str, str]:
    """(distribution, version) of the one requirement of ``extra``, from its ``>=`` floor."""
    project = tomllib.loads((REPO / "audience_token" / "pyproject.toml").read_text())["project"]
    [requirement] = project["optional-dependencies"][extra]
    match = FLOOR.fullmatch(requirement)
    assert match is not None, f"extra {extra!r} should be NAME>=VERSION, not {requirement!r}"
    return match[1], match[2]


@pytest.mark.parametrize(
    ("extra", "module", "also"),
    [
        ("httpx", "test_httpx.py", ["sniffio"]),  # httpx before 0.28 imports sniffio; the venv's httpx does not
        ("requests", "test_requests.py", []),
    ],
)
def test_the_adapter_passes_its_tests_with_the_oldest_release_its_extra_allows(
    extra: str, module: str, also: list[str], tmp_path: Path
) -> None:
    name, version = oldest(extra)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps"]
    install = subprocess.run(
        [*pip, "--target", str(site), f"{name}=={version}", *also],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    imported = subprocess.run(
        [sys.executable, "-c", f"import {name}; print({name}.__version__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert Version(imported.stdout.strip()) == Version(version)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/audience_token/{module}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
    assert "failed" not in run.stdout
