"""Invalid annotations are denials whose message names the annotation, the bad value and what is allowed."""

import pytest

from tests.helpers import admission_review, annotated, denial, make_pod, patched, run
from webhook.core.contract import Contract
from webhook.core.review import review
from webhook.errors import InvalidReview


@pytest.mark.parametrize("audience", ["", " ", "\t\n"])
def test_an_empty_or_blank_audience_is_denied_because_it_would_mint_an_api_credential(audience: str) -> None:
    status = denial(admission_review(make_pod(annotations=annotated(audience))))
    assert status["code"] == 422
    assert status["reason"] == "Invalid"
    assert "token-projector.io/audience" in status["message"]
    assert "empty" in status["message"]
    assert "Kubernetes API credential" in status["message"]


def test_an_audience_with_surrounding_white_space_is_denied_with_the_trimmed_value_suggested() -> None:
    status = denial(admission_review(make_pod(annotations=annotated(" data-store"))))
    assert "' data-store'" in status["message"]
    assert "'data-store'" in status["message"]


@pytest.mark.parametrize("audience", Contract().denied_audiences)
def test_the_api_servers_own_audiences_are_denied_by_default(audience: str) -> None:
    status = denial(admission_review(make_pod(annotations=annotated(audience))))
    assert repr(audience) in status["message"]
    assert "API server" in status["message"]


def test_the_denied_audiences_are_configurable() -> None:
    contract = Contract(denied_audiences=("vault",))
    assert "vault" in denial(admission_review(make_pod(annotations=annotated("vault"))), contract)["message"]
    assert patched(admission_review(make_pod(annotations=annotated("https://kubernetes.default.svc"))), contract)


@pytest.mark.parametrize("value", ["1h", "3600.0", "+3600", " 3600", "3600 ", "-600", "", "3_600", "٣٦٠٠"])
def test_an_expiration_that_is_not_a_whole_number_is_denied_with_the_allowed_range(value: str) -> None:
    status = denial(admission_review(make_pod(annotations=annotated(expiration_seconds=value))))
    assert status["code"] == 422
    assert "token-projector.io/expiration-seconds" in status["message"]
    assert repr(value) in status["message"]
    assert "from 600 to 86400" in status["message"]


@pytest.mark.parametrize(("value", "why"), [("599", "minimum"), ("0", "minimum"), ("86401", "maximum")])
def test_an_expiration_out_of_range_is_denied_and_says_which_bound(value: str, why: str) -> None:
    status = denial(admission_review(make_pod(annotations=annotated(expiration_seconds=value))))
    assert value in status["message"]
    assert why in status["message"]
    assert "from 600 to 86400" in status["message"]


@pytest.mark.parametrize("value", ["600", "86400"])
def test_the_expiration_bounds_themselves_are_accepted(value: str) -> None:
    pod = patched(admission_review(make_pod(annotations=annotated(expiration_seconds=value))))
    assert pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == int(
        value
    )


def test_the_maximum_expiration_is_configurable() -> None:
    contract = Contract(max_expiration_seconds=1800, default_expiration_seconds=900)
    status = denial(admission_review(make_pod(annotations=annotated(expiration_seconds="3600"))), contract)
    assert "from 600 to 1800" in status["message"]
    pod = patched(admission_review(make_pod(annotations=annotated())), contract)
    assert pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 900


def test_an_unknown_annotation_under_the_prefix_is_reported_as_a_likely_typo() -> None:
    body = admission_review(make_pod(annotations={**annotated(), "token-projector.io/expiration": "7200"}))
    reviewed = run(body)
    assert reviewed.response["response"]["warnings"] == [
        "annotation token-projector.io/expiration is not one token-projector knows and was ignored"
    ]
    assert reviewed.outcome == "mutated"


def test_a_pod_without_the_audience_annotation_is_allowed_untouched() -> None:
    reviewed = run(admission_review(make_pod(annotations={"token-projector.io/expiration-seconds": "7200"})))
    assert reviewed.response["response"]["allowed"] is True
    assert "patch" not in reviewed.response["response"]
    assert reviewed.outcome == "unchanged"


def test_an_expiration_too_long_to_be_a_number_is_denied_not_a_crash() -> None:
    status = denial(admission_review(make_pod(annotations=annotated(expiration_seconds="9" * 5000))))
    assert "this cluster's maximum" in status["message"]
    assert len(status["message"]) < 400, "the value is cut, not echoed whole"


@pytest.mark.parametrize("field", ["kind", "apiVersion"])
def test_a_huge_value_is_cut_when_a_message_quotes_it(field: str) -> None:
    body = admission_review(make_pod())
    body[field] = "x" * 70_000
    with pytest.raises(InvalidReview) as raised:
        review(body, Contract())
    assert len(str(raised.value)) < 300
    assert "(70002 characters)" in str(raised.value)


def test_a_huge_audience_with_white_space_is_cut_in_the_message() -> None:
    status = denial(admission_review(make_pod(annotations=annotated(" " + "a" * 70_000))))
    assert len(status["message"]) < 500


def test_with_allowed_audiences_a_single_audience_outside_them_is_denied_listing_what_is_allowed() -> None:
    contract = Contract(allowed_audiences=("data-store", "*.example.com"))
    status = denial(admission_review(make_pod(annotations=annotated("data-stor"))), contract)
    assert status["code"] == 422
    assert "token-projector.io/audience is 'data-stor'" in status["message"]
    assert "allowed: data-store, *.example.com" in status["message"]
    assert patched(admission_review(make_pod(annotations=annotated("vault.example.com"))), contract)


def test_allowed_audiences_are_matched_case_sensitively_because_a_tokens_audience_is() -> None:
    contract = Contract(allowed_audiences=("*.example.com",))
    status = denial(admission_review(make_pod(annotations=annotated("Vault.Example.COM"))), contract)
    assert "allowed: *.example.com" in status["message"]


def test_a_denied_audience_stays_denied_even_when_a_pattern_allows_it() -> None:
    contract = Contract(allowed_audiences=("*",))
    status = denial(admission_review(make_pod(annotations=annotated("https://kubernetes.default.svc"))), contract)
    assert "API server" in status["message"]


def test_an_audience_with_a_comma_is_now_a_list_of_audiences_not_one_audience() -> None:
    pod = patched(admission_review(make_pod(annotations=annotated("data-store,secret-store"))))
    audiences = [s["serviceAccountToken"]["audience"] for s in pod["spec"]["volumes"][0]["projected"]["sources"]]
    assert "data-store,secret-store" not in audiences
    assert set(audiences) == {"data-store", "secret-store"}
