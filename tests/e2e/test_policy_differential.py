"""The admission-policy engine against the webhook, in the real kube-apiserver: the same Pod, or both refuse.

For every Pod: the API server admits it once with no engine (defaulted, its API token volume added:
what admission plugins see), then it is created (server-side dry run) under the policies, and the
webhook's own review answers it, its patch applied and stored by the same API server. The two Pods
must be identical, or both refused. The one allowed difference is a documented one: the policy
refuses, saying to use the webhook engine, what it cannot compute exactly (docs/admission-policy.md).
"""

import difflib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import ControlPlane
from tests.e2e.policy_engine import Engines, install, uninstall
from tests.properties.test_review_properties import pods
from webhook.core.contract import Contract
from webhook.core.kubernetes import MIN_EXPIRATION_SECONDS, SERVICE_ACCOUNT_MOUNT_PATH

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent.parent / "fixtures"
WEBHOOK_ONLY = "token-projector webhook engine"
"""What the policy says when it refuses a Pod only because CEL cannot follow the webhook exactly."""

CONTRACTS = {
    "default": Contract(),
    "strict": Contract(
        strict=True,
        max_audiences=3,
        max_expiration_seconds=7200,
        allowed_audiences=("data-*", "https://*.example.com", "vault", "?"),
        legacy_token_scope="all",
    ),
    "renamed": Contract(
        legacy_token_policy="warn",
        token_file="data-store",
        volume_name="tokens",
        mount_path="/run/tokens/",
        env_var="TOKEN_FILE",
        dir_env_var="TOKEN_DIR",
        default_expiration_seconds=900,
    ),
}


@pytest.fixture(scope="module")
def engines(control_plane: ControlPlane) -> Iterator[dict[str, Engines]]:
    installed: dict[str, Engines] = {}
    try:
        for name, contract in CONTRACTS.items():
            installed[name] = install(control_plane, contract, name)
        yield installed
    finally:
        for one in installed.values():
            uninstall(one)


def same_outcome(engines: Engines, pod: dict[str, Any]) -> str:
    """Assert that both engines make the same of ``pod``; returns what they did, for hypothesis' statistics."""
    admitted = engines.as_admitted(pod)
    if admitted is None:
        assert engines.by_policy(pod).pod is None, "a Pod the API server refuses is refused under the policy too"
        return "invalid for the API server"
    by_policy, by_webhook = engines.by_policy(admitted), engines.by_webhook(admitted)
    if by_policy.pod is None and by_webhook.pod is not None:
        assert WEBHOOK_ONLY in (by_policy.refusal or ""), (
            f"the policy refused what the webhook admits: {by_policy.refusal}\n{json.dumps(admitted, indent=1)}"
        )
        return "webhook only"
    if by_webhook.pod is None:
        assert by_policy.pod is None, (
            f"the policy admitted what the webhook refuses ({by_webhook.refusal}):\n{json.dumps(admitted, indent=1)}"
        )
        if by_webhook.by_review:
            # Refused for the same reason, so by our policy and its message: not by the API server's validation
            # of a Pod our mutation would have broken.
            assert "ValidatingAdmissionPolicy 'token-projector" in (by_policy.refusal or ""), by_policy.refusal
        return "both refused"
    assert by_policy.pod == by_webhook.pod, "the policy (-) and the webhook (+) stored different Pods:\n" + "\n".join(
        difflib.unified_diff(
            json.dumps(by_policy.pod, indent=1, sort_keys=True).splitlines(),
            json.dumps(by_webhook.pod, indent=1, sort_keys=True).splitlines(),
            lineterm="",
        )
    )
    return "identical" if by_policy.pod == admitted else "identical, mutated"


def pod(*containers: dict[str, Any], annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "differential-", "annotations": annotations or {}},
        "spec": {
            "serviceAccountName": "app",
            "containers": list(containers) or [{"name": "app", "image": "busybox:1.36"}],
            **spec,
        },
    }


