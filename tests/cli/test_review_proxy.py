"""``token-projector review`` of a receiver with the protect annotations: the row and the patched manifest."""

from pathlib import Path

import pytest
import yaml

from webhook.cli import main

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: secret-store, namespace: team}
spec:
  selector: {matchLabels: {app: secret-store}}
  template:
    metadata:
      labels: {app: secret-store}
      annotations:
        token-projector.io/protect-port: http
        token-projector.io/protect-audience: secret-store
        token-projector.io/protect-allow: api/api
    spec:
      serviceAccountName: secret-store
      containers:
        - name: app
          image: secret-store:1
          ports: [{name: http, containerPort: 8080}]
"""


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    path = tmp_path / "secret-store.yaml"
    path.write_text(DEPLOYMENT)
    return str(path)


def test_the_table_says_the_proxy_is_added_in_front_of_which_port_for_which_callers(
    manifest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["review", manifest]) == 0
    out = capsys.readouterr().out
    assert "mutated" in out
    assert "proxy-injected: container=token-projector-proxy port=8080 audience=secret-store allow=api/api" in out


def test_the_patched_manifest_has_the_proxy_as_a_native_sidecar_of_the_template(
    manifest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["review", manifest, "-o", "yaml", "--patched"]) == 0
    [deployment] = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    [proxy] = deployment["spec"]["template"]["spec"]["initContainers"]
    assert proxy["name"] == "token-projector-proxy"
    assert proxy["restartPolicy"] == "Always"
    assert proxy["ports"][0]["name"] == "token-proxy"


def test_a_receiver_whose_account_does_not_mount_its_token_is_denied_in_ci(
    manifest: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "no-token.yaml"
    path.write_text(DEPLOYMENT.replace("serviceAccountName: secret-store", "automountServiceAccountToken: false"))
    assert main(["review", str(path)]) == 1
    assert "set automountServiceAccountToken: true in the Pod spec" in capsys.readouterr().out
