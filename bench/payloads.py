"""The AdmissionReviews the benchmarks send: a ~10 KB 2-container Pod and a ~60 KB 12-container Pod."""

import copy
import json
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "deployment-pod-annotated.json"


def pod_review(containers: int) -> dict[str, Any]:
    """The Deployment fixture with ``containers`` realistic containers (env, mounts, probes, resources)."""
    review: dict[str, Any] = json.loads(FIXTURE.read_text())
    pod = review["request"]["object"]
    template = pod["spec"]["containers"][0]
    pod["spec"]["containers"] = []
    for i in range(containers):
        container = copy.deepcopy(template)
        container["name"] = f"app-{i}"
        container["env"] = [{"name": f"SETTING_{j}", "value": f"value-{i}-{j}-" + "x" * 24} for j in range(48)]
        container["args"] = [f"--option-{k}=value-{k}" for k in range(24)]
        container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}
        container["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 5}
        pod["spec"]["containers"].append(container)
    pod["metadata"]["labels"].update({f"team.example.com/label-{j}": f"value-{j}" for j in range(8)})
    return review


SMALL = pod_review(2)
LARGE = pod_review(12)


def body(review: dict[str, Any]) -> bytes:
    return json.dumps(review).encode()