def container(name: str = "app", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", **fields}


A = "token-projector.io/audience"
E = "token-projector.io/expiration-seconds"
S = "token-projector.io/skip-containers"
LEGACY_SECRET = {"name": "app-token-ab1cd", "secret": {"secretName": "app-token-ab1cd"}}


def cases() -> dict[str, dict[str, Any]]:
    """Pods a person would write, one or more for each rule of the contract."""
    found = {
        "not annotated": pod(),
        "one audience": pod(annotations={A: "data-store"}),
        "a URL audience": pod(annotations={A: "https://vault.example.com"}),
        "several audiences": pod(annotations={A: "data-store, https://vault.example.com,Vault, .hidden."}),
        "several audiences, one named like the token file": pod(annotations={A: "token, data-store"}),
        "the token file's name second": pod(annotations={A: "data-store, token"}),
        "an audience named like the renamed token file second": pod(annotations={A: "vault, data-store"}),
        "too many audiences": pod(annotations={A: ",".join(f"a{i}" for i in range(9))}),
        "four audiences": pod(annotations={A: "data-a,data-b,data-c,data-d"}),
        "a duplicate audience": pod(annotations={A: "data-store, data-store"}),
        "an empty audience": pod(annotations={A: ""}),
        "white space around": pod(annotations={A: " data-store"}),
        "white space before a comma": pod(annotations={A: "data-store ,vault"}),
        "an empty element": pod(annotations={A: "data-store,,vault"}),
        "the API server's audience": pod(annotations={A: "https://kubernetes.default.svc"}),
        "a file name too long": pod(annotations={A: "data-store, " + "b" * 300}),
        "a long URL in a list": pod(annotations={A: "data-store, https://" + "b" * 70 + ".example.com"}),
        "a non-ASCII audience alone": pod(annotations={A: "données"}),
        "a non-ASCII audience in a list": pod(annotations={A: "data-store, données"}),
        "an information separator": pod(annotations={A: "data\x1cstore"}),
        "a single character": pod(annotations={A: "x"}),
        "skip a container": pod(container("app"), container("proxy"), annotations={A: "data-store", S: "proxy"}),
        "skip a missing container": pod(annotations={A: "data-store", S: "nope"}),
        "skip with white space": pod(container("app"), container("b"), annotations={A: "data-store", S: " b , ,"}),
        "a native sidecar": pod(
            container("app"),
            annotations={A: "data-store, vault"},
            initContainers=[container("proxy", restartPolicy="Always"), container("setup")],
        ),
        "env vars already there": pod(
            container(
                "app",
                env=[
                    {"name": "SERVICE_ACCOUNT_TOKEN_DIR", "value": "/elsewhere"},
                    {"name": "OTHER", "value": "$(SERVICE_ACCOUNT_TOKEN_PATH)"},
                ],
            ),
            annotations={A: "data-store, vault"},
        ),
        "a mount already there": pod(
            container("app", volumeMounts=[{"name": "cache", "mountPath": Contract().mount_path + "/"}]),
            annotations={A: "data-store"},
            volumes=[{"name": "cache", "emptyDir": {}}],
        ),
        "a volume named like ours": pod(
            annotations={A: "data-store"}, volumes=[{"name": "audience-token", "emptyDir": {}}]
        ),
        "legacy token mounted at the API path": pod(
            container("app", volumeMounts=[{"name": "t", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH + "/"}]),
            annotations={A: "data-store"},
            automountServiceAccountToken=False,
            volumes=[{"name": "t", "secret": {"secretName": "anything"}}],
        ),
        "legacy token named like one": pod(annotations={A: "data-store"}, volumes=[LEGACY_SECRET]),
        "legacy token, not annotated": pod(volumes=[LEGACY_SECRET]),
        "legacy-like secret of another account": pod(
            annotations={A: "data-store"}, volumes=[{"name": "s", "secret": {"secretName": "other-token-ab1cd"}}]
        ),
        "no API token": pod(annotations={A: "data-store"}, automountServiceAccountToken=False),
        "a mirror Pod": pod(annotations={A: "data-store", "kubernetes.io/config.mirror": "x"}),
    }
    for seconds in (MIN_EXPIRATION_SECONDS - 1, MIN_EXPIRATION_SECONDS, 7200, 7201, 86400, 86401, 2**32 + 1):
        found[f"expiration {seconds}"] = pod(annotations={A: "data-store", E: str(seconds)})
    for text in ("0000000000000000003600", "00000000000000003600", "1h", "+700", "", "99999999999999999999"):
        found[f"expiration {text!r}"] = pod(annotations={A: "data-store", E: text})
    for path in sorted(FIXTURES.glob("*.json")):
        body = json.loads(path.read_text())
        obj = body.get("request", {}).get("object") or body
        if obj.get("kind") == "Pod":
            for key in ("namespace", "managedFields", "creationTimestamp", "ownerReferences"):
                obj["metadata"].pop(key, None)
            found[f"fixture {path.name}"] = obj
    return found


CASES = cases()


@pytest.mark.parametrize("contract", list(CONTRACTS))
@pytest.mark.parametrize("case", list(CASES))
def test_every_fixture_pod_is_stored_identically_by_both_engines_or_refused_by_both(
    engines: dict[str, Engines], contract: str, case: str
) -> None:
    same_outcome(engines[contract], CASES[case])
    if CONTRACTS[contract].strict and "automountServiceAccountToken" not in CASES[case]["spec"]:
        # Strict mode refuses every Pod that automounts the API token: the case once more without it.
        same_outcome(
            engines[contract], {**CASES[case], "spec": {**CASES[case]["spec"], "automountServiceAccountToken": False}}
        )


@pytest.mark.parametrize("contract", list(CONTRACTS))
def test_generated_pods_are_stored_identically_by_both_engines_or_refused_by_both(
    engines: dict[str, Engines], contract: str
) -> None:
    @settings(
        max_examples=150 if contract == "default" else 75,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    # Half of them valid, annotated and without a conflict: the webhook patches those, and so must the policy.
    @given(pod=st.booleans().flatmap(lambda valid: pods(valid=valid)), name=st.sampled_from(["app", "default"]))
    def check(pod: dict[str, Any], name: str) -> None:
        pod["metadata"].pop("namespace", None)
        pod["spec"]["serviceAccountName"] = name
        event(same_outcome(engines[contract], pod))

    check()
