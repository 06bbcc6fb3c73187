"""Admission latency of both engines, as the API server itself measures it: ``python -m bench.admission_engines``.

The e2e control plane (kube-apiserver v1.37.2 and etcd, ``make e2e-deps``) runs the webhook engine
(``token-projector serve`` on loopback, registered) and the policy engine (``token-projector policy``) side
by side, each on its own namespace. The same annotated Pods are created (server-side dry run) under one engine,
then under the other, in alternating rounds; between rounds the API server's ``/metrics`` are read, and the
increase of each histogram's sum and count gives the mean time per Pod of:

- the whole mutating and validating steps of admission (``apiserver_admission_step_admission_duration_seconds``);
- each admission controller (``apiserver_admission_controller_admission_duration_seconds``): MutatingAdmissionWebhook,
  MutatingAdmissionPolicy, ValidatingAdmissionPolicy;
- the webhook call (``apiserver_admission_webhook_admission_duration_seconds``) and the mutating policy's own
  check (``apiserver_mutating_admission_policy_check_duration_seconds``).

Each round gives one mean per series and engine; the table shows the median round and the range, and the
median over rounds of the ratio policy / webhook of the whole admission (mutating + validating step), since
these shared machines drift by far more than the difference between rounds run side by side.
"""

import re
import sys
import urllib.request
import uuid
from collections import defaultdict
from statistics import median
from typing import Any

import pytest

from tests.e2e.conftest import (  # noqa: F401 -- control_plane and registered are the fixtures used below
    ADMIN_TOKEN,
    ControlPlane,
    Registered,
    control_plane,
    registered,
)
from tests.e2e.policy_engine import install, namespace
from webhook.core.contract import Contract
from webhook.install.deployment import WEBHOOK_NAME

AUDIENCE = Contract().annotation("audience")
PODS_PER_ROUND = 40
ROUNDS = 9
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def metrics(plane: ControlPlane) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every ``_sum`` and ``_count`` sample of the API server's admission histograms."""
    request = urllib.request.Request(plane.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, context=plane.context, timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and "admission" in match["name"] and match["name"].endswith(("_sum", "_count")):
            labels = frozenset(tuple(part.split("=", 1)) for part in re.findall(r'[a-z_]+="[^"]*"', match["labels"]))
            samples[match["name"], frozenset((k, v.strip('"')) for k, v in labels)] = float(match["value"])
    return samples


SERIES = {
    "mutating step": ("apiserver_admission_step_admission_duration_seconds", {"type": "admit", "operation": "CREATE"}),
    "validating step": (
        "apiserver_admission_step_admission_duration_seconds",
        {"type": "validate", "operation": "CREATE"},
    ),
    "MutatingAdmissionWebhook": (
        "apiserver_admission_controller_admission_duration_seconds",
        {"name": "MutatingAdmissionWebhook", "operation": "CREATE"},
    ),
    "webhook call": ("apiserver_admission_webhook_admission_duration_seconds", {"name": WEBHOOK_NAME}),
    "MutatingAdmissionPolicy": (
        "apiserver_admission_controller_admission_duration_seconds",
        {"name": "MutatingAdmissionPolicy", "operation": "CREATE"},
    ),
    "ValidatingAdmissionPolicy": (
        "apiserver_admission_controller_admission_duration_seconds",
        {"name": "ValidatingAdmissionPolicy", "operation": "CREATE"},
    ),
    "mutating policy check": ("apiserver_mutating_admission_policy_check_duration_seconds", {}),
}
"""(apiserver_validating_admission_policy_check_duration_seconds is observed only for refusals and errors.)"""


def mean_ms(before: dict[Any, float], after: dict[Any, float], series: str) -> tuple[float, int]:
    """The mean in milliseconds, and the count, of ``series`` between two readings (all its label sets summed)."""
    name, wanted = SERIES[series]
    totals: dict[str, float] = defaultdict(float)
    for (sample, labels), value in after.items():
        base = sample.rsplit("_", 1)[0]
        if base == name and all((k, v) in labels for k, v in wanted.items()):
            totals[sample.rsplit("_", 1)[1]] += value - before.get((sample, labels), 0.0)
    count = int(totals["count"])
    return (1000 * totals["sum"] / count if count else 0.0), count


def pod(audiences: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench-" + uuid.uuid4().hex[:8], "annotations": {AUDIENCE: audiences}},
        "spec": {
            "serviceAccountName": "app",
            "initContainers": [{"name": "proxy", "image": "busybox:1.36", "restartPolicy": "Always"}],
            "containers": [
                {"name": f"app-{i}", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]} for i in range(3)
            ],
        },
    }


def test_admission_latency_of_both_engines(control_plane: ControlPlane, registered: Registered) -> None:  # noqa: F811
    policy = install(control_plane, Contract(), "bench")
    webhook_namespace = namespace(control_plane, {})
    totals: dict[str, dict[str, list[float]]] = {"webhook": defaultdict(list), "policy": defaultdict(list)}
    for _ in range(ROUNDS):
        for engine, where in (("webhook", webhook_namespace), ("policy", policy.policy_namespace)):
            before = metrics(control_plane)
            for i in range(PODS_PER_ROUND):
                body = pod("data-store" if i % 2 else "data-store, https://vault.example.com")
                control_plane.request("POST", f"/api/v1/namespaces/{where}/pods?dryRun=All", body=body)
            after = metrics(control_plane)
            for series in SERIES:
                value, count = mean_ms(before, after, series)
                if count:
                    totals[engine][series].append(value)
    print(f"\nms per Pod CREATE (dry run): median round (range) of {ROUNDS} rounds of {PODS_PER_ROUND} Pods per engine")
    print(f"{'series':28} {'webhook engine':>22} {'policy engine':>22}")
    for series in SERIES:
        cells = []
        for engine in ("webhook", "policy"):
            values = sorted(totals[engine][series])
            cells.append(f"{median(values):6.3f} ({values[0]:.3f}-{values[-1]:.3f})" if values else "-")
        print(f"{series:28} {cells[0]:>22} {cells[1]:>22}")
    whole = {
        engine: [m + v for m, v in zip(totals[engine]["mutating step"], totals[engine]["validating step"], strict=True)]
        for engine in totals
    }
    ratios = [p / w for p, w in zip(whole["policy"], whole["webhook"], strict=True)]
    print(f"whole admission, policy / webhook, median of the rounds: {median(ratios):.2f}x")


def main() -> int:
    return pytest.main([__file__, "-q", "-s", "-p", "no:cacheprovider"])


if __name__ == "__main__":
    sys.exit(main())
