"""The policy engine as a user meets it: ``token-projector policy | kubectl apply -f -``, and kubectl's answers."""

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import ControlPlane
from tests.e2e.policy_engine import Engines, install, uninstall
from tests.tools import REPO
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


def test_unknown_annotations_and_legacy_tokens_under_warn_are_kubectl_warnings(engines: Engines) -> None:
    legacy = {"name": "t", "secret": {"secretName": "app-token-ab1cd"}}
    annotations = {AUDIENCE: "data-store", "token-projector.io/expiration": "600"}
    result = kubectl_create(engines.plane, engines.policy_namespace, pod(annotations, volumes=[legacy]))
    assert result.returncode == 0, result.stderr
    assert "Warning:" in result.stderr
    assert "token-projector.io/expiration is not one token-projector knows" in result.stderr
    assert "'t' carries the legacy service account token Secret" in result.stderr or (
        "t carries the legacy service account token Secret app-token-ab1cd" in result.stderr
    ), result.stderr
