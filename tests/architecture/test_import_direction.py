"""The layers on disk are the layers in the imports: every arrow points one way, and a test says so.

core ← server ← cli, core ← install ← cli; ``webhook.errors`` is a leaf every layer may import;
nothing imports the CLI; the core imports nothing but itself, the exception tree, the standard
library and orjson (and of the standard library, nothing that does I/O or parses flags); the
workload library ``audience_token`` never imports the webhook. Imports inside functions count too.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import REPO

ALLOWED = {
    "webhook.errors": set(),
    "webhook.core": {"webhook.core", "webhook.errors"},
    "webhook.server": {"webhook.server", "webhook.core", "webhook.errors"},
    "webhook.install": {"webhook.install", "webhook.core", "webhook.errors"},
    "webhook.cli": {"webhook"},
    "webhook.__main__": {"webhook.cli"},
    "webhook": set(),
}
"""For each part of the package, the parts of ours it may import (a prefix allows what is below it)."""
CORE_THIRD_PARTY = {"orjson"}
CORE_FORBIDDEN_STDLIB = {
    "os",
    "io",
    "argparse",
    "socket",
    "ssl",
    "asyncio",
    "subprocess",
    "pathlib",
    "logging",
    "shutil",
}


def modules(package: str) -> dict[str, Path]:
    root = REPO / package
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(module: str) -> str:
    return max((layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), key=len)


def within(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


WEBHOOK = modules("webhook")


@pytest.mark.parametrize("module", sorted(WEBHOOK))
def test_each_module_imports_only_the_layers_below_it(module: str) -> None:
    allowed = ALLOWED[layer_of(module)]
    ours = {name for name in imports_of(WEBHOOK[module]) if name == "webhook" or name.startswith("webhook.")}
    # `from webhook.core import x` names both the package and the module: judge the deepest name.
    wrong = sorted(
        name for name in ours if not within(name, allowed) and not any(o.startswith(name + ".") for o in ours)
    )
    assert wrong == [], f"{module} ({layer_of(module)}) imports {wrong}; it may import only {sorted(allowed)}"


@pytest.mark.parametrize("module", sorted(m for m in WEBHOOK if layer_of(m) == "webhook.core"))
def test_the_core_imports_only_itself_the_errors_the_standard_library_and_orjson(module: str) -> None:
    for name in imports_of(WEBHOOK[module]):
        top = name.split(".")[0]
        if top == "webhook":
            continue
        assert top in sys.stdlib_module_names or top in CORE_THIRD_PARTY, f"{module} imports {name}"
        assert top not in CORE_FORBIDDEN_STDLIB, f"{module} imports {name}: the core does no I/O and parses no flags"


def test_nothing_outside_the_command_line_imports_it() -> None:
    for module, path in WEBHOOK.items():
        if layer_of(module) in ("webhook.cli", "webhook.__main__"):
            continue
        assert not any(within(name, {"webhook.cli"}) for name in imports_of(path)), module
    for folder in ("audience_token", "bench"):
        for module, path in modules(folder).items():
            if module != "bench.shell_only":  # the benchmark's fake review is started through the CLI's parser
                assert not any(within(name, {"webhook.cli"}) for name in imports_of(path)), module


def test_the_workload_library_never_imports_the_webhook() -> None:
    for module, path in modules("audience_token").items():
        assert not any(name == "webhook" or name.startswith("webhook.") for name in imports_of(path)), module


def test_the_rule_catches_an_import_that_points_back(tmp_path: Path) -> None:
    # The checker itself must be able to fail: a core module importing the server is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("from webhook.server.app import serve\n")
    names = {n for n in imports_of(bad) if n.startswith("webhook.")}
    assert not all(within(n, ALLOWED["webhook.core"]) for n in names)


def test_the_review_command_loads_neither_the_tls_library_nor_the_cluster_client() -> None:
    fixture = REPO / "tests" / "fixtures" / "deployment-pod-annotated.json"
    probe = (
        "import sys\n"
        "from webhook.cli import main\n"
        f"code = main(['review', {str(fixture)!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'kubernetes', 'aiohttp',"
        " 'prometheus_client', 'jsonpatch'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr
