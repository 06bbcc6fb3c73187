"""Structured logs: one JSON object per line, for log pipelines to index without parsing prose.

Callers pass their fields as ``extra={"fields": {...}}``. What goes in is chosen at the call site
and is never a token, an env value or a whole Pod: the formatter writes only what it is given.

Each admission request writes one line, so the line must cost next to nothing: ``configure``
installs a ``JsonLines`` handler that writes lines in batches rather than one system call each,
and ``info_line`` writes a request's line straight into it, past the ``logging`` machinery
(which costs several times the rest of the line). Warnings and errors are written at once.
"""

import asyncio
import logging
import os
import sys
import time
from typing import Any

import orjson

FLUSH_SECONDS = 0.1
"""A buffered line waits at most this long: soon enough to read as live, and all that a SIGKILL can lose."""
MAX_BUFFERED_BYTES = 64 * 1024
"""A burst writes at once when its lines reach this size, so memory for logs stays small."""

Fields = dict[str, Any]


def json_line(*, created: float, level: str, logger: str, msg: str, fields: Fields, exception: str = "") -> bytes:
    """One log line, newline included: the one place that decides what a line holds and in what order."""
    entry: Fields = {"time": _timestamp(created), "level": level, "logger": logger, "msg": msg, **fields}
    if exception:
        # Tracebacks are for operators' logs only, never for HTTP clients.
        entry["exception"] = exception
    return orjson.dumps(entry, default=str, option=orjson.OPT_APPEND_NEWLINE)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        return json_line(
            created=record.created,
            level=record.levelname.lower(),
            logger=record.name,
            msg=record.getMessage(),
            fields=fields if isinstance(fields, dict) else {},
            exception=self.formatException(record.exc_info) if record.exc_info else "",
        ).decode()[:-1]


class JsonLines(logging.Handler):
    """Writes JSON lines to a file descriptor in batches; warnings and errors go out at once.

    Batches are flushed ``FLUSH_SECONDS`` after their first line (by the running event loop; with
    none, every line is written at once), when they reach ``MAX_BUFFERED_BYTES``, and at exit
    (``logging.shutdown`` flushes every handler).
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode() + b"\n"
        except Exception:
            self.handleError(record)
            return
        self._add(line, urgent=record.levelno >= logging.WARNING)

    def write_info(self, logger: str, msg: str, fields: Fields) -> None:
        """The line ``logging`` would write for an INFO record with these fields, without the record."""
        line = json_line(created=time.time(), level="info", logger=logger, msg=msg, fields=fields)
        self.acquire()
        try:
            self._add(line, urgent=False)
        finally:
            self.release()

    def _add(self, line: bytes, *, urgent: bool) -> None:
        self._lines.append(line)
        self._size += len(line)
        if urgent or self._size >= MAX_BUFFERED_BYTES or not self._flush_later():
            self.flush()

    def _flush_later(self) -> bool:
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)
        return True

    def flush(self) -> None:
        self.acquire()
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            data, self._lines, self._size = b"".join(self._lines), [], 0
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            pass  # stderr gone (a closed pipe): nowhere left to report it, and serving must go on
        finally:
            self.release()


_handler: JsonLines | None = None


def configure(level: str) -> None:
    global _handler
    _handler = JsonLines(sys.stderr.fileno())
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())


def info_line(logger: logging.Logger, msg: str, fields: Fields) -> None:
    """Log ``msg`` with ``fields`` at INFO, as ``logger.info(msg, extra={"fields": fields})`` would.

    When ``configure`` set up the logs and nothing else was added to them, the line goes straight
    to our handler; otherwise (tests capturing records, an embedding program) through ``logging``.
    """
    if _handler is not None and not (logger.handlers or logger.filters) and logging.getLogger().handlers == [_handler]:
        _handler.write_info(logger.name, msg, fields)
    else:
        logger.info(msg, extra={"fields": fields})


_last_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    # strftime costs more than the rest of a line: format each second once.
    global _last_second
    second = int(created)
    if second != _last_second[0]:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_last_second[1]}.{int((created - second) * 1000):03d}Z"
