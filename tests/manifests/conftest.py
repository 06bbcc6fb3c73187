"""Reading and rendering manifests/ the way ``kubectl apply -k`` would."""

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.tls_material import make_certs
from tests.tools import REPO, require
from webhook.core.wire import Json

MANIFESTS = REPO / "manifests"
Render = Callable[[str], list[Json]]


def by_kind(objects: list[Json], kind: str) -> Json:
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]


@pytest.fixture(scope="session")
def rendered_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of manifests/ with certificates in the self-managed overlay, as a user would have it."""
    tree = tmp_path_factory.mktemp("render") / "manifests"
    shutil.copytree(MANIFESTS, tree, ignore=shutil.ignore_patterns("*.crt", "*.key"))
    make_certs(tree / "overlays" / "self-managed" / "certs")
    return tree


@pytest.fixture(scope="session")
def render(rendered_tree: Path) -> Render:
    kustomize = require("kustomize", hint="run `make tools` (builds it with Go)")

    def run(path: str) -> list[Json]:
        result = subprocess.run(
            [kustomize, "build", str(rendered_tree / path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run


def with_components(tree: Path, overlay: str, *components: str) -> str:
    """A kustomization (inside ``tree``) that adds ``components`` to ``overlay``; returns its path."""
    folder = tree / "test-overlays" / "-".join([overlay.replace("/", "_"), *components])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"../../{overlay}"],
                "components": [f"../../components/{c}" for c in components],
            }
        )
    )
    return str(folder.relative_to(tree))


def source_documents() -> list[tuple[Path, Json]]:
    """Every Kubernetes object written in manifests/ (kustomization files excluded)."""
    docs = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs
