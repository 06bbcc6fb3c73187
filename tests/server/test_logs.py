"""The log lines: one JSON object each, written in batches, warnings at once, nothing lost at exit."""

import asyncio
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator

import pytest

from webhook.server import logs
from webhook.server.logs import FLUSH_SECONDS, JsonFormatter, JsonLines

FIELDS = {"uid": "u-1", "namespace": "api", "pod": "app", "outcome": "mutated", "code": 200, "latency_ms": 0.5}


@pytest.fixture
def pipe() -> Iterator[tuple[JsonLines, int]]:
    """A real JsonLines handler writing into a pipe; the test reads the other end."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4 * logs.MAX_BUFFERED_BYTES)  # a full batch fits, unread
    handler = JsonLines(write_end)
    yield handler, read_end
    os.close(read_end)
    os.close(write_end)


def written(read_end: int) -> list[dict[str, object]]:
    try:
        data = os.read(read_end, 1 << 20)
    except BlockingIOError:
        return []
    return [json.loads(line) for line in data.decode().splitlines()]


def record(level: int, msg: str, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("token_projector.server", level, __file__, 1, msg, None, None)
    made.fields = fields
    return made


def test_the_fast_request_line_is_the_line_logging_would_write_but_for_the_time() -> None:
    read_end, write_end = os.pipe()
    JsonLines(write_end).write_info("token_projector.server", "admission review", dict(FIELDS))
    fast = json.loads(os.read(read_end, 65536))
    slow = json.loads(JsonFormatter().format(record(logging.INFO, "admission review", **FIELDS)))
    os.close(read_end)
    os.close(write_end)
    assert fast.keys() == slow.keys()
    assert {k: v for k, v in fast.items() if k != "time"} == {k: v for k, v in slow.items() if k != "time"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fast["time"])


async def test_on_the_event_loop_lines_wait_for_the_batch_and_are_all_written_soon_after(
    pipe: tuple[JsonLines, int],
) -> None:
    handler, read_end = pipe
    for n in range(3):
        handler.write_info("token_projector.server", "admission review", {**FIELDS, "uid": f"u-{n}"})
    assert written(read_end) == [], "a burst's lines are not written one system call each"
    await asyncio.sleep(FLUSH_SECONDS * 3)
    assert [line["uid"] for line in written(read_end)] == ["u-0", "u-1", "u-2"]


async def test_a_warning_is_written_at_once_after_the_lines_buffered_before_it(pipe: tuple[JsonLines, int]) -> None:
    handler, read_end = pipe
    handler.write_info("token_projector.server", "admission review", dict(FIELDS))
    handler.handle(record(logging.WARNING, "certificate reload failed"))
    assert [line["msg"] for line in written(read_end)] == ["admission review", "certificate reload failed"]


async def test_a_burst_past_the_batch_size_is_written_without_waiting(pipe: tuple[JsonLines, int]) -> None:
    handler, read_end = pipe
    big = "x" * 1000
    for _ in range(logs.MAX_BUFFERED_BYTES // 1000 + 1):
        handler.write_info("token_projector.server", "admission review", {"padding": big})
    data = os.read(read_end, 1 << 20)
    assert len(data) >= logs.MAX_BUFFERED_BYTES, "the batch that reached the size was written whole"


def test_without_an_event_loop_each_line_is_written_at_once(pipe: tuple[JsonLines, int]) -> None:
    handler, read_end = pipe
    handler.handle(record(logging.INFO, "serving", port=8443))
    assert [line["msg"] for line in written(read_end)] == ["serving"]


def test_flush_writes_what_is_buffered(pipe: tuple[JsonLines, int]) -> None:
    handler, read_end = pipe

    async def buffer_one() -> None:
        handler.write_info("token_projector.server", "admission review", dict(FIELDS))

    asyncio.run(buffer_one())  # the loop closes before its flush timer fires, as at the end of serve
    assert written(read_end) == []
    handler.flush()
    assert [line["msg"] for line in written(read_end)] == ["admission review"]
