"""``audience_token.inspect``: what a token claims, read without verifying, and said plainly."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from audience_token.inspect import NotAJwt, decode_unverified, duration, render, strip_bearer, summarize
from tests.audience_token.fake_issuer import ISSUER, claims, sign

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.now(UTC).replace(microsecond=0)


def unsigned(payload: dict[str, object], header: dict[str, object] | None = None) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'RS256', 'kid': 'k1'})}.{part(payload)}.c2lnbmF0dXJl"


def test_a_projected_token_shows_issuer_audience_subject_pod_node_and_time_left() -> None:
    token = sign(KEY, claims(issued=NOW.timestamp() - 600, lifetime=3600))
    summary = summarize(token, now=NOW)
    assert summary.kind == "projected"
    assert summary.issuer == ISSUER
    assert summary.audiences == ("secret-store",)
    assert summary.subject == "system:serviceaccount:api:api"
    assert (summary.namespace, summary.service_account, summary.pod_name, summary.node_name) == (
        "api",
        "api",
        "api-7d9f",
        "node-1",
    )
    assert summary.seconds_left(NOW) == 3000
    assert summary.notes == ()
    text = render(summary, now=NOW)
    for shown in (ISSUER, "secret-store", "system:serviceaccount:api:api", "api-7d9f", "node-1", "in 50m 00s"):
        assert shown in text
    assert "lifetime:" in text
    assert "1h 00m 00s" in text
    assert "without verifying" in text


def test_the_render_never_holds_the_signature_nor_the_whole_token() -> None:
    token = sign(KEY, claims())
    text = render(summarize(token, now=NOW), now=NOW)
    _header, payload, signature = token.split(".")
    assert signature not in text
    assert payload not in text
    assert token not in text


def test_an_expired_token_says_so_and_how_long_ago() -> None:
    summary = summarize(sign(KEY, claims(issued=NOW.timestamp() - 4000, lifetime=3600)), now=NOW)
    assert any("EXPIRED" in note for note in summary.notes)
    assert "EXPIRED 6m 40s ago" in render(summary, now=NOW)


def test_a_legacy_secret_token_is_named_as_such_with_no_expiry() -> None:
    legacy = unsigned(
        {
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "api",
            "kubernetes.io/serviceaccount/secret.name": "api-token-abcde",
            "kubernetes.io/serviceaccount/service-account.name": "api",
            "kubernetes.io/serviceaccount/service-account.uid": "u-1",
            "sub": "system:serviceaccount:api:api",
        }
    )
    summary = summarize(legacy, now=NOW)
    assert summary.kind == "legacy"
    assert (summary.namespace, summary.service_account, summary.secret_name) == ("api", "api", "api-token-abcde")
    text = render(summary, now=NOW)
    assert "LEGACY" in text
    assert "no expiry" in text
    assert "never (no exp claim)" in text
    assert "api-token-abcde" in text


@pytest.mark.parametrize(
    "audience", ["https://kubernetes.default.svc", "https://kubernetes.default.svc.cluster.local", "api"]
)
def test_a_token_for_the_api_server_is_called_an_api_credential(audience: str) -> None:
    summary = summarize(sign(KEY, claims(audience=audience)), now=NOW)
    assert summary.kind == "api-server"
    assert "API-server credential" in render(summary, now=NOW)


def test_a_token_whose_audience_is_its_own_issuer_is_an_api_credential() -> None:
    issuer = "https://oidc.example.com/id/ABC"
    assert summarize(sign(KEY, claims(audience=issuer, issuer=issuer)), now=NOW).kind == "api-server"


def test_the_caller_can_name_its_api_servers_audiences() -> None:
    token = sign(KEY, claims(audience="my-cluster-api"))
    assert summarize(token, now=NOW).kind == "projected"
    assert summarize(token, now=NOW, api_audiences={"my-cluster-api"}).kind == "api-server"


def test_a_token_not_valid_yet_and_a_subject_that_is_no_service_account_are_noted() -> None:
    payload = {**claims(issued=NOW.timestamp() + 600), "sub": "system:node:n1"}
    notes = " ".join(summarize(sign(KEY, payload), now=NOW).notes)
    assert "not valid yet" in notes
    assert "not a service account" in notes


def test_a_pasted_authorization_header_is_accepted() -> None:
    token = sign(KEY, claims())
    assert strip_bearer(f"Authorization: Bearer {token}\n") == token
    assert strip_bearer(f"bearer {token}") == token
    assert summarize(f"Bearer {token}", now=NOW).audiences == ("secret-store",)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("abc", "three parts separated by '.', this has 1"),
        ("a.b.c.d.e", "JWE"),
        ("é.b.c", "non-ASCII"),
        ("!!!.@@@.c", "not base64url"),
        ("W10.W10.c2ln", "not a JSON object"),
        ("x" * 20000, "over the 16384"),
    ],
)
def test_what_is_not_a_jwt_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(NotAJwt, match=why):
        decode_unverified(text)


def test_odd_claim_types_do_not_break_the_summary() -> None:
    token = unsigned({"iss": 7, "aud": {"x": 1}, "exp": "soon", "iat": True, "kubernetes.io": [1], "sub": None})
    summary = summarize(token, now=NOW)
    assert (summary.issuer, summary.audiences, summary.expires_at, summary.issued_at) == (None, (), None, None)
    assert "never (no exp claim)" in render(summary, now=NOW)


def test_an_absurd_expiry_is_treated_as_none() -> None:
    assert summarize(unsigned({"exp": 10**20}), now=NOW).expires_at is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (65, "1m 05s"), (3725, "1h 02m 05s"), (90000, "1d 01h 00m"), (-65, "1m 05s")]
)
def test_durations_read_as_a_person_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_time_left_is_relative_to_now() -> None:
    token = sign(KEY, claims(issued=NOW.timestamp(), lifetime=600))
    assert summarize(token, now=NOW + timedelta(seconds=60)).seconds_left(NOW + timedelta(seconds=60)) == 540
