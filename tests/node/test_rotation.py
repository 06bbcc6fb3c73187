"""The kubelet rotates the api's token (600 s, refreshed at 80%), and the api sends the new one without a restart.

Last in the session (``conftest.pytest_collection_modifyitems``): the api Pod started with the session's first
node test, so most of the ≈ 8-minute wait has passed while the rest of the suite ran. Alone, this test waits
for all of it.
"""

from __future__ import annotations

import time

import pytest

from tests.node.conftest import ROTATION_SECONDS, Example

pytestmark = pytest.mark.e2e

POLL_SECONDS = 10


def test_the_kubelet_rotates_the_token_and_the_api_keeps_calling_with_the_new_one(example: Example) -> None:
    # The kubelet must replace the token before it expires: after 80% of its life, at its next sync.
    deadline = example.started + ROTATION_SECONDS
    rotated = example.token_digest()
    while rotated == example.first_token and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        rotated = example.token_digest()
    assert rotated != example.first_token, f"the token was not rotated within {ROTATION_SECONDS} s"

    status, body = example.call()

    assert status == 200, body
    logs = example.node.control_plane.kubectl("logs", "-n", example.api_namespace, "api", "-c", "api")
    assert "re-read the rotated service account token" in logs.stdout, logs.stdout[-2000:]
