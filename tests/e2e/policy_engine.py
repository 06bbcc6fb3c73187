"""The admission-policy engine in the e2e control plane, and the webhook's answer to compare it with.

Each contract gets its own copy of the policies (named after it) whose bindings select only the
namespaces labelled for it; every namespace here is also labelled out of the webhook's reach, so
the only engine at work in a namespace is the one the test put there.
"""

import copy
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jsonpatch

from tests.e2e.conftest import ApiError, ControlPlane
from tests.helpers import admission_review, ops_of
from webhook.core.contract import Contract
from webhook.core.policy import admission_policies
from webhook.core.review import review
from webhook.install.deployment import NAMESPACE, OPT_OUT_LABEL

ENGINE_LABEL = "e2e.token-projector.io/engine"
PATHS = {
    "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
    "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}
SERVER_FIELDS = ("uid", "creationTimestamp", "resourceVersion", "managedFields", "generation", "namespace")
"""What the API server sets on every object it creates: not part of what either engine decides."""


@dataclass
class Outcome:
    """A Pod as the API server would store it, or the message it was refused with."""

    pod: dict[str, Any] | None
    refusal: str | None = None
    by_review: bool = False
    """Refused by the webhook's review itself, not by the API server's own validation of its patched Pod."""


@dataclass
class Engines:
    """One contract in one control plane: a namespace under its policies, and one under no engine at all."""

    plane: ControlPlane
    contract: Contract
    policy_namespace: str
    plain_namespace: str
    objects: list[dict[str, Any]]

    def dry_run(self, namespace: str, pod: dict[str, Any]) -> Outcome:
        body = copy.deepcopy(pod)
        body["metadata"]["namespace"] = namespace
        try:
            return Outcome(
                stripped(self.plane.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", body=body))
            )
        except ApiError as error:
            return Outcome(None, f"{error.status}: {error.message}")

    def as_admitted(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """``pod`` as admission plugins see it (defaulted, its API token added), or None if it is invalid."""
        return self.dry_run(self.plain_namespace, pod).pod

    def by_policy(self, pod: dict[str, Any]) -> Outcome:
        return self.dry_run(self.policy_namespace, pod)

    def by_webhook(self, pod: dict[str, Any]) -> Outcome:
        """What the webhook's own review makes of ``pod``, stored by the same API server."""
        body = admission_review(copy.deepcopy(pod))
        body["request"]["namespace"] = self.plain_namespace
        response = review(body, self.contract).response["response"]
        if not response["allowed"]:
            return Outcome(None, response["status"]["message"], by_review=True)
        patched = jsonpatch.apply_patch(pod, ops_of(review(body, self.contract)))
        return self.dry_run(self.plain_namespace, patched)


def stripped(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` without what the API server sets when it stores any object."""
    pod = copy.deepcopy(pod)
    for key in SERVER_FIELDS:
        pod["metadata"].pop(key, None)
    pod.pop("status", None)
    return pod


def install(plane: ControlPlane, contract: Contract, name: str) -> Engines:
    """The policies of ``contract``, named ``…-name`` and bound to namespaces labelled for ``name``; ready."""
    objects = admission_policies(contract, excluded_namespaces=("kube-system", NAMESPACE), opt_out_label=OPT_OUT_LABEL)
    for obj in objects:
        obj["metadata"]["name"] += f"-{name}"
        if "policyName" in obj["spec"]:
            obj["spec"]["policyName"] += f"-{name}"
            obj["spec"]["matchResources"]["namespaceSelector"] = {"matchLabels": {ENGINE_LABEL: name}}
        plane.request("POST", f"/apis/admissionregistration.k8s.io/v1/{PATHS[obj['kind']]}", body=obj)
    labels = {OPT_OUT_LABEL: "true"}
    engines = Engines(
        plane,
        contract,
        policy_namespace=namespace(plane, {**labels, ENGINE_LABEL: name}),
        plain_namespace=namespace(plane, labels),
        objects=objects,
    )
    wait_until_enforced(engines)
    return engines


def namespace(plane: ControlPlane, labels: dict[str, str]) -> str:
    """A namespace with the ServiceAccounts the Pods name (no controller-manager makes ``default`` here)."""
    name = plane.namespace(labels=labels)
    for account in ("default", "api"):  # "api": the test fixtures' Pods run as it
        plane.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", body={"metadata": {"name": account}})
    return name


def uninstall(engines: Engines) -> None:
    for obj in reversed(engines.objects):
        path = f"/apis/admissionregistration.k8s.io/v1/{PATHS[obj['kind']]}/{obj['metadata']['name']}"
        engines.plane.request("DELETE", path)


def wait_until_enforced(engines: Engines, timeout: float = 60) -> None:
    """The API server loads policies asynchronously: wait until both mutate and refuse in the namespace."""
    key = engines.contract.annotation("audience")
    probe: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe-" + uuid.uuid4().hex[:6], "annotations": {key: "data-store"}},
        "spec": {
            "serviceAccountName": "app",
            "automountServiceAccountToken": False,  # strict mode would refuse the API token
            "containers": [{"name": "app", "image": "busybox:1.36"}],
        },
    }
    refused = copy.deepcopy(probe)
    refused["metadata"]["annotations"][key] = ""
    deadline = time.monotonic() + timeout
    while True:
        outcome = engines.by_policy(probe)
        mutated = outcome.pod
        if (
            mutated is not None
            and any(v["name"] == engines.contract.volume_name for v in mutated["spec"].get("volumes", []))
            and engines.by_policy(refused).pod is None
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the policies were not enforced within {timeout}s: {outcome.refusal or mutated}")
        time.sleep(0.2)
