"""The policy engine as a user meets it: ``token-projector policy | kubectl apply -f -``, and kubectl's answers."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ControlPlane
from tests.e2e.policy_engine import Engines, install, uninstall
from tests.manifests.chart import template_text
from tests.manifests.conftest import with_components
from tests.tools import REPO, require
from webhook.core.contract import Contract

pytestmark = pytest.mark.e2e

AUDIENCE = Contract().annotation("audience")


@pytest.fixture(scope="module")
def engines(control_plane: ControlPlane) -> Iterator[Engines]:
    installed = install(control_plane, Contract(legacy_token_policy="warn"), "kubectl")
    try:
        yield installed
    finally:
        uninstall(installed)


def kubectl_create(plane: ControlPlane, namespace: str, pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-", stdin=json.dumps(pod))


def pod(annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "annotations": annotations},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox:1.36"}], **spec},
    }


def test_the_policy_commands_output_is_what_kubectl_apply_takes(control_plane: ControlPlane) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "webhook", "policy", "--strict"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    applied = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", stdin=printed)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("created (server dry run)") == 6, applied.stdout


def test_an_annotated_pod_gets_its_token_and_kubectl_shows_no_warning(engines: Engines) -> None:
    result = kubectl_create(engines.plane, engines.policy_namespace, pod({AUDIENCE: "data-store"}))
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    assert [v["name"] for v in stored["spec"]["volumes"]][-1] == "audience-token"
    assert stored["spec"]["containers"][0]["env"][0]["name"] == "SERVICE_ACCOUNT_TOKEN_PATH"
    assert "Warning" not in result.stderr


def test_kubectl_shows_the_refusal_naming_the_annotation_the_value_and_the_fix(engines: Engines) -> None:
    result = kubectl_create(engines.plane, engines.policy_namespace, pod({AUDIENCE: "data-store ,vault"}))
    assert result.returncode != 0
    assert f"annotation {AUDIENCE} is" in result.stderr
    assert '"data-store ,vault"' in result.stderr
    assert 'use "data-store, vault"' in result.stderr, result.stderr


def test_unknown_annotations_legacy_tokens_under_warn_and_own_env_values_are_kubectl_warnings(engines: Engines) -> None:
    legacy = {"name": "t", "secret": {"secretName": "app-token-ab1cd"}}
    annotations = {AUDIENCE: "data-store", "token-projector.io/expiration": "600"}
    own = {"name": "own", "image": "busybox:1.36", "env": [{"name": "SERVICE_ACCOUNT_TOKEN_PATH", "value": "/mine"}]}
    deadline = time.monotonic() + 30  # the warning policy may be loaded a moment after the other two
    while True:
        result = kubectl_create(
            engines.plane,
            engines.policy_namespace,
            pod(annotations, volumes=[legacy], containers=[{"name": "app", "image": "busybox:1.36"}, own]),
        )
        assert result.returncode == 0, result.stderr
        if "Warning:" in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "Warning:" in result.stderr
    assert "token-projector.io/expiration is not one token-projector knows" in result.stderr
    assert "container own already sets SERVICE_ACCOUNT_TOKEN_PATH; its own value was kept" in result.stderr
    assert "/mine" not in result.stderr, "a warning never shows the container's own value"
    assert "'t' carries the legacy service account token Secret" in result.stderr or (
        "t carries the legacy service account token Secret app-token-ab1cd" in result.stderr
    ), result.stderr


def test_a_container_another_policy_adds_later_gets_the_token_on_reinvocation_and_nothing_twice(
    engines: Engines,
) -> None:
    plane, name = engines.plane, "e2e-sidecar-injector"
    base = "/apis/admissionregistration.k8s.io/v1"
    injector = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
                ]
            },
            "mutations": [
                {
                    "patchType": "JSONPatch",
                    "jsonPatch": {
                        "expression": "object.spec.containers.exists(c, c.name == 'injected') ? [] : "
                        "[JSONPatch{op: 'add', path: '/spec/containers/-', "
                        "value: Object.spec.containers{name: 'injected', image: 'busybox:1.36'}}]"
                    },
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": engines.policy_namespace}}
            },
        },
    }
    plane.request("POST", f"{base}/mutatingadmissionpolicies", body=injector)
    plane.request("POST", f"{base}/mutatingadmissionpolicybindings", body=binding)
    try:
        deadline = time.monotonic() + 60
        while True:
            stored = engines.by_policy(pod({AUDIENCE: "data-store, vault"})).pod
            assert stored is not None
            containers = {c["name"]: c for c in stored["spec"]["containers"]}
            if "injected" in containers or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert set(containers) == {"app", "injected"}
        for container in containers.values():
            assert [m["name"] for m in container["volumeMounts"]].count("audience-token") == 1
            assert [e["name"] for e in container["env"]] == ["SERVICE_ACCOUNT_TOKEN_PATH", "SERVICE_ACCOUNT_TOKEN_DIR"]
        assert [v["name"] for v in stored["spec"]["volumes"]].count("audience-token") == 1
    finally:
        plane.request("DELETE", f"{base}/mutatingadmissionpolicybindings/{name}")
        plane.request("DELETE", f"{base}/mutatingadmissionpolicies/{name}")


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("helm", ["--set", "engine=policy", "--kube-version", "1.37.2"]),
        ("kustomize", []),
    ],
)
def test_the_charts_and_the_components_policies_are_accepted_by_the_api_server(
    control_plane: ControlPlane, tool: str, args: list[str], tmp_path: Path
) -> None:
    if tool == "helm":
        rendered = template_text(*args, release="policy-e2e")
    else:
        shutil.copytree(REPO / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("*.crt", "*.key"))
        shutil.copytree(REPO / "charts", tmp_path / "charts")
        overlay = tmp_path / "manifests" / with_components(tmp_path / "manifests", "base", "admission-policy")
        kustomize = require("kustomize", hint="run `make tools` (builds it with Go)")
        rendered = subprocess.run([kustomize, "build", str(overlay)], capture_output=True, text=True, check=True).stdout
    applied = control_plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=rendered)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("admissionpolicy") == 6, applied.stdout


def test_an_annotation_only_the_webhook_implements_is_refused_by_the_policies_naming_it(
    control_plane: ControlPlane,
) -> None:
    contract = Contract()
    # As a feature added to the webhook (a sidecar on an annotation) would make it known to the contract.
    contract.__dict__["known_annotations"] = contract.known_annotations | {"token-projector.io/sidecar"}
    engines = install(control_plane, contract, "webhook-only")
    try:
        refused = engines.by_policy(pod({AUDIENCE: "data-store", "token-projector.io/sidecar": "proxy"}))
        assert refused.pod is None
        assert "annotation token-projector.io/sidecar asks for what only the token-projector webhook engine does" in (
            refused.refusal or ""
        )
        assert engines.by_policy(pod({AUDIENCE: "data-store"})).pod is not None
    finally:
        uninstall(engines)


def test_a_pod_with_only_the_proxys_annotations_is_refused_by_the_policies_never_admitted_unprotected(
    engines: Engines,
) -> None:
    protect = {
        Contract().annotation("protect-port"): "http",
        Contract().annotation("protect-audience"): "secret-store",
        Contract().annotation("protect-allow"): "api/api",
    }
    result = kubectl_create(engines.plane, engines.policy_namespace, pod(protect))
    assert result.returncode != 0, result.stdout
    assert "asks for what only the token-projector webhook engine does" in result.stderr, result.stderr
    assert "token-projector.io/protect-port" in result.stderr
