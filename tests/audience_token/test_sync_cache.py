"""The verdict cache under threads: SyncVerifier answers hits on the calling threads while its loop thread writes."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from audience_token.cache import TtlLru


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Thread switches every microsecond, so that races show within a second instead of once a week."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


class Ticking:
    """A clock that moves on every read: entries expire while other threads hold them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.mark.usefixtures("switching_often")
def test_readers_and_writers_on_many_threads_never_break_the_cache() -> None:
    cache: TtlLru[int] = TtlLru(maxsize=8, clock=Ticking())
    keys = [bytes([i]) for i in range(16)]
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def hammer(seed: int) -> None:
        start.wait()
        try:
            for i in range(60_000):
                key = keys[(i * 7 + seed) % len(keys)]
                if (i + seed) % 3 == 0:
                    cache.put(key, i, ttl=0.005)
                else:
                    value = cache.get(key)
                    assert value is None or isinstance(value, int)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(cache) <= 8
