"""Which requests are reviewed, in which version they are answered, and which bodies are not AdmissionReviews."""

from typing import Any

import pytest

from tests.helpers import admission_review, annotated, fixture, make_pod, ops_of, run
from webhook.core.contract import Contract
from webhook.core.review import review
from webhook.core.wire import Json
from webhook.errors import InvalidReview

ANNOTATED = make_pod(annotations=annotated())


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_pod_operations_other_than_create_are_allowed_untouched(operation: str) -> None:
    reviewed = run(admission_review(ANNOTATED, operation=operation))
    assert reviewed.response["response"] == {"uid": reviewed.uid, "allowed": True}


@pytest.mark.parametrize("sub_resource", ["status", "ephemeralcontainers", "binding", "eviction"])
def test_pod_subresources_are_allowed_untouched(sub_resource: str) -> None:
    reviewed = run(admission_review(ANNOTATED, sub_resource=sub_resource))
    assert reviewed.response["response"] == {"uid": reviewed.uid, "allowed": True}


def test_other_kinds_are_allowed_untouched_even_with_a_pod_template_that_is_annotated() -> None:
    reviewed = run(fixture("deployment-create.json"))
    assert reviewed.response["response"] == {"uid": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "allowed": True}


def test_a_resource_named_pods_in_another_api_group_is_not_a_pod() -> None:
    reviewed = run(admission_review(ANNOTATED, resource=("metrics.k8s.io", "pods")))
    assert "patch" not in reviewed.response["response"]


def test_mirror_pods_are_allowed_untouched_because_they_may_not_have_tokens() -> None:
    pod = make_pod(annotations={**annotated(), "kubernetes.io/config.mirror": "3f2a"})
    reviewed = run(admission_review(pod))
    assert reviewed.response["response"] == {"uid": reviewed.uid, "allowed": True}


def test_dry_run_requests_get_the_same_patch_as_real_ones() -> None:
    assert ops_of(run(admission_review(ANNOTATED, dry_run=True))) == ops_of(run(admission_review(ANNOTATED)))


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_the_answer_is_in_the_version_of_the_request_with_the_uid_echoed(api_version: str) -> None:
    reviewed = run(admission_review(ANNOTATED, api_version=api_version, uid="abc-123"))
    assert reviewed.response["apiVersion"] == api_version
    assert reviewed.response["kind"] == "AdmissionReview"
    assert reviewed.response["response"]["uid"] == "abc-123"
    assert ops_of(reviewed)


def test_the_outcome_and_log_fields_describe_the_request() -> None:
    reviewed = run(fixture("deployment-pod-annotated.json"))
    assert (reviewed.outcome, reviewed.namespace, reviewed.pod, reviewed.operation) == (
        "mutated",
        "api",
        "api-7d9c6b5f4-<generated>",
        "CREATE",
    )


def _without(key: str) -> Json:
    body = admission_review(ANNOTATED)
    del body["request"][key]
    return body


def _with_object(pod: Any) -> Json:
    return admission_review(pod)


def _spec(**spec: Any) -> Json:
    return _with_object({"metadata": {"annotations": annotated()}, "spec": spec})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body must be a JSON object"),
        ("AdmissionReview", "body must be a JSON object"),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {}},
            "kind must be AdmissionReview, got 'Pod'",
        ),
        ({"kind": "AdmissionReview", "request": {"uid": "x"}}, "apiVersion must be one of"),
        ({"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview"}, "got 'admission.k8s.io/v2'"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no request object"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": []}, "no request object"),
        (_without("uid"), "request.uid must be a non-empty string"),
        (admission_review(ANNOTATED, uid=""), "request.uid must be a non-empty string"),
        (_with_object(None), "request.object must be an object, got null"),
        (_with_object([]), "request.object must be an object, got a list"),
        (_with_object({"metadata": {}}), "request.object.spec must be an object, got null"),
        (_with_object({"metadata": "x", "spec": {}}), "request.object.metadata must be an object, got a string"),
        (
            _with_object({"metadata": {"annotations": {"a": 1}}, "spec": {}}),
            "request.object.metadata.annotations['a'] must be a string, got a number",
        ),
        (_spec(containers={"name": "app"}), "request.object.spec.containers must be a list, got an object"),
        (_spec(containers=["app"]), "request.object.spec.containers[0] must be an object, got a string"),
        (_spec(containers=[{}]), "request.object.spec.containers[0].name must be a string, got null"),
        (_spec(containers=[{"name": "a", "env": {}}]), "request.object.spec.containers[0].env must be a list"),
        (
            _spec(initContainers=[{"name": "a", "volumeMounts": [{"name": "v"}]}]),
            "request.object.spec.initContainers[0].volumeMounts[0].mountPath must be a string",
        ),
        (_spec(volumes=[{"name": 3}]), "request.object.spec.volumes[0].name must be a string, got a number"),
        (_spec(serviceAccountName=True), "request.object.spec.serviceAccountName must be a string, got a boolean"),
    ],
)
def test_a_body_that_is_not_a_usable_admission_review_is_an_invalid_review_that_says_where(
    body: Any, message: str
) -> None:
    with pytest.raises(InvalidReview) as raised:
        review(body, Contract())
    assert message in str(raised.value)
    assert raised.value.status == 400


def test_a_request_that_is_not_a_pod_create_is_not_checked_for_shape() -> None:
    body = admission_review(None, operation="DELETE")
    assert run(body).response["response"]["allowed"] is True
