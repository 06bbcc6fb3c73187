"""The kubelet rotates the api's token (600 s, refreshed at 80%), and the api sends the new one without a restart.

Last in the session (``conftest.pytest_collection_modifyitems``): the api Pod started with the session's first
node test, so most of the ≈ 8-minute wait has passed while the rest of the suite ran. Alone, this test waits
for all of it.
"""

from __future__ import annotations

import itertools
import time

import pytest

from tests.node.conftest import ROTATION_SECONDS, Example

pytestmark = pytest.mark.e2e

POLL_SECONDS = 10
REFRESH_AFTER_SECONDS = ROTATION_SECONDS * 80 // 100
JITTER_SECONDS = 10
SYNC_SECONDS = 60
"""How late after the refresh point the kubelet may write the new token (its syncFrequency here is 10 s; load)."""


def test_the_kubelet_rotates_the_token_at_80_percent_of_its_life_and_the_api_calls_with_the_new_one(
    example: Example,
) -> None:
    # The kubelet must replace the token before it expires: after 80% of its life, at its next sync.
    deadline = example.started + ROTATION_SECONDS
    first, _ = example.first_token
    rotated, _ = example.token_seen()
    while rotated == first and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        rotated, _ = example.token_seen()
    assert rotated != first, f"the token was not rotated within {ROTATION_SECONDS} s"
    # The kubelet's token manager refreshes after 80% of the life, less up to 10 s of jitter, at the Pod's next
    # sync; a long suite may see a second or third rotation (every ≈ 480 s): each, the last included, must have
    # come at 80% of the token before it, measured between the two tokens' issue times.
    earliest, latest = REFRESH_AFTER_SECONDS - JITTER_SECONDS, REFRESH_AFTER_SECONDS + SYNC_SECONDS
    intervals = [later - earlier for earlier, later in itertools.pairwise(example.issued)]
    assert intervals, f"no rotation recorded: {example.issued}"
    assert all(earliest <= interval <= latest for interval in intervals), (
        f"each rotation must come {earliest}-{latest} s after the token before it: {intervals} s"
    )

    status, body = example.call()

    assert status == 200, body
    logs = example.node.control_plane.kubectl("logs", "-n", example.api_namespace, "api", "-c", "api")
    assert "re-read the rotated service account token" in logs.stdout, logs.stdout[-2000:]
