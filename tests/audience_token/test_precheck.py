"""What cannot be a token is refused before any API call, saying why and never quoting it."""

import base64
import json

import pytest

from audience_token import Unauthenticated
from audience_token.precheck import MAX_TOKEN_LENGTH, audiences_of, expiry_of, precheck
from tests.audience_token.fake_api import fake_token


def _part(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


HEADER = _part({"alg": "RS256"})
PAYLOAD = _part({"aud": ["x"], "exp": 1})
SIG = "c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "empty"),
        ("a" * (MAX_TOKEN_LENGTH + 1), "characters long"),
        ("é.é.é", "non-ASCII"),
        (f"{HEADER}.{PAYLOAD}", "three parts"),
        (f"{HEADER}.{PAYLOAD}.{SIG}.x", "three parts"),
        (f"{HEADER}..{SIG}", "payload part is empty"),
        (f"{HEADER}.{PAYLOAD}.{SIG}=", "signature part is not base64url"),
        (f"{HEADER}.{PAYLOAD}+.{SIG}", "payload part is not base64url"),
        (f"{HEADER} .{PAYLOAD}.{SIG}", "header part is not base64url"),
        (f"{HEADER}.{PAYLOAD}.a", "signature part is not valid base64url"),
        (f"{_part([1])}.{PAYLOAD}.{SIG}", "header part is not a JSON object"),
        (f"{_part({'typ': 'JWT'})}.{PAYLOAD}.{SIG}", "with an 'alg'"),
        (f"{HEADER}.{_part('text')}.{SIG}", "payload part is not a JSON object"),
        (f"{HEADER}.bm90IGpzb24.{SIG}", "payload part is not a JSON object"),
        ("secret-static-token-value", "three parts"),
    ],
)
def test_a_value_that_cannot_be_a_jwt_is_refused_as_malformed_saying_why(token: str, why: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        precheck(token)
    assert refused.value.reason == "malformed"
    assert why in refused.value.message
    if token:
        assert token not in str(refused.value)
        assert PAYLOAD not in str(refused.value)


@pytest.mark.parametrize("value", [None, 42, b"bytes.are.not"])
def test_a_value_that_is_not_a_string_is_refused_as_malformed(value: object) -> None:
    with pytest.raises(Unauthenticated, match="expected a string"):
        precheck(value)


def test_a_token_shaped_value_gives_its_unverified_claims() -> None:
    claims = precheck(fake_token(audiences=("a", "b"), expires_in=600))
    assert audiences_of(claims) == ("a", "b")
    exp = expiry_of(claims)
    assert exp is not None
    assert exp > 0


@pytest.mark.parametrize(
    ("claims", "audiences", "exp"),
    [
        ({"aud": "one", "exp": 5}, ("one",), 5.0),
        ({"aud": ["a", 3], "exp": 1.5}, ("a",), 1.5),
        ({"aud": 7, "exp": "soon"}, (), None),
        ({"exp": True}, (), None),
        ({}, (), None),
    ],
)
def test_odd_aud_and_exp_claims_read_as_nothing_rather_than_fail(
    claims: dict[str, object], audiences: tuple[str, ...], exp: float | None
) -> None:
    assert audiences_of(claims) == audiences
    assert expiry_of(claims) == exp


def test_deeply_nested_json_in_the_payload_is_malformed_not_a_crash() -> None:
    nested = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="payload part is not a JSON object"):
        precheck(f"{HEADER}.{nested}.{SIG}")
