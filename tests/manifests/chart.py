"""Rendering charts/token-projector with the real Helm, as ``helm install`` would render it.

Helm is built from its Go module by ``make tools``; without it these tests skip, or fail under
``REQUIRE_TEST_TOOLS=1`` (CI). Helm's own cache, configuration and data go to a throw-away folder, so
a developer's Helm set-up (repositories, plugins) can change nothing here.
"""

import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from tests.tools import REPO, require
from webhook.core.wire import Json

CHART = REPO / "charts" / "token-projector"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
"""One values file per option the chart offers (chart-testing's ``ci/`` convention)."""
VALUES_FILES = [None, *CI_VALUES]
"""The default values, then one file per option."""
RULES = CHART / "files" / "prometheus-rules" / "prometheusrule.yaml"
"""The alert rules, the one copy both the chart and manifests/components/monitoring install."""
RELEASE = "token-projector"
NAMESPACE = "token-projector"
CERT_MANAGER_KINDS = {"Issuer", "Certificate"}
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
CUSTOM_KINDS = CERT_MANAGER_KINDS | MONITORING_KINDS
"""Kinds from CRDs: not in the Kubernetes schema; the e2e tests check them against the real CRDs."""


def helm_binary() -> str:
    return require("helm", hint="run `make tools` (builds Helm from its Go module)")


def helm3_binary() -> str:
    """Helm 3, which users may still run (security fixes until February 2027)."""
    return require("helm3", hint="run `make tools` (builds Helm 3 from its Go module as .tools/bin/helm3)")


def helm(*args: str, binary: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run Helm (4, or ``binary``) with its state in a scratch folder; the result whatever the exit status."""
    home = Path(tempfile.gettempdir()) / "token-projector-tests-helm"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    command = [binary or helm_binary(), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=120)


def template_text(*args: str, release: str = RELEASE, namespace: str = NAMESPACE, binary: str | None = None) -> str:
    """``helm template`` output for ``args`` (values files, --set, --api-versions); asserts success."""
    result = helm("template", release, str(CHART), "--namespace", namespace, *args, binary=binary)
    assert result.returncode == 0, result.stderr
    return result.stdout


def template(*args: str, release: str = RELEASE, namespace: str = NAMESPACE, binary: str | None = None) -> list[Json]:
    """The objects ``helm template`` renders for ``args``, in the order Helm installs them."""
    text = template_text(*args, release=release, namespace=namespace, binary=binary)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def template_error(*args: str, binary: str | None = None) -> str:
    """The error ``helm template`` stops with for ``args``; asserts that it does stop."""
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args, binary=binary)
    assert result.returncode != 0, f"expected helm template {' '.join(args)} to fail"
    return result.stderr


def values_args(path: Path | None) -> list[str]:
    """The arguments that pick ``path`` (None: the chart's defaults)."""
    return [] if path is None else ["--values", str(path)]


def label(path: Path | None) -> str:
    """A test id for a VALUES_FILES entry."""
    return "defaults" if path is None else path.name


def values_file(name: str) -> list[str]:
    """The arguments that pick ``ci/<name>-values.yaml``."""
    path = CHART / "ci" / f"{name}-values.yaml"
    assert path.exists(), path
    return ["--values", str(path)]


def rule_spec() -> Json:
    """The ``spec`` (Prometheus rule groups) of the one alert rule file."""
    spec: Json = yaml.safe_load(RULES.read_text())["spec"]
    return spec


def of_kind(objects: list[Json], kind: str) -> list[Json]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Json], kind: str, name: str | None = None) -> Json:
    matches = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]
