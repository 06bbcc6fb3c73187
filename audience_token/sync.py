"""A verifier for threads: ``TokenReviewer`` or ``OfflineVerifier`` without an event loop per request.

WSGI servers (gunicorn's sync and gthread workers, Flask's development server), Django and plain
threads call ``verify(token)`` and get the ``Identity`` or the usual refusal, synchronously::

    verifier = SyncVerifier(TokenReviewer("secret-store", allow="api/*"))
    identity = verifier.verify(token)

How: the async verifier runs on one private event loop, on one daemon thread that this wrapper starts
on first use (again in a forked child, whose parent's thread did not survive the fork). So there is one
connection pool to the API server and one single flight for every thread: fifty threads presenting the
same new token cost one TokenReview. A verdict already cached is answered on the calling thread
without touching the loop (the cache is thread-safe). Each call waits at most ``timeout`` seconds,
then answers ``ReviewUnavailable``.

``averify`` is the same for a coroutine on *another* loop (Django's async views): the work still runs on
the private loop, so the verifier never belongs to a loop that a server may close.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Callable
from typing import Any

from audience_token.answers import Verifier
from audience_token.errors import ReviewUnavailable, VerificationError, unexpected
from audience_token.identity import Identity


def _unknown(token: str) -> Identity | None:
    return None


def _default_timeout(verifier: Verifier) -> float:
    # A TokenReview may be sent twice (the verifier's own token rotated: one retry), each bounded.
    settings: Any = getattr(verifier, "settings", None)
    timeout = getattr(settings, "timeout", 5.0)
    return 2 * float(timeout) + 1 if isinstance(timeout, int | float) else 11.0


class SyncVerifier:
    """``verify(token) -> Identity`` from any thread, over an async verifier on a private loop thread."""

    def __init__(self, verifier: Verifier, *, timeout: float | None = None) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be more than 0 seconds, not {timeout}")
        self.verifier = verifier
        self.audience: str = verifier.audience
        self.timeout = timeout if timeout is not None else _default_timeout(verifier)
        self.lookup: Callable[[str], Identity | None] = getattr(verifier, "lookup", _unknown)
        """The cached verdict, answered on the calling thread (see ``TokenReviewer.lookup``)."""
        self._start = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"SyncVerifier({self.verifier!r})"

    def verify(self, token: str) -> Identity:
        """The caller's Identity, or raises Unauthenticated, NotAllowed or ReviewUnavailable.

        Any other exception (a closed loop racing ``close()``, a cancelled review, a defect in a
        verifier of one's own) is ``errors.unexpected``: a ReviewUnavailable, a 503, never a 500.
        """
        try:
            known = self.lookup(token)
            if known is not None:
                return known
            future = self._submitted(token)
            try:
                return future.result(self.timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise self._late() from None
        except VerificationError:
            raise
        except (Exception, asyncio.CancelledError) as error:  # a thread is not cancelled: the review was
            raise unexpected(error) from None

    async def averify(self, token: str) -> Identity:
        """``verify`` for a coroutine on any event loop; the review itself runs on the private loop."""
        try:
            known = self.lookup(token)
            if known is not None:
                return known
            future = self._submitted(token)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
            except TimeoutError:
                future.cancel()
                raise self._late() from None
        except VerificationError:
            raise
        except asyncio.CancelledError as error:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this coroutine itself is cancelled: let it go
            raise unexpected(error) from None  # the review was cancelled on the private loop
        except Exception as error:
            raise unexpected(error) from None

    def _submitted(self, token: str) -> concurrent.futures.Future[Identity]:
        coroutine = self.verifier.verify(token)
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())
        except BaseException:
            coroutine.close()  # never scheduled: no "never awaited" warning
            raise

    def close(self) -> None:
        """Close the verifier's client and stop the private loop; the next ``verify`` starts a new one."""
        with self._start:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            if loop is None or thread is None or self._pid != os.getpid() or not thread.is_alive():
                return
            try:
                asyncio.run_coroutine_threadsafe(self.verifier.close(), loop).result(self.timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(self.timeout)
                if not thread.is_alive():
                    loop.close()

    def __enter__(self) -> SyncVerifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _late(self) -> ReviewUnavailable:
        return ReviewUnavailable(f"no verdict on the token within {self.timeout:g} s", retry_after=1)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._start:
            if self._loop is None or self._pid != os.getpid():
                self._loop = self._started()
                self._pid = os.getpid()
            return self._loop

    def _started(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="audience-token-verifier", daemon=True)
        self._thread.start()
        ready.wait()
        atexit.register(self.close)
        return loop
