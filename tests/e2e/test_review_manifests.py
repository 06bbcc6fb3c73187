"""``token-projector review`` of manifests agrees with the real API server and webhook on the Pods controllers create.

For each workload of ``tests/fixtures/manifests``, the Pod its controller would create (as
``GetPodFromTemplate`` makes it, written out here independently) is created with ``dryRun=All``
on the real kube-apiserver, with token-projector registered: the ServiceAccount admission plugin
and then the webhook act on it for real. What the offline review predicted must be what was stored.
"""

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ApiError, ControlPlane, Registered
from tests.helpers import FIXTURES
from webhook.core.workloads import pod_for

pytestmark = pytest.mark.e2e

MANIFESTS = FIXTURES / "manifests"
TEMPLATE = {"CronJob": ("spec", "jobTemplate", "spec", "template")}


def template_of(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj
    for part in TEMPLATE.get(obj["kind"], ("spec", "template")):
        value = value[part]
    return value


def controller_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """What the workload's controller sends the API server: template labels, annotations and spec, generateName."""
    template = template_of(obj)
    name = obj["metadata"]["name"]
    metadata = {"generateName": name + "-", **template.get("metadata", {})}
    spec = dict(template["spec"])
    if obj["kind"] == "StatefulSet":  # its Pods are named by ordinal, with a volume per claim template
        metadata["name"] = f"{name}-0"
        claims = [c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])]
        spec["volumes"] = [
            *spec.get("volumes", []),
            *({"name": c, "persistentVolumeClaim": {"claimName": f"{c}-{name}-0"}} for c in claims),
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def claim_names(obj: dict[str, Any]) -> set[str]:
    return {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "review", *args], capture_output=True, text=True, check=False, timeout=60
    )


def without_defaults(volume: dict[str, Any]) -> dict[str, Any]:
    projected = {k: v for k, v in volume.get("projected", {}).items() if k != "defaultMode"}
    return {**volume, "projected": projected} if "projected" in volume else volume


def api_access(volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in volumes if v["name"].startswith("kube-api-access-")]


@pytest.fixture(scope="module")
def namespace(registered: Registered, control_plane: ControlPlane) -> str:
    name = control_plane.namespace()
    # No controller-manager runs here to make the `default` ServiceAccount the fixtures' Pods use.
    control_plane.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", body={"metadata": {"name": "default"}})
    return name


WORKLOADS = [
    doc for doc in yaml.safe_load_all((MANIFESTS / "kinds.yaml").read_text()) if doc["kind"] not in ("Pod", "Service")
]


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w["kind"])
def test_the_patched_template_is_what_the_api_server_stores_for_the_controllers_pod(
    namespace: str, control_plane: ControlPlane, workload: dict[str, Any], tmp_path: Any
) -> None:
    workload = {**workload, "metadata": {**workload["metadata"], "namespace": namespace}}
    path = tmp_path / "workload.yaml"
    path.write_text(yaml.safe_dump(workload))
    result = offline(str(path), "-o", "yaml", "--patched")
    assert result.returncode == 0, result.stderr
    predicted = template_of(yaml.safe_load(result.stdout))["spec"]

    stored = control_plane.request(
        "POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", body=controller_pod(workload)
    )["spec"]
    added = claim_names(workload) if workload["kind"] == "StatefulSet" else set()
    kept = [v for v in stored["volumes"] if not v["name"].startswith("kube-api-access-") and v["name"] not in added]
    assert [without_defaults(v) for v in kept] == [without_defaults(v) for v in predicted["volumes"]]
    for kind in ("initContainers", "containers"):
        for got, want in zip(stored.get(kind, []), predicted.get(kind, []), strict=True):
            mounts = [m for m in got["volumeMounts"] if not m["name"].startswith("kube-api-access-")]
            assert mounts == want["volumeMounts"]
            assert got["env"] == want["env"]
    # And the review built the Pod the webhook saw: the ServiceAccount plugin's volume, as the plugin makes it.
    [real] = api_access(stored["volumes"])
    [emulated] = api_access(pod_for(workload, namespace=namespace)["spec"]["volumes"])
    assert {**real, "name": "kube-api-access"} == {**emulated, "name": "kube-api-access"}


def test_a_denied_workload_is_refused_by_the_real_webhook_with_the_same_message(
    namespace: str, control_plane: ControlPlane
) -> None:
    result = offline(str(MANIFESTS / "broken.yaml"), "-o", "json")
    row = next(r for r in json.loads(result.stdout)["rows"] if r["name"] == "after")
    assert row["outcome"] == "denied"
    workload = yaml.safe_load((MANIFESTS / "broken.yaml").read_text().split("---")[2])
    with pytest.raises(ApiError) as raised:
        control_plane.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", body=controller_pod(workload))
    assert raised.value.status == 403
    assert raised.value.message.endswith(row["message"])
