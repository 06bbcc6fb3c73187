"""The request fields the review reads are type-checked: a wrong type is a 400 naming the field, never coerced.

Before, ``str()`` turned an object where ``operation`` belongs into text (and a deeply nested one into
a RecursionError, an HTTP 500), and a non-string ``operation`` quietly read as "not a Pod CREATE".
"""

from typing import Any

import pytest

from tests.helpers import (
    ORJSON_MAX_DEPTH,
    admission_review,
    annotated,
    body_with_nested_value_at,
    fixture,
    make_pod,
    paths_of,
)
from webhook.core.contract import Contract
from webhook.core.messages import SHOWN_CHARACTERS, shown
from webhook.core.review import review, review_body
from webhook.errors import InvalidReview

ANNOTATED = admission_review(make_pod(annotations=annotated()))
WRONG_TYPES: list[tuple[Any, str]] = [({"a": 1}, "an object"), ([1], "a list"), (7, "a number"), (True, "a boolean")]


def with_request(**fields: Any) -> dict[str, Any]:
    body = admission_review(make_pod(annotations=annotated()))
    body["request"].update(fields)
    return body


@pytest.mark.parametrize("field", ["operation", "namespace", "name", "subResource"])
@pytest.mark.parametrize(("value", "kind"), WRONG_TYPES)
def test_a_request_string_field_of_another_type_is_invalid_naming_the_field_and_its_type(
    field: str, value: Any, kind: str
) -> None:
    with pytest.raises(InvalidReview, match=rf"^request\.{field} must be a string, got {kind}$"):
        review(with_request(**{field: value}), Contract())


@pytest.mark.parametrize("field", ["resource", "kind"])
def test_a_request_object_field_of_another_type_is_invalid(field: str) -> None:
    with pytest.raises(InvalidReview, match=rf"^request\.{field} must be an object, got a string$"):
        review(with_request(**{field: "pods"}), Contract())


@pytest.mark.parametrize("value", [["pods"], None])
@pytest.mark.parametrize("field", ["group", "version", "resource"])
def test_a_resource_part_missing_or_of_another_type_is_invalid(field: str, value: Any) -> None:
    resource = {"group": "", "version": "v1", "resource": "pods", field: value}
    with pytest.raises(InvalidReview, match=rf"^request\.resource\.{field} must be a string, got (a list|null)$"):
        review(with_request(resource=resource), Contract())


def test_dry_run_must_be_a_boolean() -> None:
    with pytest.raises(InvalidReview, match=r"^request\.dryRun must be a boolean, got a string$"):
        review(with_request(dryRun="true"), Contract())


def test_absent_request_fields_are_still_answered() -> None:
    body = with_request()
    for field in ("operation", "namespace", "dryRun", "kind"):
        del body["request"][field]
    assert review(body, Contract()).response["response"]["allowed"] is True


PATHS = [p for p in paths_of(fixture("deployment-pod-annotated.json")) if p]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: ".".join(map(str, p)))
def test_a_value_nested_up_to_the_parsers_limit_anywhere_is_answered_or_refused_never_a_crash(
    path: tuple[Any, ...],
) -> None:
    depth = ORJSON_MAX_DEPTH - 2 * len(path) - 4  # as deep as the parser still accepts at that place
    depth -= depth % 2
    raw = body_with_nested_value_at(path, depth)
    try:
        reviewed = review_body(raw, Contract())
    except InvalidReview as error:
        refusal = str(error)
    else:
        assert isinstance(reviewed.response["response"]["allowed"], bool)
        return
    assert len(refusal) < 400, "a refusal quotes a bounded part of the value"


@pytest.mark.parametrize(
    "path",
    [
        ("request", "operation"),
        ("request", "namespace"),
        ("request", "name"),
        ("request", "uid"),
        ("request", "resource"),
        ("request", "resource", "resource"),
        ("kind",),
        ("apiVersion",),
        ("request", "object", "metadata", "annotations", "token-projector.io/audience"),
        ("request", "object", "spec", "containers", 0, "name"),
    ],
    ids=lambda p: ".".join(map(str, p)),
)
def test_a_nested_value_where_the_review_expects_a_string_is_invalid_not_allowed(path: tuple[Any, ...]) -> None:
    for depth in (300, 600, 1000):
        raw = body_with_nested_value_at(path, depth)
        with pytest.raises(InvalidReview):
            review_body(raw, Contract())


def test_quoting_a_deeply_nested_value_is_bounded() -> None:
    value: Any = 0
    for _ in range(5000):  # deeper than the recursion limit
        value = {"a": [value]}
    text = shown(value)
    assert len(text) <= SHOWN_CHARACTERS + 3
    assert text.startswith("{'a': [")


def test_quoting_a_long_string_cuts_it_and_says_how_long_it_was() -> None:
    assert shown("x" * 500) == repr("x" * 500)[:SHOWN_CHARACTERS] + "... (502 characters)"
