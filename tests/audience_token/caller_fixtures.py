"""Fixtures of the callers' tests (test_httpx.py, test_requests.py load them with ``pytest_plugins``).

A token file in a kubelet-style projected volume on a clock that moves only when a test moves it (a
re-read is the test's doing), and two FakeReceivers on different hosts: two origins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from audience_token.token_file import TokenFile
from tests.audience_token.caller_servers import FakeReceiver, fake_token
from tests.audience_token.conftest import Clock
from tests.audience_token.kubelet_volume import ProjectedVolume


@pytest.fixture
def first() -> str:
    return fake_token()


@pytest.fixture
def volume(tmp_path: Path, first: str) -> ProjectedVolume:
    return ProjectedVolume.create(tmp_path / "tokens", {"token": first})


@pytest.fixture
def clock() -> Clock:
    return Clock(0.0)


@pytest.fixture
def tokens(volume: ProjectedVolume, clock: Clock) -> TokenFile:
    """The token file on a clock that moves only when a test moves it: a re-read is the test's doing."""
    return TokenFile(volume.path("token"), clock=clock)


@pytest.fixture
def home() -> Iterator[FakeReceiver]:
    with FakeReceiver().running() as server:
        yield server


@pytest.fixture
def elsewhere() -> Iterator[FakeReceiver]:
    """Another host (127.0.0.2): another origin."""
    with FakeReceiver(host="127.0.0.2").running() as server:
        yield server
