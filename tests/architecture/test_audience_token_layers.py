"""audience_token's layers, pinned: one framework-neutral core, thin adapters around it.

- adapters → core, never back: no core module imports an adapter;
- the core imports no web framework (``aiohttp.web``, Starlette, FastAPI, Django, Flask, ...): each
  framework appears only in its own adapter (aiohttp's server side only in ``audience_token.middleware``);
- the caller side (sending a token) and the receiver side (checking one) never import each other;
- nothing imports ``webhook`` (tests/architecture/test_import_direction.py holds that one).

Imports inside functions count too; ``if TYPE_CHECKING:`` blocks count as well, since they are real
dependencies of the code's meaning.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.architecture.test_import_direction import imports_of
from tests.tools import REPO

PACKAGE = REPO / "audience_token"

ADAPTERS = {
    # module: the frameworks (top-level import names) only it may import
    "middleware": {"aiohttp.web"},
    "client": set(),
    "asgi": set(),
    "fastapi": {"fastapi", "starlette"},
    "wsgi": set(),
    "django": {"django"},
    "httpx": {"httpx"},
    "requests": {"requests"},
    "proxy": {"aiohttp.web"},
}
"""One small module per framework; each imports the core and its framework only."""

WEB_FRAMEWORKS = {"aiohttp.web", "starlette", "fastapi", "django", "flask", "werkzeug", "litestar", "quart"}

CALLER = {"token_file", "client", "httpx", "requests"}
"""Sending a token: reading the rotating file, putting it on requests."""
RECEIVER = {
    "reviewer",
    "offline",
    "jwks",
    "cache",
    "policy",
    "answers",
    "kube",
    "middleware",
    "asgi",
    "fastapi",
    "wsgi",
    "django",
    "rules",
    "sync",
}
"""Checking a token: the verifiers, their cache and transport, the policy, the answers, the server adapters."""


def modules() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}


def ours(names: set[str]) -> set[str]:
    """The audience_token modules among ``names``, by their short name."""
    return {name.split(".")[1] for name in names if name.startswith("audience_token.") and name.count(".") >= 1} & set(
        modules()
    )


def framework_imports(names: set[str]) -> set[str]:
    return {f for f in WEB_FRAMEWORKS if any(n == f or n.startswith(f + ".") for n in names)}


MODULES = modules()
CORE = sorted(set(MODULES) - set(ADAPTERS))


def test_the_layers_know_every_module_of_the_package() -> None:
    assert {"reviewer", "offline", "policy", "middleware", "client", "token_file"} <= set(MODULES)


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_no_adapter(module: str) -> None:
    wrong = sorted(ours(imports_of(MODULES[module])) & set(ADAPTERS))
    assert not wrong, f"audience_token.{module} (core) imports the adapter(s) {wrong}: adapters import the core"


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_no_web_framework(module: str) -> None:
    wrong = sorted(framework_imports(imports_of(MODULES[module])))
    assert not wrong, f"audience_token.{module} (core) imports {wrong}: a framework belongs in its adapter"


@pytest.mark.parametrize("module", sorted(set(ADAPTERS) & set(MODULES)))
def test_an_adapter_imports_no_other_adapters_framework(module: str) -> None:
    names = imports_of(MODULES[module])
    foreign = sorted(framework_imports(names) - ADAPTERS[module])
    assert not foreign, f"audience_token.{module} imports {foreign}, another adapter's framework"


@pytest.mark.parametrize("module", sorted((CALLER | RECEIVER) & set(MODULES)))
def test_the_caller_side_and_the_receiver_side_never_import_each_other(module: str) -> None:
    other = RECEIVER if module in CALLER else CALLER
    wrong = sorted(ours(imports_of(MODULES[module])) & other)
    side = "caller" if module in CALLER else "receiver"
    assert not wrong, f"audience_token.{module} ({side} side) imports {wrong} from the other side"


def test_the_package_root_loads_no_adapter_eagerly() -> None:
    # `import audience_token` must not drag in aiohttp's server (or any framework) for a FastAPI service.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    eager = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("audience_token."):
            eager.add(node.module.split(".")[1])
    assert not eager & set(ADAPTERS), sorted(eager & set(ADAPTERS))


def test_importing_the_package_and_its_verifiers_loads_no_web_framework() -> None:
    # A FastAPI, Flask or Django service imports audience_token and a verifier; aiohttp's server stays out.
    code = (
        "import sys, audience_token; from audience_token import TokenReviewer, Identity, ConfigError; "
        "import audience_token.answers, audience_token.policy; "
        f"frameworks = {sorted(WEB_FRAMEWORKS)!r}; "
        "print(sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in frameworks)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "[]", loaded.stdout
