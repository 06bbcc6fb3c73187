"""Verdicts remembered for a few seconds, keyed so that the cache never holds a token.

kube-apiserver's own delegated authentication caches token reviews the same way: a success for 10 s, a
refusal for 10 s. Without it a receiver sends one TokenReview per request, and a traffic burst becomes
API-server load. Three rules keep it safe:

- the key is HMAC-SHA256 under a random key made per process, over the audience and the token: a heap
  dump or a debugger shows digests that cannot be turned back into credentials or replayed elsewhere;
- an entry lives no longer than its TTL, which the caller bounds by the token's own ``exp``;
- the cache is a bounded LRU, so 100,000 distinct garbage-but-well-formed tokens cost a fixed amount.

``SingleFlight`` makes concurrent misses for one key share one computation: a burst of requests with a
fresh token costs exactly one TokenReview, not one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

V = TypeVar("V")

KEY_BYTES: Final = 32
_BLOCK: Final = 64
"""SHA-256's block size, the length HMAC pads its key to."""


class CacheKeys:
    """HMAC-SHA256 keys for (audience, token) under a secret drawn once per process (or per instance).

    HMAC (RFC 2104) is ``H(K ^ opad || H(K ^ ipad || message))``. Both padded-key states, with the
    audience already in the inner one, are hashed once here and copied per token: the same digest as
    ``hmac.digest(secret, audience + NUL + token, "sha256")`` at about half the cost, which is most of
    a cache hit.
    """

    def __init__(self, audience: str, *, secret: bytes | None = None) -> None:
        secret = secret if secret is not None else secrets.token_bytes(KEY_BYTES)
        if len(secret) > _BLOCK:
            secret = hashlib.sha256(secret).digest()
        padded = secret.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
        # The NUL cannot occur in an ASCII token, so no (audience, token) pair collides with another.
        self._inner.update(audience.encode("utf-8", "surrogateescape") + b"\x00")

    def __call__(self, token: str) -> bytes:
        """The key for ``token``, which the caller has already checked to be ASCII."""
        inner = self._inner.copy()
        inner.update(token.encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:
        return "CacheKeys(<secret>)"


class TtlLru(Generic[V]):
    """A bounded mapping whose entries expire; the least recently used goes first when it is full.

    Thread-safe: every operation holds a short lock (``audience_token.sync`` reads it from many threads).
    """

    def __init__(self, *, maxsize: int, clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()
        # Each operation reads then changes the dict: without a lock, a thread could find an entry another
        # thread evicts before it is moved or deleted (KeyError). SyncVerifier answers hits on the calling
        # threads while its loop thread writes; a lock taken for a few dict operations costs ~0.1 us.
        self._lock = threading.Lock()

    def get(self, key: bytes) -> V | None:
        with self._lock:
            entries = self._entries
            entry = entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del entries[key]
                return None
            entries.move_to_end(key)
            return entry[1]

    def put(self, key: bytes, value: V, *, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds; a ``ttl`` of zero or less forgets any entry for ``key``."""
        with self._lock:
            if ttl <= 0:
                self._entries.pop(key, None)
                return
            self._entries[key] = (self._clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[V]):
    """At most one computation per key at a time; callers that arrive meanwhile await the same result.

    The computation runs in its own task, so a caller that is cancelled (its client went away) does not
    cancel it for the others. ``compute`` should return its outcome rather than raise: every waiter then
    gets the value, and no exception object is shared between tasks.
    """

    def __init__(self) -> None:
        self._running: dict[bytes, asyncio.Task[V]] = {}

    async def run(self, key: bytes, compute: Callable[[], Awaitable[V]]) -> V:
        task = self._running.get(key)
        if task is None:

            async def wrapped() -> V:
                try:
                    return await compute()
                finally:
                    self._running.pop(key, None)

            task = asyncio.ensure_future(wrapped())
            task.add_done_callback(_retrieve)
            self._running[key] = task
        return await asyncio.shield(task)

    def __len__(self) -> int:
        return len(self._running)


def _retrieve(task: asyncio.Task[object]) -> None:
    # Marks a failure as seen when every waiter was cancelled; a waiter still present gets it raised.
    if not task.cancelled():
        task.exception()
