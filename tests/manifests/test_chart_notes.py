"""What the chart tells the person who installed it (NOTES.txt), for each engine.

``helm template`` does not render NOTES.txt; ``helm install --dry-run=client`` does, against a copy of
the chart whose admission policies are left out (their Kubernetes version check needs
``--kube-version``, which ``helm install`` does not take; the policies are tested in test_admission_policy).
"""

import shutil
from pathlib import Path

from tests.manifests.chart import CHART, helm


def notes(tmp_path: Path, *args: str) -> str:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "admission-policy.yaml").write_text("")
    result = helm("install", "token-projector", str(chart), "--dry-run=client", "--namespace", "tp", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_the_webhook_engine_says_to_watch_its_deployment_roll_out(tmp_path: Path) -> None:
    assert "rollout status deployment/token-projector" in notes(tmp_path)


def test_the_policy_engine_names_its_policies_and_no_deployment_that_does_not_exist(tmp_path: Path) -> None:
    text = notes(tmp_path, "--set", "engine=policy", "--set", "webhook.enabled=false")
    assert "deployment" not in text.lower()
    assert "kubectl get mutatingadmissionpolicies" in text
