"""The raw body: decoding it, and seeing from its bytes alone that a name occurs nowhere in it."""

import json

import orjson
import pytest

from tests.helpers import admission_review, annotated, container, make_pod, ops_of
from webhook.core.contract import Contract
from webhook.core.document import absent_names, decode
from webhook.core.review import review_body
from webhook.errors import InvalidReview

NAME = "SERVICE_ACCOUNT_TOKEN_PATH"


def test_a_name_whose_bytes_are_nowhere_in_the_body_is_absent() -> None:
    assert absent_names(b'{"env": [{"name": "OTHER", "value": "x"}]}', (NAME, "OTHER")) == {NAME}


def test_a_name_anywhere_in_the_body_even_inside_another_string_is_not_claimed_absent() -> None:
    raw = json.dumps({"metadata": {"annotations": {"note": f"we read ${NAME} here"}}}).encode()
    assert absent_names(raw, (NAME,)) == frozenset()


@pytest.mark.parametrize("escape", [b"\\u0048", b"\\u0041", b"\\u005f", b"\\u005F", b"\\u0030", b"\\u007a"])
def test_a_body_that_escapes_a_letter_digit_or_underscore_claims_no_name_absent(escape: bytes) -> None:
    raw = b'{"a": "x' + escape + b'y"}'
    assert absent_names(raw, (NAME,)) == frozenset()


def test_the_escapes_the_api_server_writes_do_not_cost_the_claim() -> None:
    # Go's encoder writes <, > and & as \u003c, \u003e and \u0026, and control characters as \uXXXX.
    raw = json.dumps({"command": ["sh", "-c", "a && b < c > d"], "x": '\n\t"\\'}).encode()
    raw = raw.replace(b"&", b"\\u0026").replace(b"<", b"\\u003c").replace(b">", b"\\u003e") + b"\\u001f\\u2028"
    assert absent_names(raw, (NAME,)) == {NAME}


@pytest.mark.parametrize("name", ["WITH-DASH", "with.dot", "ÜBER", ""])
def test_a_name_outside_letters_digits_and_underscore_is_never_claimed_absent(name: str) -> None:
    assert absent_names(b"{}", (name,)) == frozenset()


def test_an_escaped_spelling_of_the_env_var_is_still_found_in_the_container() -> None:
    own = {"name": NAME, "value": "/custom/token"}
    raw = orjson.dumps(admission_review(make_pod(container("app", env=[own]), annotations=annotated())))
    raw = raw.replace(b"ACCOUNT", b"\\u0041CCOUNT")
    assert NAME.encode() not in raw
    reviewed = review_body(raw, Contract())
    assert any(NAME in warning for warning in reviewed.response["response"]["warnings"]), "its own value is kept"
    assert [op for op in ops_of(reviewed) if op["path"].endswith(("/env", "/env/0"))] == [], "no second variable"


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"", "body is not valid JSON"), (b"{", "body is not valid JSON"), (b"\xff", "body is not valid JSON")],
)
def test_a_body_that_is_not_json_is_an_invalid_review(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidReview, match=message):
        decode(raw)
