"""TokenReviewer against a FakeApiServer: the four-step acceptance, the cache, single flight, construction.

The real API server's answers are proven in tests/e2e/test_audience_token_reviewer.py; the fake is here
for exact review counts, a hand-moved clock and faults on demand.
"""

import asyncio

import pytest

from audience_token import (
    ConfigError,
    Identity,
    NotAllowed,
    ReviewerSettings,
    ReviewUnavailable,
    TokenReviewer,
    Unauthenticated,
)
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_api import FakeApiServer, assert_no_token_in, fake_token


async def test_a_valid_token_for_the_audience_from_an_allowed_account_gives_its_identity(
    reviewer: TokenReviewer,
) -> None:
    identity = await reviewer.verify(fake_token("api", "api", pod=("api-1", "pod-uid-1")))
    assert identity == Identity(
        namespace="api",
        service_account="api",
        uid="uid-api-api",
        pod_name="api-1",
        pod_uid="pod-uid-1",
        credential_id="JTI=fake",
        groups=identity.groups,
        extra=identity.extra,
    )
    assert identity.username == "system:serviceaccount:api:api"


async def test_a_token_for_another_audience_is_refused_naming_both_audiences(reviewer: TokenReviewer) -> None:
    token = fake_token(audiences=("data-store",))
    with pytest.raises(Unauthenticated) as refused:
        await reviewer.verify(token)
    assert refused.value.reason == "wrong_audience"
    assert "'secret-store'" in refused.value.message
    assert "'data-store'" in refused.value.message
    assert_no_token_in(refused.value, token)


async def test_a_legacy_token_without_audience_is_refused_as_the_wrong_audience(reviewer: TokenReviewer) -> None:
    with pytest.raises(Unauthenticated, match="no audience") as refused:
        await reviewer.verify(fake_token(audiences=()))
    assert refused.value.reason == "wrong_audience"


async def test_an_expired_token_is_refused_saying_to_reread_the_file(reviewer: TokenReviewer) -> None:
    with pytest.raises(Unauthenticated, match=r"expired .* ago.*re-read") as refused:
        await reviewer.verify(fake_token(expires_in=-30))
    assert refused.value.reason == "expired_or_revoked"


async def test_a_token_the_cluster_does_not_accept_is_refused_as_revoked(reviewer: TokenReviewer) -> None:
    with pytest.raises(Unauthenticated, match="revoked") as refused:
        await reviewer.verify(fake_token(valid=False))
    assert refused.value.reason == "expired_or_revoked"
    assert "the API server said: invalid bearer token" in refused.value.message


