"""The cache's parts: HMAC keys, a bounded LRU with expiry, and single flight."""

import asyncio
import functools
import hmac

import pytest

from audience_token.cache import CacheKeys, SingleFlight, TtlLru
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_api import fake_token


def test_a_key_is_an_hmac_that_never_contains_the_token() -> None:
    token = fake_token()
    key = CacheKeys("secret-store")(token)
    assert len(key) == 32
    assert token.encode() not in key
    assert token.split(".")[1].encode()[:16] not in key


@pytest.mark.parametrize("secret", [b"k" * 32, b"", b"s" * 64, b"long" * 40])
def test_a_key_is_exactly_hmac_sha256_of_audience_nul_token(secret: bytes) -> None:
    token = fake_token()
    expected = hmac.digest(secret, b"secret-store\x00" + token.encode(), "sha256")
    keys = CacheKeys("secret-store", secret=secret)
    assert keys(token) == expected
    assert keys(token) == expected, "the precomputed states are copied, not consumed"


def test_keys_differ_by_audience_and_by_process_secret() -> None:
    token = fake_token()
    assert CacheKeys("a")(token) != CacheKeys("b")(token)
    assert CacheKeys("a")(token) != CacheKeys("a")(token), "each instance draws its own secret"
    same = CacheKeys("a", secret=b"k" * 32)
    assert same(token) == CacheKeys("a", secret=b"k" * 32)(token)
    assert "k" * 32 not in repr(same)


def test_an_entry_lives_exactly_its_ttl() -> None:
    clock = Clock(1000.0)
    cache: TtlLru[str] = TtlLru(maxsize=10, clock=clock)
    cache.put(b"k", "v", ttl=10)
    clock.now += 9.99
    assert cache.get(b"k") == "v"
    clock.now += 0.01
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_a_ttl_of_zero_or_less_keeps_nothing_and_forgets_the_old_entry() -> None:
    cache: TtlLru[str] = TtlLru(maxsize=10, clock=Clock(1000.0))
    cache.put(b"k", "v", ttl=10)
    cache.put(b"k", "w", ttl=-1)
    assert cache.get(b"k") is None


def test_the_cache_is_bounded_and_the_least_recently_used_goes_first() -> None:
    cache: TtlLru[int] = TtlLru(maxsize=3, clock=Clock(1000.0))
    for i in range(3):
        cache.put(bytes([i]), i, ttl=60)
    assert cache.get(bytes([0])) == 0  # 0 is now the most recently used
    cache.put(b"\x03", 3, ttl=60)
    assert len(cache) == 3
    assert cache.get(bytes([1])) is None
    assert [cache.get(bytes([i])) for i in (0, 2, 3)] == [0, 2, 3]
    for i in range(100_000):
        cache.put(i.to_bytes(4, "big"), i, ttl=60)
    assert len(cache) == 3


def test_a_cache_needs_room_for_one_entry() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        TtlLru(maxsize=0)


async def test_concurrent_calls_for_one_key_share_one_computation() -> None:
    flight: SingleFlight[int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiters = [asyncio.create_task(flight.run(b"k", compute)) for _ in range(500)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == [42] * 500
    assert calls == 1
    assert len(flight) == 0
    assert await flight.run(b"k", compute) == 42
    assert calls == 2, "once finished, the next miss computes again"


async def test_a_cancelled_caller_does_not_cancel_the_computation_for_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def compute() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(flight.run(b"k", compute))
    second = asyncio.create_task(flight.run(b"k", compute))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await second == "done"
    assert first.cancelled()


async def test_different_keys_compute_separately() -> None:
    flight: SingleFlight[bytes] = SingleFlight()

    async def compute_for(key: bytes) -> bytes:
        await asyncio.sleep(0)
        return key

    results = await asyncio.gather(*(flight.run(k, functools.partial(compute_for, k)) for k in (b"a", b"b", b"c")))
    assert results == [b"a", b"b", b"c"]
