"""TokenReviewer when the API server fails, or refuses the reviewer's own credentials (a FakeApiServer).

Faults a real API server will not produce on demand; the real one's 403 (no RBAC) and unreachability
are in tests/e2e/test_audience_token_reviewer.py.
"""

import contextlib
import logging
import os
import socket
from pathlib import Path

import pytest

from audience_token import ReviewerSettings, ReviewUnavailable, TokenReviewer, VerificationError
from tests.audience_token.fake_api import OWN_TOKEN, FakeApiServer, assert_no_token_in, fake_token
from tests.audience_token.kubelet_volume import ProjectedVolume
from tests.audience_token.tls import Material, make_material


@pytest.mark.parametrize(
    ("fault", "match", "retry_after"),
    [
        ("500", "answered 500 .*fake trouble", 1),
        ("503", "answered 503", 7),
        ("429", "answered 429", 7),
        ("404", "answered 404 to a TokenReview", 1),
        ("garbage", "without a TokenReview", 1),
        ("not_a_review", "without a TokenReview", 1),
        ("huge", "an answer over 1048576 bytes", 1),
    ],
)
async def test_a_failing_api_server_makes_the_review_unavailable(
    reviewer: TokenReviewer, fake_api: FakeApiServer, fault: str, match: str, retry_after: int
) -> None:
    fake_api.fault = fault
    token = fake_token()
    with pytest.raises(ReviewUnavailable, match=match) as unavailable:
        await reviewer.verify(token)
    assert unavailable.value.retry_after == retry_after
    assert fake_api.url in unavailable.value.message
    assert_no_token_in(unavailable.value, token)
    assert unavailable.value.__context__ is None, "no chained exception holds the request (and our own token)"


async def test_an_api_server_that_hangs_is_unavailable_after_the_timeout(fake_api: FakeApiServer) -> None:
    fake_api.fault = "hang"
    settings = ReviewerSettings(timeout=0.3)
    async with TokenReviewer("secret-store", allow="*/*", credentials=fake_api.credentials(), settings=settings) as r:
        with pytest.raises(ReviewUnavailable, match=r"did not answer within 0.3 s"):
            await r.verify(fake_token())


async def test_a_closed_port_is_unavailable_naming_the_server(material: Material, fake_api: FakeApiServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    credentials = fake_api.credentials(server=f"https://127.0.0.1:{port}")
    async with TokenReviewer("secret-store", allow="*/*", credentials=credentials) as r:
        with pytest.raises(ReviewUnavailable, match=f"127.0.0.1:{port} could not be reached"):
            await r.verify(fake_token())


async def test_a_server_the_cluster_ca_does_not_trust_is_unavailable(
    fake_api: FakeApiServer,
    tmp_path: Path,
) -> None:
    other = make_material(tmp_path / "other")
    async with TokenReviewer("secret-store", allow="*/*", credentials=fake_api.credentials(ca_file=str(other.ca))) as r:
        with pytest.raises(ReviewUnavailable, match="does not trust"):
            await r.verify(fake_token())
    assert fake_api.reviews == 0


async def test_a_403_for_the_reviewer_names_the_missing_rbac_permission(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    fake_api.fault = "403"
    with pytest.raises(ReviewUnavailable) as unavailable:
        await reviewer.verify(fake_token())
    message = unavailable.value.message
    assert "`create` on `tokenreviews.authentication.k8s.io`" in message
    assert "audience-token-reviewer" in message
    assert "FakeApiServer" in message, "it says whose credentials"


async def test_a_401_for_the_reviewer_says_its_own_credentials_are_refused(
    reviewer: TokenReviewer, fake_api: FakeApiServer
) -> None:
    fake_api.fault = "401"
    with pytest.raises(ReviewUnavailable, match="refused the reviewer's own credentials"):
        await reviewer.verify(fake_token())


async def test_the_reviewers_own_token_file_is_reread_when_the_kubelet_rotates_it(
    fake_api: FakeApiServer,
    tmp_path: Path,
) -> None:
    volume = ProjectedVolume.create(tmp_path / "sa", {"token": "own-1"})
    fake_api.accepted_bearers = {"own-1"}
    credentials = fake_api.credentials(token=None, token_file=volume.path("token"))
    settings = ReviewerSettings(success_ttl=0)
    async with TokenReviewer("secret-store", allow="*/*", credentials=credentials, settings=settings) as r:
        await r.verify(fake_token())
        volume.rotate({"token": "own-2"})
        fake_api.accepted_bearers = {"own-2"}
        await r.verify(fake_token())
    assert fake_api.bearers_seen == ["own-1", "own-2"]


async def test_a_401_makes_the_reviewer_reread_its_own_token_and_try_once_more(
    fake_api: FakeApiServer,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("own-1")
    credentials = fake_api.credentials(token=None, token_file=str(token_file))
    fake_api.accepted_bearers = {"own-1"}
    async with TokenReviewer("secret-store", allow="*/*", credentials=credentials) as r:
        await r.verify(fake_token(nonce="1"))
        # Same size and a restored mtime: only the 401 can tell the reviewer its token changed.
        stat = token_file.stat()
        token_file.write_text("own-2")
        os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        fake_api.accepted_bearers = {"own-2"}
        await r.verify(fake_token(nonce="2"))
    assert fake_api.bearers_seen[-2:] == ["own-1", "own-2"]


async def test_an_unreadable_own_token_is_unavailable_naming_the_path(
    fake_api: FakeApiServer,
    tmp_path: Path,
) -> None:
    credentials = fake_api.credentials(token=None, token_file=str(tmp_path / "missing"))
    async with TokenReviewer("secret-store", allow="*/*", credentials=credentials) as r:
        with pytest.raises(ReviewUnavailable, match=r"own token .*missing.* cannot be read"):
            await r.verify(fake_token())


async def test_a_client_certificate_user_authenticates_with_mutual_tls(material: Material) -> None:
    async with FakeApiServer(material, require_client_cert=True, accepted_bearers=None).running() as api:
        credentials = api.credentials(
            token=None, client_cert_file=str(material.client_cert), client_key_file=str(material.client_key)
        )
        async with TokenReviewer("secret-store", allow="*/*", credentials=credentials) as r:
            assert (await r.verify(fake_token())).namespace == "api"
        async with TokenReviewer("secret-store", allow="*/*", credentials=api.credentials(token=None)) as r:
            with pytest.raises(ReviewUnavailable):
                await r.verify(fake_token())


async def test_no_log_line_at_any_level_holds_a_token_or_the_reviewers_own(
    fake_api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [fake_token(), fake_token(valid=False), fake_token(audiences=("x",)), fake_token("data", "store")]
    uncached = ReviewerSettings(success_ttl=0, failure_ttl=0)
    async with TokenReviewer("secret-store", allow="api/*", credentials=fake_api.credentials(), settings=uncached) as r:
        for fault in (None, "500", "403", "401", "garbage"):
            fake_api.fault = fault
            for token in tokens:
                with contextlib.suppress(VerificationError):
                    await r.verify(token)
    assert fake_api.reviews >= 5 * len(tokens)
    assert caplog.records, "something was logged"
    for token in tokens:
        for part in token.split("."):
            assert part not in caplog.text
    assert OWN_TOKEN not in caplog.text
