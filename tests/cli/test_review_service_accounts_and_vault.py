"""``token-projector review`` applies the input's ServiceAccounts to their workloads, and checks the Vault recipe."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.cli import main
from webhook.core.contract import Contract

MOUNT_PATH = Contract().mount_path
VAULT_ANNOTATIONS = {
    "vault.hashicorp.com/agent-inject": "true",
    "vault.hashicorp.com/role": "api",
    "vault.hashicorp.com/agent-inject-secret-db": "database/creds/api",
}
POINTED_AT_TOKEN_PROJECTOR = {"vault.hashicorp.com/agent-service-account-token-volume-name": "audience-token"}


def account(name: str = "api", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
    }


def deployment(account_name: str = "api", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}, "annotations": annotations or {}},
                "spec": {
                    "serviceAccountName": account_name,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "api", "image": "registry.example.com/api:1"}],
                },
            },
        },
    }


def reviewed(tmp_path: Path, capsys: pytest.CaptureFixture[str], *objects: dict[str, Any]) -> tuple[int, Any]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    code = main(["review", str(path), "-o", "json"])
    rows = [row for row in json.loads(capsys.readouterr().out)["rows"] if row["kind"] == "Deployment"]
    assert len(rows) == 1
    return code, rows[0]


def volume_of(row: dict[str, Any]) -> dict[str, Any]:
    volume: dict[str, Any] = next(op["value"] for op in row["patch"] if op["path"].startswith("/spec/volumes"))
    return volume[0] if isinstance(volume, list) else volume


def test_a_workload_gets_the_audience_of_its_service_account_in_the_same_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, row = reviewed(tmp_path, capsys, account(**{"token-projector.io/audience": "data-store"}), deployment())
    assert (code, row["outcome"]) == (0, "mutated")
    assert volume_of(row)["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "data-store"
    assert row["message"].endswith("from=ServiceAccount:shop/api")


def test_a_workload_whose_service_account_is_not_in_the_input_is_reviewed_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, row = reviewed(tmp_path, capsys, account("other", **{"token-projector.io/audience": "x"}), deployment())
    assert (code, row["outcome"]) == (0, "unchanged")


def test_a_bad_value_on_the_service_account_is_denied_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, row = reviewed(tmp_path, capsys, account(**{"token-projector.io/expiration-seconds": "5"}), deployment())
    assert (code, row["outcome"]) == (0, "unchanged"), "an expiration alone opts nothing in"
    bad = account(**{"token-projector.io/audience": "vault", "token-projector.io/expiration-seconds": "5"})
    code, row = reviewed(tmp_path, capsys, bad, deployment())
    assert (code, row["outcome"]) == (1, "denied")
    assert row["message"].startswith(
        "annotation token-projector.io/expiration-seconds from ServiceAccount shop/api is 5"
    )


@pytest.mark.parametrize("where", ["pod", "service account"])
def test_the_vault_recipe_gives_the_agent_token_projectors_vault_token_and_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    audience = {"token-projector.io/audience": "vault"}
    template = {**VAULT_ANNOTATIONS, **POINTED_AT_TOKEN_PROJECTOR, **(audience if where == "pod" else {})}
    sa = account(**(audience if where == "service account" else {}))
    code, row = reviewed(tmp_path, capsys, sa, deployment(annotations=template))
    assert (code, row["outcome"], row["warnings"]) == (0, "mutated", [])
    # What the injector reads (vault-k8s agent.serviceaccount): the named volume's mount in an app
    # container, and the path of the volume's first serviceAccountToken source.
    volume = volume_of(row)
    assert volume["name"] == POINTED_AT_TOKEN_PROJECTOR["vault.hashicorp.com/agent-service-account-token-volume-name"]
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "vault"
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token"
    mounts = [op["value"] for op in row["patch"] if "volumeMounts" in op["path"]]
    assert mounts == [[{"name": "audience-token", "mountPath": MOUNT_PATH, "readOnly": True}]]


def test_a_vault_agent_pod_that_would_send_the_api_token_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, row = reviewed(tmp_path, capsys, account(), deployment(annotations=VAULT_ANNOTATIONS))
    assert (code, row["outcome"]) == (0, "unchanged")
    (warning,) = row["warnings"]
    assert warning.startswith(
        "annotation vault.hashicorp.com/agent-inject is true without "
        "vault.hashicorp.com/agent-service-account-token-volume-name: the Vault Agent will log in to Vault with "
        "the Pod's Kubernetes API token"
    )
    assert row["message"] == warning


def test_a_vault_agent_pointed_at_token_projectors_volume_without_asking_for_a_token_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = {**VAULT_ANNOTATIONS, **POINTED_AT_TOKEN_PROJECTOR}
    _, row = reviewed(tmp_path, capsys, account(), deployment(annotations=template))
    (warning,) = row["warnings"]
    assert "names token-projector's volume 'audience-token', but the Pod gets no token" in warning
