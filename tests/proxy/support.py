"""A plain HTTP app to put behind the proxy, and the proxy served on real loopback sockets.

The app is a real aiohttp server on its own port that tells what it received (``/echo``), counts an
upload without keeping it (``/upload``), streams a download (``/download?bytes=N``), echoes a WebSocket
(``/ws``), answers late (``/slow?seconds=S``) and has an unprotected ``/healthz``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from audience_token.proxy import Listen, serve
from tests.tls_material import free_port


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[name, value] for name, value in request.headers.items()],
            "body": body.decode("latin-1"),
        }
    )


async def _upload(request: web.Request) -> web.Response:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


async def _download(request: web.Request) -> web.StreamResponse:
    size = int(request.query["bytes"])
    response = web.StreamResponse()
    response.content_length = size
    await response.prepare(request)
    block = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(f"echo: {message.data}")
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return web.Response(text="late")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="app ok")


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("http://elsewhere.invalid/steal")


def plain_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    app.router.add_post("/upload", _upload)
    app.router.add_get("/download", _download)
    app.router.add_get("/ws", _websocket)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/redirect", _redirect)
    return app


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a loopback port; yields its origin."""
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Running:
    url: str
    probes: str
    port: int


@asynccontextmanager
async def proxy_serving(app: web.Application, **listen: Any) -> AsyncIterator[Running]:
    """The proxy ``app`` served by ``audience_token.proxy.serve`` on loopback ports, stopped afterwards."""
    stop, started = asyncio.Event(), asyncio.Event()
    port, probe_port = free_port(), free_port()
    options: dict[str, Any] = {"drain_seconds": 0.0, "shutdown_timeout": 1.0, **listen}
    task = asyncio.create_task(
        serve(
            app,
            Listen(address="127.0.0.1", port=port, probe_port=probe_port, **options),
            stop=stop,
            started=started.set,
        )
    )
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiting.cancel()
        task.result()  # raises what stopped it
    scheme = "https" if options.get("ssl_context") else "http"
    try:
        yield Running(f"{scheme}://127.0.0.1:{port}", f"http://127.0.0.1:{probe_port}", port)
    finally:
        stop.set()
        await task


async def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` on a new loopback connection; what came back before the proxy closed it (or 64 KiB)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(65536)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def headers_of(echoed: dict[str, Any], name: str) -> list[str]:
    """Every value the app received for header ``name`` (any case)."""
    return [value for key, value in echoed["headers"] if key.lower() == name.lower()]
