"""Real servers for the receiver adapters' tests: uvicorn in the test's loop, werkzeug and gunicorn beside it.

Each listens on a real loopback socket; the tests speak HTTP to it with aiohttp's client, so what is
pinned is what a caller on the network sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import aiohttp
import uvicorn

from tests.tools import REPO


def _listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with contextlib.closing(_listening()) as sock:
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any, **options: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn in this event loop, lifespan on; yields its base URL."""
    sock = _listening()
    config = uvicorn.Config(app, lifespan="on", log_level="warning", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def werkzeug_serving(app: Any) -> Iterator[str]:
    """A WSGI ``app`` under werkzeug's development server (Flask's ``flask run``), threaded, in a thread."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@contextlib.contextmanager
def gunicorn_serving(app: str, *, env: Mapping[str, str], worker: str = "sync", threads: int = 1) -> Iterator[str]:
    """``gunicorn MODULE:APP`` in a child process with one worker of kind ``worker``; yields its base URL."""
    port = free_port()
    command = [
        "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", worker,
        "--threads", str(threads), "--graceful-timeout", "5", "--log-level", "warning", app,
    ]  # fmt: skip
    with child_serving(command, port=port, env=env) as url:
        yield url


@contextlib.contextmanager
def uvicorn_child_serving(app: str, *, env: Mapping[str, str]) -> Iterator[str]:
    """``uvicorn --factory MODULE:FACTORY`` in a child process; yields its base URL."""
    port = free_port()
    command = ["-m", "uvicorn", "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", app]
    with child_serving(command, port=port, env=env) as url:
        yield url


@contextlib.contextmanager
def child_serving(arguments: list[str], *, port: int, env: Mapping[str, str]) -> Iterator[str]:
    """``python ARGUMENTS`` serving on ``port``; stopped with SIGTERM, killed if it lingers.

    Fails the test if the server wrote a traceback: no request may end in an unhandled exception.
    """
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    child = subprocess.Popen([sys.executable, *arguments], cwd=REPO, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{arguments[1]} did not start: {child.stderr.read() if child.stderr else ''}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            _, errors = child.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            _, errors = child.communicate()
    if errors and "Traceback" in errors:
        raise AssertionError(f"{arguments[1]} logged a traceback:\n{errors}")


@contextlib.asynccontextmanager
async def in_a_thread(manager: AbstractContextManager[str]) -> AsyncIterator[str]:
    """Enter and leave a blocking server context (a child process, a server thread) off the event loop."""
    url = await asyncio.to_thread(manager.__enter__)
    try:
        yield url
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


Seen = tuple[int, str | None, str | None, str | None, bytes]


async def answer_of(response: aiohttp.ClientResponse) -> Seen:
    """What a caller sees of an answer: status, WWW-Authenticate, Retry-After, Content-Type and body."""
    headers = response.headers
    return (
        response.status,
        headers.get("WWW-Authenticate"),
        headers.get("Retry-After"),
        headers.get("Content-Type"),
        await response.read(),
    )
