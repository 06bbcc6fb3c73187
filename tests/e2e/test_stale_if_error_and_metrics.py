"""TokenReviewer's stale_if_error window and its counts against the real kube-apiserver, reached through a
loopback forwarder that the test cuts (the shared control plane itself stays up)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from urllib.parse import urlsplit

import pytest

from audience_token import Credentials, ReviewerSettings, ReviewUnavailable, TokenReviewer
from audience_token.stale_if_error import StaleIfError
from tests.e2e.conftest import ControlPlane, Registered
from tests.e2e.reviewer_support import Forwarder, ReviewerAccount, annotated_caller, reviewer_identity
from tests.e2e.tokens import kubelet_token

pytestmark = pytest.mark.e2e

AUDIENCE = "secret-store"


@pytest.fixture(scope="module")
def receiver(control_plane: ControlPlane) -> ReviewerAccount:
    return reviewer_identity(control_plane, bound=True)


@pytest.fixture
def caller_pod(registered: Registered, control_plane: ControlPlane) -> dict[str, Any]:
    return annotated_caller(control_plane, audience=AUDIENCE)


async def test_a_caller_accepted_just_before_the_api_server_went_away_stays_accepted_within_the_window(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane
) -> None:
    api = urlsplit(control_plane.url)
    assert api.hostname
    assert api.port
    forwarder = await Forwarder(api.hostname, api.port).start()
    credentials = dataclasses.replace(
        Credentials.from_kubeconfig(receiver.kubeconfig), server=f"https://127.0.0.1:{forwarder.port}"
    )
    seen, unseen = kubelet_token(control_plane, caller_pod), kubelet_token(control_plane, caller_pod)
    settings = ReviewerSettings(success_ttl=1, timeout=2, stale_if_error=StaleIfError(accepted_for=30))
    async with TokenReviewer(AUDIENCE, allow="*/app", credentials=credentials, settings=settings) as reviewer:
        identity = await reviewer.verify(seen)
        await forwarder.close()
        await asyncio.sleep(1.1)  # past the cache: only the window can answer now
        assert await reviewer.verify(seen) == identity
        with pytest.raises(ReviewUnavailable):
            await reviewer.verify(unseen)  # never accepted: nothing kept for it
        counts = reviewer.counts
    assert counts.served_stale == {"accepted": 1}
    assert counts.review_errors == {"connection": 2}
    assert counts.verdict_totals() == {("accepted", ""): 2, ("unavailable", "review_unavailable"): 1}
    assert counts.reviews == 3
