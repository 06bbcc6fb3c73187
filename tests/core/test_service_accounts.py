"""ServiceAccount-level opt-in in the pure review: the account's annotations are an input, the Pod's win."""

import copy

import orjson
import pytest

from tests.helpers import DEFAULT, TOKEN_PATH, admission_review, annotated, container, make_pod, ops_of
from webhook.core.review import AbsentFrom, Reviewed, review
from webhook.core.service_accounts import AccountAnnotations, account_of_review
from webhook.core.wire import Json

API = AccountAnnotations("api", "api", {"token-projector.io/audience": "vault"})


def reviewed_with(pod: Json, account: AccountAnnotations | None) -> Reviewed:
    """The review of ``pod`` as the server makes it: with the account it read, by both paths."""
    body = admission_review(pod)
    before = copy.deepcopy(body)
    raw = orjson.dumps(body)
    answer = review(body, DEFAULT, absent=AbsentFrom(raw), service_account=account)
    assert review(body, DEFAULT, service_account=account) == answer
    assert body == before
    return answer


def volume_of(reviewed: Reviewed) -> Json:
    volume: Json = next(op["value"] for op in ops_of(reviewed) if op["path"].startswith("/spec/volumes"))
    return volume[0] if isinstance(volume, list) else volume


def source_of(reviewed: Reviewed) -> Json:
    token: Json = volume_of(reviewed)["projected"]["sources"][0]["serviceAccountToken"]
    return token


def test_an_unannotated_pod_gets_the_audience_of_its_service_account() -> None:
    reviewed = reviewed_with(make_pod(serviceAccountName="api"), API)
    assert reviewed.outcome == "mutated"
    assert source_of(reviewed) == {"audience": "vault", "expirationSeconds": 3600, "path": "token"}
    env = [op["value"] for op in ops_of(reviewed) if op["path"].endswith("/env")]
    assert env == [[{"name": "SERVICE_ACCOUNT_TOKEN_PATH", "value": TOKEN_PATH}]]
    injected = reviewed.response["response"]["auditAnnotations"]["injected"]
    assert injected.endswith(" from=ServiceAccount:api/api")


def test_the_same_pod_without_service_account_opt_in_is_left_alone() -> None:
    assert reviewed_with(make_pod(serviceAccountName="api"), None).outcome == "unchanged"


def test_the_service_accounts_expiration_applies_and_the_pods_audience_wins_with_a_warning() -> None:
    account = AccountAnnotations(
        "api", "api", {"token-projector.io/audience": "vault", "token-projector.io/expiration-seconds": "600"}
    )
    reviewed = reviewed_with(make_pod(annotations=annotated("data-store")), account)
    assert source_of(reviewed) == {"audience": "data-store", "expirationSeconds": 600, "path": "token"}
    assert reviewed.response["response"]["warnings"] == [
        "annotation token-projector.io/audience is 'data-store' on the Pod and 'vault' on ServiceAccount api/api; "
        "the Pod's value wins"
    ]


def test_the_pods_expiration_wins_over_the_service_accounts() -> None:
    account = AccountAnnotations(
        "api", "api", {"token-projector.io/audience": "vault", "token-projector.io/expiration-seconds": "600"}
    )
    pod = make_pod(annotations={"token-projector.io/expiration-seconds": "7200"})
    assert source_of(reviewed_with(pod, account))["expirationSeconds"] == 7200


def test_an_expiration_alone_on_the_service_account_opts_no_pod_in() -> None:
    account = AccountAnnotations("api", "api", {"token-projector.io/expiration-seconds": "600"})
    assert reviewed_with(make_pod(), account).outcome == "unchanged"


