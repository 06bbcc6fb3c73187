"""Hostile input over the real TLS endpoint: no 5xx, no hang, and the server keeps serving; slow clients starve no one.

The body fuzzer is seeded (the seed is in the failure message), so any failure replays exactly.
"""

import asyncio
import json
import random
import ssl
import time
from typing import Any

import pytest

from tests.helpers import body_with_nested_value_at, fixture, paths_of
from tests.server.conftest import Webhook

BASE = fixture("deployment-pod-annotated.json")
VALID = json.dumps(BASE).encode()
SEED = 20261123
JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5e308,
    "",
    "x" * 5000,
    "\u0000\ud7ff\ufffd",
    [],
    {},
    [[[[[]]]]],
    {"": {"": None}},
    "AdmissionReview",
    ["CREATE"],
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/octet-stream",
    "multipart/form-data; boundary=x",
    "",
    "APPLICATION/JSON",
    "application/jsonp",
]


PATHS = [p for p in paths_of(BASE) if p]


def mutated(rng: random.Random) -> tuple[bytes, str]:
    """One hostile body and its content type."""
    kind = rng.randrange(9)
    if kind == 0:  # anything put anywhere, possibly several times
        body = json.loads(VALID)
        for _ in range(rng.randint(1, 4)):
            parent: Any = body
            path = rng.choice(PATHS)
            try:
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = rng.choice(JUNK)
            except (KeyError, IndexError, TypeError):
                pass
        return json.dumps(body).encode(), "application/json"
    if kind == 1:  # truncated
        return VALID[: rng.randrange(len(VALID))], "application/json"
    if kind == 2:  # random bytes, invalid UTF-8 included
        return rng.randbytes(rng.randrange(1, 2000)), "application/json"
    if kind == 3:  # bytes flipped in a valid body
        raw = bytearray(VALID)
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw), "application/json"
    if kind == 4:  # deep nesting
        depth = rng.choice([100, 1000, 1025, 20000])
        return b"[" * depth + b"]" * depth, "application/json"
    if kind == 5:  # a huge string, under and over the limit (64 KiB in this fixture)
        body = json.loads(VALID)
        body["request"]["object"]["metadata"]["annotations"]["huge"] = "h" * rng.choice([30_000, 70_000])
        return json.dumps(body).encode(), "application/json"
    if kind == 6:  # wrong content type
        return VALID, rng.choice(CONTENT_TYPES)
    if kind == 7:  # wrong JSON types at the top levels
        return json.dumps(
            rng.choice(
                [
                    [],
                    "x",
                    1,
                    {"request": rng.choice(JUNK)},
                    {
                        "kind": "AdmissionReview",
                        "apiVersion": "admission.k8s.io/v1",
                        "request": {"uid": rng.choice(JUNK)},
                    },
                ]
            )
        ).encode(), "application/json"
    return VALID, "application/json"  # and some valid ones in between


async def test_a_thousand_hostile_bodies_get_no_5xx_and_the_server_keeps_serving(webhook: Webhook) -> None:
    rng = random.Random(SEED)  # noqa: S311 -- a reproducible fuzzer, not cryptography
    cases = [mutated(rng) for _ in range(1000)]
    statuses: dict[int, int] = {}
    semaphore = asyncio.Semaphore(16)

    async def send(index: int, body: bytes, *, content_type: str) -> None:
        async with semaphore, await webhook.post(body, content_type=content_type) as response:
            text = await asyncio.wait_for(response.text(), timeout=10)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            assert response.status < 500, f"case {index} (seed {SEED}): {response.status} {text[:200]}"
            if response.status in (400, 413, 415):
                assert json.loads(text)["error"], f"case {index}: an error says why"

    await asyncio.wait_for(asyncio.gather(*(send(i, b, content_type=c) for i, (b, c) in enumerate(cases))), timeout=120)
    assert set(statuses) <= {200, 400, 413, 415}, statuses
    # The fuzzer must reach both paths, or it tests nothing.
    assert statuses.get(200, 0) > 50, statuses
    assert statuses.get(400, 0) > 300, statuses
    async with await webhook.post(VALID) as response:
        assert response.status == 200
        assert "patch" in (await response.json())["response"]


async def _tls_connect(webhook: Webhook) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(webhook.url.rsplit(":", 1)[1])
    context: ssl.SSLContext = webhook.session.connector._ssl  # type: ignore[union-attr]
    return await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")


async def test_a_client_trickling_its_headers_is_cut_off_at_the_deadline(webhook: Webhook) -> None:
    reader, writer = await _tls_connect(webhook)
    started = time.monotonic()
    header = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    closed_after = None
    for byte in header:
        writer.write(bytes([byte]))
        try:
            await writer.drain()
            if await asyncio.wait_for(reader.read(1), timeout=0.1) == b"":
                closed_after = time.monotonic() - started
                break
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            closed_after = time.monotonic() - started
            break
    writer.close()
    assert closed_after is not None, "the server must close a connection that never completes its headers"
    assert closed_after < 3, "within keepalive_timeout_seconds (1 s in this fixture)"


async def test_slow_and_idle_connections_do_not_delay_other_requests(webhook: Webhook) -> None:
    idle = [await _tls_connect(webhook) for _ in range(100)]
    slow = [await _tls_connect(webhook) for _ in range(50)]
    for _, writer in slow:
        writer.write(b"POST /mutate HTTP/1.1\r\nHost: localh")
    started = time.monotonic()
    for _ in range(3):
        responses = await asyncio.gather(*(webhook.post(VALID) for _ in range(20)))
        for response in responses:
            assert response.status == 200
            response.release()
    elapsed = time.monotonic() - started
    for _, writer in idle + slow:
        writer.close()
    # 60 requests behind 150 stalled connections: the stalled ones cost the event loop nothing.
    assert elapsed < 5, f"{elapsed:.1f}s"


@pytest.mark.parametrize("body", [b"x" * (64 * 1024 + 1), b"{" * (64 * 1024 + 1)])
async def test_an_oversize_body_is_refused_without_reading_it_all(webhook: Webhook, body: bytes) -> None:
    async with await webhook.post(body) as response:
        assert response.status == 413


async def test_values_nested_to_the_parsers_limit_at_every_position_get_no_5xx(webhook: Webhook) -> None:
    rng = random.Random(SEED)  # noqa: S311 -- a reproducible fuzzer, not cryptography
    bodies = [body_with_nested_value_at(path, depth=rng.choice([300, 600, 1000]) - 2 * len(path)) for path in PATHS]
    # And at random places inside values the review does not read (where any value is acceptable).
    for _ in range(50):
        bodies.append(body_with_nested_value_at(rng.choice(PATHS), depth=2 * rng.randrange(1, 505)))
    statuses: dict[int, int] = {}
    for body in bodies:
        async with await webhook.post(body) as response:
            statuses[response.status] = statuses.get(response.status, 0) + 1
            assert response.status < 500, (await response.text())[:300]
    assert set(statuses) <= {200, 400, 413}, statuses
    assert statuses.get(400, 0) > 20, statuses
    async with await webhook.post(VALID) as response:
        assert response.status == 200
        assert "patch" in (await response.json())["response"]
