"""The adapters' tests again, with the oldest release of each framework the extras claim to support.

audience_token/pyproject.toml says ``fastapi>=X``, ``flask>=Y``, ``django>=Z``: this builds a throw-away venv
with exactly X, Y and Z (their own dependencies as pip resolves them), and runs the adapters' tests there,
under the same real servers. Needs PyPI, as CI has; the current releases are what the project's venv has.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
import venv
from pathlib import Path

from tests.tools import REPO

ADAPTER_TESTS = ["test_asgi.py", "test_fastapi.py", "test_wsgi.py", "test_django.py", "test_sync.py"]
TEST_TOOLS = ["aiohttp>=3.14,<4", "cryptography>=42", "pytest>=8", "pytest-aiohttp>=1.0", "uvicorn", "websockets",
              "gunicorn", "hypothesis"]  # fmt: skip


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "audience_token" / "pyproject.toml").read_text())["project"]
    found: dict[str, list[str]] = project["optional-dependencies"]
    return found


def oldest_frameworks() -> list[str]:
    """``fastapi==X`` and the like, from the floors the extras of audience_token/pyproject.toml declare."""
    pins = []
    for extra in ("fastapi", "flask", "django"):
        (requirement,) = extras()[extra]
        floor = re.fullmatch(r"([A-Za-z0-9_-]+)>=([0-9.]+)", requirement)
        assert floor, f"the {extra} extra should read NAME>=VERSION, not {requirement!r}"
        pins.append(f"{floor[1]}=={floor[2]}")
    return pins


def test_the_extras_name_a_floor_for_their_framework() -> None:
    assert [pin.split("==")[0] for pin in oldest_frameworks()] == ["fastapi", "flask", "django"]


def test_the_adapters_pass_their_tests_with_the_oldest_supported_frameworks(tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    wanted = [*TEST_TOOLS, *extras()["offline"], *oldest_frameworks()]
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    tests = [str(REPO / "tests" / "audience_token" / name) for name in ADAPTER_TESTS]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO), *tests],
        capture_output=True, text=True, timeout=1200, check=False, cwd=REPO, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
