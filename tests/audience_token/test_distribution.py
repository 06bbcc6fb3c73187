"""The library installs on its own: `pip install ./audience_token` brings aiohttp and nothing of the webhook's.

The install runs into a throw-away venv from a copy of the folder (a build leaves build/ and egg-info
behind), and needs PyPI for aiohttp and the build backend, as CI has.
"""

import ast
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
PACKAGE = REPO / "audience_token"
NOT_WANTED = {"prometheus-client", "kubernetes", "orjson", "jsonpatch", "token-projector", "pyjwt", "pyyaml"}


def test_no_module_of_the_library_imports_the_webhook() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n == "webhook" or n.startswith("webhook.")], path.name


def test_importing_the_receiver_loads_neither_the_webhook_nor_the_caller_side_nor_a_jose_library() -> None:
    unwanted = ("webhook", "jwt", "yaml", "audience_token.offline", "audience_token.token_file", "kubernetes")
    code = (
        "import sys, audience_token, audience_token.reviewer, audience_token.middleware;"
        f"print(sorted(m for m in {unwanted!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install ./audience_token` done; returns its python."""
    work = tmp_path_factory.mktemp("distribution")
    source = work / "audience_token"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv.create(work / "venv", with_pip=True)
    python = work / "venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return python


def test_pip_install_brings_aiohttp_and_none_of_the_webhooks_dependencies(installed: Path) -> None:
    listed = subprocess.run(
        [str(installed), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"audience-token", "aiohttp"} <= names
    assert not names & NOT_WANTED, names & NOT_WANTED
    check = subprocess.run([str(installed), "-m", "pip", "check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_the_installed_library_works_outside_the_repo_and_is_typed(installed: Path, tmp_path: Path) -> None:
    code = """
import importlib.resources, sys
import audience_token as at
assert at.__version__ == "0.2.0"
assert importlib.resources.files("audience_token").joinpath("py.typed").is_file()
for name in ("TokenReviewer", "Identity", "AllowList", "protect", "identity_of", "TokenFile", "bearer_auth"):
    getattr(at, name)
try:
    import webhook
except ImportError:
    pass
else:
    raise SystemExit("webhook is importable from the library's venv")
try:
    at.TokenReviewer("x", allow=[], credentials=at.Credentials(server="https://x", source="t", token="t"))
except at.ConfigError as error:
    print("ok:", error)
"""
    result = subprocess.run([str(installed), "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: allow is empty")
