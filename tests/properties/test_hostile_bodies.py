"""The review never fails on hostile input: any JSON at all, or an AdmissionReview with anything put anywhere.

Whatever the body, ``review`` either answers or raises ``InvalidReview`` (which the server turns into
a 400 with the message); any other exception would be a 500, and is a bug.
"""

import copy
import json
import random
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import fixture, paths_of
from webhook.core.contract import Contract
from webhook.core.pod import check_shape
from webhook.core.review import review, review_body
from webhook.errors import InvalidReview

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
BASE = fixture("deployment-pod-annotated.json")


def answers_or_refuses(body: Any) -> None:
    try:
        reviewed = review(body, Contract())
    except InvalidReview as error:
        refusal = str(error)
    else:
        assert reviewed.response["kind"] == "AdmissionReview"
        assert isinstance(reviewed.response["response"]["allowed"], bool)
        return
    assert refusal, "a refusal says why"


PATHS = [p for p in paths_of(BASE) if p]


def edited(replacements: list[tuple[tuple[Any, ...], Any]], *, delete: bool = False) -> Any:
    """A copy of BASE with each path set to its value (or deleted); paths an earlier edit removed are skipped."""
    body = copy.deepcopy(BASE)
    for path, value in replacements:
        parent: Any = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            if delete:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    return body


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_any_json_value_is_answered_or_refused_as_an_invalid_review(body: Any) -> None:
    answers_or_refuses(body)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=3))
def test_an_admission_review_with_anything_put_anywhere_is_answered_or_refused(
    replacements: list[tuple[tuple[Any, ...], Any]],
) -> None:
    answers_or_refuses(edited(replacements))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS))
def test_an_admission_review_missing_any_field_is_answered_or_refused(path: tuple[Any, ...]) -> None:
    answers_or_refuses(edited([(path, None)], delete=True))


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values), max_size=3), st.booleans())
def test_the_shape_check_passes_the_pod_through_or_names_the_field_and_its_type(
    replacements: list[tuple[tuple[Any, ...], Any]], delete: bool
) -> None:
    body = edited(replacements, delete=delete)
    pod = body.get("request", {}).get("object") if isinstance(body.get("request"), dict) else None
    try:
        assert check_shape(pod) is pod
    except InvalidReview as error:
        message = str(error)
        assert message.startswith("request.object"), message
        assert re.search(
            r" must be (an object|a list|a string), got (an object|a list|a string|a boolean|a number|null)$", message
        )


def spelled(value: Any, rnd: random.Random) -> str:
    """``value`` as JSON text, each character of each string written as-is or as a ``\\u`` escape, at random."""
    if isinstance(value, str):
        return (
            '"' + "".join(f"\\u{ord(c):04x}" if rnd.random() < 0.3 or c in '"\\' or c < " " else c for c in value) + '"'
        )
    if isinstance(value, dict):
        return "{" + ",".join(f"{spelled(k, rnd)}:{spelled(v, rnd)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(spelled(v, rnd) for v in value) + "]"
    return json.dumps(value)


WITH_OUR_VARIABLE = copy.deepcopy(BASE)
WITH_OUR_VARIABLE["request"]["object"]["spec"]["containers"][0]["env"].insert(
    0, {"name": Contract().env_var, "value": "/elsewhere"}
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([BASE, WITH_OUR_VARIABLE]), st.integers(0, 2**32))
def test_the_answer_from_the_bytes_is_the_answer_from_the_decoded_body_however_strings_are_spelled(
    body: Any, seed: int
) -> None:
    raw = spelled(body, random.Random(seed)).encode()  # noqa: S311 (test data, not secrets)
    assert json.loads(raw) == body
    assert review_body(raw, Contract()) == review(body, Contract())
