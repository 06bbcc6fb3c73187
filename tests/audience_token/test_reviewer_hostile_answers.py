"""TokenReviewer against hostile tokens and odd answers: every outcome a verdict, never an escaped exception.

Issue 25's items 1, 4, 8, 12 and 13, against a FakeApiServer (faults a real API server will not
produce on demand: a redirect, a field of the wrong type, a Retry-After in superscript digits).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from audience_token import (
    ConfigError,
    Identity,
    ReviewerSettings,
    ReviewUnavailable,
    TokenReviewer,
    Unauthenticated,
    VerificationError,
)
from audience_token.kube import Credentials
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_api import FakeApiServer, assert_no_token_in, fake_token, outcome_of


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_with(**claims: Any) -> str:
    """A well-formed JWT for audience secret-store whose claims are exactly these (any value JSON holds)."""
    body = {"aud": ["secret-store"], "sub": "system:serviceaccount:api:api", **claims}
    header = _b64(json.dumps({"alg": "RS256", "kid": "fake"}).encode())
    return f"{header}.{_b64(json.dumps(body).encode())}.{_b64(b'signature-filler-' * 8)}"


HOSTILE_TIMES = [10**400, -(10**400), float("nan"), float("inf"), float("-inf"), 1e308, -1e308, "soon", [1], {}]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", HOSTILE_TIMES, ids=repr)
async def test_a_hostile_time_claim_refused_by_the_api_server_is_a_verdict_not_an_exception(
    reviewer: TokenReviewer, fake_api: FakeApiServer, claim: str, value: object
) -> None:
    # Before the fix, a 401-digit exp raised OverflowError out of verify(): a 500 in the middleware.
    fake_api.answer = {"authenticated": False, "error": "invalid bearer token"}
    token = token_with(**{claim: value})
    with pytest.raises(Unauthenticated) as refused:
        await reviewer.verify(token)
    assert_no_token_in(refused.value, token)


@pytest.mark.parametrize("value", HOSTILE_TIMES, ids=repr)
async def test_a_hostile_exp_on_a_token_the_api_server_accepts_is_accepted_for_the_ttl_only(
    reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock, value: object
) -> None:
    token = token_with(exp=value, fake={"valid": True})
    fake_api.answer = {
        "authenticated": True,
        "user": {"username": "system:serviceaccount:api:api"},
        "audiences": ["secret-store"],
    }
    assert (await reviewer.verify(token)).service_account == "api"
    clock.now += 10.1
    assert reviewer.lookup(token) is None, "an unusable exp never makes an entry outlive its TTL"


async def test_any_unexpected_error_inside_a_review_becomes_unavailable_naming_no_token(
    reviewer: TokenReviewer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = fake_token()

    def broken(*_: object) -> object:
        raise RuntimeError(f"a defect that quotes {token}")

    monkeypatch.setattr(reviewer, "_judge", broken)
    with pytest.raises(ReviewUnavailable, match="failed unexpectedly") as unavailable:
        await reviewer.verify(token)
    assert_no_token_in(unavailable.value, token)
    assert "RuntimeError at test_reviewer_hostile_answers.py:" in caplog.text, "the class and where, for a report"
    for part in token.split("."):
        assert part not in caplog.text


async def test_a_redirect_from_the_api_server_is_unavailable_and_the_token_is_not_posted_again(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    # Before the fix, the TokenReview followed the 307 and trusted what its target said.
    fake_api.fault = "redirect"
    token = fake_token()
    with pytest.raises(ReviewUnavailable, match="answered 307, a redirect") as unavailable:
        await reviewer.verify(token)
    assert fake_api.redirected == 0, "spec.token went nowhere else"
    assert_no_token_in(unavailable.value, token)


async def test_a_refusal_carrying_the_api_servers_error_is_not_cached(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    # kube-apiserver words an etcd timeout while it looks up the token's Pod as "has been invalidated",
    # and its delegated authentication caches no refusal that carries an error. Before the fix: cached 10 s.
    fake_api.answer = {"authenticated": False, "error": "service account token has been invalidated"}
    token = fake_token()
    with pytest.raises(Unauthenticated, match="could not look them up") as refused:
        await reviewer.verify(token)
    assert refused.value.reason == "expired_or_revoked"
    fake_api.answer = None  # the API server is well again: the next request is asked afresh and accepted
    assert (await reviewer.verify(token)).service_account == "api"
    assert fake_api.reviews == 2


async def test_a_refusal_the_tokens_own_claims_decide_is_still_cached(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    token = fake_token(audiences=("elsewhere",))
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="not 'secret-store'"):
            await reviewer.verify(token)
    assert fake_api.reviews == 1


@pytest.mark.parametrize(
    "status",
    [
        {"authenticated": True, "user": {"username": "system:serviceaccount:api:api"}, "audiences": 5},
        {"authenticated": True, "user": {"username": "system:serviceaccount:api:api"}, "audiences": "secret-store"},
        {"authenticated": True, "user": {"username": "system:serviceaccount:api:api"}, "audiences": {"a": 1}},
        {"authenticated": True, "user": "api", "audiences": ["secret-store"]},
        {"authenticated": True, "user": {"username": 7}, "audiences": ["secret-store"]},
        {"authenticated": True, "user": {"username": "system:serviceaccount:api:api", "groups": 5, "extra": 5}},
        {"authenticated": "yes", "audiences": ["secret-store"]},
        {"authenticated": False, "error": 5},
        {"authenticated": False, "error": ["x"] * 1000},
        {"authenticated": None},
        {},
    ],
    ids=repr,
)
async def test_every_field_of_the_answer_is_read_robustly(
    reviewer: TokenReviewer, fake_api: FakeApiServer, status: dict[str, Any]
) -> None:
    fake_api.answer = status
    outcome = await outcome_of(reviewer.verify(fake_token()))
    assert isinstance(outcome, Identity | VerificationError)
    assert not isinstance(outcome, ReviewUnavailable) or "unexpectedly" not in outcome.message, outcome


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("²", 1),
        ("٣", 1),
        ("0٣", 1),
        ("7", 7),
        (" 9 ", 9),
        ("99999999999999", 60),
        ("007", 7),
        ("0000000000000000000000000000000042", 42),
        ("000", 1),
        ("0", 1),
        ("061", 60),
    ],
)
async def test_retry_after_is_read_as_ascii_digits_only_leading_zeros_included(
    reviewer: TokenReviewer, fake_api: FakeApiServer, value: str, seconds: int
) -> None:
    # Before the fix, "²" passed str.isdigit() and int() raised ValueError out of verify();
    # and "007" (three characters) was taken for a large number: 60 s instead of 7.
    fake_api.fault, fake_api.retry_after = "503", value
    with pytest.raises(ReviewUnavailable) as unavailable:
        await reviewer.verify(fake_token())
    assert unavailable.value.retry_after == seconds


@pytest.mark.parametrize("content", ["own-1\nsecond-line", "own-1\x00", "own 1", "own-1\r\nX-Injected: 1"])
async def test_an_own_token_file_with_a_line_break_or_control_byte_is_unavailable_not_an_error(
    fake_api: FakeApiServer, tmp_path: Path, content: str
) -> None:
    # Before the fix, the newline reached aiohttp's header check: ValueError, a 500 in the middleware.
    token_file = tmp_path / "token"
    token_file.write_text(content)
    credentials = fake_api.credentials(token=None, token_file=str(token_file))
    async with TokenReviewer("secret-store", allow="*/*", credentials=credentials) as r:
        with pytest.raises(ReviewUnavailable, match="characters a token never has"):
            await r.verify(fake_token())
    assert fake_api.reviews == 0


async def test_a_bad_rotation_of_the_own_token_file_keeps_the_last_good_token(
    fake_api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("own-1")
    fake_api.accepted_bearers = {"own-1"}
    credentials = fake_api.credentials(token=None, token_file=str(token_file))
    settings = ReviewerSettings(success_ttl=0)
    async with TokenReviewer("secret-store", allow="*/*", credentials=credentials, settings=settings) as r:
        await r.verify(fake_token())
        token_file.write_text("own-2\nown-3")
        await r.verify(fake_token())
    assert fake_api.bearers_seen == ["own-1", "own-1"]
    assert "keeping the last good token" in caplog.text


@pytest.mark.parametrize(
    "audience",
    [
        "https://kubernetes.default.svc",
        "https://kubernetes.default.svc.cluster.local",
        "https://kubernetes.default.svc.cluster.local/",
        "kubernetes.default.svc",
        "https://kubernetes.default.svc.example.internal",
        "HTTPS://Kubernetes.Default.svc",
    ],
)
def test_an_api_server_audience_is_refused_at_construction(fake_api: FakeApiServer, audience: str) -> None:
    # kube-apiserver vouches for legacy Secret tokens and ordinary API credentials for its own audiences.
    with pytest.raises(ConfigError, match="the Kubernetes API's own"):
        TokenReviewer(audience, allow="*/*", credentials=fake_api.credentials())


async def test_a_legacy_secret_token_the_api_server_vouches_for_is_still_refused(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    legacy = token_with(iss="kubernetes/serviceaccount", aud=None)
    fake_api.answer = {
        "authenticated": True,
        "user": {"username": "system:serviceaccount:api:api"},
        "audiences": ["secret-store"],
    }
    with pytest.raises(Unauthenticated, match="legacy Secret token") as refused:
        await reviewer.verify(legacy)
    assert refused.value.reason == "wrong_audience"


async def test_an_audience_equal_to_the_tokens_issuer_is_refused_as_the_api_servers_own(
    fake_api: FakeApiServer,
) -> None:
    issuer = "https://issuer.example"
    token = token_with(iss=issuer, aud=[issuer], exp=int(time.time()) + 600)
    fake_api.answer = {
        "authenticated": True,
        "user": {"username": "system:serviceaccount:api:api"},
        "audiences": [issuer],
    }
    async with TokenReviewer(issuer, allow="*/*", credentials=fake_api.credentials()) as r:
        with pytest.raises(Unauthenticated, match="the cluster's service account issuer"):
            await r.verify(token)


@pytest.mark.parametrize("server", ["http://10.96.0.1:443", "http://api.example.com", "ftp://x", "http://[::1"])
def test_credentials_refuse_plain_http_off_loopback_for_every_use(server: str) -> None:
    # Before the fix, only the TokenReview path checked; the offline key fetch sent the bearer in the clear.
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        Credentials(server=server, source="test", token="t")


@pytest.mark.parametrize("server", ["http://127.0.0.1:8080", "http://localhost:8080", "https://10.96.0.1"])
def test_credentials_allow_https_anywhere_and_plain_http_on_loopback(server: str) -> None:
    assert Credentials(server=server, source="test", token="t").server == server
