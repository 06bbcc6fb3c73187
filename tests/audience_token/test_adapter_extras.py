"""Each receiver adapter imports its own framework only, and each extra pulls its framework and nothing else."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "audience_token"
FRAMEWORKS = {"fastapi", "starlette", "flask", "werkzeug", "django", "asgiref", "uvicorn", "gunicorn", "pydantic"}
MAY_IMPORT = {
    "answers": set(),
    "rules": set(),
    "sync": set(),
    "asgi": set(),
    "wsgi": set(),
    "fastapi": {"fastapi"},
    "django": {"django", "asgiref"},
}


def top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", sorted(MAY_IMPORT))
def test_an_adapter_imports_no_framework_but_its_own(module: str) -> None:
    frameworks = top_level_imports(PACKAGE / f"{module}.py") & FRAMEWORKS
    assert frameworks <= MAY_IMPORT[module], frameworks - MAY_IMPORT[module]


def test_no_core_module_imports_an_adapter_or_a_framework() -> None:
    adapters = {f"audience_token.{name}" for name in ("asgi", "fastapi", "wsgi", "django", "sync")}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem in MAY_IMPORT:
            continue
        imports = top_level_imports(path)
        assert not imports & FRAMEWORKS, (path.name, imports & FRAMEWORKS)
        modules = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        assert not modules & adapters, (path.name, modules & adapters)


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
