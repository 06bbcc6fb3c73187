"""What the proxy process must do whatever verifies the token: run by tests/proxy (fake API) and tests/e2e (real)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp

from tests.proxy.process import ProxyProcess, log_lines

MiB = 1024 * 1024


async def stream_100_mib_each_way(running: ProxyProcess, token: str) -> int:
    """Upload 100 MiB to the app's /upload and download 100 MiB from /download, checked byte for byte;
    returns how much the proxy's peak resident memory grew meanwhile."""
    headers = {"Authorization": f"Bearer {token}"}
    block = bytes(range(256)) * 256
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{running.url}/echo", headers=headers) as warm:
            assert warm.status == 200
        running.reset_peak()
        before = running.memory("VmRSS")

        async def body() -> AsyncIterator[bytes]:
            for _ in range(100 * MiB // len(block)):
                yield block

        async with session.post(f"{running.url}/upload", data=body(), headers=headers) as response:
            uploaded = await response.json()
        expected = hashlib.sha256(block * (100 * MiB // len(block))).hexdigest()
        assert uploaded == {"bytes": 100 * MiB, "sha256": expected}
        received = 0
        async with session.get(f"{running.url}/download?bytes={100 * MiB}", headers=headers) as response:
            assert response.headers["Content-Length"] == str(100 * MiB)
            async for chunk in response.content.iter_chunked(MiB):
                received += len(chunk)
        assert received == 100 * MiB
    grown = running.memory("VmHWM") - before
    print(f"proxy RSS before {before / MiB:.1f} MiB, peak growth over 200 MiB streamed: {grown / MiB:.1f} MiB")
    return grown


DRAIN_SECONDS = 3.0
"""The --drain-seconds to run drain_under_load() with: the callers stop half a second after /readyz is
seen failing, so on a loaded machine they still stop well inside it."""


async def drain_under_load(running: ProxyProcess, token: str) -> None:
    """16 callers, then SIGTERM: /readyz fails, every request is answered 200 (one in flight for 3 s too),
    and the process exits 0. The callers stop half a second after /readyz fails, as a Service drops the
    endpoint, not at a fixed time after the signal: no step depends on how fast a loaded machine is."""
    headers = {"Authorization": f"Bearer {token}"}
    statuses: list[int] = []
    errors: list[str] = []
    routed = True

    async def caller(session: aiohttp.ClientSession) -> None:
        while routed:
            try:
                async with session.get(f"{running.url}/echo", headers=headers) as response:
                    await response.read()
                    statuses.append(response.status)
            except aiohttp.ClientError as error:
                errors.append(repr(error))

    async def slow(session: aiohttp.ClientSession) -> int:
        async with session.get(f"{running.url}/slow?seconds=3", headers=headers) as response:
            await response.read()
            return response.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        callers = [asyncio.create_task(caller(session)) for _ in range(16)]
        late = asyncio.create_task(slow(session))
        await asyncio.sleep(0.5)
        before = len(statuses)
        running.terminate()
        async with asyncio.timeout(DRAIN_SECONDS / 2):
            while True:
                async with session.get(f"{running.probes}/readyz") as readyz:
                    if readyz.status == 503:  # not ready while draining
                        break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        routed = False
        await asyncio.gather(*callers)
        assert await late == 200, "a request in flight when SIGTERM came is answered"
    during_drain = len(statuses) - before
    assert await running.process.wait() == 0
    assert errors == []
    assert set(statuses) == {200}
    assert during_drain > 0, "requests kept being answered while draining"
    assert any(line["msg"] == "draining" for line in log_lines(running))