async def test_a_forged_token_is_refused_as_not_issued_by_this_cluster(
    reviewer: TokenReviewer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = fake_token()
    said = f"[invalid bearer token, go-jose/go-jose: error in cryptographic primitive, {token}]"
    monkeypatch.setattr(FakeApiServer, "_status", staticmethod(lambda t, a: {"authenticated": False, "error": said}))
    with pytest.raises(Unauthenticated, match="not issued by this cluster") as refused:
        await reviewer.verify(token)
    assert refused.value.reason == "invalid"
    assert_no_token_in(refused.value, token)
    assert "<redacted>" in refused.value.message


async def test_a_person_or_node_credential_is_refused_as_not_a_service_account(reviewer: TokenReviewer) -> None:
    with pytest.raises(Unauthenticated, match="'system:node:worker-1', which is not a service account") as refused:
        await reviewer.verify(fake_token(subject="system:node:worker-1"))
    assert refused.value.reason == "not_a_service_account"


async def test_an_account_outside_allow_is_not_allowed_and_carries_its_identity(reviewer: TokenReviewer) -> None:
    with pytest.raises(NotAllowed) as refused:
        await reviewer.verify(fake_token("data", "store"))
    assert refused.value.identity.namespace == "data"
    assert refused.value.identity.service_account == "store"
    assert "data/store" in refused.value.message
    assert "api/*" not in refused.value.message, "the allow list is not shown to callers"


async def test_an_answer_authenticated_without_our_audience_is_refused(
    reviewer: TokenReviewer, fake_api: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An API server that ignored spec.audiences would answer like this; status.audiences decides.
    monkeypatch.setattr(
        FakeApiServer,
        "_status",
        staticmethod(
            lambda token, requested: {
                "authenticated": True,
                "user": {"username": "system:serviceaccount:api:api"},
                "audiences": ["https://kubernetes.default.svc"],
            }
        ),
    )
    with pytest.raises(Unauthenticated, match="not for audience 'secret-store'") as refused:
        await reviewer.verify(fake_token())
    assert refused.value.reason == "wrong_audience"


@pytest.mark.parametrize("token", ["", "x", "a.b", "not a token at all", "é.é.é", "a" * 20000])
async def test_a_malformed_token_is_refused_without_a_review(
    reviewer: TokenReviewer, fake_api: FakeApiServer, token: str
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await reviewer.verify(token)
    assert refused.value.reason == "malformed"
    assert fake_api.reviews == 0
    assert reviewer.cached == 0, "malformed values take no cache slot"


# --- the cache ---------------------------------------------------------------------------------------


async def test_a_success_is_kept_ten_seconds_by_default(
    reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    token = fake_token()
    await reviewer.verify(token)
    clock.now += 9.9
    await reviewer.verify(token)
    assert fake_api.reviews == 1
    clock.now += 0.2
    await reviewer.verify(token)
    assert fake_api.reviews == 2


async def test_a_success_is_never_kept_past_the_tokens_exp(
    reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    token = fake_token(expires_in=4)
    await reviewer.verify(token)
    clock.now += 2.5
    await reviewer.verify(token)
    assert fake_api.reviews == 1
    clock.now += 2.0  # past exp (3-4 s after the first review: iat is whole seconds), well inside 10 s
    await reviewer.verify(token)
    assert fake_api.reviews == 2, "the entry ended with the token's exp, so the API server was asked again"


async def test_a_definite_refusal_is_kept_ten_seconds(
    reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    # A token minted for another audience (its own claims decide) and an account allow does not name.
    for token in (fake_token(audiences=("elsewhere",)), fake_token("data", "store")):
        fake_api.reviews = 0
        for _ in range(3):
            with pytest.raises((Unauthenticated, NotAllowed)):
                await reviewer.verify(token)
        assert fake_api.reviews == 1
        clock.now += 10.1
        with pytest.raises((Unauthenticated, NotAllowed)):
            await reviewer.verify(token)
        assert fake_api.reviews == 2


async def test_a_cached_refusal_raises_a_fresh_exception_each_time(reviewer: TokenReviewer) -> None:
    token = fake_token(audiences=("elsewhere",))
    errors = []
    for _ in range(2):
        with pytest.raises(Unauthenticated) as refused:
            await reviewer.verify(token)
        errors.append(refused.value)
    assert errors[0] is not errors[1]
    assert errors[0].message == errors[1].message


async def test_lookup_answers_only_from_the_cache_and_never_asks_the_api_server(
    reviewer: TokenReviewer, fake_api: FakeApiServer, clock: Clock
) -> None:
    token = fake_token()
    assert reviewer.lookup(token) is None, "a token never verified is verify()'s to decide"
    identity = await reviewer.verify(token)
    assert reviewer.lookup(token) is identity
    clock.now += 10.1
    assert reviewer.lookup(token) is None, "an entry past its TTL is not an answer"
    assert fake_api.reviews == 1


async def test_lookup_raises_a_cached_refusal_as_verify_does(reviewer: TokenReviewer, fake_api: FakeApiServer) -> None:
    other_audience, not_allowed = fake_token(audiences=("elsewhere",)), fake_token("data", "store")
    for token, refusal in ((other_audience, Unauthenticated), (not_allowed, NotAllowed)):
        assert reviewer.lookup(token) is None
        with pytest.raises(refusal) as by_verify:
            await reviewer.verify(token)
        with pytest.raises(refusal) as by_lookup:
            reviewer.lookup(token)
        assert by_lookup.value.message == by_verify.value.message
    assert fake_api.reviews == 2


@pytest.mark.parametrize("token", ["", "é.é.é", "a" * 20000, 123])
def test_lookup_refuses_values_that_cannot_be_tokens_as_malformed(reviewer: TokenReviewer, token: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        reviewer.lookup(token)
    assert refused.value.reason == "malformed"


async def test_unavailability_is_never_cached(reviewer: TokenReviewer, fake_api: FakeApiServer) -> None:
    token = fake_token()
    fake_api.fault = "500"
    for _ in range(3):
        with pytest.raises(ReviewUnavailable):
            await reviewer.verify(token)
    assert fake_api.reviews == 3
    fake_api.fault = None
    assert (await reviewer.verify(token)).service_account == "api"


async def test_ttls_of_zero_turn_the_cache_off(fake_api: FakeApiServer) -> None:
    settings = ReviewerSettings(success_ttl=0, failure_ttl=0)
    async with TokenReviewer("secret-store", allow="*/*", credentials=fake_api.credentials(), settings=settings) as r:
        token = fake_token()
        await r.verify(token)
        await r.verify(token)
    assert fake_api.reviews == 2


async def test_the_cache_is_bounded_by_cache_size(fake_api: FakeApiServer) -> None:
    settings = ReviewerSettings(cache_size=5)
    async with TokenReviewer("secret-store", allow="*/*", credentials=fake_api.credentials(), settings=settings) as r:
        for i in range(20):
            await r.verify(fake_token(nonce=str(i)))
        assert r.cached == 5


async def test_concurrent_verifies_of_one_new_token_make_exactly_one_review(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    fake_api.delay = 0.2
    token = fake_token()
    identities = await asyncio.gather(*(reviewer.verify(token) for _ in range(1000)))
    assert fake_api.reviews == 1
    assert {i.service_account for i in identities} == {"api"}


async def test_concurrent_verifies_of_one_refused_token_all_fail_from_one_review(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    fake_api.delay = 0.1
    fake_api.fault = "503"
    token = fake_token()
    results = await asyncio.gather(*(reviewer.verify(token) for _ in range(200)), return_exceptions=True)
    assert all(isinstance(r, ReviewUnavailable) for r in results)
    assert len({id(r) for r in results}) == 200, "each caller gets its own exception object"
    assert fake_api.reviews == 1


# --- construction ------------------------------------------------------------------------------------


def test_a_reviewer_without_allow_cannot_be_built(fake_api: FakeApiServer) -> None:
    with pytest.raises(TypeError, match="allow"):
        TokenReviewer("secret-store", credentials=fake_api.credentials())  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="allow is empty"):
        TokenReviewer("secret-store", allow=[], credentials=fake_api.credentials())


@pytest.mark.parametrize("audience", ["", "  ", "bad\naudience"])
def test_a_reviewer_needs_a_printable_audience(fake_api: FakeApiServer, audience: str) -> None:
    with pytest.raises(ConfigError, match="audience"):
        TokenReviewer(audience, allow="*/*", credentials=fake_api.credentials())


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ConfigError, match="success_ttl"):
        ReviewerSettings(success_ttl=-1)
    with pytest.raises(ConfigError, match="cache_size"):
        ReviewerSettings(cache_size=0)


def test_the_reviewers_repr_shows_no_credentials(fake_api: FakeApiServer) -> None:
    reviewer = TokenReviewer("secret-store", allow="api/api", credentials=fake_api.credentials())
    assert "reviewer-own-token" not in repr(reviewer)
    assert "reviewer-own-token" not in repr(fake_api.credentials())
    assert "secret-store" in repr(reviewer)
