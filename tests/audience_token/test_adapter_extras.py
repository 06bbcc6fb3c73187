"""Each extra of audience_token pulls its framework and nothing else (``pip install --dry-run --report``).

Which module imports which framework is tests/architecture/test_audience_token_layers.py's to pin.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "audience_token"


def resolved(extra: str, tmp_path: Path) -> set[str]:
    """The distributions ``pip install './audience_token[EXTRA]'`` would install into an empty environment."""
    report = tmp_path / f"{extra or 'base'}.json"
    target = f"{PACKAGE}[{extra}]" if extra else str(PACKAGE)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), target],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize(
    ("extra", "wanted"),
    [("asgi", set()), ("fastapi", {"fastapi", "starlette"}), ("flask", {"flask", "werkzeug"}), ("django", {"django"})],
)
def test_an_extra_pulls_its_framework_and_no_other(extra: str, wanted: set[str], tmp_path: Path) -> None:
    names = resolved(extra, tmp_path)
    frameworks = names & {"fastapi", "starlette", "flask", "werkzeug", "django"}
    assert frameworks == wanted
    assert {"audience-token", "aiohttp"} <= names
