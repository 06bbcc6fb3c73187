"""Properties of the proxy's injection over any values of the protect annotations, hostile ones included.

Whatever the three annotations hold (any text, any length, some of them missing): the review answers
(never an exception), a denial is a 422 whose message is bounded and names a protect annotation, and an
admitted Pod's patch applies, passes the Kubernetes schema and yields nothing on a second review.
"""

import copy

import jsonpatch
import kubernetes_validate
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.helpers import admission_review, container, make_pod, ops_of, run
from webhook.core.contract import PROTECT_KEYS, Contract
from webhook.core.wire import Json

CONTRACT = Contract()
API_VOLUME = {
    "name": "kube-api-access-abcde",
    "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]},
}
API_MOUNT = {
    "name": "kube-api-access-abcde",
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    "readOnly": True,
}
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["http", "8080", "0", "99999", "08080", "api/api", "*/*", "a/b, c/*", "secret-store", "9" * 5000]),
    st.from_regex(r"\A[a-z*]{1,5}/[a-z*]{1,5}(, ?[a-z*]{1,5}/[a-z*]{1,5}){0,3}\Z"),
)


def pod_with(annotations: dict[str, str]) -> Json:
    app = container(
        "app", ports=[{"name": "http", "containerPort": 8080}, {"containerPort": 9000}], volumeMounts=[API_MOUNT]
    )
    return make_pod(app, annotations=annotations, volumes=[copy.deepcopy(API_VOLUME)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.fixed_dictionaries({}, optional=dict.fromkeys(PROTECT_KEYS, VALUES)),
        # Mostly right, one value drawn: what is admitted is checked as thoroughly as what is refused.
        st.fixed_dictionaries(
            {"protect-port": st.sampled_from(["http", "8080", "9000"]), "protect-audience": VALUES},
            optional={"protect-allow": st.sampled_from(["api/api", "*/*", "a/b, c/*"])},
        ),
    )
)
@example({"protect-port": "http", "protect-audience": "secret-store", "protect-allow": "api/api"})
def test_any_protect_annotations_are_answered_by_a_valid_patch_or_a_bounded_denial(values: dict[str, str]) -> None:
    annotations = {CONTRACT.annotation(key): value for key, value in values.items()}
    body = admission_review(pod_with(annotations))
    response = run(body).response["response"]
    event("denied" if not response["allowed"] else "admitted")
    if not response["allowed"]:
        assert response["status"]["code"] == 422
        message = response["status"]["message"]
        assert len(message) < 1500
        assert any(CONTRACT.annotation(key) in message for key in PROTECT_KEYS)
        return
    ops = ops_of(run(body))
    if not annotations:
        assert ops == []
        return
    patched = jsonpatch.apply_patch(copy.deepcopy(body["request"]["object"]), ops)
    kubernetes_validate.validate(patched, "1.37.0", strict=True)
    assert ops_of(run(admission_review(patched))) == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(JSON, st.fixed_dictionaries({}, optional={"containerPort": JSON, "name": JSON, "protocol": JSON})),
        max_size=4,
    )
)
def test_ports_of_any_json_shape_in_another_container_are_answered_never_a_crash(ports: list[object]) -> None:
    pod = pod_with(
        {CONTRACT.annotation(key): value for key, value in zip(PROTECT_KEYS, ("http", "store", "a/b"), strict=True)}
    )
    pod["spec"]["containers"].append(container("other", ports=ports))
    response = run(admission_review(pod)).response["response"]
    assert response["allowed"] or response["status"]["code"] == 422