def test_skip_containers_on_a_service_account_is_ignored_with_a_warning_it_stays_per_pod() -> None:
    account = AccountAnnotations(
        "api", "api", {"token-projector.io/audience": "vault", "token-projector.io/skip-containers": "app"}
    )
    reviewed = reviewed_with(make_pod(container("app"), container("proxy")), account)
    assert {op["path"] for op in ops_of(reviewed)} >= {"/spec/containers/0/env", "/spec/containers/1/env"}
    assert reviewed.response["response"]["warnings"] == [
        "annotation token-projector.io/skip-containers on ServiceAccount api/api was ignored: it names a Pod's "
        "containers, so it belongs on the Pod (template)"
    ]


def test_a_typo_on_a_service_account_is_a_warning_naming_it() -> None:
    account = AccountAnnotations("api", "api", {"token-projector.io/audiance": "vault"})
    reviewed = reviewed_with(make_pod(), account)
    assert reviewed.outcome == "unchanged"
    assert reviewed.response["response"]["warnings"] == [
        "annotation token-projector.io/audiance on ServiceAccount api/api was ignored: it is not one "
        "token-projector knows"
    ]


@pytest.mark.parametrize(
    ("annotations", "said"),
    [
        (
            {"token-projector.io/audience": ""},
            "annotation token-projector.io/audience from ServiceAccount api/api is empty",
        ),
        (
            {"token-projector.io/audience": "https://kubernetes.default.svc"},
            "annotation token-projector.io/audience from ServiceAccount api/api is 'https://kubernetes.default.svc'",
        ),
        (
            {"token-projector.io/audience": "vault", "token-projector.io/expiration-seconds": "10"},
            "annotation token-projector.io/expiration-seconds from ServiceAccount api/api is 10, outside",
        ),
    ],
)
def test_a_bad_value_from_the_service_account_is_denied_saying_where_it_came_from(
    annotations: dict[str, str], said: str
) -> None:
    response = reviewed_with(make_pod(), AccountAnnotations("api", "api", annotations)).response["response"]
    assert response["allowed"] is False
    assert said in response["status"]["message"]
    assert response["status"]["code"] == 422


def test_a_bad_value_on_the_pod_itself_is_not_said_to_come_from_the_service_account() -> None:
    pod = make_pod(annotations={"token-projector.io/expiration-seconds": "10"})
    message = reviewed_with(pod, API).response["response"]["status"]["message"]
    assert message.startswith("annotation token-projector.io/expiration-seconds is 10, outside")


def test_a_pod_whose_service_account_could_not_be_read_is_refused_saying_so() -> None:
    account = AccountAnnotations("api", "api", None, "the API server did not answer within 2 seconds")
    response = reviewed_with(make_pod(serviceAccountName="api"), account).response["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 503
    message = response["status"]["message"]
    assert message.startswith("token-projector could not read ServiceAccount api/api, which may set this Pod's")
    assert "the API server did not answer within 2 seconds" in message
    assert "refused rather than started without the token" in message


def test_a_pod_that_sets_both_annotations_needs_no_unreadable_service_account() -> None:
    account = AccountAnnotations("api", "api", None, "timed out")
    pod = make_pod(annotations=annotated(expiration_seconds="600"))
    assert reviewed_with(pod, account).outcome == "mutated"


def test_the_review_reads_the_pods_service_account_in_the_requests_namespace() -> None:
    assert account_of_review(admission_review(make_pod(serviceAccountName="api"))) == ("api", "api")
    assert account_of_review(admission_review(make_pod())) == ("api", "default")
    assert account_of_review(admission_review(make_pod(serviceAccount="old"))) == ("api", "old")


@pytest.mark.parametrize(
    "body",
    [
        admission_review(make_pod(), operation="UPDATE"),
        admission_review(make_pod(), sub_resource="status"),
        admission_review(make_pod(annotations={"kubernetes.io/config.mirror": "x"})),
        admission_review(make_pod(serviceAccountName=7)),
        {"request": []},
        [],
    ],
    ids=["update", "subresource", "mirror", "bad-name", "bad-request", "not-an-object"],
)
def test_no_service_account_is_read_for_what_is_not_a_pod_create(body: object) -> None:
    assert account_of_review(body) is None
