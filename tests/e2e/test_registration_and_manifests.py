"""Proofs 1 and 2: token-projector registers with the real API server, which also accepts manifests/."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import NOBODY_TOKEN, ControlPlane, Registered, register
from tests.tls_material import make_certs
from tests.tools import REPO, require

pytestmark = pytest.mark.e2e


def test_register_creates_the_configuration_and_a_second_run_changes_nothing(
    registered: Registered, control_plane: ControlPlane
) -> None:
    assert registered.first.returncode == 0, registered.first.stderr
    assert "MutatingWebhookConfiguration token-projector created" in registered.first.stdout
    assert registered.second.returncode == 0, registered.second.stderr
    assert "already up to date" in registered.second.stdout
    stored = control_plane.request(
        "GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/token-projector"
    )
    assert stored["webhooks"][0]["clientConfig"]["url"] == registered.webhook.url
    assert stored["metadata"]["generation"] == 1, "the second run did not write"


def test_register_without_rbac_permission_says_which_permission_is_missing(
    registered: Registered, control_plane: ControlPlane
) -> None:
    ca_file = str(registered.webhook.certs / "ca.crt")
    result = register(control_plane, "--url", registered.webhook.url, "--ca-file", ca_file, token=NOBODY_TOKEN)
    assert result.returncode == 2
    assert "refused" in result.stderr
    assert "mutatingwebhookconfigurations.admissionregistration.k8s.io" in result.stderr
    assert NOBODY_TOKEN not in result.stderr


def rendered(tmp_path: Path, overlay: str) -> list[dict[str, Any]]:
    """``overlay`` rendered from a copy of manifests/ with certificates made as a user would."""
    tree = tmp_path / "manifests"
    if not tree.exists():
        shutil.copytree(REPO / "manifests", tree, ignore=shutil.ignore_patterns("*.crt", "*.key"))
        make_certs(tree / "overlays" / "self-managed" / "certs")
    kustomize = require("kustomize", hint="run `make tools`")
    result = subprocess.run([kustomize, "build", str(tree / overlay)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def apply_dry_run(control_plane: ControlPlane, objects: list[dict[str, Any]]) -> str:
    """Create the Namespace for real (namespaced dry runs need it), submit the rest as a server dry run."""
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    created = control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(namespace))
    assert created.returncode == 0, created.stderr
    # cert-manager's CRDs are not installed on this bare API server: its Issuer and Certificate are
    # checked offline in tests/manifests.
    rest = [o for o in objects if o["kind"] not in ("Namespace", "Issuer", "Certificate")]
    for obj in rest:
        if obj["kind"] == "MutatingWebhookConfiguration":
            # The live registration of these tests holds the name; the check is the same under another.
            obj["metadata"]["name"] = "dry-run-check"
    # create, not apply: each object is checked as submitted, not merged into what the cluster holds.
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(rest))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_api_server_accepts_every_object_of_the_cert_manager_overlay(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    out = apply_dry_run(control_plane, rendered(tmp_path, "overlays/cert-manager"))
    for kind in ("serviceaccount", "deployment.apps", "service", "poddisruptionbudget.policy"):
        assert f"{kind}/token-projector created (server dry run)" in out
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/dry-run-check created (server dry run)" in out


def test_the_api_server_accepts_every_object_of_the_self_managed_overlay(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    out = apply_dry_run(control_plane, rendered(tmp_path, "overlays/self-managed"))
    assert "secret/token-projector-tls created (server dry run)" in out


def test_the_webhooks_own_pod_passes_the_restricted_pod_security_standard(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    objects = rendered(tmp_path, "overlays/cert-manager")
    apply_dry_run(control_plane, objects)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")
    applied = control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(account))  # the Pod names it
    assert applied.returncode == 0, applied.stderr
    template = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "token-projector-check", **template["metadata"]},
        "spec": template["spec"],
    }
    result = control_plane.kubectl(
        "create", "--dry-run=server", "-n", "token-projector", "-f", "-", stdin=yaml.safe_dump(pod)
    )
    assert result.returncode == 0, result.stderr
    assert "violate" not in result.stderr
