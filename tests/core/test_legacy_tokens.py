"""Legacy (Secret-backed) service account tokens are recognised from the Pod alone and refused or warned about."""

import pytest

from tests.helpers import (
    admission_review,
    annotated,
    container,
    denial,
    fixture,
    make_pod,
    ops_of,
    patched,
    run,
)
from webhook.core.contract import Contract
from webhook.core.kubernetes import SERVICE_ACCOUNT_MOUNT_PATH
from webhook.core.wire import Json

WARN = Contract(legacy_token_policy="warn")
OFF = Contract(legacy_token_policy="off")
ALL = Contract(legacy_token_scope="all")
STRICT = Contract(strict=True)


def secret_volume(name: str, secret: str | None = None) -> Json:
    return {"name": name, "secret": {"secretName": secret or name, "defaultMode": 420}}


def legacy_pod(annotations: dict[str, str] | None = None) -> Json:
    """A Pod as an old cluster's ServiceAccount plugin automounted it: a token Secret at the API path."""
    app = container("app", volumeMounts=[{"name": "default-token-b7x2q", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}])
    return make_pod(app, annotations=annotations, volumes=[secret_volume("default-token-b7x2q")])


def test_an_automounted_legacy_token_is_denied_naming_the_volume_the_secret_and_the_fix() -> None:
    status = denial(fixture("legacy-token-pod-annotated.json"))
    assert status["code"] == 403
    assert status["reason"] == "Forbidden"
    message = status["message"]
    assert "legacy service account token" in message
    assert "volume 'api-token-x7k2p'" in message
    assert "Secret 'api-token-x7k2p'" in message
    assert SERVICE_ACCOUNT_MOUNT_PATH in message
    assert "container 'app'" in message
    assert "automountServiceAccountToken: false" in message
    assert "remove the volume" in message


def test_a_secret_at_the_api_token_path_is_legacy_whatever_its_name() -> None:
    app = container("app", volumeMounts=[{"name": "creds", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH + "/"}])
    body = admission_review(make_pod(app, annotations=annotated(), volumes=[secret_volume("creds", "whatever")]))
    assert "Secret 'whatever'" in denial(body)["message"]


def test_a_hand_written_token_secret_named_for_the_service_account_is_legacy_wherever_it_is_mounted() -> None:
    app = container("app", volumeMounts=[{"name": "tok", "mountPath": "/etc/token"}])
    body = admission_review(
        make_pod(
            app,
            annotations=annotated(),
            volumes=[secret_volume("tok", "billing-token-4z9kd")],
            serviceAccountName="billing",
        )
    )
    message = denial(body)["message"]
    assert "Secret 'billing-token-4z9kd'" in message
    assert "named like a service account token Secret" in message


def test_a_token_secret_of_the_default_service_account_is_legacy_when_no_account_is_named() -> None:
    body = admission_review(make_pod(annotations=annotated(), volumes=[secret_volume("x", "default-token-4z9kd")]))
    assert "default-token-4z9kd" in denial(body)["message"]


def test_the_deprecated_service_account_field_names_the_account_too() -> None:
    body = admission_review(
        make_pod(annotations=annotated(), volumes=[secret_volume("x", "old-token-4z9kd")], serviceAccount="old")
    )
    assert "old-token-4z9kd" in denial(body)["message"]


@pytest.mark.parametrize(
    "secret", ["api-token-4z9k", "api-token-4z9kdd", "api-token-4Z9KD", "other-token-4z9kd", "api-tokens", "tls-certs"]
)
def test_ordinary_secret_volumes_are_not_legacy_tokens(secret: str) -> None:
    body = admission_review(
        make_pod(annotations=annotated(), volumes=[secret_volume("s", secret)], serviceAccountName="api")
    )
    assert run(body).response["response"]["allowed"] is True


def test_the_modern_kube_api_access_volume_is_not_legacy() -> None:
    reviewed = run(fixture("deployment-pod-annotated.json"))
    assert reviewed.response["response"]["allowed"] is True
    assert "warnings" not in reviewed.response["response"]


def test_warn_policy_allows_and_injects_with_a_warning_and_an_audit_annotation() -> None:
    body = admission_review(legacy_pod(annotated()))
    reviewed = run(body, WARN)
    response = reviewed.response["response"]
    assert response["allowed"] is True
    assert any("'default-token-b7x2q'" in w and "never expires" in w for w in response["warnings"])
    assert response["auditAnnotations"]["legacy-token"].startswith("warned: ")
    assert "injected" in response["auditAnnotations"]
    assert patched(body, WARN)["spec"]["volumes"][1]["name"] == "audience-token"


def test_off_policy_ignores_legacy_tokens() -> None:
    response = run(admission_review(legacy_pod(annotated())), OFF).response["response"]
    assert response["allowed"] is True
    assert "warnings" not in response


def test_by_default_only_annotated_pods_are_checked_for_legacy_tokens() -> None:
    reviewed = run(admission_review(legacy_pod()))
    assert reviewed.response["response"] == {"uid": reviewed.uid, "allowed": True}


def test_with_scope_all_an_unannotated_pod_with_a_legacy_token_is_denied_and_told_how_to_opt_in() -> None:
    message = denial(admission_review(legacy_pod()), ALL)["message"]
    assert "default-token-b7x2q" in message
    assert "token-projector.io/audience" in message


def test_with_scope_all_an_unannotated_pod_without_a_legacy_token_is_allowed_untouched() -> None:
    reviewed = run(admission_review(make_pod()), ALL)
    assert reviewed.response["response"] == {"uid": reviewed.uid, "allowed": True}


def test_with_scope_all_and_warn_an_unannotated_pod_is_allowed_with_a_warning_and_no_patch() -> None:
    contract = Contract(legacy_token_scope="all", legacy_token_policy="warn")
    reviewed = run(admission_review(legacy_pod()), contract)
    assert reviewed.response["response"]["warnings"]
    assert ops_of(reviewed) == []


def test_strict_mode_denies_an_annotated_pod_that_still_automounts_the_api_token() -> None:
    status = denial(fixture("deployment-pod-annotated.json"), STRICT)
    assert status["code"] == 403
    assert "kube-api-access-7xk2p" in status["message"]
    assert "automountServiceAccountToken: false" in status["message"]


def test_strict_mode_allows_an_annotated_pod_that_does_not_automount() -> None:
    assert patched(fixture("bare-pod-annotated.json"), STRICT)["spec"]["volumes"][0]["name"] == "audience-token"


def test_strict_mode_leaves_pods_that_did_not_opt_in_alone() -> None:
    body = fixture("deployment-pod-annotated.json")
    del body["request"]["object"]["metadata"]["annotations"]["token-projector.io/audience"]
    assert run(body, STRICT).response["response"]["allowed"] is True


def test_strict_mode_does_not_take_our_own_audience_token_for_an_api_token() -> None:
    body = fixture("bare-pod-annotated.json")
    pod = patched(body, STRICT)
    assert run(admission_review(pod), STRICT).response["response"]["allowed"] is True
